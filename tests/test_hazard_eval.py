"""The hazard curve (training/hazard_eval.py): recall of each hazard class and false alarms on
landable ground at each P, counted by hand; folds' counts add up; the threshold rule."""

from __future__ import annotations

import numpy as np
import pytest

from training.hazard_eval import HazardCounts, choose_threshold

NAMES = ("ground", "person", "car")
ROLES = ("caution", "hazard", "hazard")


def _counts() -> HazardCounts:
    return HazardCounts(NAMES, ROLES, (1.0, 0.5, 0.1))


def test_recall_and_false_alarms_by_hand() -> None:
    truth = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [2, 2, 0, 255]], np.uint8)
    labels = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [2, 0, 0, 1]], np.uint8)
    # Summed hazard probability in 255ths: 0.5 is 128, 0.1 is 26 and above.
    prob = np.array([[255, 200, 30, 0], [10, 255, 26, 25], [255, 128, 0, 255]], np.uint8)
    c = _counts()
    c.add_image(labels, prob, truth)
    assert c.truth.tolist() == [5, 4, 2]  # the unlabelled pixel counts for nothing
    curve = {r["max_hazard_probability"]: r for r in c.curve()}
    # P = 1: the labels alone (person pixels: 1 of 4 labelled person; car: 1 of 2; ground: 1 of 5 called person).
    assert curve[1.0]["recall"] == {"person": 0.25, "car": 0.5} and curve[1.0]["false_alarm_rate"] == 0.2
    # P = 0.5: + prob >= 128: person 200 -> 2 of 4; car 128 -> 2 of 2; ground unchanged.
    assert curve[0.5]["recall"] == {"person": 0.5, "car": 1.0} and curve[0.5]["false_alarm_rate"] == 0.2
    # P = 0.1: + prob >= 26: person 30 -> 3 of 4; ground 26 -> 2 of 5.
    assert curve[0.1]["recall"] == {"person": 0.75, "car": 1.0} and curve[0.1]["false_alarm_rate"] == 0.4
    assert curve[0.1]["hazard_recall"] == pytest.approx(5 / 6, abs=1e-4)


def test_folds_add_up_and_the_rule_takes_the_best_recall_within_the_false_alarm_target() -> None:
    a, b = _counts(), _counts()
    truth = np.array([[1, 0]], np.uint8)
    a.add_image(np.array([[0, 0]], np.uint8), np.array([[100, 0]], np.uint8), truth)
    b.add_image(np.array([[0, 0]], np.uint8), np.array([[0, 200]], np.uint8), truth)
    a += b
    assert a.images == 2 and a.truth.tolist() == [2, 2, 0]
    curve = a.curve()
    assert [r["recall"]["car"] for r in curve] == [None] * 3  # no car in the truth: undefined, not 0
    by_p = {r["max_hazard_probability"]: r for r in curve}
    assert by_p[0.1]["recall"]["person"] == 0.5 and by_p[0.1]["false_alarm_rate"] == 0.5
    assert choose_threshold(curve, "person", target=0.5)["max_hazard_probability"] == 0.1
    assert choose_threshold(curve, "person", target=0.0)["max_hazard_probability"] == 1.0  # labels alone: none
    with pytest.raises(ValueError, match="do not add up"):
        a += HazardCounts(NAMES, ROLES, (1.0,))
