"""PlanBlocks: cut each tile into blocks of model patches (the grid itself: common/plan.py).

Besides the blocks, the stage emits each planned tile keyed by its id with its block count, so
WriteMasks knows how many cores to wait for without planning the tile again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam

from common.plan import BlockSpec, plan_blocks
from transforms.failures import FAILED, keyed_failure
from transforms.progress import PROGRESS
from transforms.tiles import TileSpec

PLANNED = "planned"


@dataclass(frozen=True)
class PlannedTile:
    """A tile and the number of blocks it was cut into."""

    tile: TileSpec
    blocks: int


@dataclass(frozen=True)
class PlanArgs:
    """The patch grid's settings (pixels): largest patch, halo, the model's size multiple, and
    patches per block edge (one read per block)."""

    patch_size: int
    halo: int
    multiple: int
    patches_per_block: int

    def blocks(self, tile: TileSpec) -> list[BlockSpec]:
        return plan_blocks(tile.height, tile.width, self.patch_size, self.halo, self.multiple,
                           self.patches_per_block)


class PlanBlocksFn(beam.DoFn):
    """TileSpec → (TileSpec, BlockSpec) per block, and (tile_id, PlannedTile) on ``planned``."""

    def __init__(self, args: PlanArgs) -> None:
        self._args = args

    def process(self, tile: TileSpec) -> Iterator[object]:
        try:
            blocks = self._args.blocks(tile)
        except Exception as exc:  # noqa: BLE001 - a tile the grid cannot cover fails alone
            yield keyed_failure(tile.uri, tile.tile_id, "plan", exc)
            return
        PROGRESS.planned(tile.pixels)
        yield beam.pvalue.TaggedOutput(PLANNED, (tile.tile_id, PlannedTile(tile, len(blocks))))
        for block in blocks:
            yield tile, block


class PlanOutput(NamedTuple):
    """PlanBlocks' outputs (a tuple, so that Beam sees each PCollection)."""

    blocks: beam.PCollection   # (TileSpec, BlockSpec)
    planned: beam.PCollection  # (tile_id, PlannedTile)
    failed: beam.PCollection   # (tile_id, failure record)


class PlanBlocks(beam.PTransform):
    """TileSpecs → their blocks, spread over workers, plus the planned tiles and failures."""

    def __init__(self, args: PlanArgs) -> None:
        super().__init__()
        self._args = args

    def expand(self, tiles: beam.PCollection) -> PlanOutput:
        out = tiles | "Plan" >> beam.ParDo(PlanBlocksFn(self._args)).with_outputs(PLANNED, FAILED, main="main")
        blocks = out.main | "SpreadBlocks" >> beam.Reshuffle()
        return PlanOutput(blocks, out[PLANNED], out[FAILED])
