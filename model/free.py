"""A model that costs nothing to run: one 1x1 convolution whose labels are known in closed form.

With x the mean of the normalised input bands scaled to [0, K-1], the logit of class k is
``2kx - k^2``, so the label is round(x). Every band weighs the same in every class's logit, so
the convolution's C x K kernel has rank 1 and is stored as its two factors, two per-pixel linear
layers (C → 1, then 1 → K): the same logits, but XLA's CPU code runs them ~4x faster than one
C → K contraction (0.094 s against 0.42 s per 16 patches of 768², labels head included), and a
benchmark of everything around the model should not time a slow kernel. It is a real ``.keras`` file (safe-mode loadable) with a
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
    mean = keras.layers.Dense(1, use_bias=False, name="band_mean")
    bins = keras.layers.Dense(num_classes, name="bins")
    model = keras.Model(inputs, bins(mean(inputs)))
    k = np.arange(num_classes, dtype=np.float32)
    mean.set_weights([np.full((c, 1), (num_classes - 1) / c, np.float32)])  # mean over bands, scaled to [0, K-1]
    bins.set_weights([(2 * k)[None, :].astype(np.float32), (-k * k).astype(np.float32)])
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
