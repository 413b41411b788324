"""The RunInference model handler for tileseg's ``.keras`` models: patches in, arrays out.

Beam's bundled TensorFlow handler imports tensorflow_hub and knows nothing of model cards; this
small handler loads a model directory (safe mode, chosen precision, the card it is given) once per
worker process and runs each example's patches in batches of ``batch_size``. An example is one
:class:`Patches` (a block's raw patches and the divisor that maps their dtype to [0, 1]); it
already holds many patches, so Beam's own batching is set to one example per call.

The handler is pure: it knows nothing of tiles or blocks. The pipeline wraps it in Beam's
``KeyedModelHandler`` so that each block's context travels beside its patches as the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from model.card import ModelCard
from model.predictor import Predictor

OUTPUTS = ("labels", "scores")


@dataclass
class Patches:
    """(K, Hp, Wp, C) raw patches in their source dtype, and the tile's mapping to [0, 1] before
    the card's mean/std, ``(raw - offset) / divisor`` (normalisation runs inside the model graph;
    the mapping is chosen per tile, transforms/radiometry.py)."""

    pixels: np.ndarray
    divisor: float
    offset: float = 0.0


class SegmentationModelHandler(ModelHandler[Patches, np.ndarray, Predictor]):
    """Patches → (K, Hp, Wp, 2) uint8 labels and confidence (3: and the hazard classes' summed
    probability), or (K, Hp, Wp, N) float32 class scores."""

    def __init__(self, model_dir: str, card: ModelCard, precision: str = "auto", batch_size: int = 4,
                 output: str = "labels", model_copies: int = 0, hazard_classes: tuple[int, ...] = ()) -> None:
        # model_copies 0: each SDK process loads its own model (small U-Nets fit many times on one
        # GPU; TensorFlow's memory growth is on, see model/loading.py). N > 0: Beam keeps N copies per
        # machine, shared by all its SDK processes, for models too big to load once per process.
        super().__init__(min_batch_size=1, max_batch_size=1, model_copies=model_copies or None)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, not {output!r}")
        self._model_dir = model_dir
        self._card = card
        self._precision = precision
        self._batch_size = batch_size
        self._output = output
        self._hazard = tuple(hazard_classes)  # landing: their summed probability rides as a third channel

    def load_model(self) -> Predictor:
        return Predictor.from_dir(self._model_dir, self._precision, self._card)

    def run_inference(self, batch: Sequence[Patches], model: Predictor,
                      inference_args: dict[str, Any] | None = None) -> Iterable[np.ndarray]:
        # Labels travel with the model's confidence in them (uint8), for the tile's confidence summary.
        if self._output == "scores":
            return [model.predict_scores(item.pixels, self._batch_size, item.divisor, item.offset) for item in batch]
        return [model.predict_labels_confidence(item.pixels, self._batch_size, item.divisor, item.offset, self._hazard)
                for item in batch]

    def get_num_bytes(self, batch: Sequence[Patches]) -> int:
        return int(sum(item.pixels.nbytes for item in batch))

    def get_metrics_namespace(self) -> str:
        return "tileseg"
