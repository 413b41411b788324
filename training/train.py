"""``tileseg train``: train a U-Net (or the FCN-8s baseline) on a labelled dataset and export it.

    tileseg train --dataset {dubai-aerial,camvid,membrane,aeroscapes,folder} [--arch unet|fcn] [--out DIR]
                  [--fold K|all] [--epochs N] [--max_minutes M] [--seed S] [architecture/optimiser options]

Each dataset has a preset (``PRESETS``: architecture, crop, batch, schedule, augmentation, patch
size and halo for the pipeline); any option given on the command line overrides it. Training
runs in ``mixed_bfloat16`` (about 2x float32 on CPUs with AVX512-BF16), AdamW with warm-up and
cosine decay, pixel-weighted cross-entropy (class weights, ignore index weight 0; optionally plus a
soft-IoU term, ``model/losses.py``). After every
epoch the model segments the validation images through the pipeline's own patch-and-stitch code
(``common.segment_array``): the best mIoU is checkpointed, and training stops when it has not
improved for ``--patience`` epochs (counted in the second half of the schedule) or at
``--max_minutes``. The export is a float32 ``.keras``
file (safe-mode loadable, no custom code) plus its model card, with validation metrics measured on
the exported file and bfloat16/float16 label agreement.

Membrane cross-validation (``--fold all``) trains the five folds for a fixed number of epochs and
exports the last weights: the held-out fold never chooses anything, so its figures are unbiased.
Aeroscapes' ``--fold all`` trains its three leave-one-flight-out folds (the preset's schedule; see
``PRESETS``) and reports mIoU, per-class IoU and recall for each and their means in ``cv.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from typing import Any

import numpy as np

from common.cli import exit_now
from model.card import ModelCard
from training import datasets
from training.config import config_from_args
from training.export import export_model
from training.fit import train
from training.presets import PRESETS
from training.splits import load_training_data


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tileseg train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    p.add_argument("--arch", default="unet", choices=("unet", "fcn"))
    p.add_argument("--out", help="model directory to write (default model/weights/<name>)")
    p.add_argument("--fold", default="0", help="membrane fold 0-4 or aeroscapes fold 0-2 (the flight held out), "
                                               "or 'all' for their cross-validation")
    g = p.add_argument_group("folder dataset")
    g.add_argument("--images"), g.add_argument("--labels")
    g.add_argument("--val_images"), g.add_argument("--val_labels")
    g.add_argument("--label_format", default="index", choices=("index", "rgb"))
    g.add_argument("--classes", help='JSON list of {"name": ..., "color": [r, g, b]} in class order')
    g.add_argument("--channels", type=int, default=3, choices=(1, 3))
    g.add_argument("--license", help="licence of the training data, recorded in the card")
    o = p.add_argument_group("overrides of the dataset preset")
    for name, kind in (("name", str), ("version", str), ("depth", int), ("base_filters", int),
                       ("input_stride", int), ("stem", str), ("dropout", float), ("upsampling", str), ("crop", int),
                       ("batch", int), ("epochs", int), ("steps_per_epoch", int), ("lr", float),
                       ("weight_decay", float), ("ema", float), ("warmup_steps", int), ("patience", int), ("bn_batches", int),
                       ("select", str), ("max_minutes", float), ("seed", int), ("class_weighting", str), ("iou_loss", float),
                       ("jitter", float), ("zoom", float), ("elastic", float), ("synthetic_fraction", float),
                       ("partial_fraction", float), ("gamma", float), ("hue", float), ("blur", float),
                       ("noise", float), ("grey", float),
                       ("patch_size", int), ("halo", int), ("policy", str), ("init", str)):
        o.add_argument(f"--{name}", type=kind, default=None)
    o.add_argument("--d4", type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                   help="true: D4 flips/rotations; false: left-right flips only")
    return p


def _setup_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
    except RuntimeError:  # TensorFlow already running in this process (tests): keep its setting
        pass


def run_one(a: argparse.Namespace, fold: int, out: str, command: str) -> ModelCard:
    cfg = config_from_args(a, fold)
    data = load_training_data(a, fold, cfg.partial_fraction > 0)
    result = train(cfg, data, out)
    return export_model(cfg, data, result, out, command)


#: Datasets with cross-validation folds, and how many.
CV_FOLDS = {"membrane": 5, "aeroscapes": 3}


def _cv_row(fold: int, card: ModelCard) -> dict[str, Any]:
    m = card.metrics
    row: dict[str, Any] = {"fold": fold, "miou": m["miou"], "pixel_error": m["pixel_error"],
                              "per_class_iou": m["per_class_iou"], "per_class_recall": m.get("per_class_recall"),
                              "wall_time_s": card.training["wall_time_s"]}
    if "cell" in m["per_class_iou"]:
        row["cell_iou"] = m["per_class_iou"]["cell"]
    return row


def _cv_mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over folds; a class's IoU or recall over the folds where it is defined (it occurs)."""
    mean: dict[str, Any] = {k: round(float(np.mean([r[k] for r in rows])), 4)
                            for k in ("miou", "pixel_error", "cell_iou") if all(k in r for r in rows)}
    for key in ("per_class_iou", "per_class_recall"):
        per = [r[key] for r in rows if r.get(key)]
        names = list(per[0]) if per else []
        values = {n: [p[n] for p in per if p[n] is not None] for n in names}
        mean[key] = {n: round(float(np.mean(v)), 4) if v else None for n, v in values.items()}
    return mean


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    command = "tileseg train " + " ".join(shlex.quote(x) for x in args)
    try:
        if a.fold == "all" and a.dataset not in CV_FOLDS:
            raise datasets.DatasetError("--fold all (cross-validation) is for the cross-validated datasets "
                                        f"({', '.join(CV_FOLDS)})")
        folds = list(range(CV_FOLDS[a.dataset])) if a.fold == "all" else [int(a.fold)]
        first = config_from_args(a, folds[0])
        out = a.out or os.path.join("model", "weights", first.name)
        _setup_tf()
        if len(folds) == 1:
            card = run_one(a, folds[0], out, command)
            print(json.dumps({"model": card.model_id, "out": out, **{k: card.metrics[k] for k in
                              ("miou", "pixel_accuracy", "pixel_error", "per_class_iou")},
                              "wall_time_s": card.training["wall_time_s"]}))
            return 0
        rows = []
        for fold in folds:
            card = run_one(a, fold, os.path.join(out, f"fold{fold}"), command)
            rows.append(_cv_row(fold, card))
            print(f"fold {fold}: mIoU {rows[-1]['miou']:.4f}  pixel error {rows[-1]['pixel_error']:.4f}", flush=True)
        mean = _cv_mean(rows)
        report = {"arch": a.arch, "dataset": a.dataset, "folds": rows, "mean": mean,
                  "train_minutes_total": round(sum(float(r["wall_time_s"]) for r in rows) / 60, 1)}
        with open(os.path.join(out, "cv.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"{a.arch} {len(folds)}-fold mean: mIoU {mean['miou']:.4f}  pixel error {mean['pixel_error']:.4f}")
        print(json.dumps(report))
        return 0
    except (datasets.DatasetError, ValueError) as exc:
        print(f"tileseg train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    exit_now(main())
