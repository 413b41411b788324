"""PlanBlocks: cut each tile into blocks of model patches (the grid itself: common/plan.py).

Each block knows how many blocks its tile has (``BlockSpec.tile_blocks``), so the mask writer can
tell when a tile is complete without a grouping step.

Where the blocks go next depends on the runner. On Dataflow (and the multi-process DirectRunner)
they are spread over workers, so one big tile keeps every worker busy. In a single process there
is nothing to spread over: tiles are taken smallest first and each tile's blocks go through
read, inference and stitching right behind each other, so every tile is written as soon as it is
done and a small tile never waits for a big one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam

from common.plan import BlockSpec, plan_blocks
from transforms.failures import FAILED, StageOutput, keyed_failure
from transforms.tiles import TileSpec


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
    """TileSpec → (TileSpec, BlockSpec) per block, or a keyed failure of the tile."""

    def __init__(self, args: PlanArgs) -> None:
        self._args = args

    def process(self, tile: TileSpec) -> Iterator[object]:
        try:
            blocks = self._args.blocks(tile)
        except Exception as exc:  # noqa: BLE001 - a tile the grid cannot cover fails alone
            yield keyed_failure(tile.uri, tile.tile_id, "plan", exc)
            return
        for block in blocks:
            yield tile, block


class PlanBlocks(beam.PTransform):
    """TileSpecs → their blocks (spread over workers when ``spread``), and failures."""

    def __init__(self, args: PlanArgs, spread: bool = True) -> None:
        super().__init__()
        self._args = args
        self._spread = spread

    def expand(self, tiles: beam.PCollection) -> StageOutput:
        out = tiles | "Plan" >> beam.ParDo(PlanBlocksFn(self._args)).with_outputs(FAILED, main="main")
        blocks = out.main | "SpreadBlocks" >> beam.Reshuffle() if self._spread else out.main
        return StageOutput(blocks, out[FAILED])


class SmallestFirst(beam.PTransform):
    """TileSpecs → the same, smallest first (for single-process runs, see the module docstring)."""

    def expand(self, tiles: beam.PCollection) -> beam.PCollection:
        return (tiles | "AllTiles" >> beam.combiners.ToList()
                | "BySize" >> beam.FlatMap(lambda ts: sorted(ts, key=lambda t: (t.pixels, t.tile_id))))
