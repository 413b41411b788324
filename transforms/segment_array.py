"""Segment an in-memory image with exactly the pipeline's plan → patchify → predict → stitch code.

For images that fit in memory (evaluation, benchmarks' references, tests): the figures they
produce describe what the pipeline gives users, because the same functions do the work.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from model.card import ModelCard
from model.predictor import Predictor
from transforms.plan import BlockSpec, plan_blocks
from transforms.read import patchify
from transforms.stitch import stitch_labels, stitch_scores


def _blocks(image: np.ndarray, card: ModelCard, patch_size: int | None, halo: int | None,
            patches_per_block: int) -> Iterator[tuple[BlockSpec, np.ndarray]]:
    """The pipeline's blocks of an in-memory (H, W, C) image, each with its window's pixels
    (mirrored past the image edge, as ReadBlock does)."""
    patch = patch_size or card.patch_size
    halo = card.halo if halo is None else halo
    h, w = image.shape[:2]
    for block in plan_blocks("array", h, w, patch, halo, card.size_multiple, patches_per_block):
        r, c, bh, bw = block.window
        win = image[r:r + bh, c:c + bw]
        pad = ((0, bh - win.shape[0]), (0, bw - win.shape[1]), (0, 0))
        if any(p[1] for p in pad):
            win = np.pad(win, pad, mode="symmetric")
        yield block, win


def segment_array(
    image: np.ndarray,
    predictor: Predictor,
    divisor: float,
    patch_size: int | None = None,
    halo: int | None = None,
    patches_per_block: int = 4,
    stitch: str = "overlap",
    batch_size: int = 4,
) -> np.ndarray:
    """Raw (H, W, C) image → (H, W) uint8 labels (no nodata handling: every pixel is labelled)."""
    out = np.empty(image.shape[:2], dtype=np.uint8)
    for block, win in _blocks(image, predictor.card, patch_size, halo, patches_per_block):
        patches = patchify(win, block.patch_offsets, block.patch_shape)
        if stitch == "overlap":
            core = stitch_labels(block, predictor.predict_labels(patches, batch_size, divisor))
        else:
            core = stitch_scores(block, predictor.predict_scores(patches, batch_size, divisor))
        r0, r1, c0, c1 = block.core
        out[r0:r1, c0:c1] = core
    return out


def segment_scores(
    image: np.ndarray,
    predictor: Predictor,
    divisor: float,
    patch_size: int | None = None,
    halo: int | None = None,
    batch_size: int = 4,
) -> np.ndarray:
    """Raw (H, W, C) image → (H, W, K) float32 class probabilities, each pixel from the patch whose
    core holds it (the overlap-tile placement of ``stitch_labels``, applied to scores)."""
    out = np.empty((*image.shape[:2], predictor.card.num_classes), dtype=np.float32)
    for block, win in _blocks(image, predictor.card, patch_size, halo, 1):
        r, c = block.window[:2]
        scores = predictor.predict_scores(win[None], batch_size, divisor)[0]
        r0, r1, c0, c1 = block.core
        out[r0:r1, c0:c1] = scores[r0 - r:r1 - r, c0 - c:c1 - c]
    return out


def whole_image_labels(image: np.ndarray, predictor: Predictor, divisor: float) -> np.ndarray:
    """Reference: one forward pass over the whole image (padded to the size multiple), (H, W) uint8."""
    m = predictor.card.size_multiple
    h, w = image.shape[:2]
    ph, pw = -(-h // m) * m, -(-w // m) * m
    padded = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="symmetric")
    return predictor.predict_labels(padded[None], 1, divisor)[0, :h, :w]
