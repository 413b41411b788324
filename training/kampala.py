"""hotosm-kampala: real drone/aerial chips of Kampala with OpenStreetMap building footprints, as
**partial labels** for a multi-class model.

The masks say 1 = building and 0 = "not building": a 0 pixel may be road, bare earth, vegetation or
water, and nothing says which. So a 0 becomes ``NOT_CLASS + k`` ("not class k", k = the model's
Building index) and the loss (training/losses.py) pushes only the Building probability down there,
never a particular other class up. Reading 0 as Land would teach the model that Kampala's roads and
banana plants are bare ground.

The chips are 256x256 web-map tiles (zoom 19, 20, 21: about 0.3, 0.15 and 0.075 m per pixel);
training crops are larger than one chip, so the tiles of each zoom are put back together by their
tile coordinates (``OAM-<x>-<y>-<zoom>.tif``: x grows east, y south) into one mosaic per zoom,
missing tiles unlabelled. The same ground at three resolutions is also scale augmentation for free.
Validation scores single chips, as the dataset defines them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.datasets import IGNORE, NOT_CLASS, DatasetError, data_root

FOLDER = "hotosm-kampala"
LICENSE = ("imagery CC BY 4.0 (OpenAerialMap contributors), building footprints ODbL 1.0 "
           "(OpenStreetMap contributors); chips from hotosm/fAIr-utilities ramp-data/TRAIN/HOTOSM/2")
LABELLED_CLASS = "Building"
_CHIP = re.compile(r"OAM-(\d+)-(\d+)-(\d+)\.tif")
_SPLITS = {"train": ("chips", "binarymasks"), "val": ("val-chips", "val-binarymasks")}


def _chips(which: str, root: Path | None = None) -> list[tuple[Path, Path, int, int, int]]:
    """(image, mask, x, y, zoom) of every chip of ``which`` ("train" or "val"), sorted by name."""
    if which not in _SPLITS:
        raise DatasetError(f"split must be 'train' or 'val', got {which!r}")
    base = (root or data_root()) / FOLDER
    images, masks = (base / d for d in _SPLITS[which])
    if not images.is_dir() or not masks.is_dir():
        raise DatasetError(f"dataset folder {base} is missing {images.name}/ or {masks.name}/; set TILESEG_DATA "
                           "to the shared data folder (the one holding hotosm-kampala/)")
    out = []
    for image in sorted(images.glob("*.tif")):
        m = _CHIP.fullmatch(image.name)
        if not m:
            continue
        mask = masks / f"{image.stem}.mask.tif"
        if not mask.is_file():
            raise DatasetError(f"mask {mask} for chip {image} is missing; restore the dataset copy")
        out.append((image, mask, int(m.group(1)), int(m.group(2)), int(m.group(3))))
    if not out:
        raise DatasetError(f"no OAM-<x>-<y>-<zoom>.tif chips in {images}")
    return out


def _read(image: Path, mask: Path) -> tuple[np.ndarray, np.ndarray]:
    import rasterio

    try:
        with rasterio.open(image) as src:
            rgb = np.transpose(src.read([1, 2, 3]), (1, 2, 0))
        with rasterio.open(mask) as src:
            building = src.read(1)
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(f"cannot read {image} or {mask}: {exc}; restore the dataset copy") from None
    if rgb.dtype != np.uint8 or building.shape != rgb.shape[:2]:
        raise DatasetError(f"{image}: expected 3-band uint8 chips with a mask of the same size")
    return rgb, building


def partial_label(building: np.ndarray, class_index: int) -> np.ndarray:
    """0/1 building mask → ``class_index`` where 1, ``NOT_CLASS + class_index`` where 0,
    IGNORE for any other value."""
    out = np.full(building.shape, IGNORE, np.uint8)
    out[building == 1] = class_index
    out[building == 0] = NOT_CLASS + class_index
    return out


def chips(which: str, class_index: int, root: Path | None = None) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Every chip of ``which`` as (images, partial labels, names)."""
    images, labels, names = [], [], []
    for image, mask, *_ in _chips(which, root):
        rgb, building = _read(image, mask)
        images.append(rgb)
        labels.append(partial_label(building, class_index))
        names.append(image.stem)
    return images, labels, names


def mosaics(which: str, class_index: int, root: Path | None = None) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """One mosaic per zoom level of ``which``'s chips: (images, partial labels, names).
    Tiles missing from a zoom's bounding grid are black and IGNORE."""
    by_zoom: dict[int, list[tuple[Path, Path, int, int]]] = {}
    for image, mask, x, y, z in _chips(which, root):
        by_zoom.setdefault(z, []).append((image, mask, x, y))
    images, labels, names = [], [], []
    for z in sorted(by_zoom):
        tiles = by_zoom[z]
        x0, y0 = min(t[2] for t in tiles), min(t[3] for t in tiles)
        cols, rows = max(t[2] for t in tiles) - x0 + 1, max(t[3] for t in tiles) - y0 + 1
        read = [(_read(image, mask), x, y, image) for image, mask, x, y in tiles]  # each chip read once
        first = read[0][0][1].shape[0]
        rgb = np.zeros((rows * first, cols * first, 3), np.uint8)
        lab = np.full((rows * first, cols * first), IGNORE, np.uint8)
        for (chip, building), x, y, image in read:
            if chip.shape[:2] != (first, first):
                raise DatasetError(f"{image}: chips of zoom {z} must all be {first}x{first}")
            r, c = (y - y0) * first, (x - x0) * first
            rgb[r:r + first, c:c + first] = chip
            lab[r:r + first, c:c + first] = partial_label(building, class_index)
        images.append(rgb)
        labels.append(lab)
        names.append(f"{FOLDER}/{which}/zoom{z}")
    return images, labels, names


def building_scores(cm: np.ndarray) -> dict[str, float | None]:
    """IoU, precision and recall of the labelled class from a 2x2 (truth, prediction) matrix,
    rows/columns [labelled class, anything else]."""
    tp, fn, fp = int(cm[0, 0]), int(cm[0, 1]), int(cm[1, 0])

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {"iou": ratio(tp, tp + fn + fp), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "pixels": int(cm.sum())}


def binary_confusion(label: np.ndarray, pred: np.ndarray, class_index: int) -> np.ndarray:
    """2x2 counts (rows = truth, columns = prediction) of [class_index, not class_index] over the
    pixels a partial label speaks about."""
    known = (label == class_index) | (label == NOT_CLASS + class_index)
    truth = label[known] == class_index
    said = pred[known] == class_index
    return np.array([[np.sum(truth & said), np.sum(truth & ~said)],
                     [np.sum(~truth & said), np.sum(~truth & ~said)]], np.int64)


def evaluate_partial(predict: Callable[[np.ndarray], np.ndarray], class_index: int, which: str = "val",
                     root: Path | None = None) -> dict[str, float | None]:
    """Building IoU, precision and recall of ``predict`` ((H, W, 3) uint8 → (H, W) labels) over
    ``which``'s chips, pooled over all their pixels."""
    cm = np.zeros((2, 2), np.int64)
    for image, label in zip(*chips(which, class_index, root)[:2]):
        cm += binary_confusion(label, predict(image), class_index)
    return building_scores(cm)
