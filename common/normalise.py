"""The one normalisation of raw pixels into model input, shared by training and inference.

    x = (raw / divisor - mean) / std        per band; raw already cast to float32

``divisor`` maps the source dtype to [0, 1] (the model card says which, per dtype); ``mean`` and
``std`` are the card's per-band values. Written with plain arithmetic on numpy constants, so the
same function runs on numpy arrays, TensorFlow tensors (the training input pipeline) and Keras
symbolic tensors (the inference graph, where it is folded into the model). Training applies its
colour jitter in the [0, 1] space between the two steps, hence two functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def to_unit(x: Any, divisor: float) -> Any:
    """Raw values (as float32) → [0, 1] for data that fills its declared range."""
    return x * np.float32(1.0 / divisor)


def standardise(x: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """[0, 1] values → model input: ``(x - mean) / std`` per band (skipped where the identity)."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    if np.any(m != 0):
        x = x - m
    if np.any(s != 1):
        x = x / s
    return x


def normalise(x: Any, divisor: float, mean: Sequence[float], std: Sequence[float]) -> Any:
    """Raw values (as float32) → model input, both steps."""
    return standardise(to_unit(x, divisor), mean, std)
