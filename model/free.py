"""A model that costs nothing to run: one 1x1 convolution whose labels are known in closed form.

With x the mean of the normalised input bands scaled to [0, K-1], the logit of class k is
``2kx - k^2``, so the label is round(x). It is a real ``.keras`` file (safe-mode loadable) with a
real card, so benchmarks can measure everything around the model (reads, stitching, writing,
landing zones) with the model's own cost taken out, and tests can predict every label. With one
band and a divisor of K - 1 it returns its input: the identity model.
"""

from __future__ import annotations

import os

import numpy as np

from model.card import ClassInfo, ModelCard, Normalisation, save_card


def free_labels(pixels: np.ndarray, num_classes: int, divisor: float) -> np.ndarray:
    """The free model's labels for (H, W, C) raw pixels: round(mean(pixels / divisor) * (K - 1))."""
    x = pixels.astype(np.float64).mean(axis=-1) / divisor * (num_classes - 1)
    return np.clip(np.rint(x), 0, num_classes - 1).astype(np.uint8)


def write_free_model(
    model_dir: str,
    num_classes: int = 5,
    bands: tuple[str, ...] = ("red", "green", "blue"),
    divisor: float = 255.0,
    patch_size: int = 64,
    halo: int = 8,
    size_multiple: int = 16,
    name: str = "binning",
    landing_roles: dict[str, str] | None = None,
) -> ModelCard:
    """Write the model and its card to ``model_dir``; classes are named class0 .. class{K-1}."""
    import keras

    c = len(bands)
    inputs = keras.Input((None, None, c))
    conv = keras.layers.Conv2D(num_classes, 1, name="bins")
    model = keras.Model(inputs, conv(inputs))
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
        landing={"roles": dict(landing_roles)} if landing_roles else {},
    )
    save_card(card, model_dir)
    return card
