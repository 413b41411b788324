"""DiscoverTiles: open each input file's header only and describe the tile as a TileSpec.

A TileSpec carries everything later stages need (size, CRS, transform, which source band feeds
which model band, how validity is decided, how raw values are scaled), so no later stage has to
reopen a header to decide anything. Files that cannot be used become failure records here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from common import fileio
from common.areas import PixelAreaModel, pixel_area_model
from common.safepath import UnsafePathError, check_relative
from model.card import ModelCard
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


def scale_divisor(dtype: str, nbits: int | None, card: ModelCard) -> float:
    """Divisor that maps raw values to [0, 1]: the card's per-dtype value, or 2**NBITS - 1 when
    the file declares fewer significant bits (12-bit data in uint16 is common in drone cameras)."""
    if nbits and np.issubdtype(np.dtype(dtype), np.integer) and nbits < np.iinfo(np.dtype(dtype)).bits:
        return float(2**nbits - 1)
    return card.normalisation.divisor_for(dtype)


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


def describe_tile(uri: str, root: str, card: ModelCard, bands_override: tuple[int, ...] | None = None,
                  tile_id: str | None = None, max_pixels: int = MAX_TILE_PIXELS,
                  fingerprint: str | None = None) -> TileSpec:
    """Open ``uri``'s header and build its TileSpec; raises TileError with a fix on bad input.
    ``fingerprint``: the one the listing made (fingerprint_of), worked out here when not given."""
    from rasterio.errors import RasterioIOError

    tile_id = tile_id or tile_id_for(uri, root)
    try:
        check_relative(tile_id, "tile id")
    except UnsafePathError as exc:
        raise TileError(f"{uri}: {exc}; rename the file") from None

    try:
        size = fileio.size(uri)
    except FileNotFoundError:
        raise TileError(f"{uri}: file not found") from None
    if size == 0:
        raise TileError(f"{uri}: file is empty (0 bytes); re-copy or re-export it")
    try:
        with fileio.open_raster(uri) as src:
            colorinterp = [ci.name for ci in src.colorinterp]
            width, height = src.width, src.height
            dtype = src.dtypes[0]
            crs = src.crs if src.crs else None
            affine = src.transform
            nodata = src.nodata
            flags = src.mask_flag_enums
            nbits_tag = src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS")
            dtypes = set(src.dtypes)
    except RasterioIOError as exc:
        raise TileError(f"{uri}: not a readable raster ({exc}); "
                        "check that the file is complete and a format GDAL reads") from None
    if len(dtypes) > 1:
        raise TileError(f"{uri}: bands have different data types {sorted(dtypes)}; convert to one type")
    if np.dtype(dtype).kind == "c":
        raise TileError(f"{uri}: complex data ({dtype}) is not imagery; convert to real values")
    if width > MAX_TILE_EDGE or height > MAX_TILE_EDGE:
        raise TileError(f"{uri}: {width}x{height} px exceeds the {MAX_TILE_EDGE} px edge limit; split it first")
    if width * height > max_pixels:
        raise TileError(f"{uri}: {width}x{height} px ({width * height / 1e6:,.0f} MPix) exceeds the limit of "
                        f"{max_pixels / 1e6:,.0f} MPix per tile; split it first, or raise --max_tile_pixels")
    bands = match_bands(colorinterp, card.input_bands, uri, bands_override)
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
        scale_divisor=scale_divisor(dtype, int(nbits_tag) if nbits_tag else None, card),
        fingerprint=fingerprint or _fingerprint(uri),
        pixel_areas=pixel_area_model(crs, affine, height, width),
    )


class DescribeTileFn(beam.DoFn):
    """InputFile → TileSpec, or a keyed failure record on the ``failed`` output."""

    def __init__(self, root: str, card: ModelCard, bands: tuple[int, ...] | None,
                 max_pixels: int = MAX_TILE_PIXELS) -> None:
        self._root = root
        self._card = card
        self._bands = bands
        self._max_pixels = max_pixels

    def process(self, element: InputFile) -> Iterator[object]:
        try:
            yield describe_tile(element.uri, self._root, self._card, self._bands, element.tile_id, self._max_pixels,
                                element.fingerprint)
        except Exception as exc:  # noqa: BLE001 - any bad file becomes a failure row, never a crash
            yield keyed_failure(element.uri, element.tile_id, "discover", exc)


class DiscoverTiles(beam.PTransform):
    """InputFiles → TileSpecs (main) and the files that cannot be used (failed)."""

    def __init__(self, root: str, card: ModelCard, bands: tuple[int, ...] | None,
                 max_pixels: int = MAX_TILE_PIXELS) -> None:
        super().__init__()
        self._fn = DescribeTileFn(root, card, bands, max_pixels)

    def expand(self, uris: beam.PCollection) -> StageOutput:
        out = uris | "DescribeTiles" >> beam.ParDo(self._fn).with_outputs(FAILED, main="main")
        return StageOutput(out.main, out[FAILED])
