"""Training loss: pixel-weighted cross-entropy, optionally plus a soft-IoU (Jaccard) term.

Cross-entropy optimises per-pixel accuracy; the figure users read is mean IoU, where a rare
class's false positives cost as much as its misses. The soft-IoU term (Rahman & Wang 2016:
intersection and union computed from the softmax probabilities over the batch, per class)
puts that trade-off into the gradient.

Partial labels (``NOT_CLASS + k``: "not class k", training/kampala.py) cost
``-log(1 - p_k)``, the log of the summed probability of every other class, so they say "not a
building" without saying "bare ground". They are left out of the IoU term, which needs a class.

The training dataset carries the label and its pixel weight packed in one ``y_true`` tensor
(``pack_targets``), because the IoU term needs the ignore mask (weight 0) inside the loss, which
Keras's ``sample_weight`` never shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from training.datasets import NOT_CLASS


def pack_targets(x: Any, label: Any, weight: Any) -> tuple[Any, Any]:
    """(image, int label, pixel weight) → (image, float32 (…, 2) [label, weight]) for the loss."""
    import tensorflow as tf

    return x, tf.stack([tf.cast(label, tf.float32), weight], axis=-1)


def segmentation_loss(num_classes: int, iou_weight: float = 0.0, smooth: float = 1.0) -> Callable[[Any, Any], Any]:
    """Loss on packed targets: mean of weight x cross-entropy over all pixels (as Keras's
    ``sample_weight`` reduction), plus ``iou_weight`` x (1 - mean over classes of the batch's soft
    IoU) over pixels with weight > 0. ``smooth`` keeps classes absent from a batch defined (their
    IoU term then only pushes their probability down)."""
    import keras
    from keras import ops

    def loss(y_true: Any, logits: Any) -> Any:
        raw = ops.cast(y_true[..., 0], "int32")
        weight = y_true[..., 1]
        partial = raw >= NOT_CLASS
        label = ops.where(partial, raw - NOT_CLASS, raw)
        logits = ops.cast(logits, "float32")
        ce = keras.losses.sparse_categorical_crossentropy(label, logits, from_logits=True)
        # -log(1 - p_k) = logsumexp(all logits) - logsumexp(logits without k), stable in float32.
        chosen = ops.one_hot(label, num_classes) > 0
        others = ops.logsumexp(ops.where(chosen, -1e9, logits), axis=-1)
        ce = ops.where(partial, ops.logsumexp(logits, axis=-1) - others, ce)
        total = ops.mean(ce * weight)
        if iou_weight > 0:
            valid = ops.cast((weight > 0) & ~partial, "float32")[..., None]
            p = ops.softmax(logits, axis=-1) * valid
            t = ops.one_hot(label, num_classes) * valid
            inter = ops.sum(p * t, axis=(0, 1, 2))
            union = ops.sum(p + t, axis=(0, 1, 2)) - inter
            total = total + iou_weight * (1.0 - ops.mean((inter + smooth) / (union + smooth)))
        return total

    return loss
