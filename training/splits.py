"""Which images a training run learns from and which it validates on (the fixed splits of
training/datasets.py, or a folder of the user's own labelled images)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

from training import datasets, kampala
from training.train_data import LabelledImages, load_samples


@dataclass
class TrainingData:
    spec: datasets.DatasetSpec
    train: LabelledImages
    val: LabelledImages
    split: dict[str, Any] = field(default_factory=dict)
    #: Partially labelled extra images (hotosm-kampala mosaics, training/kampala.py), or None.
    partial: LabelledImages | None = None
    #: Every source of training pixels: name, what it gave, licence (recorded in the card).
    sources: list[dict[str, str]] = field(default_factory=list)


def _with_partial(data: TrainingData) -> TrainingData:
    """``data`` plus hotosm-kampala's train mosaics, labelled as partial Building labels."""
    if kampala.LABELLED_CLASS not in data.spec.class_names:
        raise datasets.DatasetError(f"--partial_fraction adds {kampala.FOLDER}'s {kampala.LABELLED_CLASS} labels; "
                                    f"{data.spec.name} has no class named {kampala.LABELLED_CLASS}")
    images, labels, names = kampala.mosaics("train", data.spec.class_names.index(kampala.LABELLED_CLASS))
    data.partial = LabelledImages(images, labels, names)
    data.split["partial"] = {"dataset": kampala.FOLDER, "rule": "train = chips/ as one mosaic per zoom level; "
                             "val = val-chips/ (scored chip by chip)", "mosaics": names}
    data.sources.append({"name": kampala.FOLDER, "use": "partial labels (Building / not Building)",
                         "license": kampala.LICENSE})
    return data


def _folder_spec(a: argparse.Namespace) -> datasets.DatasetSpec:
    if not a.classes:
        raise datasets.DatasetError("--dataset folder needs --classes FILE.json: a list of "
                                    '{"name": ..., "color": [r, g, b]} in class-index order')
    try:
        with open(a.classes, encoding="utf-8") as f:
            entries = json.load(f)
        names = tuple(str(e["name"]) for e in entries)
        colors = tuple(tuple(int(v) for v in e["color"]) for e in entries)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise datasets.DatasetError(f"{a.classes}: cannot read class list ({exc}); expected a JSON list of "
                                    '{"name": ..., "color": [r, g, b]}') from None
    return datasets.DatasetSpec("folder", names, colors, a.license or "", a.channels)  # type: ignore[arg-type]


def load_training_data(a: argparse.Namespace, fold: int | None, partial: bool = False) -> TrainingData:
    data = _load(a, fold)
    data.sources.insert(0, {"name": data.spec.name, "use": "full labels", "license": data.spec.license})
    return _with_partial(data) if partial else data


def _split_rule(name: str, fold: int | None) -> str:
    """The fixed split of a shared dataset, in words, for the card (``fold`` already checked)."""
    if fold is None:  # aeroscapes' shipped model (the only dataset that allows it)
        return "every flight trains (no flight held out); the figures are the leave-one-flight-out folds'"
    if name == "membrane":
        return f"5-fold by image index; fold {fold} holds out images {fold * 6}-{fold * 6 + 5}"
    if name == "aeroscapes":
        return f"leave one flight out; fold {fold} holds out flight {datasets.AEROSCAPES_FLIGHTS[fold][1]}"
    return {"dubai-aerial": "val = image_part_008 and image_part_009 of every tile",
            "camvid": "train = the 184 frames present (every other of the 367), val = the 101 val frames"}[name]


def _load(a: argparse.Namespace, fold: int | None) -> TrainingData:
    if a.dataset != "folder":
        spec = datasets.spec(a.dataset)
        train_s = datasets.split(a.dataset, "train", fold)
        val_s = datasets.split(a.dataset, "val", fold)
        return TrainingData(spec, load_samples(train_s, spec), load_samples(val_s, spec),
                            {"rule": _split_rule(a.dataset, fold), "train_images": len(train_s),
                             "val_images": len(val_s), "fold": fold})
    spec = _folder_spec(a)
    if not (a.images and a.labels):
        raise datasets.DatasetError("--dataset folder needs --images DIR and --labels DIR")
    pairs = datasets.folder_pairs(a.images, a.labels)
    if a.val_images and a.val_labels:
        train_s, val_s = pairs, datasets.folder_pairs(a.val_images, a.val_labels)
        rule = f"train = {a.images}, val = {a.val_images}"
    else:
        if len(pairs) < 2:
            raise datasets.DatasetError(f"{a.images} holds {len(pairs)} image; give at least 2 or --val_images/--val_labels")
        val_s = pairs[::5]
        train_s = [p for p in pairs if p not in val_s]
        rule = f"every 5th image of {a.images} (sorted by name) held out for validation"
    fmt = a.label_format
    return TrainingData(spec, load_samples(train_s, spec, fmt), load_samples(val_s, spec, fmt),
                        {"rule": rule, "train_images": len(train_s), "val_images": len(val_s)})
