"""RunModel: Beam's RunInference over each block's patches, the block's context riding as the key.

The model handler (model/handler.py) is pure, patches in and arrays out; Beam's
``KeyedModelHandler`` carries each block's ``BlockContext`` past it, so what comes out is
``(BlockContext, outputs)`` with outputs (K, Hp, Wp) uint8 labels or (K, Hp, Wp, N) float32
scores. A batch the model fails on becomes a BlockFailure of each of its blocks.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from model.handler import SegmentationModelHandler
from transforms.failures import BlockFailure, StageOutput, failure_record
from transforms.read import BlockContext


def inference_failures(element: Any) -> list[BlockFailure]:
    """RunInference's dead-letter element (failed batch, exception) → one BlockFailure per block."""
    batch, exc = element[0], element[1]
    if not isinstance(exc, BaseException):
        exc = RuntimeError(str(exc))
    # A batch is a list of (BlockContext, Patches) examples; be lenient about a lone example.
    items = [batch] if isinstance(batch, tuple) and isinstance(batch[0], BlockContext) else list(batch)
    return [BlockFailure(ctx.tile, ctx.block, failure_record(ctx.tile.uri, ctx.tile.tile_id, "inference", exc))
            for ctx, _ in items]


class RunModel(beam.PTransform):
    """(BlockContext, Patches) → (BlockContext, model outputs), and BlockFailures of inference."""

    def __init__(self, handler: SegmentationModelHandler) -> None:
        super().__init__()
        self._handler = handler

    def expand(self, blocks: beam.PCollection) -> StageOutput:
        outputs, dead = blocks | "RunInference" >> RunInference(KeyedModelHandler(self._handler)).with_exception_handling()
        failed = dead.failed_inferences | "KeyInferenceFailures" >> beam.FlatMap(inference_failures)
        return StageOutput(outputs, failed)
