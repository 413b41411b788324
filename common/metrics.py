"""Segmentation metrics from a confusion matrix: per-class IoU, recall and precision, mIoU, pixel
accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = truth, columns = prediction.

    Pixels whose truth or prediction is outside 0..K-1 (ignore labels, mask nodata) are left out.
    """
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    ok = (truth < num_classes) & (pred < num_classes)
    idx = truth[ok].astype(np.int64) * num_classes + pred[ok]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU, NaN for a class absent from both truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def recall_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per class, the share of its true pixels predicted as it (NaN where it never occurs):
    for a hazard such as a person, the share of people the map shows."""
    return _ratio(np.diag(cm).astype(np.float64), cm.sum(1))


def precision_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per class, the share of the pixels predicted as it that are it (NaN where never predicted)."""
    return _ratio(np.diag(cm).astype(np.float64), cm.sum(0))


def summary(cm: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """``miou``, ``pixel_accuracy``, ``per_class_iou``, ``per_class_recall`` and
    ``per_class_precision`` (by class name; None where undefined)."""
    iou = iou_from_confusion(cm)
    total = cm.sum()

    def by_name(values: np.ndarray) -> dict[str, float | None]:
        return {n: (None if np.isnan(v) else round(float(v), 4)) for n, v in zip(class_names, values)}

    return {
        "miou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
        "pixel_accuracy": float(np.trace(cm) / total) if total else float("nan"),
        "per_class_iou": by_name(iou),
        "per_class_recall": by_name(recall_from_confusion(cm)),
        "per_class_precision": by_name(precision_from_confusion(cm)),
    }
