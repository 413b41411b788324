"""Predictor: one loaded model that turns normalised patches into labels or class scores.

Argmax and softmax are folded into the graph (backend-neutral keras.ops), so only uint8 labels or
float32 scores come back to numpy. The pipeline's model handler, the benchmark's bare loop and
evaluation all use this class, so they measure and predict exactly the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model.loading import LoadedModel, load_model


class Predictor:
    def __init__(self, loaded: LoadedModel) -> None:
        import keras

        self.card = loaded.card
        self.precision = loaded.precision
        self.model = loaded.model
        out = self.model.output
        if self.card.output == "logits":
            probs = keras.ops.softmax(out, axis=-1)
        else:
            probs = out
        labels = keras.ops.cast(keras.ops.argmax(out, axis=-1), "uint8")
        self._labels = keras.Model(self.model.input, labels, name="labels")
        self._scores = keras.Model(self.model.input, keras.ops.cast(probs, "float32"), name="scores")

    @classmethod
    def from_dir(cls, model_dir: str, precision: str = "auto") -> "Predictor":
        return cls(load_model(model_dir, precision))

    def _run(self, fn: Any, patches: np.ndarray, batch_size: int) -> np.ndarray:
        if patches.ndim != 4:
            raise ValueError(f"patches must be (N, H, W, C), got shape {patches.shape}")
        m = self.card.size_multiple
        if patches.shape[1] % m or patches.shape[2] % m:
            raise ValueError(f"patch size {patches.shape[1:3]} must be a multiple of {m}")
        outs = [np.asarray(fn.predict_on_batch(patches[i:i + batch_size])) for i in range(0, len(patches), batch_size)]
        return np.concatenate(outs, axis=0)

    def predict_labels(self, patches: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """(N, H, W, C) float32 → (N, H, W) uint8 class indexes."""
        return self._run(self._labels, patches, batch_size)

    def predict_scores(self, patches: np.ndarray, batch_size: int = 4) -> np.ndarray:
        """(N, H, W, C) float32 → (N, H, W, K) float32 class probabilities."""
        return self._run(self._scores, patches, batch_size)
