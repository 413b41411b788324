"""Calibrate the per-tile domain check (common/domain.py) of a model and record it in its card.

    python -m training.domain_calibration --model DIR [--write]

The thresholds come from in-domain images only: the validation images of the model's dataset, as
whole images and as every 512 x 512 crop (tiles come in many sizes, and a crop has more extreme
statistics than a whole image). Each threshold sits beyond the most extreme calibration value by
a fixed margin (``MARGINS``), so no calibration tile is flagged. Then the check is measured, never
tuned, on images it did not see: hotosm-kampala's val chips (aerial, another continent: should
pass) for the false-alarm rate, and CamVid street frames, ISBI membrane micrographs, uniform
noise and a constant image (should all be flagged) for the detection rate.

The signals are computed as ``tileseg run`` computes them (the pipeline's patch-and-stitch and
confidence; the input sums over every 4th row and column) but in memory, one image at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from common.cli import exit_now, setup_logging
from common.domain import DomainCheck, block_input_sums, check_domain, judge
from model.card import ModelCard, load_card, save_card
from model.predictor import Predictor
from model.shipped import DEFAULT_MODEL
from training import datasets, kampala

log = logging.getLogger(__name__)

CROP = 512
#: Outward margins beyond the calibration extremes: confidence (probability, subtracted), input
#: distance and oblique view (factors).
MARGINS = {"min_confidence": 0.03, "max_input_distance": 1.25, "max_oblique_view": 1.25}
_DATASET_OF = {"aerial-dubai6": "dubai-aerial", "street-camvid11": "camvid"}


def signals(predictor: Predictor, image: np.ndarray, limits: dict[str, Any] | None = None) -> DomainCheck:
    """The domain signals of one uint8 (H, W, C) image, judged by ``limits`` (default: the card's)."""
    card = predictor.card
    if image.shape[-1] != card.num_bands:  # a grey image reaches an RGB model replicated, as in the pipeline
        image = np.repeat(image[..., :1], card.num_bands, axis=-1)
    _, confidence = predictor.segment_confidence(image, 255.0)
    sums = block_input_sums(image, np.ones(image.shape[:2], bool), 0, image.shape[0], 255.0)
    return check_domain(sums, round(float(confidence.mean()), 6), card.input_stats,
                        card.domain if limits is None else limits)


def crops(image: np.ndarray, size: int = CROP) -> Iterator[np.ndarray]:
    """Every non-overlapping ``size`` x ``size`` crop that lies wholly inside ``image``."""
    h, w = image.shape[:2]
    for r in range(0, h - size + 1, size):
        for c in range(0, w - size + 1, size):
            yield image[r:r + size, c:c + size]


def _images(name: str, which: str, limit: int | None = None) -> list[np.ndarray]:
    spec = datasets.spec(name)
    return [datasets.load_image(s, spec) for s in datasets.split(name, which)[:limit]]


def _out_of_domain_sets(seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        "camvid val (street frames)": _images("camvid", "val", 20),
        "membrane (electron micrographs)": [datasets.load_image(s, datasets.spec("membrane"))
                                            for s in datasets.split("membrane", "val", 0)],
        "uniform noise": [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(2)],
        "constant": [np.full((512, 512, 3), 128, np.uint8), np.full((512, 512, 3), 30, np.uint8)],
    }


def _values(checks: list[DomainCheck]) -> dict[str, list[float]]:
    return {"mean_confidence": [c.mean_confidence for c in checks if c.mean_confidence is not None],
            "input_distance": [c.input_distance for c in checks if c.input_distance is not None],
            "oblique_view": [c.oblique_view for c in checks if c.oblique_view is not None]}


def thresholds(calibration: list[DomainCheck]) -> dict[str, float]:
    v = _values(calibration)
    return {
        "min_confidence": round(min(v["mean_confidence"]) - MARGINS["min_confidence"], 4),
        "max_input_distance": round(max(v["input_distance"]) * MARGINS["max_input_distance"], 4),
        "max_oblique_view": round(max(max(v["oblique_view"]), 0.05) * MARGINS["max_oblique_view"], 4),
    }


def _range(checks: list[DomainCheck]) -> dict[str, list[float]]:
    return {k: [round(min(x), 4), round(max(x), 4)] for k, x in _values(checks).items() if x}


def calibrate(card_dir: str, precision: str = "float32") -> tuple[ModelCard, dict[str, Any]]:
    card = load_card(card_dir)
    dataset = _DATASET_OF.get(card.name)
    if dataset is None:
        raise datasets.DatasetError(f"no calibration images are known for model {card.name}; "
                                    f"calibrate one of {sorted(_DATASET_OF)}")
    predictor = Predictor.from_dir(card_dir, precision, card)
    val = _images(dataset, "val")
    # Per validation image: its whole-image signals, then its crops'.
    groups = [[signals(predictor, im, {})] + [signals(predictor, c, {}) for c in crops(im)] for im in val]
    every = [c for g in groups for c in g]
    limits = thresholds(every)

    def flagged(images: list[np.ndarray]) -> tuple[float, list[DomainCheck]]:
        checks = [signals(predictor, im, limits) for im in images]
        return round(sum(c.in_domain is False for c in checks) / max(len(checks), 1), 4), checks

    report: dict[str, Any] = {"calibration": {"images": f"{dataset} val: {len(val)} whole images and "
                                              f"{len(every) - len(val)} crops of {CROP}x{CROP}",
                                              "ranges": _range(every), "margins": MARGINS,
                                              "rule": "each threshold beyond the calibration extreme by its margin"}}
    # Held out within the validation set: each image's tiles judged by thresholds from the others.
    held_out = [judge(c.mean_confidence, c.input_distance, c.oblique_view,
                      thresholds([o for j, g in enumerate(groups) if j != i for o in g]))
                for i, group in enumerate(groups) for c in group]
    report["false_alarm_rate"] = {
        f"{dataset} val, leave one image out ({len(held_out)} tiles: whole images and crops)":
            round(sum(c.in_domain is False for c in held_out) / len(held_out), 4)}
    names = [c.name for c in card.classes]
    if kampala.LABELLED_CLASS in names:
        chips = kampala.chips("val", names.index(kampala.LABELLED_CLASS))[0]
        rate, checks = flagged(chips)
        report["false_alarm_rate"][f"{kampala.FOLDER} val chips ({len(chips)}, not used to calibrate)"] = rate
        report["ranges_unseen_in_domain"] = _range(checks)
    report["detection_rate"] = {}
    report["ranges_out_of_domain"] = {}
    for name, images in _out_of_domain_sets().items():
        if name.startswith("camvid") and dataset == "camvid":
            continue
        rate, checks = flagged(images)
        report["detection_rate"][f"{name} ({len(images)})"] = rate
        report["ranges_out_of_domain"][name] = _range(checks)
    return replace(card, domain={**limits, **report}), report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.domain_calibration", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--write", action="store_true", help="record the thresholds and figures in the model's card")
    a = p.parse_args(argv)
    setup_logging()
    try:
        card, report = calibrate(a.model)
    except datasets.DatasetError as exc:
        print(f"domain calibration: {exc}", file=sys.stderr)
        return 2
    if a.write:
        save_card(card, a.model)
    print(json.dumps({k: v for k, v in card.domain.items() if k.startswith(("min_", "max_"))}))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    exit_now(main())
