"""Training data: labelled images held in memory and the tf.data pipeline that feeds training.

Cropping happens in numpy (slicing an in-memory array costs nothing and lets crops come from
images of any size); everything per pixel (D4 or horizontal flips, photometric jitter,
normalisation, class-weight maps) runs as TensorFlow ops in a parallel ``map``, prefetched so the
next batch is ready when the optimiser step ends. Every random choice derives from one seed:
the generator's numpy RNG picks images and crop positions and hands each crop a seed for the
stateless TF ops, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.normalise import to_unit
from common.synthetic import render_window
from training import datasets
from training.datasets import IGNORE, NOT_CLASS


@dataclass
class LabelledImages:
    """(H, W, C) uint8 images with (H, W) uint8 labels (IGNORE where unlabelled)."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    names: list[str]

    def __post_init__(self) -> None:
        for img, lab, name in zip(self.images, self.labels, self.names):
            if img.ndim != 3 or img.shape[:2] != lab.shape:
                raise datasets.DatasetError(f"{name}: image {img.shape} and label {lab.shape} differ in size")

    @property
    def pixels(self) -> int:
        return int(sum(lab.size for lab in self.labels))

    def class_counts(self, num_classes: int) -> np.ndarray:
        counts = np.zeros(num_classes, np.int64)
        for lab in self.labels:
            counts += np.bincount(lab[lab < num_classes].ravel(), minlength=num_classes)
        return counts


def load_samples(samples: list[datasets.Sample], spec: datasets.DatasetSpec,
                 label_format: str | None = None) -> LabelledImages:
    """Read a split into memory. ``label_format`` is for folder datasets (``index`` or ``rgb``)."""
    images, labels = [], []
    for s in samples:
        images.append(datasets.load_image(s, spec))
        if label_format is None:
            labels.append(datasets.load_label(s, spec))
        else:
            labels.append(datasets.folder_label(s.label_path or "", spec.class_colors, label_format))
    return LabelledImages(images, labels, [s.name for s in samples])


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray:
    """Per-class loss weights with mean 1 over the classes present: ``none`` (all 1) or ``sqrt``
    (inverse square-root frequency: rare classes count more, without median-frequency's extremes)."""
    n = len(counts)
    if mode == "none":
        return np.ones(n, np.float32)
    if mode != "sqrt":
        raise ValueError(f"class weighting must be 'none' or 'sqrt', not {mode!r}")
    freq = counts / max(int(counts.sum()), 1)
    present = freq > 0
    w = np.zeros(n, np.float64)
    w[present] = freq[present] ** -0.5
    w[present] /= w[present].mean()
    return w.astype(np.float32)


@dataclass(frozen=True)
class Augment:
    """``d4``: the 8 flips/quarter turns (overhead imagery has no "up"); otherwise only
    left-right flips (street scenes: the sky stays on top). ``jitter``: brightness and contrast
    amplitude (fraction), with saturation jitter for RGB. ``scale``: a log-uniform zoom range, so
    the model sees objects at more ground resolutions than the few tiles of a dataset have.
    ``elastic``: the U-Net paper's smooth deformations, a random displacement per node of a coarse
    ``elastic_grid`` x ``elastic_grid`` grid (normal, this many pixels standard deviation)
    interpolated bicubically to every pixel; what few labelled images most lack is shape variety.

    The rest imitate other sensors and light than a dataset's few flights: ``gamma`` (log
    amplitude: gamma in [e^-g, e^g]), ``hue`` (largest shift, fraction of the colour wheel), ``blur``
    (probability of a soft, lower-resolution look: shrunk by 1-2.5x and blown up again), ``noise``
    (largest std of added Gaussian sensor noise, in [0, 1] units) and ``grey`` (probability that a
    crop's luminance replaces every band, as the pipeline replicates a panchromatic band)."""

    d4: bool = True
    jitter: float = 0.1
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range: crops of crop/zoom pixels resized to crop
    elastic: float = 0.0
    elastic_grid: int = 3
    gamma: float = 0.0
    hue: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    grey: float = 0.0


#: Generated scenes mixed into aerial training (model/synthetic.py): scene seeds and extent.
#: The demo scene (seed 2026) and the demo model's validation scene (seed 0) are not among them.
SYNTHETIC_SEEDS = tuple(range(1, 65))
SYNTHETIC_EXTENT = 1 << 16
SYNTHETIC_RESOLUTION_M = 0.5


def _crops(data: LabelledImages, crop: int, seed: int, synthetic_fraction: float = 0.0,
           scale: tuple[float, float] = (1.0, 1.0), partial: LabelledImages | None = None,
           partial_fraction: float = 0.0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Endless random crops, images drawn in proportion to their area (every labelled pixel is
    equally likely). Images smaller than the crop are mirror-padded, their labels padded IGNORE.
    A ``synthetic_fraction`` of crops instead comes from generated aerial scenes (same classes),
    and a ``partial_fraction`` from ``partial``'s images (partially labelled, training/kampala.py)."""
    rng = np.random.default_rng(seed)
    sources = [(d, np.array([lab.size for lab in d.labels], np.float64)) for d in (data, partial) if d is not None]
    lo, hi = np.log(scale[0]), np.log(scale[1])
    while True:
        size = crop if lo == hi else int(round(crop / np.exp(rng.uniform(lo, hi))))
        u = rng.random()
        if synthetic_fraction and u < synthetic_fraction:
            scene = int(rng.choice(SYNTHETIC_SEEDS))
            r, c = (int(v) for v in rng.integers(0, SYNTHETIC_EXTENT - size, 2))
            rgb, lab = render_window(scene, r, c, size, size, SYNTHETIC_RESOLUTION_M)
            yield rgb, lab, rng.integers(0, 2**31 - 1, size=2, dtype=np.int64)
            continue
        source, area = sources[1] if partial is not None and u < synthetic_fraction + partial_fraction else sources[0]
        i = int(rng.choice(len(area), p=area / area.sum()))
        img, lab = source.images[i], source.labels[i]
        h, w = lab.shape
        ph, pw = max(size - h, 0), max(size - w, 0)
        if ph or pw:
            img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
            lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=IGNORE)
            h, w = lab.shape
        r = int(rng.integers(0, h - size + 1))
        c = int(rng.integers(0, w - size + 1))
        yield (img[r:r + size, c:c + size], lab[r:r + size, c:c + size],
               rng.integers(0, 2**31 - 1, size=2, dtype=np.int64))


def elastic_displacement(seed: Any, size: int, sigma: float, grid: int) -> Any:
    """(size, size, 2) float32 displacements (dy, dx) in pixels: normal on a ``grid`` x ``grid``
    lattice, bicubic in between."""
    import tensorflow as tf

    nodes = tf.random.stateless_normal((grid, grid, 2), seed, stddev=sigma)
    return tf.image.resize(nodes, (size, size), "bicubic")


def elastic_warp(image: Any, label: Any, displacement: Any) -> tuple[Any, Any]:
    """Resample (H, W, C) float ``image`` bilinearly and (H, W, 1) uint8 ``label`` by nearest
    neighbour at (row, col) + ``displacement``. Label pixels that come from outside the crop
    become IGNORE (the image there repeats its edge), so no invented labels are learnt."""
    import tensorflow as tf

    shape = tf.shape(label)
    h, w = shape[0], shape[1]
    rows, cols = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")
    sy, sx = rows + displacement[..., 0], cols + displacement[..., 1]
    hmax, wmax = tf.cast(h - 1, tf.float32), tf.cast(w - 1, tf.float32)
    inside = (sy >= 0) & (sy <= hmax) & (sx >= 0) & (sx <= wmax)
    sy, sx = tf.clip_by_value(sy, 0.0, hmax), tf.clip_by_value(sx, 0.0, wmax)
    y0, x0 = tf.floor(sy), tf.floor(sx)
    wy, wx = (sy - y0)[..., None], (sx - x0)[..., None]
    y0i, x0i = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1i, x1i = tf.minimum(y0i + 1, h - 1), tf.minimum(x0i + 1, w - 1)

    def at(y: Any, x: Any, source: Any) -> Any:
        return tf.gather_nd(source, tf.stack([y, x], -1))

    warped = ((1 - wy) * ((1 - wx) * at(y0i, x0i, image) + wx * at(y0i, x1i, image))
              + wy * ((1 - wx) * at(y1i, x0i, image) + wx * at(y1i, x1i, image)))
    nearest = at(tf.cast(tf.round(sy), tf.int32), tf.cast(tf.round(sx), tf.int32), label)
    nearest = tf.where(inside[..., None], nearest, tf.constant(IGNORE, label.dtype))
    return warped, nearest


def augment_fn(aug: Augment, channels: int, weights: np.ndarray, crop: int | None = None,
               divisor: float = 255.0) -> Any:
    """The per-crop TF function: uint8 (image, label, seed) → (float image, int32 label, weights).

    With ``crop``, (zoomed) crops of any size are first resized to crop x crop: the image
    bilinearly (antialiased when shrinking), the label by nearest neighbour.

    Ignored pixels get label 0 and weight 0, so the loss needs no ignore logic.
    """
    import tensorflow as tf

    table = np.zeros(256, np.float32)
    table[: len(weights)] = weights  # IGNORE (255) and unknown values keep weight 0
    table[NOT_CLASS: NOT_CLASS + len(weights)] = 1.0  # "not class k": the mean class weight
    table_t = tf.constant(table)

    def fn(image: Any, label: Any, seed: Any) -> Any:
        seeds = tf.random.experimental.stateless_split(seed, 6)
        label = label[..., None]
        if crop is not None:
            image = tf.cast(tf.round(tf.clip_by_value(
                tf.image.resize(image, (crop, crop), "bilinear", antialias=True), 0, 255)), tf.uint8)
            label = tf.image.resize(label, (crop, crop), "nearest")
        if aug.d4:
            k = tf.random.stateless_uniform([], seeds[0], 0, 4, dtype=tf.int32)
            image, label = tf.image.rot90(image, k), tf.image.rot90(label, k)
        flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
        image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
        label = tf.cond(flip, lambda: tf.image.flip_left_right(label), lambda: label)
        # The pipeline's normalisation (common/normalise.py); exported cards keep mean 0 and std 1.
        x = to_unit(tf.cast(image, tf.float32), divisor)
        if aug.elastic > 0:
            side = tf.shape(label)[0]  # crops are square
            x, label = elastic_warp(x, label, elastic_displacement(seeds[5], side, aug.elastic, aug.elastic_grid))
        if aug.jitter > 0:
            a = aug.jitter
            x = tf.image.stateless_random_brightness(x, a, seeds[2])
            x = tf.image.stateless_random_contrast(x, 1 - a, 1 + a, seeds[3])
            if channels == 3:
                x = tf.image.stateless_random_saturation(x, 1 - a, 1 + a, seeds[4])
            x = tf.clip_by_value(x, 0.0, 1.0)
        # Own seeds, split off the elastic one, so configs without these options draw as before.
        x = photometric(x, aug, channels, tf.random.experimental.stateless_split(seeds[5], 8)[1:])
        label = tf.cast(label[..., 0], tf.int32)
        w = tf.gather(table_t, label)
        label = tf.where(label == IGNORE, 0, label)
        return x, label, w

    return fn


def photometric(x: Any, aug: Augment, channels: int, seeds: Any) -> Any:
    """``aug``'s hue, gamma, blur, noise and grey on a (H, W, C) float image in [0, 1]; ``seeds``
    holds (at least) 7 stateless seeds."""
    import tensorflow as tf

    def uniform(i: int, lo: float = 0.0, hi: float = 1.0) -> Any:
        return tf.random.stateless_uniform([], seeds[i], lo, hi)

    if aug.hue > 0 and channels == 3:
        x = tf.image.stateless_random_hue(x, aug.hue, seeds[0])
    if aug.gamma > 0:
        x = tf.pow(tf.maximum(x, 1e-6), tf.exp(uniform(1, -aug.gamma, aug.gamma)))
    if aug.blur > 0:
        side = tf.shape(x)[:2]
        small = tf.maximum(tf.cast(tf.cast(side, tf.float32) / uniform(2, 1.0, 2.5), tf.int32), 1)
        x = tf.cond(uniform(3) < aug.blur,
                    lambda: tf.image.resize(tf.image.resize(x, small, "bilinear", antialias=True), side, "bilinear"),
                    lambda: x)
    if aug.noise > 0:
        x = x + tf.random.stateless_normal(tf.shape(x), seeds[4]) * uniform(5, 0.0, aug.noise)
    if aug.grey > 0 and channels == 3:
        grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
        x = tf.cond(uniform(6) < aug.grey, lambda: grey, lambda: x)
    return tf.clip_by_value(x, 0.0, 1.0)


def make_dataset(data: LabelledImages, crop: int, batch: int, seed: int, aug: Augment,
                 weights: np.ndarray, synthetic_fraction: float = 0.0, partial: LabelledImages | None = None,
                 partial_fraction: float = 0.0) -> Any:
    """Endless ``tf.data.Dataset`` of (images, labels, pixel weights) batches."""
    import tensorflow as tf

    channels = data.images[0].shape[2]
    zoom = aug.scale != (1.0, 1.0)
    side = None if zoom else crop
    signature = (
        tf.TensorSpec((side, side, channels), tf.uint8),
        tf.TensorSpec((side, side), tf.uint8),
        tf.TensorSpec((2,), tf.int64),
    )
    ds = tf.data.Dataset.from_generator(lambda: _crops(data, crop, seed, synthetic_fraction, aug.scale,
                                                       partial, partial_fraction),
                                        output_signature=signature)
    ds = ds.map(augment_fn(aug, channels, weights, crop if zoom else None), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).batch(batch, drop_remainder=True).prefetch(2)
