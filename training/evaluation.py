"""The one evaluation loop: images through the pipeline's patch-and-stitch code, scored against
their labels in a confusion matrix. Training's monitor and export, ``tileseg evaluate`` and the
shipped-model tests all use it, so their figures are measured the same way.

Test-time augmentation (``views``) averages class probabilities over the views the model was
trained to treat alike: the 8 D4 views (flips and quarter turns), or only the left-right flip for
models whose card says they were trained without rotations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from common.domain import LUMA
from common.metrics import confusion
from model.card import ModelCard
from model.predictor import Predictor
from training.train_data import LabelledImages

log = logging.getLogger(__name__)

#: (quarter turns, left-right flip) of each test-time view.
View = tuple[int, bool]
D4: list[View] = [(k, flip) for flip in (False, True) for k in range(4)]
LEFT_RIGHT: list[View] = [(0, False), (0, True)]


def tta_views(card: ModelCard) -> list[View]:
    """The test-time views for ``card``: the symmetries its training augmentation taught it (a
    street model has never seen the sky at the bottom). Cards without training records: D4."""
    trained_d4 = (card.training or {}).get("config", {}).get("d4", True)
    return D4 if trained_d4 else LEFT_RIGHT


def _forward(img: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = np.rot90(img, k, axes=(0, 1))
    return out[:, ::-1] if flip else out


def _inverse(img: np.ndarray, k: int, flip: bool) -> np.ndarray:
    if flip:
        img = img[:, ::-1]
    return np.rot90(img, -k, axes=(0, 1))


def segmenter(predictor: Predictor, views: list[View] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """(H, W, C) uint8 image → (H, W) uint8 labels through the pipeline's patch-and-stitch code;
    with ``views``, the argmax of the views' mean class probabilities."""
    divisor = predictor.card.normalisation.divisor_for("uint8")

    def predict(image: np.ndarray) -> np.ndarray:
        if not views:
            return predictor.segment(image, divisor)
        acc: np.ndarray | None = None
        for k, flip in views:
            view = np.ascontiguousarray(_forward(image, k, flip))
            scores = _inverse(predictor.segment_scores(view, divisor), k, flip)
            acc = scores.copy() if acc is None else acc + scores
        assert acc is not None
        return np.argmax(acc, axis=-1).astype(np.uint8)

    return predict


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → its luminance (ITU-R 601 weights, as PIL's "L" and TF's
    ``rgb_to_grayscale``) in every band: what a panchromatic tile looks like to an RGB model once
    the pipeline replicates its one band."""
    luma = image.astype(np.float32) @ LUMA.astype(np.float32)
    grey = np.clip(np.round(luma), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], image.shape[-1], axis=-1)


@dataclass
class Evaluation:
    """Confusion matrix (rows = truth, columns = prediction) and, when kept, every prediction."""

    confusion: np.ndarray
    predictions: list[np.ndarray] = field(default_factory=list)


def evaluate(predict: Callable[[np.ndarray], np.ndarray], samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
             num_classes: int, keep_predictions: bool = False, log_each: bool = False) -> Evaluation:
    """Predict every (name, image, label) sample and add it to one confusion matrix."""
    result = Evaluation(np.zeros((num_classes, num_classes), np.int64))
    for i, (name, image, label) in enumerate(samples, 1):
        pred = predict(image)
        result.confusion += confusion(label, pred, num_classes)
        if keep_predictions:
            result.predictions.append(pred)
        if log_each:
            log.info("%d: %s done", i, name)
    return result


def evaluate_images(predictor: Predictor, data: LabelledImages, card: ModelCard) -> tuple[np.ndarray, list[np.ndarray]]:
    """Confusion matrix over ``data`` and the predicted labels (training's monitor and export)."""
    result = evaluate(segmenter(predictor), zip(data.names, data.images, data.labels), card.num_classes,
                      keep_predictions=True)
    return result.confusion, result.predictions
