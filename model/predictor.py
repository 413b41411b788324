"""Predictor: one loaded model that turns patches into labels or class scores.

Argmax and softmax are folded into the graph (backend-neutral keras.ops), so only uint8 labels or
float32 scores come back to numpy. Raw patches (uint8, uint16, float) can be given with their
divisor: the model card's normalisation then runs inside the graph too, so the pipeline moves a
quarter of the bytes and numpy never makes a float copy of a block. The pipeline's model handler,
the benchmark's bare loop and evaluation all use this class, so they predict the same way.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from common import segment_array as in_memory
from common.normalise import standardise
from model.card import ModelCard
from model.loading import LoadedModel, compile_with_xla, load_model


def _label_head(ops: Any, out: Any, kind: str, logits: bool, hazard: tuple[int, ...]) -> Any:
    """(N, H, W, K) model output → (N, H, W) uint8 labels (``labels``), or (N, H, W, 2|3) uint8
    labels, the chosen class's probability and, with ``hazard``, the hazard classes' summed
    probability, both in 255ths (``labels_confidence``), by softmax, argmax and max over the last axis."""
    labels = ops.cast(ops.argmax(out, axis=-1), "uint8")
    if kind == "labels":
        return labels
    probs = ops.cast(ops.softmax(out, axis=-1) if logits else out, "float32")
    outputs = [labels, _to_255ths(ops, ops.max(probs, axis=-1))]
    if hazard:
        weights = np.zeros(out.shape[-1], np.float32)
        weights[list(hazard)] = 1.0
        outputs.append(_to_255ths(ops, ops.minimum(ops.sum(probs * ops.convert_to_tensor(weights), axis=-1), 1.0)))
    return ops.stack(outputs, axis=-1)


def _label_head_by_planes(ops: Any, out: Any, kind: str, logits: bool, hazard: tuple[int, ...]) -> Any:
    """``_label_head``'s outputs, computed on one (N, H, W) plane per class, for graphs XLA
    compiles: its CPU code fuses plane-wise maximum, select, exp and sum into one vectorised loop,
    where softmax, argmax and max over a short last axis ran ~5x slower (batches of 768² after a
    1x1 convolution: 24 → 126 MPix/s). A tie goes to the first class, as argmax does."""
    values = ops.unstack(ops.cast(out, "float32"), axis=-1)
    top, index = values[0], ops.zeros_like(values[0])
    for k, plane in enumerate(values[1:], start=1):
        index = ops.where(plane > top, float(k), index)
        top = ops.maximum(top, plane)
    labels = ops.cast(index, "uint8")
    if kind == "labels":
        return labels
    if logits:  # softmax's largest probability is 1 / sum_k exp(l_k - l_max)
        shares = [ops.exp(plane - top) for plane in values]
        total = sum(shares[1:], shares[0])
        outputs = [labels, _to_255ths(ops, 1.0 / total)]
    else:
        shares, total = values, None
        outputs = [labels, _to_255ths(ops, top)]
    if hazard:  # the summed probability of the landing hazard classes (model/landing.py)
        summed = sum((shares[k] for k in hazard[1:]), shares[hazard[0]])
        outputs.append(_to_255ths(ops, ops.minimum(summed if total is None else summed / total, 1.0)))
    return ops.stack(outputs, axis=-1)


def _to_255ths(ops: Any, probability: Any) -> Any:
    return ops.cast(ops.round(probability * 255.0), "uint8")


class Predictor:
    def __init__(self, loaded: LoadedModel) -> None:
        self.card = loaded.card
        self.precision = loaded.precision
        self.model = loaded.model
        self._graphs: dict[tuple[str, str | None, tuple[int, ...]], Any] = {}
        # One Predictor serves every thread of a worker process (Beam runs a DoFn's bundles on
        # several threads and shares the loaded model between them): graphs are built under a lock.
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, model_dir: str, precision: str = "auto", card: ModelCard | None = None) -> Predictor:
        return cls(load_model(model_dir, precision, card))

    def _graph(self, kind: str, dtype: str | None, hazard: tuple[int, ...] = ()) -> Any:
        """The model with normalisation (for raw input) in front and argmax/softmax behind. One
        graph per kind, input dtype and set of hazard classes: a tile's divisor and offset are
        inputs of the graph, so tiles mapped differently (transforms/radiometry.py) never build
        (or trace) a new one."""
        key = (kind, dtype, hazard)
        graph = self._graphs.get(key)
        if graph is not None:
            return graph
        with self._lock:
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._build_graph(kind, dtype, hazard)
                self._graphs[key] = graph
        return graph

    def _build_graph(self, kind: str, dtype: str | None, hazard: tuple[int, ...] = ()) -> Any:
        import keras

        ops = keras.ops
        channels = self.card.num_bands
        if dtype is None:
            inputs: Any = keras.Input((None, None, channels), dtype="float32")
            x = inputs
        else:
            pixels = keras.Input((None, None, channels), dtype=dtype)
            scale = keras.Input((2,), dtype="float32")  # per patch: 1 / divisor, offset
            inv = ops.reshape(scale[:, 0], (-1, 1, 1, 1))
            offset = ops.reshape(scale[:, 1], (-1, 1, 1, 1))
            norm = self.card.normalisation
            x = standardise((ops.cast(pixels, "float32") - offset) * inv, norm.mean, norm.std)
            inputs = [pixels, scale]
        out = self.model(x)
        xla = compile_with_xla(self.precision)
        if kind == "scores":
            result = ops.cast(ops.softmax(out, axis=-1) if self.card.output == "logits" else out, "float32")
        else:
            head = _label_head_by_planes if xla else _label_head
            result = head(ops, out, kind, self.card.output == "logits", hazard)
        graph = keras.Model(inputs, result, name=f"{kind}_graph")
        graph.jit_compile = xla
        graph.make_predict_function()  # built here, under the lock, not lazily by the first caller
        return graph

    def _run(self, kind: str, patches: np.ndarray, batch_size: int, divisor: float | None,
             offset: float = 0.0, hazard: tuple[int, ...] = ()) -> np.ndarray:
        if patches.ndim != 4:
            raise ValueError(f"patches must be (N, H, W, C), got shape {patches.shape}")
        m = self.card.size_multiple
        if patches.shape[1] % m or patches.shape[2] % m:
            raise ValueError(f"patch size {patches.shape[1:3]} must be a multiple of {m}")
        if divisor is None and patches.dtype != np.float32:
            raise ValueError("normalised patches must be float32; pass divisor= for raw pixels")
        graph = self._graph(kind, None if divisor is None else patches.dtype.name, hazard)
        outs = []
        for i in range(0, len(patches), batch_size):
            batch = patches[i:i + batch_size]
            if divisor is None:
                outs.append(np.asarray(graph.predict_on_batch(batch)))
            else:
                scale = np.tile(np.array([1.0 / divisor, offset], np.float32), (len(batch), 1))
                outs.append(np.asarray(graph.predict_on_batch([batch, scale])))
        return np.concatenate(outs, axis=0)

    def predict_labels(self, patches: np.ndarray, batch_size: int = 4, divisor: float | None = None,
                       offset: float = 0.0) -> np.ndarray:
        """(N, H, W, C) → (N, H, W) uint8 class indexes.

        Without ``divisor`` the patches are normalised float32; with it they are raw pixels
        normalised in the graph as the model card says (``(raw - offset) / divisor``, then mean/std).
        """
        return self._run("labels", patches, batch_size, divisor, offset)

    def predict_labels_confidence(self, patches: np.ndarray, batch_size: int = 4, divisor: float | None = None,
                                  offset: float = 0.0, hazard: tuple[int, ...] = ()) -> np.ndarray:
        """(N, H, W, C) → (N, H, W, 2) uint8: class index, and the model's probability of that
        class (its confidence) in 255ths. A quarter of the bytes of float scores. With ``hazard``
        class indexes, a third channel: their summed probability, in 255ths (landing zones)."""
        return self._run("labels_confidence", patches, batch_size, divisor, offset, tuple(hazard))

    def predict_scores(self, patches: np.ndarray, batch_size: int = 4, divisor: float | None = None,
                       offset: float = 0.0) -> np.ndarray:
        """(N, H, W, C) → (N, H, W, K) float32 class probabilities (same input rules)."""
        return self._run("scores", patches, batch_size, divisor, offset)

    # In-memory images through the pipeline's own plan → patch → predict → stitch code
    # (common/segment_array.py), with this model's patch grid unless told otherwise.

    def segment(self, image: np.ndarray, divisor: float, patch_size: int | None = None, halo: int | None = None,
                patches_per_block: int = 4, stitch: str = "overlap", batch_size: int = 4) -> np.ndarray:
        """Raw (H, W, C) image → (H, W) uint8 labels, stitched exactly as ``tileseg run`` does."""
        def predict(patches: np.ndarray) -> np.ndarray:
            if stitch == "overlap":
                return self.predict_labels(patches, batch_size, divisor)
            return self.predict_scores(patches, batch_size, divisor)

        return in_memory.segment_array(image, predict, patch_size or self.card.patch_size,
                                       self.card.halo if halo is None else halo, self.card.size_multiple,
                                       patches_per_block, stitch)

    def segment_confidence(self, image: np.ndarray, divisor: float, batch_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
        """Raw (H, W, C) image → (H, W) uint8 labels and (H, W) float confidence in [0, 1] (the
        probability of the chosen class, in the 255ths ``tileseg run`` stitches), as the pipeline does."""
        both = in_memory.segment_array(image, lambda p: self.predict_labels_confidence(p, batch_size, divisor),
                                       self.card.patch_size, self.card.halo, self.card.size_multiple)
        return both[..., 0], both[..., 1].astype(np.float64) / 255.0

    def segment_scores(self, image: np.ndarray, divisor: float, batch_size: int = 4) -> np.ndarray:
        """Raw (H, W, C) image → (H, W, K) float32 class probabilities (overlap-tile placement)."""
        return in_memory.segment_scores(image, lambda p: self.predict_scores(p, batch_size, divisor),
                                        self.card.patch_size, self.card.halo, self.card.size_multiple)

    def whole_image_labels(self, image: np.ndarray, divisor: float) -> np.ndarray:
        """Reference: one forward pass over the whole (H, W, C) image, (H, W) uint8 labels."""
        return in_memory.whole_image_labels(image, lambda p: self.predict_labels(p, 1, divisor),
                                            self.card.size_multiple)
