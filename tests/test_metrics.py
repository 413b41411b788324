"""Metric code against confusion matrices worked out by hand."""

from __future__ import annotations

import math

import numpy as np

from common.metrics import confusion, iou_from_confusion, summary


def test_confusion_and_iou_by_hand() -> None:
    truth = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 1, 0]], np.uint8)
    cm = confusion(truth, pred, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])  # 255 ignored
    iou = iou_from_confusion(cm)
    # class 0: tp 1, union 1+2-1 = 2 -> 0.5; class 1: tp 2, union 4+2-2 = 4 -> 0.5; class 2: 0/1
    np.testing.assert_allclose(iou, [0.5, 0.5, 0.0])
    s = summary(cm, ["a", "b", "c"])
    assert math.isclose(s["miou"], 1 / 3) and math.isclose(s["pixel_accuracy"], 3 / 5)
    assert s["per_class_iou"] == {"a": 0.5, "b": 0.5, "c": 0.0}
    # rows are the truth: a has 2 true pixels (1 found), b 2 (2 found), c 1 (0 found);
    # columns the prediction: a predicted once (right), b 4 times (2 right), c never.
    assert s["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert s["per_class_precision"] == {"a": 1.0, "b": 0.5, "c": None}


def test_absent_class_is_nan_and_left_out_of_miou() -> None:
    cm = confusion(np.array([0, 0, 1]), np.array([0, 0, 1]), 3)
    iou = iou_from_confusion(cm)
    s = summary(cm, ["a", "b", "c"])
    assert np.isnan(iou[2]) and s["miou"] == 1.0
    assert s["per_class_recall"]["c"] is None and s["per_class_precision"]["c"] is None
