"""``tileseg evaluate``: pixel accuracy, per-class IoU, mIoU and the confusion matrix of a model.

Every image is predicted through the pipeline's own plan → patch → predict → stitch code
(``common/segment_array.py``, by way of training/evaluation.py), so the figures describe what users get from ``tileseg run``.
``--tta`` averages class probabilities over the views the model was trained to treat alike: the 8
D4 views (flips and quarter turns), or only the left-right flip for models whose card says they
were trained without rotations (street scenes; membrane, whose labels are offset vertically).

    tileseg evaluate --model DIR (--dataset NAME --split S [--fold K] | --images DIR --labels DIR
                      [--label_format index|rgb]) [--precision P] [--tta] [--limit N]
                      [--landing PROFILE --gsd M [--probabilities 1,0.5,0.3] [--margins 0,1,2]]
                      [--hazards [--probabilities ...]]
``--hazards``: per hazard class, the share of its pixels that landing mapping treats as hazard, and
the false-alarm rate on landable ground, over a sweep of P (training/hazard_eval.py).
The last line printed is one JSON object with ``miou``, ``pixel_accuracy``, ``per_class_iou``,
``per_class_recall`` and ``per_class_precision`` (keyed by class name) and the confusion matrix.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator

import numpy as np

from common.cli import exit_now, setup_logging
from common.metrics import summary
from model.card import ModelCard, load_card
from model.landing import LandingError, load_profile
from model.predictor import Predictor
from model.shipped import DEFAULT_MODEL
from training import datasets, kampala
from training.evaluation import evaluate, segmenter, to_grey, tta_views
from training.hazard_eval import DEFAULT_THRESHOLDS as HAZARD_THRESHOLDS
from training.hazard_eval import choose_threshold, hazard_counts
from training.landing_eval import DEFAULT_SWEEP, evaluate_landing

log = logging.getLogger(__name__)


def _samples(a: argparse.Namespace, card: ModelCard) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    if a.dataset:
        ds = datasets.spec(a.dataset)
        if len(ds.class_names) != card.num_classes:
            raise datasets.DatasetError(f"{a.dataset} has {len(ds.class_names)} classes but model {card.model_id} "
                                        f"has {card.num_classes}; evaluate a model trained for this dataset")
        for s in datasets.split(a.dataset, a.split, a.fold)[: a.limit]:
            yield s.name, datasets.load_image(s, ds), datasets.load_label(s, ds)
    else:
        colors = [c.color for c in card.classes]
        for s in datasets.folder_pairs(a.images, a.labels)[: a.limit]:
            image = datasets.load_image(s, datasets.DatasetSpec("folder", (), (), "", card.num_bands))
            yield s.name, image, datasets.folder_label(s.label_path or "", colors, a.label_format)


def _partial(a: argparse.Namespace, card: ModelCard, predict: Callable[[np.ndarray], np.ndarray]) -> int:
    names = [c.name for c in card.classes]
    if kampala.LABELLED_CLASS not in names:
        print(f"tileseg evaluate: {kampala.FOLDER} scores the class {kampala.LABELLED_CLASS}, which model "
              f"{card.model_id} does not have", file=sys.stderr)
        return 2
    try:
        scores = kampala.evaluate_partial(predict, names.index(kampala.LABELLED_CLASS), a.split)
    except datasets.DatasetError as exc:
        print(f"tileseg evaluate: {exc}", file=sys.stderr)
        return 2
    print(f"model {card.model_id} on {kampala.FOLDER}/{a.split}: {kampala.LABELLED_CLASS} IoU {scores['iou']}, "
          f"precision {scores['precision']}, recall {scores['recall']}")
    print(json.dumps({"dataset": kampala.FOLDER, "split": a.split, "class": kampala.LABELLED_CLASS,
                      "building_iou": scores["iou"], **scores, "model": card.model_id, "grey": a.grey}))
    return 0


def _landing(a: argparse.Namespace, card: ModelCard, predictor: Predictor) -> int:
    if a.gsd is None or not a.gsd > 0:
        print("tileseg evaluate: --landing needs --gsd M, the images' metres per pixel (e.g. 0.5 for dubai-aerial)",
              file=sys.stderr)
        return 2
    try:
        profile = load_profile(a.landing)
        sweep = tuple(float(v) for v in a.probabilities.split(",")) if a.probabilities else DEFAULT_SWEEP
        if any(not 0 < p <= 1 for p in sweep):
            raise LandingError("--probabilities must lie in (0, 1]")
        margins = tuple(float(v) for v in a.margins.split(",")) if a.margins else None
        if margins and any(not m >= 0 for m in margins):
            raise LandingError("--margins must be >= 0")
        result = evaluate_landing(predictor, card, profile, _samples(a, card), a.gsd, sweep, margins)
    except (LandingError, ValueError, datasets.DatasetError) as exc:
        print(f"tileseg evaluate: {exc}", file=sys.stderr)
        return 2
    print(f"model {card.model_id}, profile {profile.name}, {result['images']} images at {a.gsd} m/pixel; "
          f"ground-truth zones {result['truth_zone_m2']:,.0f} m²")
    print("  P      +buffer m  false-safe  safe recall  predicted m²")
    for c in result["curve"]:
        print(f"  {c['max_hazard_probability']:<6} {c['margin_m']:>9}  {c['false_safe_rate']:>10.4f}  "
              f"{c['safe_recall'] or 0:>11.4f}  {c['predicted_zone_m2']:>12,.0f}")
    s = result["suggested"]
    print(f"suggested max_hazard_probability {s['max_hazard_probability']} "
          f"(false-safe {s['false_safe_rate']}, "
          f"recall {s['safe_recall']}; target false-safe <= {result['target_false_safe']})")
    print(json.dumps({**result, "model": card.model_id, "dataset": a.dataset, "split": a.split}))
    return 0


def _hazards(a: argparse.Namespace, card: ModelCard, predictor: Predictor) -> int:
    roles = (card.landing or {}).get("roles") or {}
    missing = [c.name for c in card.classes if c.name not in roles]
    if missing:
        print(f"tileseg evaluate: --hazards needs the card's landing roles; model {card.model_id} has none for "
              f"{', '.join(missing)}", file=sys.stderr)
        return 2
    sweep = tuple(float(v) for v in a.probabilities.split(",")) if a.probabilities else HAZARD_THRESHOLDS
    try:
        counts = hazard_counts(predictor, card, tuple(roles[c.name] for c in card.classes), _samples(a, card), sweep)
    except datasets.DatasetError as exc:
        print(f"tileseg evaluate: {exc}", file=sys.stderr)
        return 2
    curve = counts.curve()
    focus = card.landing.get("threshold_for")
    print(f"model {card.model_id}: {counts.images} images; card P {card.landing.get('max_hazard_probability', 'none')}")
    print(f"  {'P':>5} {'false alarms':>12}  recall by hazard class")
    for row in curve:
        print(f"  {row['max_hazard_probability']:>5g} {row['false_alarm_rate']:>12}  "
              + "  ".join(f"{k} {v}" for k, v in row["recall"].items()))
    print(json.dumps({"model": card.model_id, "images": counts.images, "curve": curve,
                      **({"suggested": choose_threshold(curve, focus)} if focus else {})}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tileseg evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", choices=("dubai-aerial", "camvid", "membrane", "aeroscapes", kampala.FOLDER),
                        help=f"{kampala.FOLDER}: partial Building labels; prints Building IoU, precision, recall")
    parser.add_argument("--split", default="val", choices=("train", "val"))
    parser.add_argument("--fold", type=int, default=0,
                        help="membrane cross-validation fold (0-4); aeroscapes: the flight held out (0-2)")
    parser.add_argument("--images")
    parser.add_argument("--labels")
    parser.add_argument("--label_format", default="index", choices=("index", "rgb"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--tta", action="store_true",
                        help="average the D4 views (left-right flips only for models trained without rotations)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--grey", action="store_true",
                        help="feed every image as its luminance in all bands (how a panchromatic tile reaches the model)")
    parser.add_argument("--landing", help="landing profile (shipped name or JSON): compare zones from predictions "
                                          "with zones from the labels (false-safe rate, safe recall) over a sweep of P")
    parser.add_argument("--gsd", type=float, default=None, help="metres per pixel of the images (--landing)")
    parser.add_argument("--margins", default=None,
                        help="comma-separated extra buffers (m) on the predicted hazard classes to sweep "
                             "besides none: a what-if for wider profile buffers (--landing)")
    parser.add_argument("--probabilities", default=None,
                        help="comma-separated max_hazard_probability values to sweep (--landing, --hazards)")
    parser.add_argument("--hazards", action="store_true",
                        help="hazard-class recall and false alarms on landable ground over a sweep of P (card's roles)")
    a = parser.parse_args(argv)
    if bool(a.dataset) == bool(a.images or a.labels) or (not a.dataset and not (a.images and a.labels)):
        parser.error("give either --dataset NAME or both --images DIR and --labels DIR")
    setup_logging()

    card = load_card(a.model)
    predictor = Predictor.from_dir(a.model, a.precision, card)
    views = tta_views(card) if a.tta else None
    predict = segmenter(predictor, views)
    if a.grey:
        rgb_predict = predict

        def predict(image: np.ndarray) -> np.ndarray:
            return rgb_predict(to_grey(image) if image.shape[-1] == 3 else image)
    if a.dataset == kampala.FOLDER:
        return _partial(a, card, predict)
    if a.landing:
        return _landing(a, card, predictor)
    if a.hazards:
        return _hazards(a, card, predictor)
    try:
        cm = evaluate(predict, _samples(a, card), card.num_classes, log_each=True).confusion
    except datasets.DatasetError as exc:
        print(f"tileseg evaluate: {exc}", file=sys.stderr)
        return 2
    names = [c.name for c in card.classes]
    result = summary(cm, names)
    print(f"model {card.model_id} ({predictor.precision}{f', TTA x{len(views)}' if views else ''})")
    print(f"pixel accuracy {result['pixel_accuracy']:.4f}   mIoU {result['miou']:.4f}")
    def shown(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    print(f"  {'class':<24} {'IoU':>7} {'recall':>7} {'precision':>9}")
    for n in names:
        print(f"  {n:<24} {shown(result['per_class_iou'][n]):>7} {shown(result['per_class_recall'][n]):>7} "
              f"{shown(result['per_class_precision'][n]):>9}")
    print("confusion matrix (rows = truth, columns = prediction):")
    for n, row in zip(names, cm):
        print(f"  {n[:12]:<12} " + " ".join(f"{v:>10d}" for v in row))
    print(json.dumps({**result, "confusion": cm.tolist(), "model": card.model_id, "grey": a.grey,
                      "precision": predictor.precision, "tta": a.tta, "tta_views": len(views) if views else 1}))
    return 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
