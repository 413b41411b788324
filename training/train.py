"""``tileseg train``: train a U-Net (or the FCN-8s baseline) on a labelled dataset and export it.

    tileseg train --dataset {dubai-aerial,camvid,membrane,folder} [--arch unet|fcn] [--out DIR]
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
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys

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
    p.add_argument("--fold", default="0", help="membrane fold 0-4, or 'all' for 5-fold cross-validation")
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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    command = "tileseg train " + " ".join(shlex.quote(x) for x in args)
    try:
        folds = list(range(5)) if a.fold == "all" else [int(a.fold)]
        if a.fold == "all" and a.dataset != "membrane":
            raise datasets.DatasetError("--fold all is for membrane cross-validation only")
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
            rows.append({"fold": fold, "pixel_error": card.metrics["pixel_error"],
                         "cell_iou": card.metrics["per_class_iou"]["cell"], "miou": card.metrics["miou"],
                         "wall_time_s": card.training["wall_time_s"]})
            print(f"fold {fold}: pixel error {rows[-1]['pixel_error']:.4f}  cell IoU {rows[-1]['cell_iou']:.4f}", flush=True)
        mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("pixel_error", "cell_iou", "miou")}
        report = {"arch": a.arch, "folds": rows, "mean": mean,
                  "train_minutes_total": round(sum(r["wall_time_s"] for r in rows) / 60, 1)}
        with open(os.path.join(out, "cv.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"{a.arch} 5-fold mean: pixel error {mean['pixel_error']:.4f}  cell IoU {mean['cell_iou']:.4f}")
        print(json.dumps(report))
        return 0
    except (datasets.DatasetError, ValueError) as exc:
        print(f"tileseg train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    exit_now(main())
