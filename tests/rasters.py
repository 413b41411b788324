"""Small rasters written by code, for tests: one writer, and a set of tiles that covers what real
inputs bring (CRS of each kind, none, alpha, nodata, NaN, uint16 with NBITS, odd sizes).

Fixtures in conftest.py use these, so end-to-end tests need no files beside the checkout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

UTM = "EPSG:32633"


def write_raster(path: Path | str, data: np.ndarray, **profile: Any) -> str:
    """Write (bands, H, W) ``data`` as a GeoTIFF (UTM 33N, 1 m pixels unless ``profile`` says
    otherwise; ``crs=None`` writes none). Returns the path as a string."""
    count, h, w = data.shape
    full: dict[str, Any] = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": data.dtype.name,
                            "crs": UTM, "transform": from_origin(500000, 4000000, 1.0, 1.0)}
    full.update(profile)
    if full["crs"] is None:
        del full["crs"], full["transform"]
    with rasterio.open(path, "w", **full) as dst:
        dst.write(data)
    return str(path)


def write_tile_set(folder: Path, seed: int = 0) -> dict[str, str]:
    """The generated tile set, by name: every kind of input the pipeline must handle alike."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def rgb(h: int, w: int, dtype: Any = np.uint8, high: int = 255) -> np.ndarray:
        return rng.integers(0, high + 1, (3, h, w)).astype(dtype)

    rgba = np.concatenate([rgb(97, 131), np.full((1, 97, 131), 255, np.uint8)])
    rgba[3, :20, :40] = 0  # transparent corner
    with_nodata = rgb(150, 61)
    with_nodata[:, 70:90, :] = 0
    nan = rng.random((3, 45, 77)).astype(np.float32)
    nan[:, 5:9, 10:30] = np.nan
    tiles = {
        "utm_odd": write_raster(folder / "utm_odd.tif", rgb(301, 257), photometric="RGB"),
        "geographic": write_raster(folder / "geographic.tif", rgb(120, 200), crs="EPSG:4326",
                                   transform=from_origin(55.2, 25.3, 1e-5, 1e-5), photometric="RGB"),
        "mercator_alpha": write_raster(folder / "mercator_alpha.tif", rgba, crs="EPSG:3857",
                                       transform=from_origin(6e6, 3e6, 0.3, 0.3), photometric="RGB", alpha="YES"),
        "nodata": write_raster(folder / "nodata.tif", with_nodata, nodata=0, photometric="RGB"),
        "float_nan": write_raster(folder / "float_nan.tif", nan, photometric="RGB"),
        "uint16_nbits12": write_raster(folder / "uint16_nbits12.tif", rgb(88, 150, np.uint16, 4095),
                                       nbits=12, photometric="RGB"),
        "no_crs": write_raster(folder / "no_crs.tif", rgb(33, 70), crs=None, photometric="RGB"),
        "grey": write_raster(folder / "grey.tif", rng.integers(0, 256, (1, 64, 64)).astype(np.uint8)),
        "tiny": write_raster(folder / "tiny.tif", rgb(3, 5), photometric="RGB"),
    }
    return tiles
