"""Quicklooks: small pictures (PNG of a mask, JPEG of an input) of a raster, read from its overviews.

A report of 10^4 tiles must not read 10^4 whole rasters: every read here asks GDAL for a picture
of at most ``max_side`` pixels a side, which GDAL serves from the smallest overview that is large
enough (masks are COGs with overviews, so a mask's quicklook reads a few kB). An input without
overviews would be decoded whole for that; above ``MAX_DECODED_PIXELS`` it gets no quicklook,
and the caller says why.
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
    from PIL import Image
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
    rgb = np.full((h, w, 3), 128, np.uint8)
    for i in range(3):
        band = data[min(i, len(chosen) - 1)].astype(np.float64)
        finite = valid & np.isfinite(band)
        if finite.any():
            lo, hi = np.percentile(band[finite], (2, 98))
            span = hi - lo if hi > lo else 1.0
            rgb[..., i] = np.where(finite, np.clip(np.nan_to_num((band - lo) / span) * 255.0, 0, 255), 128)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=85)
    return Quicklook(buf.getvalue(), w, h, *ql)


def to_pixels(transform: Sequence[float], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(columns, rows) in raster pixels of the points (x, y) in the raster's CRS."""
    from affine import Affine

    a, b, c, d, e, f = (~Affine(*transform[:6]))[:6]
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return a * x + b * y + c, d * x + e * y + f
