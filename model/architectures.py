"""The registry of model architectures: a new architecture is one module plus one line here.

Each entry says how to build the network (``build(num_classes, in_channels, **config)``), which
config keys it takes (what ``tileseg train`` records in the card and passes on), the input size
multiple a config implies (the pipeline's patch grid), and which layers stay float32 at any
precision (``model.loading.set_precision``).

This module does not import Keras: commands validate their options against the registry and
exit at once on a bad one; a builder module (and Keras) is imported when a network is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The float32 head every architecture ends with (``model.unet.float32_logits``): class scores
#: cast to float32 and, for strided models, upsampled in float32.
FLOAT32_HEAD = ("logits", "logits_upsample")


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: str  # "module:function" of the network builder
    config_keys: tuple[str, ...]
    size_multiple: Callable[[Mapping[str, Any]], int]
    float32_layers: tuple[str, ...]

    @property
    def build(self) -> Callable[..., Any]:
        """The builder function, ``build(num_classes, in_channels, **config, name=...)``."""
        module, function = self.builder.split(":")
        return getattr(importlib.import_module(module), function)

    def config(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The builder's keyword arguments taken from ``values`` (which may hold more keys)."""
        return {k: values[k] for k in self.config_keys if k in values}


def _pooled(config: Mapping[str, Any]) -> int:
    """Inputs must tile by the stem's stride times one 2x pooling per level."""
    return int(config.get("input_stride", 1)) * 2 ** int(config["depth"])


_COMMON = ("depth", "base_filters", "batch_norm", "dropout", "input_stride", "stem")

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a for a in (
        Architecture("unet", "model.unet:build_unet", (*_COMMON, "upsampling"), _pooled, FLOAT32_HEAD),
        Architecture("fcn", "model.fcn:build_fcn", _COMMON, _pooled, FLOAT32_HEAD),
    )
}

#: Layers that stay float32 in every registered architecture.
FLOAT32_LAYERS = frozenset(name for a in ARCHITECTURES.values() for name in a.float32_layers)


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None


def macs_per_pixel(model: Any, size: int = 256) -> float:
    """Multiply-accumulates per input pixel of the convolutions (what dominates the cost)."""
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            shape = list(layer["config"]["batch_shape"])
            shape[1:3] = [size, size]
            layer["config"]["batch_shape"] = tuple(shape)
    static = keras.Model.from_config(config)
    macs = 0
    for layer in static.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            spatial = layer.input.shape   # each input pixel scatters a k x k kernel
        elif isinstance(layer, keras.layers.Conv2D):
            spatial = layer.output.shape
        else:
            continue
        k = int(np.prod(layer.kernel_size))
        macs += int(spatial[1]) * int(spatial[2]) * k * int(layer.input.shape[-1]) * layer.filters
    return macs / (size * size)
