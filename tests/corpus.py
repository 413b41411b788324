"""A corpus of hostile and broken inputs, written by code (nothing downloaded), with the outcome
tileseg must give for each (issue 12, item 6g).

``write_corpus(folder)`` writes every kind into ``folder`` and returns ``kind → Case(path,
expected)``. Files GDAL would refuse to write (a TIFF with no bands, a decompression bomb, a
multi-page file, a broken internal overview, an unknown EPSG code) are assembled byte by byte by
``write_tiff``, a minimal classic-TIFF writer.

Expected labels assume the binning test model of ``tests/models.py`` (K classes, uint8 divided by
``divisor``, uint16 by ``divisor * 257``, every other type by ``divisor``): label = round(mean of
the bands / divisor * (K - 1)), clipped, and 255 (the mask's nodata) where a pixel is invalid.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.transform import from_origin

from tests.models import binning_labels
from tests.rasters import UTM, write_raster

NODATA = 255

ENGINEERING_WKT = ('ENGCRS["Site grid",EDATUM["site"],CS[Cartesian,2],'
                   'AXIS["x",east,LENGTHUNIT["metre",1]],AXIS["y",north,LENGTHUNIT["metre",1]]]')


#: Every kind ``write_corpus`` writes, in order (test ids are these names).
KINDS = ("good", "good_in_subfolder", "truncated", "truncated_header", "zero_bytes", "text_named_tif",
         "png_named_tif", "huge_header", "deflate_bomb", "one_by_one", "three_by_100000", "100000_by_three",
         "zero_bands", "two_bands", "five_bands", "complex", "float64", "int8", "int32_far_out",
         "float_far_out", "uint16_12bit_no_nbits", "all_nan", "plus_minus_inf", "multi_page",
         "broken_overview", "rotated", "sheared", "south_up", "engineering_crs", "unknown_epsg",
         "geographic_off_the_earth", "antimeridian", "north_pole", "space_in_name", "unicode_name",
         "leading_dash", "dots_in_name", "case_upper", "case_lower", "newline_in_name", "escape_in_name",
         "symlink_loop", "dangling_symlink")


@dataclass(frozen=True)
class Expected:
    """What tileseg must do with one input.

    ``outcome`` "fail": exactly one failure row at ``stage`` whose message names the file and
    contains every string of ``message`` (case-insensitive). ``outcome`` "mask": a mask with
    ``labels`` (uint8, 255 = nodata), the input's size, CRS (``crs``: "same" or None) and
    transform, stats rows for every class; ``area_m2`` is the expected area of all valid pixels
    (None: areas must be null; "det": pixel count x |det(transform)|), compared with ``rel``.
    ``warning``: strings one warning about this file must contain (logged once). ``xfail``: a
    known defect outside the code this corpus tests, with where it is.
    """

    outcome: str
    stage: str | None = None
    message: tuple[str, ...] = ()
    labels: np.ndarray | None = field(default=None, compare=False, repr=False)
    crs: str | None = "same"
    area_m2: float | str | None = "det"
    rel: float = 1e-9
    warning: tuple[str, ...] = ()
    xfail: str | None = None


@dataclass(frozen=True)
class Case:
    path: str
    expected: Expected


# --- a minimal TIFF writer ------------------------------------------------------------------------

_SHORT, _LONG, _DOUBLE = 3, 4, 12
_FORMATS = {_SHORT: "H", _LONG: "I", _DOUBLE: "d"}


@dataclass
class Page:
    """One image file directory: its size and the encoded blocks (one strip per block unless
    ``tile``). Equal ``bytes`` objects are stored once, so many tiles can point at one block."""

    width: int
    height: int
    blocks: list[bytes]
    samples: int = 1
    bits: int = 8
    compression: int = 1  # 1 none, 8 deflate
    photometric: int = 1  # 1 min-is-black, 2 RGB
    tile: int | None = None
    subfile: int = 0  # 1: a reduced-resolution image (an overview)
    extra: list[tuple[int, int, list[float]]] = field(default_factory=list)


def write_tiff(path: Path | str, pages: list[Page]) -> str:
    """Write ``pages`` as a little-endian classic TIFF, byte by byte."""
    out = bytearray(b"II*\x00\x00\x00\x00\x00")
    next_ifd_at = 4
    for page in pages:
        offsets, counts, stored = [], [], {}
        for blob in page.blocks:
            if id(blob) not in stored:
                out += b"\0" * (len(out) % 2)
                stored[id(blob)] = len(out)
                out += blob
            offsets.append(stored[id(blob)])
            counts.append(len(blob))
        s = page.samples
        tags: list[tuple[int, int, list[float]]] = [
            (254, _LONG, [page.subfile]), (256, _LONG, [page.width]), (257, _LONG, [page.height]),
            (258, _SHORT, [page.bits] * max(s, 1)), (259, _SHORT, [page.compression]),
            (262, _SHORT, [page.photometric]), (277, _SHORT, [s]), (284, _SHORT, [1]),
            (339, _SHORT, [1] * max(s, 1)),
        ]
        if page.tile:
            tags += [(322, _LONG, [page.tile]), (323, _LONG, [page.tile]), (324, _LONG, offsets), (325, _LONG, counts)]
        else:
            rows = math.ceil(page.height / len(page.blocks))
            tags += [(273, _LONG, offsets), (278, _LONG, [rows]), (279, _LONG, counts)]
        entries = []
        for tag, kind, values in sorted(tags + page.extra):
            raw = struct.pack(f"<{len(values)}{_FORMATS[kind]}", *values)
            if len(raw) > 4:
                out += b"\0" * (len(out) % 2)
                where = len(out)
                out += raw
                raw = struct.pack("<I", where)
            entries.append(struct.pack("<HHI", tag, kind, len(values)) + raw.ljust(4, b"\0"))
        out += b"\0" * (len(out) % 2)
        struct.pack_into("<I", out, next_ifd_at, len(out))
        out += struct.pack("<H", len(entries)) + b"".join(entries)
        next_ifd_at = len(out)
        out += b"\0\0\0\0"
    Path(path).write_bytes(bytes(out))
    return str(path)


def _geokeys(keys: list[tuple[int, int]], origin: tuple[float, float] = (500000.0, 4000000.0)) -> list[Any]:
    """GeoTIFF tags: 1 m pixels from ``origin`` and a GeoKey directory of (key, short value)."""
    directory = [1, 1, 0, len(keys)]
    for key, value in keys:
        directory += [key, 0, 1, value]
    return [(34735, _SHORT, directory), (33550, _DOUBLE, [1.0, 1.0, 0.0]),
            (33922, _DOUBLE, [0.0, 0.0, 0.0, origin[0], origin[1], 0.0])]


def write_deflate_bomb(path: Path | str, width: int, height: int, tile: int = 1024) -> str:
    """A few-KB file that decompresses to ``width * height`` bytes: every tile entry points at
    the same deflated block of zeros."""
    blob = zlib.compress(bytes(tile * tile), 9)
    n = math.ceil(width / tile) * math.ceil(height / tile)
    return write_tiff(path, [Page(width, height, [blob] * n, compression=8, tile=tile)])


def write_huge_header(path: Path | str, width: int = 200_000, height: int = 200_000) -> str:
    """A header claiming ``width`` x ``height`` RGB pixels, a few KB on disk (sparse tiles)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=3, dtype="uint8", tiled=True,
                       compress="deflate", sparse_ok=True, photometric="RGB", crs=UTM,
                       transform=from_origin(500000, 4000000, 1.0, 1.0)) as dst:
        dst.write(np.zeros((3, 16, 16), np.uint8), window=Window(0, 0, 16, 16))
    return str(path)


# --- the corpus -----------------------------------------------------------------------------------


def rectangle_area_m2(transform: Affine, width: int, height: int) -> float:
    """Ground area of a small north-up EPSG:4326 raster's footprint: pyproj's geodesic area of
    its outline (independent of common/areas.py; edges of a small raster follow the parallels)."""
    from pyproj import Geod

    west, north = transform * (0, 0)
    east, south = transform * (width, height)
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter([west, east, east, west], [north, north, south, south])
    return abs(area)


def polar_cap_area_m2(latitude: float) -> float:
    """Ground area north of ``latitude`` on WGS84: pyproj's geodesic area of a ring of 3600
    points along the parallel (edges 0.1° of longitude, so they follow it to well under 1e-6)."""
    from pyproj import Geod

    lons = np.linspace(-180, 180, 3601)[:-1]
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, np.full(lons.shape, latitude))
    return abs(area)


def write_corpus(folder: Path, num_classes: int = 5, divisor: float = 255.0) -> dict[str, Case]:
    """Write every hostile or broken kind of input into ``folder``; kind → Case(path, expected).

    Two good tiles (``good``, ``good_in_subfolder``) ride along, so a run of the corpus shows that
    bad tiles do not stop good ones. Run it with ``--max_tile_pixels 2000000`` (the bomb's 16.8
    MPix and the 40 000 MPix header are refused; everything else is under it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    cases: dict[str, Case] = {}

    def labels_of(data: np.ndarray, d: float = divisor, valid: np.ndarray | None = None) -> np.ndarray:
        pixels = np.moveaxis(data, 0, -1)
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        out = binning_labels(np.nan_to_num(pixels.astype(np.float64), posinf=0, neginf=0), num_classes, d)
        if valid is not None:
            out = np.where(valid, out, np.uint8(NODATA)).astype(np.uint8)
        return out

    def rgb(h: int, w: int) -> np.ndarray:
        return rng.integers(0, 256, (3, h, w), dtype=np.uint8)

    def mask(name: str, data: np.ndarray, expected: Expected | None = None, **profile: Any) -> None:
        profile.setdefault("photometric", "RGB" if data.shape[0] == 3 else "MINISBLACK")
        path = write_raster(folder / name, data, **profile)
        cases[kind] = Case(path, expected or Expected("mask", labels=labels_of(data)))

    def fail(stage: str, *message: str, xfail: str | None = None) -> Expected:
        return Expected("fail", stage=stage, message=message, xfail=xfail)

    # Good tiles in the same run.
    kind = "good"
    mask("good.tif", rgb(70, 90))
    kind = "good_in_subfolder"
    (folder / "sub").mkdir(exist_ok=True)
    mask("sub/good.tif", rgb(41, 57))

    # --- files that are not (whole) rasters ---
    kind = "truncated"
    path = write_raster(folder / "truncated.tif", rgb(300, 300), photometric="RGB")
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    cases[kind] = Case(path, fail("read", "truncated or corrupt", "re-copy or re-export"))

    kind = "truncated_header"
    path = str(folder / "truncated_header.tif")
    Path(path).write_bytes(data[:6])
    cases[kind] = Case(path, fail("discover", "not a readable raster", "complete"))

    kind = "zero_bytes"
    path = str(folder / "empty.tif")
    Path(path).write_bytes(b"")
    cases[kind] = Case(path, fail("discover", "empty (0 bytes)", "re-copy or re-export"))

    kind = "text_named_tif"
    path = str(folder / "notes.tif")
    Path(path).write_text("flight log, not an image\n" * 20)
    cases[kind] = Case(path, fail("discover", "not a readable raster", "a format GDAL reads"))

    # GDAL recognises formats by content, not by name: PNG bytes named .tif are a PNG image,
    # segmented like any frame without georeferencing (areas null).
    kind = "png_named_tif"
    png = rgb(20, 30)
    path = write_raster(folder / "frame_png.tif", png, driver="PNG", crs=None)
    cases[kind] = Case(path, Expected("mask", labels=labels_of(png), crs=None, area_m2=None))

    # --- sizes ---
    kind = "huge_header"
    path = write_huge_header(folder / "huge_header.tif")
    cases[kind] = Case(path, fail("discover", "40,000 MPix", "split it first"))

    kind = "deflate_bomb"
    path = write_deflate_bomb(folder / "bomb.tif", 4096, 4096)
    cases[kind] = Case(path, fail("discover", "17 MPix", "--max_tile_pixels"))

    kind = "one_by_one"
    mask("one_by_one.tif", rgb(1, 1))

    kind = "three_by_100000"  # 3 px wide, 100 000 rows
    mask("three_by_100000.tif", rgb(100_000, 3))

    kind = "100000_by_three"  # 100 000 px wide, 3 rows
    mask("100000_by_three.tif", rgb(3, 100_000))

    # --- bands ---
    kind = "zero_bands"
    path = write_tiff(folder / "zero_bands.tif", [Page(8, 8, [b"\0" * 8], samples=0)])
    cases[kind] = Case(path, fail("discover", "not a readable raster"))

    kind = "two_bands"
    path = write_raster(folder / "two_bands.tif", rgb(20, 20)[:2])
    cases[kind] = Case(path, fail("discover", "2 band(s)", "--bands"))

    kind = "five_bands"
    path = write_raster(folder / "five_bands.tif", rng.integers(0, 256, (5, 20, 20), dtype=np.uint8))
    cases[kind] = Case(path, fail("discover", "5 band(s)", "--bands"))

    # --- data types and values ---
    kind = "complex"
    path = write_raster(folder / "complex.tif", (rgb(10, 10) + 1j).astype(np.complex64))
    cases[kind] = Case(path, fail("discover", "complex", "convert to real values"))

    # Float values are whole numbers, so that no pixel sits within rounding of a class boundary.
    kind = "float64"  # float data in the range the card expects: a correct mask, no warning
    mask("float64.tif", rng.integers(0, 256, (3, 30, 40)).astype(np.float64))

    kind = "int8"  # all negative: the card scales int8 by its default divisor, so one class
    values = rng.integers(-128, 0, (3, 30, 40), dtype=np.int8)
    mask("int8.tif", values, Expected("mask", labels=labels_of(values),
                                      warning=("int8", "-128", "outside", "rescale", "--bands")))

    kind = "int32_far_out"
    values = rng.integers(100_000, 2_000_000, (3, 30, 40), dtype=np.int32)
    mask("int32.tif", values, Expected("mask", labels=labels_of(values),
                                       warning=("int32", "outside", "rescale")))

    kind = "float_far_out"  # elevations in metres fed to an RGB model
    values = rng.integers(-500, 3000, (3, 30, 40)).astype(np.float32)
    mask("float_far_out.tif", values, Expected("mask", labels=labels_of(values),
                                               warning=("float32", "outside", "rescale")))

    kind = "uint16_12bit_no_nbits"  # 12-bit camera data in uint16, no NBITS: read as 12-bit (radiometry)
    values = rng.integers(0, 4096, (3, 30, 40), dtype=np.uint16)
    mask("uint16_12bit.tif", values, Expected("mask", labels=labels_of(values, 4095.0)))

    kind = "all_nan"  # every pixel invalid: a mask of nodata, zero valid pixels, zero area
    values = np.full((3, 20, 25), np.nan, np.float32)
    mask("all_nan.tif", values, Expected("mask", labels=np.full((20, 25), NODATA, np.uint8), area_m2=0.0))

    kind = "plus_minus_inf"  # infinities are invalid like NaN
    values = rng.integers(0, 256, (3, 20, 25)).astype(np.float32)
    values[0, 2:5, 3:9] = np.inf
    values[2, 10:12, :] = -np.inf
    valid = np.isfinite(values).all(axis=0)
    mask("inf.tif", values, Expected("mask", labels=labels_of(values, valid=valid)))

    # --- internal structure ---
    kind = "multi_page"
    page1 = (np.arange(48 * 64) % 256).astype(np.uint8).reshape(48, 64)
    path = write_tiff(folder / "multi_page.tif",
                      [Page(64, 48, [page1.tobytes()]), Page(32, 40, [bytes(32 * 40)])])
    cases[kind] = Case(path, fail("discover", "2 images", "GTIFF_DIR:2:"))

    kind = "broken_overview"  # the full resolution is intact; only its overview is garbage
    image = rng.integers(0, 256, (128, 128), dtype=np.uint8)
    path = write_tiff(folder / "broken_overview.tif",
                      [Page(128, 128, [image.tobytes()]),
                       Page(64, 64, [b"not deflate data" * 20], compression=8, subfile=1)])
    cases[kind] = Case(path, Expected("mask", labels=labels_of(image[None]), crs=None, area_m2=None,
                                      warning=("overviews cannot be read", "gdaladdo")))

    # --- georeferencing ---
    kind = "rotated"
    t = Affine.translation(500000, 4000000) * Affine.rotation(30) * Affine.scale(0.5, -0.5)
    mask("rotated.tif", rgb(40, 50), transform=t)

    kind = "sheared"
    mask("sheared.tif", rgb(40, 50), transform=Affine(1.0, 0.4, 500000, 0.0, -1.0, 4000000))

    kind = "south_up"
    mask("south_up.tif", rgb(40, 50), transform=Affine(2.0, 0, 500000, 0, 2.0, 3999000))

    kind = "engineering_crs"  # a site grid: no ground area we could honestly claim
    values = rgb(30, 40)
    mask("site_grid.tif", values, Expected("mask", labels=labels_of(values), area_m2=None,
                                           warning=("Site grid", "null")),
         crs=ENGINEERING_WKT, transform=from_origin(100, 200, 0.1, 0.1))

    kind = "unknown_epsg"  # ProjectedCSTypeGeoKey 9999: GDAL makes it an unnamed local CRS
    grey = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    path = write_tiff(folder / "unknown_epsg.tif",
                      [Page(64, 48, [grey.tobytes()], extra=_geokeys([(1024, 1), (3072, 9999)]))])
    cases[kind] = Case(path, Expected("mask", labels=labels_of(grey[None]), area_m2=None, warning=("null",)))

    kind = "geographic_off_the_earth"  # EPSG:4326 with UTM numbers in the transform
    values = rgb(30, 40)
    mask("off_the_earth.tif", values, Expected("mask", labels=labels_of(values), area_m2=None,
                                               warning=("latitude", "null")),
         crs="EPSG:4326", transform=from_origin(500000, 4000000, 1.0, 1.0))

    kind = "antimeridian"
    t = from_origin(179.9995, -16.5, 1e-5, 1e-5)  # 100 px of 1e-5° from 179.9995 to 180.0005
    values = rgb(60, 100)
    mask("antimeridian.tif", values, Expected("mask", labels=labels_of(values),
                                              area_m2=rectangle_area_m2(t, 100, 60), rel=1e-6),
         crs="EPSG:4326", transform=t)

    kind = "north_pole"
    t = from_origin(-180, 90, 9.0, 0.05)  # the cap north of 88.5°, in 40 x 30 pixels
    values = rgb(30, 40)
    mask("north_pole.tif", values, Expected("mask", labels=labels_of(values),
                                            area_m2=polar_cap_area_m2(88.5), rel=1e-5),
         crs="EPSG:4326", transform=t)

    # --- names ---
    kind = "space_in_name"
    mask("survey 2026 tile.tif", rgb(20, 30))

    kind = "unicode_name"
    mask("ünïcødé_東京.tif", rgb(20, 30))

    kind = "leading_dash"
    mask("-n.tif", rgb(20, 30))

    kind = "dots_in_name"
    mask("a..b.tif", rgb(20, 30))

    kind = "case_upper"
    mask("Case.tif", rgb(22, 31))

    kind = "case_lower"
    mask("case.tif", rgb(23, 29))

    kind = "newline_in_name"
    path = write_raster(folder / "bad\nname.tif", rgb(10, 10), photometric="RGB")
    cases[kind] = Case(path, fail("discover", "rename the file"))

    kind = "escape_in_name"  # an ANSI colour code in a file name
    path = write_raster(folder / "\x1b[31mred.tif", rgb(10, 10), photometric="RGB")
    cases[kind] = Case(path, fail("discover", "rename the file"))

    kind = "symlink_loop"
    os.symlink("loop.tif", folder / "loop.tif")
    cases[kind] = Case(str(folder / "loop.tif"), fail("discover", "symbolic link"))

    kind = "dangling_symlink"
    os.symlink("gone.tif", folder / "dangling.tif")
    cases[kind] = Case(str(folder / "dangling.tif"), fail("discover", "not found"))
    return cases
