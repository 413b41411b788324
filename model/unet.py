"""Keras 3 U-Net builder (Ronneberger et al. 2015), fully convolutional.

The network takes (H, W, C) float input with H and W any multiple of ``2 ** depth`` and returns
(H, W, num_classes) logits. Spatial dimensions are left as ``None`` so one saved model serves
every patch size; "same" padding keeps input and output aligned pixel for pixel.
"""

from __future__ import annotations

from typing import Literal

import keras
from keras import layers

Upsampling = Literal["transpose", "resize"]


def _conv_block(x: keras.KerasTensor, filters: int, batch_norm: bool, name: str) -> keras.KerasTensor:
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(
    num_classes: int,
    in_channels: int = 3,
    depth: int = 4,
    base_filters: int = 16,
    batch_norm: bool = True,
    dropout: float = 0.0,
    upsampling: Upsampling = "transpose",
    name: str = "unet",
) -> keras.Model:
    """Build a U-Net with ``depth`` poolings; filters double at each level from ``base_filters``.

    ``dropout`` applies at the bottleneck (as in the paper). The output is logits (no softmax),
    float32 whatever the layers' compute dtype, so argmax and blending are precision-stable.
    """
    if depth < 1:
        raise ValueError("depth must be >= 1")
    inputs = keras.Input((None, None, in_channels), name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2**level, batch_norm, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, base_filters * 2**depth, batch_norm, "bottleneck")
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"up{level}_tconv")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}_resize")(x)
            x = layers.Conv2D(filters, 1, name=f"up{level}_proj")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _conv_block(x, filters, batch_norm, f"up{level}")
    logits = layers.Conv2D(num_classes, 1, name="logits_conv")(x)
    logits = layers.Activation("linear", dtype="float32", name="logits")(logits)
    return keras.Model(inputs, logits, name=name)
