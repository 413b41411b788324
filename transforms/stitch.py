"""StitchBlock: per-patch model output → the block's core label map, nodata applied, pixels counted.

Overlap-tile (default): every core pixel takes the label of the one patch whose core holds it;
that patch saw at least ``halo`` pixels of context around it, so stitching is exact placement.
Blend (option): class scores of all patches of the block are summed with tent weights (highest
at a patch's centre, small but positive at its edge) before the argmax, which smooths any seam
inside a block; between blocks the cores are still placed as in overlap-tile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np

from model.card import ModelCard
from transforms.areas import class_areas_m2
from transforms.plan import BlockSpec
from transforms.tiles import TileSpec


@dataclass
class BlockCore:
    """A block's final labels over its core: (h, w) uint8 with ``mask_nodata`` where invalid,
    per-class valid pixel counts (int64) and areas in m² (float64, None without a CRS)."""

    tile: TileSpec
    block: BlockSpec
    labels: np.ndarray
    counts: np.ndarray
    areas: np.ndarray | None

    @property
    def valid_pixels(self) -> int:
        return int(self.counts.sum())


def _patch_origin(block: BlockSpec, k: int) -> tuple[int, int]:
    """Tile pixel (row, col) of patch ``k``'s top-left corner."""
    return block.window[0] + block.patch_offsets[k][0], block.window[1] + block.patch_offsets[k][1]


def stitch_labels(block: BlockSpec, labels: np.ndarray) -> np.ndarray:
    """Overlap-tile: (K, Hp, Wp) patch labels → (h, w) core labels of ``block``."""
    cr0, _, cc0, _ = block.core
    out = np.empty(block.core_shape, dtype=labels.dtype)
    for k, (r0, r1, c0, c1) in enumerate(block.patch_cores):
        pr, pc = _patch_origin(block, k)
        out[r0 - cr0:r1 - cr0, c0 - cc0:c1 - cc0] = labels[k, r0 - pr:r1 - pr, c0 - pc:c1 - pc]
    return out


def tent(length: int) -> np.ndarray:
    """1-D blend weights: 1 at the centre falling linearly to 1/length-ish at the ends, never 0."""
    t = np.arange(length, dtype=np.float32)
    return np.minimum(t + 1, length - t) / np.float32((length + 1) / 2)


def stitch_scores(block: BlockSpec, scores: np.ndarray) -> np.ndarray:
    """Blend: (K, Hp, Wp, N) patch scores → (h, w) core labels (uint8) of ``block``."""
    win_r, win_c, win_h, win_w = block.window
    cr0, cr1, cc0, cc1 = block.core
    # Only the core is needed: accumulate over the core's rows/cols of the window.
    acc = np.zeros((cr1 - cr0, cc1 - cc0, scores.shape[-1]), dtype=np.float32)
    ph, pw = block.patch_shape
    weight = tent(ph)[:, None] * tent(pw)[None, :]
    for k in range(len(block.patch_offsets)):
        pr, pc = _patch_origin(block, k)
        r0, r1 = max(pr, cr0), min(pr + ph, cr1)
        c0, c1 = max(pc, cc0), min(pc + pw, cc1)
        if r0 >= r1 or c0 >= c1:
            continue
        sl = (slice(r0 - pr, r1 - pr), slice(c0 - pc, c1 - pc))
        acc[r0 - cr0:r1 - cr0, c0 - cc0:c1 - cc0] += scores[k][sl] * weight[sl][..., None]
    return np.argmax(acc, axis=-1).astype(np.uint8)


def core_valid(block: BlockSpec, valid: np.ndarray) -> np.ndarray:
    """Crop the window's (Hw, Ww) validity to the block core."""
    cr0, cr1, cc0, cc1 = block.core
    r, c = block.window[0], block.window[1]
    return valid[cr0 - r:cr1 - r, cc0 - c:cc1 - c]


class StitchBlockFn(beam.DoFn):
    """BlockPrediction → BlockCore (labels with nodata, class counts and areas)."""

    def __init__(self, card: ModelCard) -> None:
        self._card = card
        self._area_models: dict[str, object] = {}

    def _area_model(self, tile: TileSpec) -> object:
        model = self._area_models.get(tile.tile_id)
        if model is None:
            model = tile.area_model()
            if len(self._area_models) > 64:
                self._area_models.clear()
            self._area_models[tile.tile_id] = model
        return model

    def process(self, pred: object) -> Iterator[BlockCore]:
        block: BlockSpec = pred.block  # type: ignore[attr-defined]
        tile: TileSpec = pred.tile  # type: ignore[attr-defined]
        if pred.labels is not None:  # type: ignore[attr-defined]
            labels = stitch_labels(block, pred.labels)  # type: ignore[attr-defined]
        else:
            labels = stitch_scores(block, pred.scores)  # type: ignore[attr-defined]
        valid = core_valid(block, pred.valid)  # type: ignore[attr-defined]
        cr0, cr1, cc0, cc1 = block.core
        row_areas = self._area_model(tile).row_areas_m2(cr0, cr1, cc0, cc1)  # type: ignore[attr-defined]
        counts, areas = class_areas_m2(labels, valid, self._card.num_classes, row_areas)
        labels = np.where(valid, labels, np.uint8(self._card.mask_nodata)).astype(np.uint8)
        yield BlockCore(tile=tile, block=block, labels=labels, counts=counts, areas=areas)
