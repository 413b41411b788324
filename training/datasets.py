"""Real labelled datasets: split lists and image/label loaders.

Four datasets from ``$TILESEG_DATA`` (default ``../shared/data`` beside the checkout; see its
README.md): ``dubai-aerial`` (colour-coded RGB/palette masks), ``camvid`` (class-index PNGs),
``membrane`` (binary greyscale masks) and ``aeroscapes`` (drone frames, class-index PNGs, split by
flight). Labels always come back as (H, W) uint8 class indices with
``IGNORE`` where a pixel is unlabelled, so losses and metrics can treat the three alike.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IGNORE = 255  # label value ignored by losses and metrics
#: Partial labels: ``NOT_CLASS + k`` means "not class k" and says nothing about which other class
#: the pixel is (training/kampala.py); the loss then only pushes class k's probability down.
NOT_CLASS = 128

_DUBAI_DIR = Path("dubai-aerial") / "Semantic segmentation dataset"
_DUBAI_VAL_PARTS = ("image_part_008", "image_part_009")
# Colours that mean "no label": #9B9B9B is the documented Unlabeled class, #000000 is undocumented
# but occurs in tiles 3, 5, 6, 7 and 8 (README), so both map to IGNORE.
_DUBAI_IGNORE_COLOURS = ((155, 155, 155), (0, 0, 0))
_CAMVID_UNLABELLED = 11
_MEMBRANE_FOLDS = 5
_MEMBRANE_COUNT = 30
#: Aeroscapes: (folder, flight) of the three flights here. Frames of one flight are consecutive
#: video frames, near duplicates: folds leave one flight out, never frames of a flight.
AEROSCAPES_FLIGHTS = (("seq2", "001101"), ("seq3", "040001"), ("seq7", "200002"))
#: Aeroscapes' 12 label values → the 8 classes that occur here (README: drone, boat, animal and
#: sky never do); those four become IGNORE rather than classes no image can teach.
_AEROSCAPES_KEEP = {0: 0, 1: 1, 2: 2, 3: 3, 7: 4, 8: 5, 9: 6, 10: 7}
_AEROSCAPES_VALUES = 12
_AEROSCAPES_TABLE = np.full(256, IGNORE, np.uint8)  # label value → class index (or IGNORE)
_AEROSCAPES_TABLE[list(_AEROSCAPES_KEEP)] = list(_AEROSCAPES_KEEP.values())


class DatasetError(ValueError):
    """A dataset folder or file is missing or holds something the loader cannot interpret."""


@dataclass(frozen=True)
class Sample:
    """One image (and optional label) file; ``name`` is unique within a dataset."""

    image_path: str
    label_path: str | None
    name: str


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a dataset: class names/colours by index, licence, input channels."""

    name: str
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    license: str
    in_channels: int
    #: What the trained model's card says about landing (model/landing.py): roles, why, buffers.
    landing: dict[str, Any] = field(default_factory=dict)


# Colours for dubai-aerial are the ones found in the masks (dubai-aerial/class_map.json), not the
# annotation tool's display colours in the dataset's own classes.json, which never occur in masks.
_SPECS: dict[str, DatasetSpec] = {
    "dubai-aerial": DatasetSpec(
        name="dubai-aerial",
        class_names=("Building", "Land (unpaved area)", "Road", "Vegetation", "Water"),
        class_colors=((60, 16, 152), (132, 41, 246), (110, 193, 228), (254, 221, 58), (226, 169, 41)),
        license="CC0 1.0 (per the Kaggle page; no licence file in the mirror)",
        in_channels=3,
    ),
    "camvid": DatasetSpec(
        name="camvid",
        class_names=(
            "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
            "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
        ),
        class_colors=(
            (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
            (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
        ),
        license="CC BY-NC 4.0 (non-commercial research use only)",
        in_channels=3,
    ),
    "aeroscapes": DatasetSpec(
        name="aeroscapes",
        class_names=("background", "person", "bike", "car", "obstacle", "construction", "vegetation", "road"),
        # Index masks carry no colours; these are display colours (Okabe-Ito based): hazards warm
        # and saturated, ground muted.
        class_colors=((190, 190, 190), (213, 94, 0), (204, 121, 167), (0, 114, 178), (230, 159, 0),
                      (140, 81, 10), (0, 158, 115), (89, 89, 89)),
        license="CC BY-SA 4.0 per a dataset catalogue (the authors' repository states none): research use, "
                "attribute Nigam, Huang, Ramanan, 'Ensemble knowledge transfer for semantic segmentation', "
                "WACV 2018; derived data share-alike",
        in_channels=3,
        landing={
            "roles": {"background": "caution", "person": "hazard", "bike": "hazard", "car": "hazard",
                      "obstacle": "hazard", "construction": "hazard", "vegetation": "caution", "road": "caution"},
            # People walk into the landing spot and vehicles drive into it: wider than the profile's
            # default (2 m for small-drone), whatever the profile, unless it names the class itself.
            "hazard_buffer_m": {"person": 5.0, "bike": 4.0, "car": 4.0},
            # The cross-validation chooses the card's max_hazard_probability for this class's recall.
            "threshold_for": "person",
            "why": "person, bike, car, obstacle, construction: a drone must not touch down on or beside them; "
                   "people and vehicles get 4-5 m buffers because they move. No class is safe: vegetation is "
                   "lawn, shrubs and trees alike in these labels (a tree is a hazard, a lawn a landing spot); road "
                   "is flat and clear but carries traffic that may arrive after the frame; background is every "
                   "surface the labels do not name (bare ground, paving and water among them). All three are "
                   "caution: landable in zones, counted in each zone's caution share and score.",
        },
    ),
    "membrane": DatasetSpec(
        name="membrane",
        class_names=("membrane", "cell"),
        class_colors=((0, 0, 0), (255, 255, 255)),
        license="MIT repository (zhixuhao/unet); ISBI 2012 challenge data, research use only",
        in_channels=1,
    ),
}


def data_root() -> Path:
    """Real-data folder: ``$TILESEG_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("TILESEG_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def spec(name: str) -> DatasetSpec:
    """The DatasetSpec for ``name`` ("dubai-aerial", "camvid" or "membrane")."""
    try:
        return _SPECS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(_SPECS)}") from None


def _require_dir(path: Path) -> Path:
    """Return ``path`` if it is a folder, else raise a DatasetError that says how to fix it."""
    if not path.is_dir():
        raise DatasetError(
            f"dataset folder {path} is missing; set TILESEG_DATA to the shared data folder "
            f"(the one holding dubai-aerial/, camvid/, membrane/)"
        )
    return path


def _tile_number(path: Path) -> int:
    """Tile index from a "Tile N" folder name, so tiles sort 1..8 numerically."""
    match = re.fullmatch(r"Tile (\d+)", path.name)
    return int(match.group(1)) if match else -1


def _dubai_split(root: Path, which: str) -> list[Sample]:
    base = _require_dir(root / _DUBAI_DIR)
    tiles = sorted((p for p in base.iterdir() if _tile_number(p) > 0), key=_tile_number)
    samples = []
    for tile in tiles:
        for image in sorted((tile / "images").glob("*.jpg")):
            is_val = image.stem in _DUBAI_VAL_PARTS
            if is_val != (which == "val"):
                continue
            mask = tile / "masks" / f"{image.stem}.png"
            if not mask.is_file():
                raise DatasetError(f"mask {mask} for image {image} is missing; restore the dataset copy")
            name = f"tile{_tile_number(tile)}/{image.stem}"
            samples.append(Sample(str(image), str(mask), name))
    return samples


def _camvid_split(root: Path, which: str) -> list[Sample]:
    base = _require_dir(root / "camvid")
    images = _require_dir(base / which)
    labels = _require_dir(base / f"{which}annot")
    samples = []
    for image in sorted(images.glob("*.png")):
        label = labels / image.name
        if not label.is_file():
            raise DatasetError(f"label {label} for image {image} is missing; restore the dataset copy")
        samples.append(Sample(str(image), str(label), image.stem))
    return samples


def _membrane_split(root: Path, which: str, fold: int | None) -> list[Sample]:
    if fold is None or not 0 <= fold < _MEMBRANE_FOLDS:
        raise DatasetError(f"membrane fold must be 0..{_MEMBRANE_FOLDS - 1}, got {fold}")
    base = _require_dir(root / "membrane" / "train")
    per_fold = _MEMBRANE_COUNT // _MEMBRANE_FOLDS
    val_ids = set(range(fold * per_fold, (fold + 1) * per_fold))
    ids = sorted(val_ids) if which == "val" else [i for i in range(_MEMBRANE_COUNT) if i not in val_ids]
    samples = []
    for i in ids:
        image, label = base / "image" / f"{i}.png", base / "label" / f"{i}.png"
        if not image.is_file() or not label.is_file():
            raise DatasetError(f"{image} or {label} is missing; restore the membrane dataset copy")
        samples.append(Sample(str(image), str(label), str(i)))
    return samples


def _aeroscapes_split(root: Path, which: str, fold: int | None) -> list[Sample]:
    """Fold k: flight k is val, the other two train (leave one flight out). Fold None: every
    flight trains (the shipped model, whose figures are the folds'), nothing is val."""
    if fold is None:
        if which == "val":
            return []
    elif not 0 <= fold < len(AEROSCAPES_FLIGHTS):
        raise DatasetError(f"aeroscapes fold must be 0..{len(AEROSCAPES_FLIGHTS) - 1} (the flight left out), got {fold}")
    base = _require_dir(root / "aeroscapes")
    chosen = [f for k, f in enumerate(AEROSCAPES_FLIGHTS) if (k == fold) == (which == "val")]
    samples = []
    for folder, flight in chosen:
        images = _require_dir(base / folder / "images")
        for image in sorted(images.glob(f"{flight}_*.jpg")):
            label = base / folder / "gts" / f"{image.stem}.png"
            if not label.is_file():
                raise DatasetError(f"label {label} for image {image} is missing; restore the aeroscapes copy")
            samples.append(Sample(str(image), str(label), image.stem))
    if not samples:
        raise DatasetError(f"no aeroscapes frames under {base} for flights {[f for _, f in chosen]}")
    return samples


def split(name: str, which: str, fold: int | None = 0, root: Path | None = None) -> list[Sample]:
    """Samples of ``which`` ("train" or "val") for dataset ``name``; ``fold`` for membrane (0-4)
    and aeroscapes (0-2: the flight held out; None: every flight trains, val is empty)."""
    spec(name)  # validates the name with a helpful message
    if which not in ("train", "val"):
        raise DatasetError(f"split must be 'train' or 'val', got {which!r}")
    root = Path(root) if root is not None else data_root()
    if name == "dubai-aerial":
        samples = _dubai_split(root, which)
    elif name == "camvid":
        samples = _camvid_split(root, which)
    elif name == "aeroscapes":
        samples = _aeroscapes_split(root, which, fold)
    else:
        samples = _membrane_split(root, which, fold)
    log.debug("%s/%s (fold %s): %d samples", name, which, fold, len(samples))
    return samples


def _open(path: str) -> Image.Image:
    """Open an image file, turning I/O and format errors into DatasetError."""
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; check the file is a valid image") from exc
    return img


def load_image(sample: Sample, ds: DatasetSpec) -> np.ndarray:
    """Image as (H, W, C) uint8: RGB for 3-channel datasets, (H, W, 1) greyscale for membrane."""
    img = _open(sample.image_path)
    if ds.in_channels == 1:
        return np.asarray(img.convert("L"), dtype=np.uint8)[:, :, None]
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _pack(rgb: np.ndarray) -> np.ndarray:
    """Pack (..., 3) uint8 RGB into one int32 per pixel (0xRRGGBB) for vectorised lookup."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _colour_label(path: str, ds: DatasetSpec) -> np.ndarray:
    """Colour-coded mask -> (H, W) uint8 class index via a sorted packed-colour table."""
    # Palette masks (tiles 2 and 4) store indices, not colours; convert so colours can be matched.
    rgb = np.asarray(_open(path).convert("RGB"), dtype=np.uint8)
    keys = [_pack(np.array(c, dtype=np.uint8)) for c in ds.class_colors]
    values = list(range(len(ds.class_colors)))
    keys += [_pack(np.array(c, dtype=np.uint8)) for c in _DUBAI_IGNORE_COLOURS]
    values += [IGNORE] * len(_DUBAI_IGNORE_COLOURS)
    order = np.argsort(keys)
    table_keys = np.asarray(keys, dtype=np.int32)[order]
    table_vals = np.asarray(values, dtype=np.uint8)[order]
    packed = _pack(rgb)
    pos = np.clip(np.searchsorted(table_keys, packed), 0, len(table_keys) - 1)
    known = table_keys[pos] == packed
    if not known.all():
        bad = int(packed[~known][0])
        raise DatasetError(
            f"mask {path} has unknown colour #{bad:06X} "
            f"({bad >> 16}, {(bad >> 8) & 255}, {bad & 255}) at {int((~known).sum())} pixels; "
            f"fix the mask or add the colour to the dataset spec"
        )
    return table_vals[pos]


def load_label(sample: Sample, ds: DatasetSpec) -> np.ndarray:
    """Label as (H, W) uint8 class index, IGNORE (255) where unlabelled or unknown."""
    if sample.label_path is None:
        raise DatasetError(f"sample {sample.name} ({sample.image_path}) has no label file")
    path = sample.label_path
    if ds.name == "dubai-aerial":
        label = _colour_label(path, ds)
        # The README promises mask size == image size; read only the JPEG header to check it.
        with Image.open(sample.image_path) as img:
            width, height = img.size
        if label.shape != (height, width):
            raise DatasetError(
                f"mask {path} is {label.shape[1]}x{label.shape[0]} but image {sample.image_path} "
                f"is {width}x{height}; the pair must have the same size, fix or drop it"
            )
        return label
    raw = np.asarray(_open(path).convert("L"), dtype=np.uint8)
    if ds.name == "camvid":
        n = len(ds.class_names)
        if raw.max(initial=0) > _CAMVID_UNLABELLED:
            raise DatasetError(
                f"label {path} has value {int(raw.max())} > {_CAMVID_UNLABELLED}; "
                f"expected CamVid class indices 0..{_CAMVID_UNLABELLED}"
            )
        # Value 11 (Unlabelled) is the only index >= n; everything else is already a class index.
        return np.where(raw >= n, np.uint8(IGNORE), raw).astype(np.uint8)
    if ds.name == "membrane":
        # 0 = membrane (class 0), 255 = cell interior (class 1); threshold any in-between values.
        return (raw >= 128).astype(np.uint8)
    if ds.name == "aeroscapes":
        if raw.max(initial=0) >= _AEROSCAPES_VALUES:
            raise DatasetError(f"label {path} has value {int(raw.max())}; expected Aeroscapes class indices "
                               f"0..{_AEROSCAPES_VALUES - 1}")
        return _AEROSCAPES_TABLE[raw]
    raise DatasetError(f"no label rule for dataset {ds.name!r}")


def folder_pairs(images: str, labels: str) -> list[Sample]:
    """Images and labels from two folders, matched by file stem; an image without a label is an error."""
    for folder in (images, labels):
        if not os.path.isdir(folder):
            raise DatasetError(f"folder {folder} does not exist; pass the images and labels folders")
    label_by_stem = {os.path.splitext(f)[0]: os.path.join(labels, f) for f in sorted(os.listdir(labels))}
    pairs = []
    for f in sorted(os.listdir(images)):
        stem = os.path.splitext(f)[0]
        if stem not in label_by_stem:
            raise DatasetError(f"{os.path.join(images, f)} has no label named {stem}.* in {labels}")
        pairs.append(Sample(os.path.join(images, f), label_by_stem[stem], stem))
    if not pairs:
        raise DatasetError(f"no images in {images}")
    return pairs


def folder_label(path: str, colors: list[tuple[int, int, int]] | tuple, label_format: str) -> np.ndarray:
    """A folder label image as (H, W) uint8 class indexes.

    ``index``: pixel values are class indexes already (values >= len(colors) become IGNORE);
    ``rgb``: pixels coloured ``colors[i]`` are class i, every other colour is IGNORE.
    """
    img = _open(path)
    if label_format == "index":
        raw = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.where(raw >= len(colors), np.uint8(IGNORE), raw).astype(np.uint8) if colors else raw
    if label_format != "rgb":
        raise DatasetError(f"label format must be 'index' or 'rgb', not {label_format!r}")
    packed = _pack(np.asarray(img.convert("RGB"), dtype=np.uint8))
    out = np.full(packed.shape, IGNORE, np.uint8)
    for i, color in enumerate(colors):
        out[packed == _pack(np.array(color, dtype=np.uint8))] = i
    return out


def aeroscapes_frame(folder: str, name: str) -> tuple[Path, np.ndarray]:
    """One Aeroscapes frame's path and its labels as class indexes (``tileseg demo --drone``)."""
    frame = data_root() / "aeroscapes" / folder / "images" / f"{name}.jpg"
    label = frame.parent.parent / "gts" / f"{name}.png"
    if not (frame.is_file() and label.is_file()):
        raise DatasetError(f"the Aeroscapes frame {frame} is missing; set TILESEG_DATA to the shared data folder "
                           "(its aeroscapes/ holds the drone frames)")
    return frame, load_label(Sample(str(frame), str(label), name), spec("aeroscapes"))
