"""The domain check through ``tileseg run`` with the shipped aerial model, on real images: street
frames, electron micrographs, noise and a constant image are flagged out of domain (with a reason
in the stats and a warning in the log); Dubai validation images and the demo scene are not."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from common.synthetic import write_scene
from model.card import load_card
from model.shipped import DEFAULT_MODEL
from pipelines.segment import run
from training.datasets import data_root

pytestmark = pytest.mark.slow  # the real model on eight images

OUT_OF_DOMAIN = ("camvid_0016E5_07959", "camvid_0016E5_08085", "membrane_3", "noise", "constant")
IN_DOMAIN = ("dubai_tile3_image_part_008", "dubai_tile7_image_part_009", "demo")


def _geotiff(path: Path, pixels: np.ndarray) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[1], height=pixels.shape[0], count=3,
                       dtype="uint8", crs="EPSG:32640", transform=from_origin(300000, 2800000, 0.5, 0.5)) as dst:
        dst.write(np.moveaxis(pixels, -1, 0))


def test_street_micrograph_noise_and_constant_are_flagged_and_aerial_tiles_are_not(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = data_root()
    sources = {"camvid_0016E5_07959.png": root / "camvid" / "val" / "0016E5_07959.png",
               "camvid_0016E5_08085.png": root / "camvid" / "val" / "0016E5_08085.png",
               "membrane_3.png": root / "membrane" / "train" / "image" / "3.png",
               "dubai_tile3_image_part_008.jpg": root / "dubai-aerial" / "Semantic segmentation dataset" / "Tile 3"
               / "images" / "image_part_008.jpg",
               "dubai_tile7_image_part_009.jpg": root / "dubai-aerial" / "Semantic segmentation dataset" / "Tile 7"
               / "images" / "image_part_009.jpg"}
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        pytest.skip(f"real images not under TILESEG_DATA ({root}): {missing[:2]}")
    if not load_card(DEFAULT_MODEL).domain:
        pytest.fail(f"the shipped model {DEFAULT_MODEL} has no calibrated domain section in its card")
    inp = tmp_path / "in"
    inp.mkdir()
    for name, src in sources.items():
        shutil.copyfile(src, inp / name)  # into the test's own temporary folder, never the project
    rng = np.random.default_rng(0)
    _geotiff(inp / "noise.tif", rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    _geotiff(inp / "constant.tif", np.full((512, 512, 3), 128, np.uint8))
    write_scene(str(inp / "demo.tif"), 1024, seed=2026)
    with caplog.at_level(logging.WARNING):
        summary = run(["--input", str(inp / "*"), "--output", str(tmp_path / "out"), "--model", DEFAULT_MODEL,
                       "--precision", "float32"])
    assert summary.tiles_written == 8 and summary.failures == 0
    rows = {r["tile_id"]: r for r in pq.read_table(summary.stats_uri).to_pylist() if r["class_index"] == 0}
    verdicts = {t: rows[t]["in_domain"] for t in rows}
    assert {t: verdicts[t] for t in OUT_OF_DOMAIN} == dict.fromkeys(OUT_OF_DOMAIN, False), verdicts
    assert {t: verdicts[t] for t in IN_DOMAIN} == dict.fromkeys(IN_DOMAIN, True), verdicts
    assert "oblique" in rows["camvid_0016E5_07959"]["domain_note"]
    assert "far from the training" in rows["constant"]["domain_note"]
    assert all(rows[t]["domain_note"] == "" for t in IN_DOMAIN)
    assert sorted(summary.out_of_domain) == sorted(OUT_OF_DOMAIN)
    warned = [r.getMessage() for r in caplog.records if "outside what model" in r.getMessage()]
    assert len(warned) == len(OUT_OF_DOMAIN) and all(any(t in w for w in warned) for t in OUT_OF_DOMAIN)
    assert "look unlike what the model was trained on" in summary.line()
