"""Segment an in-memory image with exactly the pipeline's plan → patchify → predict → stitch code.

For images that fit in memory (evaluation, benchmarks' references, tests): the figures they
produce describe what the pipeline gives users, because the same functions do the work. The model
is any ``predict`` callable from raw (K, Hp, Wp, C) patches to (K, Hp, Wp) labels or
(K, Hp, Wp, N) scores (``model.predictor.Predictor`` binds its own), so this layer knows no model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from common.patching import patchify, stitch_labels, stitch_scores
from common.plan import BlockSpec, plan_blocks
from common.windows import Window, read_mirrored

#: Raw (K, Hp, Wp, C) patches → (K, Hp, Wp) uint8 labels or (K, Hp, Wp, N) float32 scores.
PredictFn = Callable[[np.ndarray], np.ndarray]


def _blocks(image: np.ndarray, patch_size: int, halo: int, multiple: int,
            patches_per_block: int) -> Iterator[tuple[BlockSpec, np.ndarray]]:
    """The pipeline's blocks of an in-memory (H, W, C) image, each with its window's pixels
    (mirrored past the image edge, as the windowed file read does)."""
    h, w = image.shape[:2]
    for block in plan_blocks(h, w, patch_size, halo, multiple, patches_per_block):
        yield block, read_mirrored(image, block.window)


def segment_array(image: np.ndarray, predict: PredictFn, patch_size: int, halo: int, multiple: int,
                  patches_per_block: int = 4, stitch: str = "overlap") -> np.ndarray:
    """Raw (H, W, C) image → (H, W) uint8 labels (no nodata handling: every pixel is labelled).

    ``predict`` returns labels for ``stitch="overlap"`` and class scores for ``"blend"``. Overlap
    labels with trailing axes ((K, Hp, Wp, 2): label and confidence) come back as (H, W, 2).
    """
    if stitch not in ("overlap", "blend"):
        raise ValueError(f"stitch must be 'overlap' or 'blend', not {stitch!r}")
    out: np.ndarray | None = None
    for block, win in _blocks(image, patch_size, halo, multiple, patches_per_block):
        outputs = predict(patchify(win, block.patches))
        core = stitch_labels(block, outputs) if stitch == "overlap" else stitch_scores(block, outputs)
        if out is None:
            out = np.empty((*image.shape[:2], *core.shape[2:]), dtype=core.dtype)
        out[block.core.toslices()] = core
    assert out is not None  # an image has at least one block
    return out


def segment_scores(image: np.ndarray, predict_scores: PredictFn, patch_size: int, halo: int,
                   multiple: int) -> np.ndarray:
    """Raw (H, W, C) image → (H, W, K) float32 class probabilities, each pixel from the patch whose
    core holds it (the overlap-tile placement of ``stitch_labels``, applied to scores)."""
    out: np.ndarray | None = None
    for block, win in _blocks(image, patch_size, halo, multiple, 1):
        scores = predict_scores(win[None])[0]
        if out is None:
            out = np.empty((*image.shape[:2], scores.shape[-1]), dtype=np.float32)
        out[block.core.toslices()] = scores[block.core.relative_to(block.window).toslices()]
    assert out is not None  # an image has at least one block
    return out


def whole_image_labels(image: np.ndarray, predict: PredictFn, multiple: int) -> np.ndarray:
    """Reference: one forward pass over the whole image (mirrored up to the size multiple), (H, W) uint8."""
    h, w = image.shape[:2]
    padded = read_mirrored(image, Window(0, 0, -(-h // multiple) * multiple, -(-w // multiple) * multiple))
    return predict(padded[None])[0, :h, :w]
