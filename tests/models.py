"""Model directories for tests, built by code (no downloaded weights).

``write_binning_model`` makes a real ``.keras`` model (one 1x1 convolution, safe-mode loadable)
whose labels are known in closed form: with x the mean of the normalised input bands scaled to
[0, K-1], the logit of class k is ``2kx - k^2``, so argmax = round(x). With one band and a
divisor of 1 it returns its input: the identity model for stitching tests.
"""

from __future__ import annotations

import os

import numpy as np

from model.card import ClassInfo, ModelCard, Normalisation, save_card


def binning_labels(pixels: np.ndarray, num_classes: int, divisor: float) -> np.ndarray:
    """Expected labels for (H, W, C) raw pixels: round(mean(pixels / divisor) * (K - 1))."""
    x = pixels.astype(np.float64).mean(axis=-1) / divisor * (num_classes - 1)
    return np.clip(np.rint(x), 0, num_classes - 1).astype(np.uint8)


def write_binning_model(
    model_dir: str,
    num_classes: int = 5,
    bands: tuple[str, ...] = ("red", "green", "blue"),
    divisor: float = 255.0,
    patch_size: int = 64,
    halo: int = 8,
    size_multiple: int = 16,
    name: str = "binning",
) -> ModelCard:
    import keras

    c = len(bands)
    inputs = keras.Input((None, None, c))
    conv = keras.layers.Conv2D(num_classes, 1, name="bins")
    logits = conv(inputs)
    model = keras.Model(inputs, logits)
    k = np.arange(num_classes, dtype=np.float32)
    scale = (num_classes - 1) / c  # mean over bands, scaled to [0, K-1]
    kernel = np.tile((2 * k * scale)[None, :], (c, 1)).reshape(1, 1, c, num_classes)
    conv.set_weights([kernel.astype(np.float32), (-k * k).astype(np.float32)])
    os.makedirs(model_dir, exist_ok=True)
    model.save(os.path.join(model_dir, "model.keras"))
    card = ModelCard(
        name=name,
        version="0.0.1",
        model_file="model.keras",
        classes=tuple(ClassInfo(i, f"class{i}", (i * 40 % 256, 255 - i * 40 % 256, 100)) for i in range(num_classes)),
        input_bands=bands,
        normalisation=Normalisation(
            divisor={"uint8": divisor, "uint16": divisor * 257.0}, default_divisor=divisor,
            mean=tuple(0.0 for _ in bands), std=tuple(1.0 for _ in bands)),
        patch_size=patch_size,
        halo=halo,
        size_multiple=size_multiple,
        precision_agreement={"bfloat16": 1.0},
    )
    save_card(card, model_dir)
    return card


def write_identity_model(model_dir: str, num_classes: int = 7, patch_size: int = 64, halo: int = 8,
                         size_multiple: int = 16) -> ModelCard:
    """One grey band of class indexes in, the same labels out."""
    return write_binning_model(model_dir, num_classes=num_classes, bands=("gray",), divisor=float(num_classes - 1),
                               patch_size=patch_size, halo=halo, size_multiple=size_multiple, name="identity")
