"""The RunInference model handler for tileseg's ``.keras`` models.

Beam's bundled TensorFlow handler imports tensorflow_hub and knows nothing of model cards; this
small handler loads a model directory (safe mode, chosen precision) once per worker process and
runs each block's patches in batches of ``batch_size``. One block is one RunInference element
(it already holds many patches), so Beam's own batching is set to one element per call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from model.predictor import Predictor


@dataclass
class BlockPrediction:
    """Model output for one block: ``labels`` (K, Hp, Wp) uint8, or ``scores`` (K, Hp, Wp, N) float32."""

    tile: Any
    block: Any
    valid: np.ndarray
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None


class SegmentationModelHandler(ModelHandler[Any, BlockPrediction, Predictor]):
    """BlockInput → BlockPrediction with a model directory (card + .keras)."""

    def __init__(self, model_dir: str, precision: str = "auto", batch_size: int = 4, output: str = "labels") -> None:
        super().__init__(min_batch_size=1, max_batch_size=1)
        if output not in ("labels", "scores"):
            raise ValueError("output must be 'labels' or 'scores'")
        self._model_dir = model_dir
        self._precision = precision
        self._batch_size = batch_size
        self._output = output

    def load_model(self) -> Predictor:
        return Predictor.from_dir(self._model_dir, self._precision)

    def run_inference(
        self, batch: Sequence[Any], model: Predictor, inference_args: dict[str, Any] | None = None
    ) -> Iterable[BlockPrediction]:
        for item in batch:
            if self._output == "labels":
                yield BlockPrediction(item.tile, item.block, item.valid,
                                      labels=model.predict_labels(item.patches, self._batch_size, item.tile.scale_divisor))
            else:
                yield BlockPrediction(item.tile, item.block, item.valid,
                                      scores=model.predict_scores(item.patches, self._batch_size, item.tile.scale_divisor))

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return int(sum(item.patches.nbytes for item in batch))

    def get_metrics_namespace(self) -> str:
        return "tileseg"
