"""pipelines/io_floor.py (the benchmark's plain conversion) and the inference graph's XLA choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from model.free import free_labels
from model.loading import compile_with_xla, has_gpu
from pipelines.io_floor import free_labels_int, io_floor


def test_integer_labels_are_the_free_models() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (3, 300, 200), dtype=np.uint8)
    # 3 bands of 8 bits into 5 classes: round(sum / 765 * 4) never meets an exact tie.
    np.testing.assert_array_equal(free_labels_int(pixels, 5, 255), free_labels(np.moveaxis(pixels, 0, -1), 5, 255.0))


def test_the_floor_writes_the_free_models_mask_as_a_cog(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (3, 1100, 2300), dtype=np.uint8)
    tile = tmp_path / "tile.tif"
    with rasterio.open(tile, "w", driver="GTiff", width=2300, height=1100, count=3, dtype="uint8",
                       crs=CRS.from_epsg(32633), transform=Affine(0.5, 0, 4e5, 0, -0.5, 5e6)) as dst:
        dst.write(pixels)
    out = tmp_path / "floor.tif"
    result = io_floor(str(tile), str(out), 5)
    assert result["mask_bytes"] == out.stat().st_size and result["seconds"] >= result["cog_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["floor.tif", "tile.tif"]
    with rasterio.open(out) as m:
        assert m.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and m.overviews(1) == [2, 4, 8]
        assert m.crs == CRS.from_epsg(32633)
        np.testing.assert_array_equal(m.read(1), free_labels(np.moveaxis(pixels, 0, -1), 5, 255.0))


def test_xla_only_where_it_was_measured() -> None:
    assert compile_with_xla("float32") is (not has_gpu())
    assert not compile_with_xla("bfloat16") and not compile_with_xla("float16")
