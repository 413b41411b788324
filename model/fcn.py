"""FCN-8s-style baseline (Long, Shelhamer & Darrell 2015) from the U-Net's own building blocks.

The encoder is the U-Net's: ``depth`` conv blocks, each followed by 2x2 max pooling, then the
bottleneck block. Instead of a decoder with skip concatenations, FCN scores the three coarsest
feature maps with 1x1 convolutions, fuses them coarse-to-fine (learned 2x up-convolution, add) and
upsamples the fused scores bilinearly to the input. With ``depth=5`` the streams sit at strides
32, 16 and 8: exactly FCN-8s. Comparing it with :func:`model.unet.build_unet` on the same data and
budget shows what the U-Net's decoder buys.
"""

from __future__ import annotations

import keras
from keras import layers

from model.unet import Stem, conv_block, downsample, float32_logits


def build_fcn(
    num_classes: int,
    in_channels: int = 3,
    depth: int = 5,
    base_filters: int = 16,
    batch_norm: bool = True,
    dropout: float = 0.0,
    input_stride: int = 1,
    stem: Stem = "pool",
    name: str = "fcn",
) -> keras.Model:
    """Build an FCN with score streams at strides 2**depth, 2**(depth-1) and 2**(depth-2)."""
    if depth < 2:
        raise ValueError("FCN depth must be >= 2 (three score streams)")
    inputs = keras.Input((None, None, in_channels), name="image")
    x = downsample(inputs, input_stride, stem, base_filters)
    pooled = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, batch_norm, f"down{level}")
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
        pooled.append(x)
    x = conv_block(x, base_filters * 2**depth, batch_norm, "bottleneck")
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    score = layers.Conv2D(num_classes, 1, name="score_bottleneck")(x)
    for level in (depth - 2, depth - 3):  # pooled[level] is at stride 2**(level + 1)
        score = layers.Conv2DTranspose(num_classes, 4, strides=2, padding="same", name=f"score_up{level + 1}")(score)
        skip = layers.Conv2D(num_classes, 1, name=f"score_pool{level + 1}")(pooled[level])
        score = layers.Add(name=f"score_fuse{level + 1}")([score, skip])
    # FCN's final bilinear upsampling back to the input, in float32 like the U-Net's head.
    return keras.Model(inputs, float32_logits(score, input_stride * 2 ** (depth - 2)), name=name)
