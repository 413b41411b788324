"""Patch and stitch: a block's pixels → model-sized patches, and per-patch outputs → the block's core.

Overlap-tile (default): every core pixel takes the label of the one patch whose core holds it;
that patch saw at least ``halo`` pixels of context around it, so stitching is exact placement.
Blend (option): class scores of all patches of the block are summed with tent weights (highest
at a patch's centre, small but positive at its edge) before the argmax, which smooths any seam
inside a block; between blocks the cores are still placed as in overlap-tile.

Pure numpy over :class:`common.plan.BlockSpec`: the pipeline's stages and the in-memory
``segment_array`` call the same functions.
"""

from __future__ import annotations

import numpy as np

from common.plan import BlockSpec
from common.windows import Window


def patchify(image: np.ndarray, patches: tuple[Window, ...]) -> np.ndarray:
    """Cut (H, W, C) ``image`` (a block's read window) into (K, ph, pw, C) patches."""
    return np.stack([image[p.toslices()] for p in patches])


def stitch_labels(block: BlockSpec, labels: np.ndarray) -> np.ndarray:
    """Overlap-tile: (K, Hp, Wp, ...) patch labels → (h, w, ...) core labels of ``block`` (any
    trailing axes, e.g. a label and its confidence, travel along)."""
    out = np.empty((*block.core.shape, *labels.shape[3:]), dtype=labels.dtype)
    for k, core in enumerate(block.patch_cores):
        out[core.relative_to(block.core).toslices()] = labels[k][core.relative_to(block.patch_in_tile(k)).toslices()]
    return out


def tent(length: int) -> np.ndarray:
    """1-D blend weights: 1 at the centre falling linearly to 1/length-ish at the ends, never 0."""
    t = np.arange(length, dtype=np.float32)
    return np.minimum(t + 1, length - t) / np.float32((length + 1) / 2)


def stitch_scores(block: BlockSpec, scores: np.ndarray) -> np.ndarray:
    """Blend: (K, Hp, Wp, N) patch scores → (h, w) core labels (uint8) of ``block``."""
    return np.argmax(blend_scores(block, scores), axis=-1).astype(np.uint8)


def blend_scores(block: BlockSpec, scores: np.ndarray) -> np.ndarray:
    """Blend: (K, Hp, Wp, N) patch scores → (h, w, N) tent-weighted sums over ``block``'s core."""
    # Only the core is needed: accumulate over the core's rows/cols of the window.
    acc = np.zeros((*block.core.shape, scores.shape[-1]), dtype=np.float32)
    ph, pw = block.patch_shape
    weight = tent(ph)[:, None] * tent(pw)[None, :]
    for k in range(len(block.patches)):
        patch = block.patch_in_tile(k)
        overlap = patch.intersection(block.core)
        if overlap is None:
            continue
        sl = overlap.relative_to(patch).toslices()
        acc[overlap.relative_to(block.core).toslices()] += scores[k][sl] * weight[sl][..., None]
    return acc


def core_of_window(block: BlockSpec, array: np.ndarray) -> np.ndarray:
    """Crop an array over the block's read window (e.g. its (Hw, Ww) validity) to the block core."""
    return array[block.core.relative_to(block.window).toslices()]
