"""The I/O floor of ``tileseg bench --free_model``: the plain way to turn a tile into a mask COG.

Read the tile in 2048² windows, compute the free model's labels (model/free.py) in integer numpy,
write them into a local tiled GeoTIFF and convert it with GDAL's COG driver (DEFLATE, MODE
overviews, every CPU), as a person with rasterio would. No model, no patches, no statistics: what
the pipeline with a model that costs nothing should not be slower than.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

WINDOW = 2048


def free_labels_int(pixels: np.ndarray, num_classes: int, divisor: int) -> np.ndarray:
    """(C, H, W) integer pixels → the free model's labels, round(mean / divisor · (K - 1)), in
    integer arithmetic (half up; model/free.py rounds half to even: they differ only on exact ties)."""
    c = pixels.shape[0]
    total = pixels.astype(np.uint32).sum(axis=0)
    return ((total * (2 * (num_classes - 1)) + c * divisor) // (2 * c * divisor)).astype(np.uint8)


def io_floor(tile: str, out: str, num_classes: int, divisor: int = 255, block: int = 512) -> dict[str, Any]:
    """Write ``tile``'s free-model mask to ``out`` the plain way; seconds of each part and the size."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    start = time.perf_counter()
    tmp = out + ".plain.tif"
    with rasterio.open(tile) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "nodata": 255, "tiled": True,
                   "blockxsize": block, "blockysize": block, "compress": "none", "BIGTIFF": "IF_SAFER"}
        with rasterio.open(tmp, "w", **profile) as dst:
            for row in range(0, src.height, WINDOW):
                for col in range(0, src.width, WINDOW):
                    w = Window(col, row, min(WINDOW, src.width - col), min(WINDOW, src.height - row))
                    dst.write(free_labels_int(src.read(window=w), num_classes, divisor), 1, window=w)
    written = time.perf_counter()
    try:
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            rio_copy(tmp, out, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=block, OVERVIEW_RESAMPLING="MODE",
                     BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
    finally:
        os.remove(tmp)
    done = time.perf_counter()
    return {"seconds": done - start, "read_and_label_s": written - start, "cog_s": done - written,
            "mask_bytes": os.path.getsize(out)}
