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
``PRESETS``; into ``--cv_dir``, default ``runs/<name>-cv``), reports mIoU, per-class IoU and recall
for each and their means in ``cv.json``, pools the folds' hazard curves on their held-out flights to
choose the card's hazard threshold (training/hazard_eval.py), then trains the shipped model on every
flight with the same configuration (``--fold none`` alone) and gives its card the folds' figures.
A fold or final model already finished with the same configuration is reused, so the folds can run
as separate commands side by side (``taskset -c 0 ... --fold 0`` and ``taskset -c 1 ... --fold 1``:
each run uses the cores it may) and ``--fold all`` then collects them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from dataclasses import replace
from typing import Any

import numpy as np

from common.cli import exit_now
from model.card import ModelCard, load_card, save_card
from training import datasets
from training.config import TrainConfig, config_from_args, config_record
from training.export import export_model
from training.fit import train
from training.hazard_eval import TARGET_FALSE_ALARM, HazardCounts, choose_threshold, hazard_counts
from training.presets import PRESETS
from training.splits import load_training_data


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tileseg train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    p.add_argument("--arch", default="unet", choices=("unet", "fcn"))
    p.add_argument("--out", help="model directory to write (default model/weights/<name>)")
    p.add_argument("--fold", default="0", help="membrane fold 0-4 or aeroscapes fold 0-2 (the flight held out); "
                                               "'all': their cross-validation (aeroscapes: then the shipped model "
                                               "on every flight); 'none': aeroscapes on every flight only")
    p.add_argument("--cv_dir", help="where --fold all writes (and resumes) the folds' models and cv.json "
                                    "(default: --out for membrane, runs/<name>-cv for aeroscapes)")
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
        # The cores this process may use (taskset), not the machine's: two runs pinned side by side.
        tf.config.threading.set_intra_op_parallelism_threads(len(os.sched_getaffinity(0)))
    except RuntimeError:  # TensorFlow already running in this process (tests): keep its setting
        pass


def run_one(a: argparse.Namespace, fold: int | None, out: str, command: str) -> ModelCard:
    cfg = config_from_args(a, fold)
    data = load_training_data(a, fold, cfg.partial_fraction > 0)
    result = train(cfg, data, out)
    return export_model(cfg, data, result, out, command)


#: Datasets with cross-validation folds, and how many.
CV_FOLDS = {"membrane": 5, "aeroscapes": 3}
#: Cross-validated datasets whose ``--fold all`` then trains the shipped model on every image with
#: the folds' schedule (``--fold none`` alone); its card carries the folds' figures.
SHIPS_ALL_IMAGES = {"aeroscapes"}


def _folds(a: argparse.Namespace) -> list[int | None]:
    """The folds ``--fold`` asks for (None: every image trains); DatasetError when it makes no sense."""
    if a.fold in ("all", "none") and a.dataset not in CV_FOLDS:
        raise datasets.DatasetError(f"--fold {a.fold} is for the cross-validated datasets ({', '.join(CV_FOLDS)})")
    if a.fold == "none":
        if a.dataset not in SHIPS_ALL_IMAGES:
            raise datasets.DatasetError(f"--fold none (train on every image) is for {', '.join(sorted(SHIPS_ALL_IMAGES))}")
        return [None]
    if a.fold == "all":
        return list(range(CV_FOLDS[a.dataset]))
    try:
        return [int(a.fold)]
    except ValueError:
        raise datasets.DatasetError(f"--fold must be a number, 'all' or 'none', got {a.fold!r}") from None


def _finished(out: str, cfg: TrainConfig) -> ModelCard | None:
    """The card of a finished run of exactly ``cfg`` in ``out``, else None: a cross-validation that
    was stopped, or whose folds ran as separate commands (one per core), picks up where it is."""
    try:
        card = load_card(out)
    except (OSError, ValueError):
        return None
    same = card.training.get("config") == json.loads(json.dumps(config_record(cfg)))
    if same and os.path.isfile(os.path.join(out, card.model_file)):
        print(f"{out}: reusing the finished run of this configuration", flush=True)
        return card
    return None


def _train_or_reuse(a: argparse.Namespace, fold: int | None, out: str, command: str) -> ModelCard:
    return _finished(out, config_from_args(a, fold)) or run_one(a, fold, out, command)


def _cv_row(fold: int, card: ModelCard) -> dict[str, Any]:
    m = card.metrics
    row: dict[str, Any] = {"fold": fold, "miou": m["miou"], "pixel_error": m["pixel_error"],
                              "per_class_iou": m["per_class_iou"], "per_class_recall": m.get("per_class_recall"),
                              "wall_time_s": card.training["wall_time_s"]}
    if "confusion" in m:
        # mIoU over the classes the held-out images contain (``miou`` also counts a class that is
        # only predicted there, at IoU 0: a false alarm of a class absent from the flight).
        truth = np.asarray(m["confusion"]).sum(axis=1)
        present = [c.name for c, n in zip(card.classes, truth) if n > 0]
        row["classes_present"] = present
        row["miou_present"] = round(float(np.mean([m["per_class_iou"][n] for n in present])), 4)
    if "cell" in m["per_class_iou"]:
        row["cell_iou"] = m["per_class_iou"]["cell"]
    return row


def _cv_mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over folds; a class's IoU or recall over the folds where it is defined (it occurs)."""
    mean: dict[str, Any] = {k: round(float(np.mean([r[k] for r in rows])), 4)
                            for k in ("miou", "miou_present", "pixel_error", "cell_iou") if all(k in r for r in rows)}
    for key in ("per_class_iou", "per_class_recall"):
        per = [r[key] for r in rows if r.get(key)]
        names = list(per[0]) if per else []
        values = {n: [p[n] for p in per if p[n] is not None] for n in names}
        mean[key] = {n: round(float(np.mean(v)), 4) if v else None for n, v in values.items()}
    return mean


def _fold_hazards(a: argparse.Namespace, folds: list[int], cv_dir: str) -> dict[str, Any] | None:
    """The hazard curve (training/hazard_eval.py) of every fold's model on its held-out images,
    pooled, and the threshold it chooses; None for datasets whose landing says nothing to choose for."""
    from model.predictor import Predictor

    spec = datasets.spec(a.dataset)
    focus = spec.landing.get("threshold_for")
    if not focus:
        return None
    total: HazardCounts | None = None
    for fold in folds:
        model_dir = os.path.join(cv_dir, f"fold{fold}")
        card = replace(load_card(model_dir), landing=dict(spec.landing))
        roles = tuple(spec.landing["roles"][c.name] for c in card.classes)
        samples = ((s.name, datasets.load_image(s, spec), datasets.load_label(s, spec))
                   for s in datasets.split(a.dataset, "val", fold))
        counts = hazard_counts(Predictor.from_dir(model_dir, "float32", card), card, roles, samples)
        if total is None:
            total = counts
        else:
            total += counts
    assert total is not None
    curve = total.curve()
    chosen = choose_threshold(curve, focus)
    print(f"hazard threshold P {chosen['max_hazard_probability']}: {focus} recall {chosen['recall'][focus]}, "
          f"false alarms {chosen['false_alarm_rate']} of landable ground (held-out flights pooled)", flush=True)
    return {"focus": focus, "target_false_alarm": TARGET_FALSE_ALARM, "images": total.images,
            "rule": f"highest {focus} recall with false-alarm rate <= {TARGET_FALSE_ALARM}",
            "chosen": chosen, "curve": curve}


CV_FILE = "cv.json"


def save_cv(report: dict[str, Any], folder: str) -> None:
    """``cv.json``: in the folds' folder, and beside the every-image model it describes."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, CV_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)


def _cross_validate(a: argparse.Namespace, folds: list[int | None], cv_dir: str, command: str) -> dict[str, Any]:
    rows = []
    for fold in folds:
        assert fold is not None
        card = _train_or_reuse(a, fold, os.path.join(cv_dir, f"fold{fold}"), command)
        rows.append(_cv_row(fold, card))
        print(f"fold {fold}: mIoU {rows[-1]['miou']:.4f} (over the classes present: {rows[-1].get('miou_present')})  "
              f"pixel error {rows[-1]['pixel_error']:.4f}", flush=True)
    mean = _cv_mean(rows)
    report = {"arch": a.arch, "dataset": a.dataset, "folds": rows, "mean": mean,
              "train_minutes_total": round(sum(float(r["wall_time_s"]) for r in rows) / 60, 1)}
    hazards = _fold_hazards(a, [r["fold"] for r in rows], cv_dir)
    if hazards is not None:
        report["hazards"] = hazards
    save_cv(report, cv_dir)
    print(f"{a.arch} {len(folds)}-fold mean: mIoU {mean['miou']:.4f}  pixel error {mean['pixel_error']:.4f}")
    return report



def _with_cv_figures(card: ModelCard, report: dict[str, Any], out: str) -> ModelCard:
    """The every-image model's card with the folds' figures as its metrics (it has no held-out
    split of its own); cv.json beside it."""
    mean = report["mean"]
    metrics = {"miou": mean["miou"], "miou_present": mean.get("miou_present"), "pixel_error": mean["pixel_error"],
               "per_class_iou": mean["per_class_iou"],
               "per_class_recall": mean["per_class_recall"],
               "split": (f"leave-one-out cross-validation: means over {len(report['folds'])} folds, each fold's "
                         f"model never saw the images it is scored on; this model trained on every image with "
                         f"the same configuration ({CV_FILE})"),
               "folds": [{k: r.get(k) for k in ("fold", "miou", "miou_present", "classes_present", "per_class_iou",
                                                "per_class_recall")} for r in report["folds"]]}
    landing = dict(card.landing)
    if "hazards" in report:
        hazards = report["hazards"]
        chosen = hazards["chosen"]
        landing["max_hazard_probability"] = chosen["max_hazard_probability"]
        landing["threshold_how"] = (f"{hazards['rule']}, on the folds' held-out images pooled ({CV_FILE}: hazards): "
                                    f"{hazards['focus']} recall {chosen['recall'][hazards['focus']]}, "
                                    f"false alarms {chosen['false_alarm_rate']}")
        metrics["hazards_at_threshold"] = chosen
    card = replace(card, metrics=metrics, landing=landing)
    save_card(card, out)
    save_cv(report, out)
    return card


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    command = "tileseg train " + " ".join(shlex.quote(x) for x in args)
    try:
        folds = _folds(a)
        first = config_from_args(a, folds[0])
        out = a.out or os.path.join("model", "weights", first.name)
        _setup_tf()
        if len(folds) == 1:
            card = run_one(a, folds[0], out, command)
            print(json.dumps({"model": card.model_id, "out": out, "wall_time_s": card.training["wall_time_s"],
                              **{k: card.metrics[k] for k in ("miou", "pixel_accuracy", "pixel_error", "per_class_iou")
                                 if k in card.metrics}}))
            return 0
        ships = a.dataset in SHIPS_ALL_IMAGES
        cv_dir = a.cv_dir or (os.path.join("runs", f"{first.name}-cv") if ships else out)
        report = _cross_validate(a, folds, cv_dir, command)
        if ships:
            card = _with_cv_figures(_train_or_reuse(a, None, out, command), report, out)
            print(f"{out}: trained on every image; card metrics = the folds' means", flush=True)
        print(json.dumps(report))
        return 0
    except (datasets.DatasetError, ValueError) as exc:
        print(f"tileseg train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    exit_now(main())
