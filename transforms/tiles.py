"""DiscoverTiles: open each input file's header only and describe the tile as a TileSpec.

A TileSpec carries everything later stages need (size, CRS, transform, which source band feeds
which model band, how validity is decided, how raw values are scaled), so no later stage has to
reopen a header to decide anything. Files that cannot be used become failure records here.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import apache_beam as beam
import numpy as np

from common import fileio
from common.areas import AreaError, PixelAreaModel, pixel_area_model
from common.safepath import UnsafePathError, check_relative
from model.card import ModelCard
from transforms import radiometry
from transforms.failures import FAILED, StageOutput, keyed_failure

log = logging.getLogger(__name__)

#: Largest tile edge we accept: GeoTIFF BigTIFF can go further, but beyond this a typo in a
#: header (or a hostile file) would make us plan millions of blocks.
MAX_TILE_EDGE = 1_000_000
#: Default of ``--max_tile_pixels``: about 70 700² pixels (5 GPix), beyond any orthophoto tile we
#: have met; a header claiming more (200 000², or a decompression bomb) fails at once instead of
#: being segmented for hours.
MAX_TILE_PIXELS = 5_000_000_000


@dataclass(frozen=True)
class InputFile:
    """A listed input: its URI, its tile id (unique in the run) and its fingerprint (from the
    listing entry, so deciding what is up to date opens no file)."""

    uri: str
    tile_id: str
    fingerprint: str


#: Largest internal block (strip or tile) GDAL may have to decode for one window read. A strip
#: file with one compressed strip for the whole image makes every block read decode the whole
#: image again (measured: 5.5 GB peak RSS on a 32768² single-strip DEFLATE file); such a tile fails
#: at once with how to rewrite it. Ordinary strips (a few rows) and tiles are far below this.
#: (An uncompressed single strip is fine: GDAL reads the rows a window needs directly.)
MAX_DECODED_BLOCK_BYTES = 64 * 2**20


def decoded_block_bytes(src: Any) -> int:
    """Bytes GDAL decodes for one internal block of ``src`` (all bands when pixel-interleaved).

    GDAL shows a compressed file of one strip as blocks of one row each, but it can only decode
    that strip from its start: a window further down decodes every row above it again, so a
    block read costs the whole strip (a 16384² single-strip DEFLATE tile ran for over ten minutes
    without finishing a tenth). Such a file is known by its second block having no offset of its own.
    """
    bh, bw = (int(v) for v in src.block_shapes[0])
    if (src.driver == "GTiff" and src.compression is not None and bh < src.height
            and src.get_tag_item("BLOCK_OFFSET_0_1", "TIFF", bidx=1) is None):
        bh = src.height  # one real strip for the whole image
    per_pixel = np.dtype(src.dtypes[0]).itemsize
    if (src.interleaving is None or src.interleaving.name.upper() == "PIXEL") and src.count > 1:
        per_pixel *= src.count
    return bh * bw * per_pixel


class TileError(ValueError):
    """A tile cannot be segmented as it is; the message names the file and what to do."""


@dataclass(frozen=True)
class TileSpec:
    """One input raster, as read from its header.

    ``bands`` are 1-based source band indexes, one per model input band, in the model's order
    (a band may repeat when a grey image feeds an RGB model). ``scale_divisor`` maps raw values to
    [0, 1] before the card's mean/std. ``transform`` is the affine (a, b, c, d, e, f).
    ``crs`` is the CRS as the statistics name it (``EPSG:32640``, or WKT without an authority);
    ``pixel_areas`` gives the ground area of its pixels (common/areas.py). Both are worked out
    here once, from the header, and carried to every later stage.
    """

    uri: str
    tile_id: str
    width: int
    height: int
    dtype: str
    crs_wkt: str | None
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    bands: tuple[int, ...]
    nodata: float | None
    mask_kind: str  # "none" (all valid), "nodata" (all read bands equal nodata), "gdal" (alpha/internal mask)
    scale_divisor: float
    fingerprint: str
    pixel_areas: PixelAreaModel
    #: With ``scale_divisor``: ``(raw - scale_offset) / scale_divisor`` is in [0, 1]; ``radiometry``
    #: says how that mapping was chosen (transforms/radiometry.py).
    scale_offset: float = 0.0
    radiometry: str = ""

    @property
    def pixels(self) -> int:
        return self.width * self.height


def tile_id_for(uri: str, root: str, keep_extension: bool = False) -> str:
    """Tile id = path relative to the input root without extension, so a/x.tif != b/x.tif.

    ``keep_extension`` keeps it (``a/x.png``) for files whose stems collide (see tile_ids).
    """
    root = root.rstrip("/")
    rel = uri
    if root and root != "." and uri.startswith(root + "/"):
        rel = uri[len(root) + 1:]
    elif "://" in uri:
        rel = uri.split("://", 1)[1]
    rel = rel.lstrip("/").replace(os.sep, "/")
    if keep_extension:
        return rel
    stem, _ = posixpath.splitext(rel)
    return stem


def tile_ids(uris: list[str], root: str) -> dict[str, str]:
    """Tile id of each uri, unique: where two files share a stem (a/x.tif, a/x.png) both keep
    their extension, so no two inputs ever write the same mask.

    Keeping extensions can make new collisions (x.tif and x.png become x.tif and x.png, and
    x.png.tif's stem is x.png too), so this repeats until no two ids are equal: each round gives
    the colliding files their whole relative path, and whole relative paths of distinct files
    never collide, so it ends.
    """
    ids = {uri: tile_id_for(uri, root) for uri in uris}
    while True:
        groups: dict[str, list[str]] = {}
        for uri, tile_id in ids.items():
            groups.setdefault(tile_id, []).append(uri)
        colliding = [uri for group in groups.values() if len(group) > 1 for uri in group
                     if ids[uri] != tile_id_for(uri, root, keep_extension=True)]
        if not colliding:
            return ids
        for uri in colliding:
            ids[uri] = tile_id_for(uri, root, keep_extension=True)


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``--bands 3,2,1`` → (3, 2, 1): 1-based source bands in the model's band order."""
    if not text:
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise ValueError(f"--bands {text!r}: give 1-based band numbers separated by commas, e.g. 3,2,1") from None
    if any(b < 1 for b in bands):
        raise ValueError(f"--bands {text!r}: band numbers start at 1")
    return bands


def match_bands(
    colorinterp: list[str], wanted: tuple[str, ...], uri: str, override: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """Pick, for each model band in ``wanted``, the 1-based source band that feeds it.

    Bands are matched by colour interpretation (so a B,G,R,A file is reordered); a single grey
    band feeding a multi-band model is replicated (with a warning); a file whose non-alpha bands
    are exactly as many as the model's but carry no usable colour names is taken in order (with a
    warning). Anything else raises TileError saying to pass ``--bands``.
    """
    count = len(colorinterp)
    if override is not None:
        if len(override) != len(wanted):
            raise TileError(f"{uri}: --bands gives {len(override)} bands but the model takes {len(wanted)} ({', '.join(wanted)})")
        if max(override) > count:
            raise TileError(f"{uri}: --bands names band {max(override)} but the file has {count} bands")
        return override
    data_bands = [i + 1 for i, ci in enumerate(colorinterp) if ci != "alpha"]
    by_name = {ci: i + 1 for i, ci in enumerate(colorinterp) if ci not in ("undefined", "alpha")}
    if all(w in by_name for w in wanted):
        return tuple(by_name[w] for w in wanted)
    if len(data_bands) == 1 and len(wanted) > 1:
        log.warning("%s: single-band image feeds a %d-band model; replicating band %d", uri, len(wanted), data_bands[0])
        return tuple(data_bands[0] for _ in wanted)
    if len(data_bands) == len(wanted) and len(wanted) == 1:
        return (data_bands[0],)
    if len(data_bands) == len(wanted) and not (set(by_name) & {"red", "green", "blue", "gray"}):
        log.warning("%s: bands carry no colour names; taking bands %s as %s", uri, data_bands, ",".join(wanted))
        return tuple(data_bands)
    raise TileError(
        f"{uri}: cannot match its {count} band(s) ({', '.join(colorinterp)}) to the model's input bands "
        f"({', '.join(wanted)}); pass --bands with the source band numbers in model order (e.g. --bands 3,2,1)"
    )


def fingerprint_of(uri: str, meta: dict[str, Any]) -> str:
    """Changes whenever the file does: size plus modification time / object generation, from a
    listing entry (fileio.match_detail) or fileio.info."""
    parts = [uri, str(meta.get("size")),
             str(meta.get("mtime") or meta.get("updated") or meta.get("generation") or meta.get("md5Hash") or "")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _fingerprint(uri: str) -> str:
    try:
        meta = fileio.info(uri)
    except Exception:  # noqa: BLE001 - a fingerprint is best effort; the open below reports errors
        meta = {}
    return fingerprint_of(uri, meta)


#: The value-range check samples up to this many windows of this edge, spread over the tile, or
#: the smallest internal overview when it has at most ``_SAMPLE_OVERVIEW_PIXELS``.
_SAMPLE_WINDOWS = ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75))
_SAMPLE_EDGE = 64
_SAMPLE_OVERVIEW_PIXELS = 512 * 512
#: Values beyond the card's range by more than this fraction of it are "outside" it; data whose
#: largest sampled value is under ``_UNDER_RANGE`` of it uses so little of it that the model sees
#: a nearly black image (12-bit data in uint16 without NBITS: 4095 / 65535 < 1/16).
_RANGE_SLACK = 0.01
_UNDER_RANGE = 1.0 / 16.0


def _shown(uri: str) -> str:
    """``uri`` for a log line: control characters (newlines, escape sequences) escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in uri)


def gdal_reason(exc: BaseException) -> str:
    """The most specific message in a rasterio exception's chain (rasterio's own top message is
    often "See previous exception for details"), on one line."""
    messages = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split())
        if text and "previous exception" not in text:
            messages.append(text)
        current = current.__cause__ or current.__context__
    return messages[-1] if messages else type(exc).__name__


def sample_values(src: Any, bands: tuple[int, ...], nodata: float | None, uri: str) -> np.ndarray | None:
    """A cheap sample of the tile's values in ``bands`` (finite, not nodata, float64, flat).

    The smallest internal overview when it is small (one read), else up to five 64 x 64 windows
    spread over the tile; never a whole read. None when nothing could be read: the read stage
    then reports the damage. An overview that cannot be read while the full resolution can is
    logged (masks are made from the full resolution and are unaffected).
    """
    unique = sorted(set(bands))
    height, width = src.height, src.width
    parts: list[np.ndarray] = []
    factors = src.overviews(unique[0]) if height * width > _SAMPLE_EDGE * _SAMPLE_EDGE else []
    broken_overview = None
    if factors:
        f = max(factors)
        shape = (len(unique), math.ceil(height / f), math.ceil(width / f))
        if shape[1] * shape[2] <= _SAMPLE_OVERVIEW_PIXELS:
            try:
                parts.append(src.read(unique, out_shape=shape))
            except Exception as exc:  # noqa: BLE001 - a broken overview only costs the shortcut
                broken_overview = gdal_reason(exc)
    if not parts:
        h, w = min(_SAMPLE_EDGE, height), min(_SAMPLE_EDGE, width)
        corners = {(min(max(0, round(fy * height) - h // 2), height - h), min(max(0, round(fx * width) - w // 2), width - w))
                   for fy, fx in _SAMPLE_WINDOWS}
        from rasterio.windows import Window as RioWindow

        try:
            parts = [src.read(unique, window=RioWindow(col, row, w, h)) for row, col in sorted(corners)]
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.debug("%s: no value sample (%s)", _shown(uri), gdal_reason(exc))
            return None
        if broken_overview is not None:
            log.warning("%s: its internal overviews cannot be read (%s); masks are made from the full resolution, "
                        "which reads fine, but other tools that use the overviews will fail: rebuild them "
                        "(gdaladdo -clean, then gdaladdo)", _shown(uri), broken_overview)
    values = np.concatenate([p.ravel() for p in parts]).astype(np.float64)
    keep = np.isfinite(values)
    if nodata is not None and not math.isnan(nodata):
        keep &= values != nodata
    return values[keep]


def _number(v: float) -> str:
    """A sampled value as a person writes it: whole numbers in full, others to 6 digits."""
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.6g}"


def range_warning(uri: str, values: np.ndarray | None, dtype: str, divisor: float, card: ModelCard) -> str | None:
    """A warning (file, range found, fix) when sampled values lie far outside the 0..divisor the
    card scales ``dtype`` to [0, 1] from, or use so little of it (wider than 8-bit types only)
    that the model sees a nearly uniform image; None when they fit, or nothing was sampled."""
    if values is None or not values.size:
        return None
    lo, hi = float(values.min()), float(values.max())
    found = f"{dtype} values in a sample of the tile range from {_number(lo)} to {_number(hi)}"
    expects = f"0 to {divisor:g} that model {card.model_id} expects ({dtype} is divided by {divisor:g})"
    if lo < -_RANGE_SLACK * divisor or hi > (1 + _RANGE_SLACK) * divisor:
        to_type = {255.0: "-ot Byte ", 65535.0: "-ot UInt16 "}.get(divisor, "")
        return (f"{_shown(uri)}: {found}, outside the {expects}, so the mask will likely be one or two classes; "
                f"rescale the data to 0-{divisor:g} (e.g. gdal_translate {to_type}-scale {_number(lo)} {_number(hi)} "
                f"0 {divisor:g}), "
                "pick other bands with --bands, or use a model trained for such data")
    if np.dtype(dtype).itemsize > 1 and 0 < hi < _UNDER_RANGE * divisor:
        hint = ""
        if np.issubdtype(np.dtype(dtype), np.unsignedinteger) and lo >= 0:
            bits = max(int(hi).bit_length(), 1)
            hint = (f"if it is {bits}-bit data, declare it (gdal_translate -co NBITS={bits}) so it is divided by "
                    f"{2**bits - 1}; else ")
        return (f"{_shown(uri)}: {found}, only {hi / divisor:.1%} of the {expects}, so the mask will likely be one "
                f"class; {hint}rescale the data (gdal_translate -scale) or use a model trained for such data")
    return None


def describe_tile(uri: str, root: str, card: ModelCard, bands_override: tuple[int, ...] | None = None,
                  tile_id: str | None = None, max_pixels: int = MAX_TILE_PIXELS,
                  fingerprint: str | None = None, radiometry_mode: str = "card", gsd_m: float | None = None) -> TileSpec:
    """Open ``uri``'s header and build its TileSpec; raises TileError with a fix on bad input.
    ``fingerprint``: the one the listing made (fingerprint_of), worked out here when not given.

    Besides the header, a cheap sample of the values (see ``sample_values``) is checked against
    the card's range: data far outside it (or using a sliver of it) still gives a mask, with one
    warning naming the file, the range found and the fix. A CRS in which ground areas cannot be
    computed (engineering, unknown codes, a geographic raster off the earth) gives a mask with
    null areas and a warning, not a failure.
    """
    from rasterio.errors import RasterioIOError

    tile_id = tile_id or tile_id_for(uri, root)
    try:
        check_relative(tile_id, "tile id")
    except UnsafePathError as exc:
        raise TileError(f"{uri}: {exc}; rename the file") from None

    try:
        size = fileio.size(uri)
    except FileNotFoundError:
        raise TileError(f"{uri}: file not found; check the path (a symbolic link whose target is gone looks like this)") from None
    except OSError as exc:
        raise TileError(f"{uri}: cannot open ({exc.strerror or exc}); a symbolic link that loops or a file this "
                        "process may not read looks like this - fix the link or the permissions") from None
    if size == 0:
        raise TileError(f"{uri}: file is empty (0 bytes); re-copy or re-export it")
    try:
        with fileio.open_raster(uri) as src:
            if src.count == 0:
                raise TileError(f"{uri}: has no raster bands ({src.driver}); export the image itself, e.g. with gdal_translate")
            pages = [name for name in src.subdatasets if name.startswith("GTIFF_DIR:")]
            if len(pages) > 1:
                raise TileError(
                    f"{uri}: holds {len(pages)} images (pages) and tileseg segments one image per file; extract each "
                    f"page (e.g. gdal_translate GTIFF_DIR:2:{uri} page2.tif) and segment those")
            colorinterp = [ci.name for ci in src.colorinterp]
            width, height = src.width, src.height
            dtype = src.dtypes[0]
            crs = src.crs if src.crs else None
            affine = src.transform
            nodata = src.nodata
            flags = src.mask_flag_enums
            nbits_tag = src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
            dtypes = set(src.dtypes)
            if len(dtypes) > 1:
                raise TileError(f"{uri}: bands have different data types ({', '.join(sorted(dtypes))}); convert to one type")
            if np.dtype(dtype).kind == "c":
                raise TileError(f"{uri}: complex data ({dtype}) is not imagery; convert to real values")
            if width > MAX_TILE_EDGE or height > MAX_TILE_EDGE:
                raise TileError(f"{uri}: {width}x{height} px exceeds the {MAX_TILE_EDGE} px edge limit; split it first")
            if width * height > max_pixels:
                raise TileError(f"{uri}: {width}x{height} px ({width * height / 1e6:,.0f} MPix) exceeds the limit of "
                                f"{max_pixels / 1e6:,.0f} MPix per tile; split it first, or raise --max_tile_pixels")
            decoded = decoded_block_bytes(src)
            if decoded > MAX_DECODED_BLOCK_BYTES:
                raise TileError(
                    f"{uri}: stores its pixels in compressed blocks of {decoded / 2**20:,.0f} MiB each once decoded "
                    "(e.g. one strip for the whole image), so every window read would decode a whole block again; "
                    f"rewrite it tiled, e.g. gdal_translate -co TILED=YES -co COMPRESS=DEFLATE {uri} tiled.tif")
            bands = match_bands(colorinterp, card.input_bands, uri, bands_override)
            values = sample_values(src, bands, nodata, uri)
            mapping = radiometry.choose(dtype, int(nbits_tag) if nbits_tag else None, values, card, radiometry_mode)
            if mapping.fitted:
                warning = None  # mapped onto what the model knows, from the values themselves
                log.info("%s: %s", _shown(uri), mapping.how)
            else:
                warning = range_warning(uri, values, dtype, mapping.divisor, card)
    except TileError:
        raise
    except RasterioIOError as exc:
        raise TileError(f"{uri}: not a readable raster ({gdal_reason(exc)}); "
                        "check that the file is complete and a format GDAL reads") from None
    except Exception as exc:  # noqa: BLE001 - GDAL and PROJ raise many types for damaged headers
        raise TileError(f"{uri}: cannot read its header ({type(exc).__name__}: {gdal_reason(exc)}); "
                        "check that the file is complete and a format GDAL reads") from None
    if warning:
        log.warning("%s", warning)
    from rasterio.enums import MaskFlags

    auth = crs.to_authority() if crs is not None else None

    if all(MaskFlags.all_valid in f for f in flags):
        mask_kind = "none"
    elif nodata is not None and all(f == [MaskFlags.nodata] for f in flags):
        mask_kind = "nodata"  # cheaper: decided from the bands we read anyway
    else:
        mask_kind = "gdal"
    return TileSpec(
        uri=uri,
        tile_id=tile_id,
        width=width,
        height=height,
        dtype=dtype,
        crs_wkt=crs.to_wkt() if crs is not None else None,
        crs=(f"{auth[0]}:{auth[1]}" if auth else crs.to_wkt()) if crs is not None else None,
        transform=(affine.a, affine.b, affine.c, affine.d, affine.e, affine.f),
        bands=bands,
        nodata=None if nodata is None else float(nodata),
        mask_kind=mask_kind,
        scale_divisor=mapping.divisor,
        scale_offset=mapping.offset,
        radiometry=mapping.how,
        fingerprint=fingerprint or _fingerprint(uri),
        pixel_areas=_pixel_areas(uri, crs, affine, height, width, gsd_m),
    )


def _pixel_areas(uri: str, crs: Any, affine: Any, height: int, width: int, gsd_m: float | None = None) -> PixelAreaModel:
    """The tile's pixel-area model; where ground areas cannot be computed honestly (an engineering
    or unknown CRS, a degenerate transform, a geographic raster off the earth) the mask is still
    made, with null areas and one warning saying why and how to get areas."""
    try:
        return pixel_area_model(crs, affine, height, width, gsd_m)
    except AreaError as exc:
        log.warning("%s: %s; the mask is written with the file's CRS and transform but its areas (m²) are null. "
                    "For areas, give the file a projected or geographic CRS and a matching transform "
                    "(e.g. gdal_edit.py -a_srs EPSG:32633 FILE)", _shown(uri), exc)
        coeffs = cast("tuple[float, float, float, float, float, float]", tuple(float(v) for v in tuple(affine)[:6]))
        return PixelAreaModel("none", None, coeffs, None, int(height), int(width))


class DescribeTileFn(beam.DoFn):
    """InputFile → TileSpec, or a keyed failure record on the ``failed`` output."""

    def __init__(self, root: str, card: ModelCard, bands: tuple[int, ...] | None,
                 max_pixels: int = MAX_TILE_PIXELS, radiometry_mode: str = "card", gsd_m: float | None = None) -> None:
        self._root = root
        self._card = card
        self._bands = bands
        self._max_pixels = max_pixels
        self._radiometry = radiometry_mode
        self._gsd = gsd_m

    def process(self, element: InputFile) -> Iterator[object]:
        try:
            yield describe_tile(element.uri, self._root, self._card, self._bands, element.tile_id, self._max_pixels,
                                element.fingerprint, self._radiometry, self._gsd)
        except Exception as exc:  # noqa: BLE001 - any bad file becomes a failure row, never a crash
            yield keyed_failure(element.uri, element.tile_id, "discover", exc)


class DiscoverTiles(beam.PTransform):
    """InputFiles → TileSpecs (main) and the files that cannot be used (failed)."""

    def __init__(self, root: str, card: ModelCard, bands: tuple[int, ...] | None,
                 max_pixels: int = MAX_TILE_PIXELS, radiometry_mode: str = "card", gsd_m: float | None = None) -> None:
        super().__init__()
        self._fn = DescribeTileFn(root, card, bands, max_pixels, radiometry_mode, gsd_m)

    def expand(self, uris: beam.PCollection) -> StageOutput:
        out = uris | "DescribeTiles" >> beam.ParDo(self._fn).with_outputs(FAILED, main="main")
        return StageOutput(out.main, out[FAILED])
