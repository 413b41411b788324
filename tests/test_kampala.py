"""hotosm-kampala as partial labels: chips go back together by their tile coordinates, a 0 in a
mask means "not Building" (never Land), and the Building scores count only what the mask says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from training import kampala
from training.datasets import IGNORE, NOT_CLASS, DatasetError, data_root


def _chip(folder: Path, name: str, rgb: np.ndarray, building: np.ndarray) -> None:
    (folder / "chips").mkdir(parents=True, exist_ok=True)
    (folder / "binarymasks").mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=rgb.shape[1], height=rgb.shape[0], dtype="uint8", crs="EPSG:4326",
                   transform=from_origin(32.5, 0.35, 1e-6, 1e-6))
    with rasterio.open(folder / "chips" / f"{name}.tif", "w", count=3, **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    with rasterio.open(folder / "binarymasks" / f"{name}.mask.tif", "w", count=1, **profile) as dst:
        dst.write(building, 1)


def test_chips_become_one_mosaic_per_zoom_by_tile_coordinates(tmp_path: Path) -> None:
    base = tmp_path / kampala.FOLDER
    size = 8
    for x, y in ((10, 20), (11, 20), (11, 21)):  # (10, 21) is missing
        rgb = np.full((size, size, 3), x * 10 + y, np.uint8)
        building = np.zeros((size, size), np.uint8)
        building[: size // 2] = 1
        _chip(base, f"OAM-{x}-{y}-21", rgb, building)
    _chip(base, "OAM-5-5-19", np.zeros((size, size, 3), np.uint8), np.ones((size, size), np.uint8))
    images, labels, names = kampala.mosaics("train", 3, tmp_path)
    assert names == [f"{kampala.FOLDER}/train/zoom19", f"{kampala.FOLDER}/train/zoom21"]
    img, lab = images[1], labels[1]
    assert img.shape == (2 * size, 2 * size, 3)
    assert img[0, 0, 0] == 120 and img[0, size, 0] == 130 and img[size, size, 0] == 131  # x east, y south
    assert (img[size:, :size] == 0).all() and (lab[size:, :size] == IGNORE).all()  # the missing tile
    assert (lab[: size // 2, :size] == 3).all()  # 1 = Building (class 3 here)
    assert (lab[size // 2: size, :size] == NOT_CLASS + 3).all()  # 0 = not Building, not "Land"
    assert (labels[0] == 3).all()


def test_building_scores_use_only_what_the_partial_label_says() -> None:
    label = np.array([[0, 0, NOT_CLASS, NOT_CLASS, IGNORE]], np.uint8)
    pred = np.array([[0, 2, 0, 4, 0]], np.uint8)
    cm = kampala.binary_confusion(label, pred, 0)
    assert cm.tolist() == [[1, 1], [1, 1]]  # the IGNORE pixel is left out
    s = kampala.building_scores(cm)
    assert s["iou"] == pytest.approx(1 / 3, abs=1e-4) and s["precision"] == 0.5 and s["recall"] == 0.5


def test_a_missing_mask_is_a_clear_error(tmp_path: Path) -> None:
    base = tmp_path / kampala.FOLDER
    _chip(base, "OAM-1-1-21", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    (base / "binarymasks" / "OAM-1-1-21.mask.tif").unlink()
    with pytest.raises(DatasetError, match="OAM-1-1-21.mask.tif"):
        kampala.mosaics("train", 0, tmp_path)


def test_the_real_set_gives_three_zoom_mosaics_with_its_building_share() -> None:
    if not (data_root() / kampala.FOLDER).is_dir():
        pytest.skip(f"{kampala.FOLDER} is not under TILESEG_DATA ({data_root()})")
    images, labels, names = kampala.mosaics("train", 0)
    assert [n.rsplit("zoom", 1)[1] for n in names] == ["19", "20", "21"]
    known = np.concatenate([lab[lab != IGNORE] for lab in labels])
    share = float(np.mean(known == 0))
    assert 0.2 < share < 0.27  # the README's 23.3 % of train pixels
