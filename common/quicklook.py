"""Quicklooks: small pictures (PNG of a mask, JPEG of an input) of a raster, read from its overviews.

A report of 10^4 tiles must not read 10^4 whole rasters: every read here asks GDAL for a picture
of at most ``max_side`` pixels a side, which GDAL serves from the smallest overview that is large
enough (masks are COGs with overviews, so a mask's quicklook reads a few kB). An input without
overviews would be decoded whole for that; above ``MAX_DECODED_PIXELS`` it gets no quicklook,
and the caller says why. The pipeline avoids that read altogether: it makes each input's picture
from the blocks it reads for the model (``thumb_part`` per block, ``thumb_jpeg`` per tile).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common import fileio

QUICKLOOK_SIDE = 200  # longest side of a quicklook, in pixels
PNG_LEVEL = 3  # zlib level of mask pictures: flat colours compress well at once
#: An input without overviews larger than this gets no quicklook (it would be decoded whole).
MAX_DECODED_PIXELS = 64 * 1024 * 1024


class QuicklookError(ValueError):
    """No quicklook can be made cheaply (e.g. a huge input without overviews); the message says why."""


@dataclass(frozen=True)
class Quicklook:
    """A picture of a raster: its file's bytes (PNG or JPEG), its size, and the raster's size and georeferencing
    (``transform``: the raster's affine as 6 numbers, ``crs_wkt``: None without a CRS), so that
    vectors in the raster's CRS can be drawn over it."""

    data: bytes
    width: int
    height: int
    raster_width: int
    raster_height: int
    transform: tuple[float, ...]
    crs_wkt: str | None


def _shape(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = max(width, height) / max_side
    if scale <= 1:
        return width, height
    return max(1, round(width / scale)), max(1, round(height / scale))


def _georeferencing(src: Any) -> tuple[int, int, tuple[float, ...], str | None]:
    """The Quicklook fields of an open raster: its size, affine and CRS (WKT, None without one)."""
    return src.width, src.height, tuple(src.transform)[:6], src.crs.to_wkt() if src.crs else None


def mask_quicklook(uri: str, colors: dict[int, tuple[int, int, int]], nodata: int | None,
                   max_side: int = QUICKLOOK_SIDE) -> Quicklook:
    """A class mask (uint8 labels) as a palette PNG coloured with ``colors``; nodata and unknown
    labels transparent. Nearest-neighbour reads from the overviews, so every pixel is a real
    label, never a blend; a palette PNG is a byte per pixel, quick to compress and small."""
    from PIL import Image
    from rasterio.enums import Resampling

    with fileio.open_raster(uri) as src:
        w, h = _shape(src.width, src.height, max_side)
        labels = src.read(1, out_shape=(h, w), resampling=Resampling.nearest)
        ql = _georeferencing(src)
    palette = np.zeros((256, 3), np.uint8)
    alpha = np.zeros(256, np.uint8)
    for value, rgb in colors.items():
        if 0 <= value < 256 and value != nodata:
            palette[value], alpha[value] = rgb, 255
    image = Image.fromarray(labels, "P")
    image.putpalette(palette.ravel().tolist())
    buf = io.BytesIO()
    image.save(buf, format="PNG", transparency=alpha.tobytes(), compress_level=PNG_LEVEL)
    return Quicklook(buf.getvalue(), w, h, *ql)


def input_quicklook(uri: str, bands: Sequence[int] | None = None, max_side: int = QUICKLOOK_SIDE) -> Quicklook:
    """An input raster as an 8-bit RGB (or grey) JPEG, each band stretched from its 2nd to its
    98th percentile over the valid pixels: any bit depth (11-bit drone data, float reflectance)
    shows, and it looks the way the model saw it only roughly; it is a picture, not the input.
    Invalid pixels (nodata, alpha) are mid-grey. JPEG: a photo as PNG took 50 ms to compress."""
    from rasterio.enums import Resampling

    with fileio.open_raster(uri) as src:
        chosen = list(bands) if bands else ([1, 2, 3] if src.count >= 3 else [1])
        overviews = src.overviews(chosen[0])
        if not overviews and src.width * src.height > MAX_DECODED_PIXELS and max(src.width, src.height) > max_side:
            raise QuicklookError(f"{uri} is {src.width}x{src.height} px without overviews; add them (gdaladdo) "
                                 "for a quicklook")
        w, h = _shape(src.width, src.height, max_side)
        data = src.read(chosen, out_shape=(len(chosen), h, w), resampling=Resampling.average)
        valid = src.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0
        ql = _georeferencing(src)
    return Quicklook(stretched_jpeg(data.astype(np.float64), valid), w, h, *ql)


def stretched_jpeg(data: np.ndarray, valid: np.ndarray) -> bytes:
    """(C, h, w) band values → an RGB JPEG (one band: grey), each band stretched from its 2nd to
    its 98th percentile over ``valid`` finite pixels; the rest mid-grey."""
    from PIL import Image

    h, w = valid.shape
    rgb = np.full((h, w, 3), 128, np.uint8)
    for i in range(3):
        band = data[min(i, len(data) - 1)]
        finite = valid & np.isfinite(band)
        if finite.any():
            lo, hi = np.percentile(band[finite], (2, 98))
            span = hi - lo if hi > lo else 1.0
            rgb[..., i] = np.where(finite, np.clip(np.nan_to_num((band - lo) / span) * 255.0, 0, 255), 128)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


# An input's quicklook from the blocks the pipeline reads anyway: each block adds the box sums of
# its core over the quicklook's cells, and the tile's writer turns them into the picture, so the
# report need not read every input a second time (a whole decode for a tile without overviews:
# ~2.8 s at 8192², and a second download from gs://). Cell edges are integers (cell i of n along
# an axis of L pixels is [floor(i L / n), floor((i+1) L / n))) and samples sit on one grid of the
# raster, so cores that split a cell add up to exactly its mean, whatever the block plan.


@dataclass(frozen=True)
class ThumbPart:
    """A window's share of a raster's quicklook: ``sums`` (nr, nc, C) float64 of its valid pixels'
    values and ``counts`` (nr, nc) int64 of them, over the cells from (``row``, ``col``)."""

    row: int
    col: int
    sums: np.ndarray
    counts: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"thumb_at": np.array([self.row, self.col], np.int64), "thumb_sums": self.sums,
                "thumb_counts": self.counts}

    @classmethod
    def from_arrays(cls, arrays: Any) -> ThumbPart | None:
        """Read back ``to_arrays`` (an npz or a dict); None when the arrays are not there."""
        if "thumb_at" not in arrays:
            return None
        row, col = (int(v) for v in arrays["thumb_at"])
        return cls(row, col, np.asarray(arrays["thumb_sums"], np.float64), np.asarray(arrays["thumb_counts"], np.int64))


def sample_step(raster_height: int, raster_width: int, max_side: int = QUICKLOOK_SIDE) -> int:
    """Every how many rows and columns a quicklook cell is sampled: about 8 x 8 samples per cell
    (a box mean of a few thousand pixels costs 20x more for the same picture); every pixel when
    cells are under 16 pixels a side."""
    w, h = _shape(raster_width, raster_height, max_side)
    return max(1, min(raster_height // h, raster_width // w) // 8)


def _cells(start: int, stop: int, length: int, cells: int, step: int) -> tuple[int, slice, np.ndarray]:
    """Along one axis of a window [start, stop): the first cell its samples fall in (samples are the
    raster's pixels at multiples of ``step``), the window's samples as a slice, and where each
    touched cell's samples begin among them."""
    first = -start % step
    samples = np.arange(start + first, stop, step, dtype=np.int64)
    edges = (np.arange(cells + 1, dtype=np.int64) * length) // cells
    cell = np.searchsorted(edges, samples, "right") - 1
    starts = np.flatnonzero(np.diff(cell, prepend=-1))
    return (int(cell[0]) if cell.size else 0), slice(first, None, step), starts


def thumb_part(raw: np.ndarray, valid: np.ndarray, row: int, col: int, raster_height: int, raster_width: int,
               max_side: int = QUICKLOOK_SIDE) -> ThumbPart:
    """Sums of the (h, w, C) window ``raw`` at (``row``, ``col``) of a raster, over the cells of
    its quicklook that the window touches: its valid pixels on the raster's sampling grid
    (``sample_step``), so the windows of any partition of the raster add up to the same sums."""
    w, h = _shape(raster_width, raster_height, max_side)
    step = sample_step(raster_height, raster_width, max_side)
    r0, rows, rstarts = _cells(row, row + raw.shape[0], raster_height, h, step)
    c0, cols, cstarts = _cells(col, col + raw.shape[1], raster_width, w, step)
    if not rstarts.size or not cstarts.size:  # a window narrower than the sampling step
        return ThumbPart(r0, c0, np.zeros((0, 0, raw.shape[-1])), np.zeros((0, 0), np.int64))
    x, v = raw[rows, cols], valid[rows, cols]
    everywhere = bool(v.all())
    if not everywhere:
        x = np.where(v[..., None], x, 0)
    acc = np.float64 if raw.dtype.kind == "f" else np.uint64  # exact sums of any integer band
    sums = np.add.reduceat(np.add.reduceat(x, rstarts, axis=0, dtype=acc), cstarts, axis=1).astype(np.float64)
    if everywhere:
        counts = np.outer(np.diff(np.append(rstarts, x.shape[0])), np.diff(np.append(cstarts, x.shape[1])))
    else:
        counts = np.add.reduceat(np.add.reduceat(v.astype(np.int64), rstarts, axis=0), cstarts, axis=1)
    return ThumbPart(r0, c0, sums, counts.astype(np.int64))


def thumb_jpeg(parts: Sequence[ThumbPart], raster_height: int, raster_width: int,
               max_side: int = QUICKLOOK_SIDE) -> Quicklook:
    """The quicklook of a raster from the ThumbParts of windows that cover it: each cell the mean
    of its valid pixels (cells without one are invalid), stretched as ``input_quicklook`` does.
    The Quicklook's georeferencing fields are left empty (a picture of an input needs none)."""
    w, h = _shape(raster_width, raster_height, max_side)
    bands = parts[0].sums.shape[-1]
    sums = np.zeros((h, w, bands), np.float64)
    counts = np.zeros((h, w), np.int64)
    for p in parts:
        nr, nc = p.counts.shape
        sums[p.row:p.row + nr, p.col:p.col + nc] += p.sums
        counts[p.row:p.row + nr, p.col:p.col + nc] += p.counts
    valid = counts > 0
    mean = sums / np.maximum(counts, 1)[..., None]
    return Quicklook(stretched_jpeg(np.moveaxis(mean, -1, 0), valid), w, h, raster_width, raster_height, (), None)


def to_pixels(transform: Sequence[float], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(columns, rows) in raster pixels of the points (x, y) in the raster's CRS."""
    from affine import Affine

    a, b, c, d, e, f = (~Affine(*transform[:6]))[:6]
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return a * x + b * y + c, d * x + e * y + f
