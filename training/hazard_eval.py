"""How much of each hazard class the landing mapper treats as hazard, and how much landable
ground it wrongly does, over a sweep of the hazard threshold P (``tileseg evaluate --hazards``;
the drone model's cross-validation chooses its card's P with it).

The zone mapper (common/zones.py) treats a pixel as hazard when its label is a hazard class *or*
the summed probability of the hazard classes there is >= P. Per pixel of the labelled images:

* **recall of class k** at P: share of the ground truth's class-k pixels treated as hazard;
* **false-alarm rate** at P: share of the ground truth's safe and caution pixels (ground a drone
  may land on) treated as hazard. Unlabelled pixels count for neither.

``choose_threshold``: the P with the highest recall of the class that matters most (``person``
for the drone model) among those whose false-alarm rate is <= ``TARGET_FALSE_ALARM``; the
buffers around hazards widen every false alarm, so a few percent of landable ground is already a
visible loss of zone area.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.zones import probability_level
from model.card import ModelCard
from model.predictor import Predictor
from training.landing_eval import predicted_hazard

DEFAULT_THRESHOLDS = (1.0, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01)
TARGET_FALSE_ALARM = 0.05


@dataclass
class HazardCounts:
    """Pixel counts behind the curve; counts of several models (the folds) add up."""

    names: tuple[str, ...]
    roles: tuple[str, ...]
    thresholds: tuple[float, ...]
    truth: np.ndarray = field(init=False)    # (classes,) labelled pixels per true class
    flagged: np.ndarray = field(init=False)  # (thresholds, classes) of those treated as hazard
    images: int = 0

    def __post_init__(self) -> None:
        self.truth = np.zeros(len(self.names), np.int64)
        self.flagged = np.zeros((len(self.thresholds), len(self.names)), np.int64)

    @property
    def hazard_classes(self) -> tuple[int, ...]:
        return tuple(i for i, r in enumerate(self.roles) if r == "hazard")

    def add_image(self, labels: np.ndarray, prob: np.ndarray, truth: np.ndarray, ignore: int = 255) -> None:
        n = len(self.names)
        valid = truth != ignore
        t = truth[valid].astype(np.int64)
        self.truth += np.bincount(t, minlength=n)[:n]
        by_label = np.isin(labels[valid], self.hazard_classes)
        p = prob[valid]
        for i, threshold in enumerate(self.thresholds):
            flagged = by_label | (p >= probability_level(threshold))
            self.flagged[i] += np.bincount(t[flagged], minlength=n)[:n]
        self.images += 1

    def __iadd__(self, other: HazardCounts) -> HazardCounts:
        if (other.names, other.roles, other.thresholds) != (self.names, self.roles, self.thresholds):
            raise ValueError("hazard counts of different classes, roles or thresholds do not add up")
        self.truth += other.truth
        self.flagged += other.flagged
        self.images += other.images
        return self

    def curve(self) -> list[dict[str, Any]]:
        hazard = list(self.hazard_classes)
        ground = [i for i in range(len(self.names)) if i not in hazard]
        ground_px = int(self.truth[ground].sum())
        rows = []
        for i, threshold in enumerate(self.thresholds):
            recall = {self.names[k]: (round(float(self.flagged[i, k] / self.truth[k]), 4) if self.truth[k] else None)
                      for k in hazard}
            rows.append({"max_hazard_probability": threshold, "recall": recall,
                         "hazard_recall": round(float(self.flagged[i, hazard].sum() / max(self.truth[hazard].sum(), 1)), 4),
                         "false_alarm_rate": round(float(self.flagged[i, ground].sum() / ground_px), 4)
                         if ground_px else None})
        return rows


def hazard_counts(predictor: Predictor, card: ModelCard, roles: tuple[str, ...],
                  samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
                  thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS, ignore: int = 255) -> HazardCounts:
    counts = HazardCounts(tuple(c.name for c in card.classes), roles, tuple(sorted(set(thresholds), reverse=True)))
    for _name, image, truth in samples:
        labels, prob = predicted_hazard(predictor, image, counts.hazard_classes)
        counts.add_image(labels, prob, truth, ignore)
    return counts


def choose_threshold(curve: list[dict[str, Any]], focus: str,
                     target: float = TARGET_FALSE_ALARM) -> dict[str, Any]:
    """The row with the highest ``focus`` recall among those with false-alarm rate <= ``target``
    (ties: the larger P); the row with the fewest false alarms when none qualifies."""
    ok = [r for r in curve if r["false_alarm_rate"] is not None and r["false_alarm_rate"] <= target]
    if not ok:
        return min(curve, key=lambda r: (r["false_alarm_rate"] if r["false_alarm_rate"] is not None else 1.0))
    return max(ok, key=lambda r: (r["recall"].get(focus) or 0.0, r["max_hazard_probability"]))
