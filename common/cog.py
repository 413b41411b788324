"""Cloud-Optimised GeoTIFFs of label masks, with the overviews computed here.

GDAL's COG driver builds MODE overviews itself at about 8 s per 16384² noisy mask on this
project's 2-core machine: two thirds of the whole conversion, more than reading the input tile.
A 2×2 mode of labels is a table lookup: the four labels' codes index a table of every
combination's answer, so numpy computes an overview level in a few passes over memory. Each level
is computed from the one before, in strips of rows (memory stays a strip, not the mask), written
to a local uncompressed GeoTIFF, and a VRT lists them as the full-resolution file's overviews;
the COG driver then only compresses and lays out (``OVERVIEWS=FORCE_USE_EXISTING``), in parallel.

Overview rules (also what a reader of the COG sees):
- ``mode``: the most frequent valid label of the 2×2 pixels (nodata and out-of-raster pixels do
  not count); a tie goes to the label seen first in reading order; nodata only where all four are.
- ``average``: the rounded mean (half up) of the pixels inside the raster (probability rasters).
"""

from __future__ import annotations

import functools
import math
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import numpy as np

#: DEFLATE level of the COGs. Level 6 (GDAL's default) spends 2-2.6x the CPU of level 5 for 5-15 %
#: smaller files, measured with one thread: a model's 8192² mask 0.72 s / 1.61 MB at 6, 0.36 s /
#: 1.85 MB at 5, 0.32 s / 2.29 MB at 4; a noisy 16384² mask 8.1 s / 25.7 MB at 6, 3.1 s / 26.9 MB
#: at 5. (ZSTD 1 would be faster still, 0.11 s / 1.72 MB, but not every COG reader decodes it.)
DEFLATE_LEVEL = 5
#: Rows per strip when computing an overview level (even, so strips map to whole output rows). 1024
#: rather than 2048: the peak RSS of a 16384² free-model run fell 1431 → 1369 MB, at no cost in time.
STRIP_ROWS = 1024
#: Above this many labels (nodata included) the lookup table would exceed 65536 entries.
MAX_TABLE_LABELS = 16


def overview_factors(height: int, width: int, block: int) -> list[int]:
    """The decimation factors GDAL's COG driver uses by default: halve until the overview fits
    in one block."""
    factors: list[int] = []
    f = 1
    while max(math.ceil(height / f), math.ceil(width / f)) > block:
        f *= 2
        factors.append(f)
    return factors


@functools.lru_cache(maxsize=8)
def _mode_table(num_labels: int, nodata: int) -> np.ndarray:
    """For codes 0..n-1 (n - 1 meaning nodata) of four pixels a, b, c, d packed as
    ((a·n + b)·n + c)·n + d: the label the mode rule picks, as a uint8 table."""
    n = num_labels
    idx = np.arange(n ** 4)
    codes = [(idx // n ** (3 - i)) % n for i in range(4)]
    valid = [c != n - 1 for c in codes]
    counts = [valid[i] * sum((codes[i] == codes[j]) for j in range(4)) for i in range(4)]
    best = np.argmax(np.stack(counts), axis=0)  # first maximum: reading order breaks ties
    chosen = np.choose(best, codes)
    return np.where(np.max(np.stack(counts), axis=0) > 0, chosen, nodata).astype(np.uint8)


def mode_2x(labels: np.ndarray, num_classes: int, nodata: int) -> np.ndarray:
    """(H, W) uint8 labels in [0, num_classes) or ``nodata`` → (ceil(H/2), ceil(W/2)) by the mode rule."""
    h, w = labels.shape
    if h % 2 or w % 2:
        labels = np.pad(labels, ((0, h % 2), (0, w % 2)), constant_values=nodata)
    n = num_classes + 1
    if n > MAX_TABLE_LABELS:
        return _mode_by_comparison(labels, nodata)
    codes = np.minimum(labels, num_classes).astype(np.uint16)  # nodata (any value >= K) → K
    packed = codes[0::2, 0::2] * n
    packed += codes[0::2, 1::2]
    packed *= n
    packed += codes[1::2, 0::2]
    packed *= n
    packed += codes[1::2, 1::2]
    return _mode_table(n, nodata)[packed]


def _mode_by_comparison(labels: np.ndarray, nodata: int) -> np.ndarray:
    """The same rule for any number of labels, by counting equal neighbours (slower)."""
    v = (labels[0::2, 0::2], labels[0::2, 1::2], labels[1::2, 0::2], labels[1::2, 1::2])
    best = np.full(v[0].shape, nodata, np.uint8)
    best_count = np.zeros(v[0].shape, np.uint8)
    for x in v:
        count = sum(((x == y) for y in v), np.zeros(x.shape, np.uint8)) * (x != nodata)
        better = count > best_count
        np.copyto(best, x, where=better)
        np.copyto(best_count, count.astype(np.uint8), where=better)
    return best


def average_2x(values: np.ndarray) -> np.ndarray:
    """(H, W) uint8 → (ceil(H/2), ceil(W/2)): the mean of the pixels inside the raster, rounded
    half up (an odd last row or column averages its two, or one, real pixels)."""
    h, w = values.shape
    if h % 2 or w % 2:
        values = np.pad(values, ((0, h % 2), (0, w % 2)), mode="edge")  # a copy weighs as its pixel
    total = values[0::2, 0::2].astype(np.uint16)
    total += values[0::2, 1::2]
    total += values[1::2, 0::2]
    total += values[1::2, 1::2]
    total += 2
    total //= 4
    return total.astype(np.uint8)


def write_cog(full: str, out: str, resampling: str, block: int, num_classes: int = 0) -> None:
    """``full``: a local tiled uint8 GeoTIFF (georeferencing, nodata, palette, tags) → the COG
    ``out`` with overviews by ``resampling`` (``mode``, using ``num_classes`` and the file's
    nodata, or ``average``). Temporary files sit beside ``out`` and are removed."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    with rasterio.open(full) as src:
        height, width, nodata = src.height, src.width, src.nodata
    if resampling == "mode":
        if nodata is None:
            raise ValueError(f"{full}: mode overviews of labels need the mask's nodata value")
        down: Callable[[np.ndarray], np.ndarray] = functools.partial(mode_2x, num_classes=num_classes,
                                                                     nodata=int(nodata))
    elif resampling == "average":
        down = average_2x
    else:
        raise ValueError(f"unknown overview resampling {resampling!r} (mode or average)")
    levels: list[str] = []
    vrt = out + ".vrt"
    try:
        previous = full
        for factor in overview_factors(height, width, block):
            level = f"{out}.ovr{factor}.tif"
            levels.append(level)
            _downsample_file(previous, level, down, block)
            previous = level
        _write_vrt(full, levels, vrt)
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            rio_copy(vrt, out, driver="COG", COMPRESS="DEFLATE", LEVEL=DEFLATE_LEVEL, PREDICTOR="NO", BLOCKSIZE=block,
                     OVERVIEWS="FORCE_USE_EXISTING" if levels else "NONE", BIGTIFF="IF_SAFER",
                     NUM_THREADS="ALL_CPUS")
    finally:
        for path in (vrt, *levels):
            if os.path.exists(path):
                os.remove(path)


def _downsample_file(src_path: str, dst_path: str, down: Callable[[np.ndarray], np.ndarray], block: int) -> None:
    """One overview level: ``src_path`` halved by ``down``, strip by strip, into a local tiled GeoTIFF."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "count": 1, "dtype": "uint8", "tiled": True, "blockxsize": block,
               "blockysize": block, "compress": "none", "BIGTIFF": "IF_SAFER"}
    with warnings.catch_warnings():
        # A level is pixels only: the VRT places it (a level of a level has no georeferencing).
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src_path) as src:
            w = math.ceil(src.width / 2)
            with rasterio.open(dst_path, "w", width=w, height=math.ceil(src.height / 2), **profile) as dst:
                for row in range(0, src.height, STRIP_ROWS):
                    strip = src.read(1, window=Window(0, row, src.width, min(STRIP_ROWS, src.height - row)))
                    small = down(strip)
                    dst.write(small, 1, window=Window(0, row // 2, w, small.shape[0]))


def _write_vrt(full: str, levels: list[str], vrt: str) -> None:
    """A VRT of ``full`` (georeferencing, nodata, palette, tags copied) whose band lists
    ``levels`` as its overviews, so the COG driver copies them instead of computing its own."""
    import rasterio

    with rasterio.open(full) as src:
        root = ET.Element("VRTDataset", rasterXSize=str(src.width), rasterYSize=str(src.height))
        if src.crs is not None:
            # Axis order as in the GeoTIFF (x = easting/longitude), whatever the CRS's own order.
            ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = src.crs.to_wkt()
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in src.transform.to_gdal())
        tags = src.tags()
        if tags:
            meta = ET.SubElement(root, "Metadata")
            for key, value in tags.items():
                ET.SubElement(meta, "MDI", key=key).text = value
        band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
        if src.nodata is not None:
            ET.SubElement(band, "NoDataValue").text = repr(float(src.nodata))
        colormap = _colormap(src)
        if colormap:
            ET.SubElement(band, "ColorInterp").text = "Palette"
            table = ET.SubElement(band, "ColorTable")
            for i in range(max(colormap) + 1):
                r, g, b, a = colormap.get(i, (0, 0, 0, 0))
                ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
        _source(ET.SubElement(band, "SimpleSource"), full)
        for level in levels:
            _source(ET.SubElement(band, "Overview"), level)
    ET.ElementTree(root).write(vrt, encoding="utf-8")


def _source(parent: ET.Element, path: str) -> None:
    ET.SubElement(parent, "SourceFilename", relativeToVRT="0").text = os.path.abspath(path)
    ET.SubElement(parent, "SourceBand").text = "1"


def _colormap(src: Any) -> dict[int, tuple[int, int, int, int]]:
    try:
        return {int(k): tuple(int(c) for c in v) for k, v in src.colormap(1).items()}  # type: ignore[misc]
    except ValueError:  # no palette
        return {}
