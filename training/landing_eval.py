"""``tileseg evaluate --landing PROFILE``: landing zones from predictions against zones from the
ground truth, for a sweep of the profile's hazard-probability threshold P.

Both sides go through the pipeline's own zone mapper (common/zones.py) with the pixel size of
``--gsd``; unlabelled ground-truth pixels are nodata on both sides (unknown ground is a hazard).

* **false-safe rate**: share of predicted zone area that the ground truth does not admit (the
  truth's admissible centres, of any area): the number that matters most;
* **safe recall**: share of the ground truth's zone area (components >= min_area_m2) that the
  prediction's zones cover.

The profile's P trades recall for safety. ``--margins`` adds a what-if: every hazard-class
buffer of the predicted side larger by that much (the truth's boundaries are where they are, the
model's are off by a few pixels), to see whether a vehicle profile with wider buffers would be
the better trade than a lower P.

Shares are of pixels summed over all images. The suggested P is the one with the highest recall
among those whose false-safe rate is <= 1 % (or the lowest false-safe rate if none is).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from common.ground import GroundMetric
from common.zones import ZoneRules, array_reader, map_zones
from model.card import ModelCard
from model.landing import Profile, zone_rules
from model.predictor import Predictor

TARGET_FALSE_SAFE = 0.01
DEFAULT_SWEEP = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05)


def _zone_mask(labels: np.ndarray, prob: np.ndarray | None, rules: ZoneRules, gsd: float) -> np.ndarray:
    h, w = labels.shape
    metric = GroundMetric.of(None, (1, 0, 0, 0, 1, 0), h, w, gsd_m=gsd)
    zones = map_zones(h, w, array_reader(labels, prob, rules.nodata), metric, rules, keep_mask=True)
    assert zones.mask is not None
    return zones.mask > 0


def predicted_hazard(predictor: Predictor, image: np.ndarray, hazard_classes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, hazard probability in 255ths) as ``tileseg run --landing`` stitches them."""
    divisor = predictor.card.normalisation.divisor_for("uint8")
    scores = predictor.segment_scores(image, divisor)
    labels = np.argmax(scores, axis=-1).astype(np.uint8)
    summed = scores[..., list(hazard_classes)].sum(axis=-1) if hazard_classes else np.zeros(labels.shape)
    return labels, np.round(np.clip(summed, 0.0, 1.0) * 255.0).astype(np.uint8)


def evaluate_landing(predictor: Predictor, card: ModelCard, profile: Profile, samples: Iterable[tuple[str, np.ndarray,
                     np.ndarray]], gsd: float, sweep: tuple[float, ...] = DEFAULT_SWEEP,
                     margins: tuple[float, ...] | None = None, ignore: int = 255) -> dict[str, Any]:
    """The curve over P (and extra buffers on the predicted hazards, ``margins``; default none)."""
    margins = tuple(sorted({*(margins or ()), 0.0}))
    sweep = tuple(sorted({*sweep, profile.max_hazard_probability}, reverse=True))
    truth_rules = dataclasses.replace(zone_rules(card, profile), max_hazard_probability=1.0)
    any_area = dataclasses.replace(truth_rules, min_area_m2=0.0)
    grid = [(p, m) for m in margins for p in sweep]
    totals = {k: np.zeros(3, np.int64) for k in grid}  # predicted zone px, of which not admitted, truth zone px covered
    truth_zone_px = 0
    images = 0
    for _name, image, label in samples:
        images += 1
        labels, prob = predicted_hazard(predictor, image, truth_rules.hazard_classes)
        unknown = label == ignore
        labels[unknown] = truth_rules.nodata
        truth = np.where(unknown, np.uint8(truth_rules.nodata), label).astype(np.uint8)
        admitted = _zone_mask(truth, None, any_area, gsd)
        truth_zones = _zone_mask(truth, None, truth_rules, gsd)
        truth_zone_px += int(truth_zones.sum())
        for p, m in grid:
            rules = dataclasses.replace(zone_rules(card, profile, extra_buffer_m=m), max_hazard_probability=p)
            pred = _zone_mask(labels, prob, rules, gsd)
            totals[(p, m)] += (int(pred.sum()), int((pred & ~admitted).sum()), int((pred & truth_zones).sum()))
    curve: list[dict[str, Any]] = []
    for p, m in grid:
        pred_px, false_px, covered = (int(v) for v in totals[(p, m)])
        curve.append({"max_hazard_probability": p, "margin_m": m,
                      "false_safe_rate": round(false_px / pred_px, 5) if pred_px else 0.0,
                      "safe_recall": round(covered / truth_zone_px, 5) if truth_zone_px else None,
                      "predicted_zone_m2": round(pred_px * gsd * gsd, 1)})
    ok = [c for c in curve if c["false_safe_rate"] <= TARGET_FALSE_SAFE and c["predicted_zone_m2"] > 0
          and c["margin_m"] == 0.0]
    best = max(ok, key=lambda c: (c["safe_recall"] or 0.0, c["max_hazard_probability"], -c["margin_m"])) if ok else \
        min(curve, key=lambda c: c["false_safe_rate"])
    at_profile = next((c for c in curve if c["max_hazard_probability"] == profile.max_hazard_probability
                       and c["margin_m"] == 0.0), None)
    return {"images": images, "gsd_m": gsd, "profile": profile.name, "profile_sha256": profile.sha256,
            "truth_zone_m2": round(truth_zone_px * gsd * gsd, 1), "curve": curve,
            "suggested": best, "at_profile": at_profile, "target_false_safe": TARGET_FALSE_SAFE}
