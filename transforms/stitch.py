"""StitchBlocks: per-patch model output → the block's core label map, nodata applied, pixels counted.

The placement itself (overlap-tile, or tent-weighted score blending) is common/patching.py, shared
with the in-memory ``segment_array``; this stage adds what a tile needs: validity, the mask's
nodata value and the per-class pixel counts and ground areas of the core.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from common.areas import class_areas_m2
from common.domain import InputSums
from common.patching import blend_scores, core_of_window, stitch_labels
from common.plan import BlockSpec
from common.quicklook import ThumbPart
from model.card import ModelCard
from transforms.failures import StageOutput, block_failure, guarded
from transforms.read import BlockContext
from transforms.tiles import TileSpec


@dataclass
class BlockCore:
    """A block's final labels over its core: (h, w) uint8 with ``mask_nodata`` where invalid,
    per-class valid pixel counts (int64), areas in m² (float64, None without a CRS), and the sum
    over its valid pixels of the model's probability of the class it chose (None when the model's
    output carried none: plain labels)."""

    tile: TileSpec
    block: BlockSpec
    labels: np.ndarray
    counts: np.ndarray
    areas: np.ndarray | None
    confidence_sum: float | None = None
    inputs: InputSums | None = None
    #: (h, w) uint8: the summed probability of the landing hazard classes, in 255ths (--landing only)
    hazard: np.ndarray | None = None
    thumb: ThumbPart | None = None  # the core's share of the input quicklook


def stitch_block(ctx: BlockContext, outputs: np.ndarray, card: ModelCard,
                 hazard_classes: tuple[int, ...] = ()) -> BlockCore:
    """The model's output for ``ctx.block``'s patches → its BlockCore. Outputs are (K, Hp, Wp)
    labels, (K, Hp, Wp, 2 or 3) uint8 labels, confidence and hazard probability (255ths), or
    (K, Hp, Wp, N) float scores (then ``hazard_classes`` say whose probabilities make the hazard)."""
    block = ctx.block
    valid = core_of_window(block, ctx.valid)
    everywhere = bool(valid.all())
    confidence_sum: float | None = None
    hazard: np.ndarray | None = None
    if outputs.ndim == 3:
        labels = stitch_labels(block, outputs)
    elif outputs.dtype == np.uint8 and outputs.shape[-1] in (2, 3):
        both = stitch_labels(block, outputs)
        labels = np.ascontiguousarray(both[..., 0])
        # Confidence in 255ths, summed as integers: exact, and no float copy of the block.
        confidence = both[..., 1] if everywhere else np.where(valid, both[..., 1], np.uint8(0))
        confidence_sum = int(confidence.sum(dtype=np.uint64)) / 255.0
        hazard = np.ascontiguousarray(both[..., 2]) if outputs.shape[-1] == 3 else None
    else:
        blended = blend_scores(block, outputs)
        labels = np.argmax(blended, axis=-1).astype(np.uint8)
        total = blended.sum(axis=-1)
        share = np.divide(blended.max(axis=-1), total, out=np.zeros_like(total), where=total > 0)
        confidence_sum = float(share[valid].sum(dtype=np.float64))
        if hazard_classes:
            summed = blended[..., list(hazard_classes)].sum(axis=-1)
            share = np.divide(summed, total, out=np.zeros_like(total), where=total > 0)
            hazard = np.round(np.clip(share, 0.0, 1.0) * 255.0).astype(np.uint8)
    core = block.core
    row_areas = ctx.tile.pixel_areas.row_areas_m2(core.row, core.row_stop, core.col, core.col_stop)
    counts, areas = class_areas_m2(labels, valid, card.num_classes, row_areas)
    labels = labels.astype(np.uint8, copy=False)
    if not everywhere:
        labels = np.where(valid, labels, np.uint8(card.mask_nodata))
        if hazard is not None:
            hazard = np.where(valid, hazard, np.uint8(255))  # unknown ground is a hazard
    return BlockCore(tile=ctx.tile, block=block, labels=labels, counts=counts, areas=areas,
                     confidence_sum=confidence_sum, inputs=ctx.inputs, hazard=hazard, thumb=ctx.thumb)


class StitchBlocks(beam.PTransform):
    """(BlockContext, model outputs) → BlockCore, and BlockFailures of the blocks that fail."""

    def __init__(self, card: ModelCard, hazard_classes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self._card = card
        self._hazard = tuple(hazard_classes)

    def expand(self, predictions: beam.PCollection) -> StageOutput:
        out = predictions | guarded("Stitch", functools.partial(_stitch, self._card, self._hazard), _failed, "stitch",
                                    BlockCore)
        return StageOutput(out.main, out.failed)


def _stitch(card: ModelCard, hazard: tuple[int, ...], element: tuple[BlockContext, np.ndarray]) -> Iterator[BlockCore]:
    yield stitch_block(element[0], element[1], card, hazard)


def _failed(element: tuple[BlockContext, Any], stage: str, exc: BaseException) -> Any:
    return block_failure(element[0].tile, element[0].block, stage, exc)
