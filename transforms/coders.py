"""A coder for the pipeline's large in-process elements (block contexts, patches, label cores).

Beam samples element sizes for its byte-count metrics by encoding elements with the
PCollection's coder; for plain Python objects that is a full pickle. On blocks of a few million
pixels that sampling alone cost about a second per 8192² tile (2 GB pickled). These elements
never cross a shuffle, so the coder's size estimate reads the arrays' ``nbytes`` instead, and
encoding (only ever needed if a runner does split the stage) stays a pickle of our own objects.
"""

from __future__ import annotations

import pickle
from typing import Any

import apache_beam as beam
import numpy as np

from model.handler import Patches
from transforms.read import BlockContext
from transforms.stitch import BlockCore


def _nbytes(value: Any) -> int:
    total = 64
    for item in vars(value).values():
        if isinstance(item, np.ndarray):
            total += item.nbytes
    return total


class LargeElementCoder(beam.coders.Coder):
    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)  # only ever bytes this pipeline's own workers encoded

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: Any) -> int:
        return _nbytes(value)


def register() -> None:
    """Use the coder for the large elements (RunInference's own output keeps Beam's coder)."""
    for cls in (BlockContext, Patches, BlockCore):
        beam.coders.registry.register_coder(cls, LargeElementCoder)
