"""The training loss: the cross-entropy part equals Keras's pixel-weighted reduction, the soft-IoU
part matches intersection and union computed by hand, and ignored pixels change neither."""

from __future__ import annotations

import numpy as np
import pytest

from training.losses import pack_targets, segmentation_loss


def _case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (2, 4, 5, 3)).astype(np.float32)
    label = rng.integers(0, 3, (2, 4, 5)).astype(np.int32)
    weight = rng.choice([0.0, 0.5, 1.5], (2, 4, 5)).astype(np.float32)
    return logits, label, weight


def _packed(label: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return np.asarray(pack_targets(None, label, weight)[1])


def test_cross_entropy_part_is_keras_pixel_weighted_reduction() -> None:
    import keras

    logits, label, weight = _case()
    ours = float(segmentation_loss(3)(_packed(label, weight), logits))
    keras_ce = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(label, logits, sample_weight=weight))
    assert ours == pytest.approx(keras_ce, rel=1e-5)


def test_iou_term_matches_hand_computed_soft_iou_and_ignores_weight_zero() -> None:
    logits, label, weight = _case()
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ce = -np.log(np.take_along_axis(p, label[..., None], -1)[..., 0])
    valid = weight > 0
    ious = []
    for c in range(3):
        pc, tc = p[..., c][valid], (label == c)[valid]
        inter = (pc * tc).sum()
        ious.append((inter + 1) / (pc.sum() + tc.sum() - inter + 1))
    expected = (ce * weight).mean() + 0.7 * (1 - np.mean(ious))
    loss = segmentation_loss(3, iou_weight=0.7)
    assert float(loss(_packed(label, weight), logits)) == pytest.approx(expected, rel=1e-5)
    # What sits under weight-0 (ignored) pixels changes nothing.
    other_logits, other_label = logits.copy(), label.copy()
    other_logits[~valid] = -other_logits[~valid]
    other_label[~valid] = (other_label[~valid] + 1) % 3
    assert float(loss(_packed(other_label, weight), other_logits)) == pytest.approx(expected, rel=1e-5)


def test_perfect_prediction_has_zero_iou_term_and_wrong_one_the_smoothed_value() -> None:
    label = np.array([[[0, 1], [2, 2]]], np.int32)
    weight = np.ones_like(label, np.float32)
    perfect = np.eye(3, dtype=np.float32)[label] * 60 - 30
    wrong = np.eye(3, dtype=np.float32)[(label + 1) % 3] * 60 - 30
    iou_only = segmentation_loss(3, iou_weight=1.0)
    ce_only = segmentation_loss(3)
    assert float(iou_only(_packed(label, weight), perfect)) - float(ce_only(_packed(label, weight), perfect)) < 1e-6
    # Each class's intersection is 0 and its union 1 + 1 or 2 + 1 pixels: IoU = 1/(U+1) with the smoothing.
    term = float(iou_only(_packed(label, weight), wrong)) - float(ce_only(_packed(label, weight), wrong))
    assert term == pytest.approx(1 - np.mean([1 / 3, 1 / 4, 1 / 4]), abs=1e-5)


def test_a_partial_label_costs_minus_log_of_the_other_classes_probability() -> None:
    """"Not class k" (NOT_CLASS + k) costs -log(1 - p_k): it pushes k down and no other class up,
    so a 0 in a building-only mask never teaches "bare ground"."""
    from training.datasets import NOT_CLASS

    logits, label, weight = _case()
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    partial = np.zeros_like(label, bool)
    partial[0] = True  # the first image's pixels only say "not class label"
    raw = np.where(partial, NOT_CLASS + label, label)
    p_k = np.take_along_axis(p, label[..., None], -1)[..., 0]
    ce = np.where(partial, -np.log(1 - p_k), -np.log(p_k))
    assert float(segmentation_loss(3)(_packed(raw, weight), logits)) == pytest.approx((ce * weight).mean(), rel=1e-5)
    # How the other classes share the rest does not matter to a partial pixel.
    shuffled = logits.copy()
    for idx in zip(*np.nonzero(partial)):
        k = label[idx]
        others = [c for c in range(3) if c != k]
        a, b = shuffled[idx][others]
        # Keep logsumexp over the others fixed while changing their split.
        total = np.logaddexp(a, b)
        shuffled[idx][others] = [total - np.log(2), total - np.log(2)]
    assert float(segmentation_loss(3)(_packed(raw, weight), shuffled)) == pytest.approx((ce * weight).mean(), rel=1e-4)
    # A partial pixel is left out of the IoU term.
    with_iou = segmentation_loss(3, iou_weight=1.0)
    changed = logits.copy()
    changed[partial] = -changed[partial]
    no_partial_weight = np.where(partial, 0.0, weight).astype(np.float32)
    ce_only = segmentation_loss(3)
    base = float(with_iou(_packed(raw, no_partial_weight), logits)) - float(ce_only(_packed(raw, no_partial_weight), logits))
    again = float(with_iou(_packed(raw, weight), changed)) - float(ce_only(_packed(raw, weight), changed))
    assert again == pytest.approx(base, rel=1e-5)
