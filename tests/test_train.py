"""Training: the tf.data pipeline keeps images and labels aligned, a few steps lower the loss, and
``tileseg train`` exports a safe-mode model whose card the pipeline reads back."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from common.synthetic import CLASSES, render_window
from model.architectures import macs_per_pixel
from model.card import load_card
from model.fcn import build_fcn
from model.loading import set_precision
from model.unet import bilinear_kernel, build_unet
from training import datasets
from training.config import TrainConfig
from training.datasets import IGNORE, NOT_CLASS
from training.export import export_model
from training.fit import build_model, train
from training.losses import pack_targets, segmentation_loss
from training.splits import TrainingData
from training.train_data import Augment, LabelledImages, augment_fn, class_weights, make_dataset

AERIAL = datasets.DatasetSpec("synthetic", tuple(n for n, _ in CLASSES), tuple(c for _, c in CLASSES), "test", 3)


def _scene_data(count: int, size: int, first_seed: int) -> LabelledImages:
    pairs = [render_window(first_seed + i, 4096, 4096, size, size) for i in range(count)]
    return LabelledImages([p[0] for p in pairs], [p[1] for p in pairs], [f"s{i}" for i in range(count)])


def _coded(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose every pixel is unique, and a label that is a function of the pixel."""
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    img = np.stack([idx % 251, (idx // 251) % 251, np.full_like(idx, 7)], -1).astype(np.uint8)
    lab = (img[..., 0] % 3).astype(np.uint8)
    lab[img[..., 0] % 17 == 0] = IGNORE
    return img, lab


@pytest.mark.parametrize("d4", [True, False])
def test_augmentation_keeps_labels_on_their_pixels(d4: bool) -> None:
    import tensorflow as tf

    img, lab = _coded(32, 32)
    weights = np.array([0.5, 1.0, 2.0], np.float32)
    fn = augment_fn(Augment(d4=d4, jitter=0.0), 3, weights)
    turned = 0
    for s in range(16):
        x, y, w = (t.numpy() for t in fn(tf.constant(img), tf.constant(lab), tf.constant([s, 3], tf.int64)))
        raw = np.rint(x * 255).astype(np.int64)
        expected = raw[..., 0] % 3
        ignored = raw[..., 0] % 17 == 0
        assert np.array_equal(y[~ignored], expected[~ignored])
        assert np.all(y[ignored] == 0) and np.all(w[ignored] == 0)
        assert np.allclose(w[~ignored], weights[expected[~ignored]])
        # Row order: street augmentation only flips left-right, so the top row stays on top.
        top_is_top = set(raw[0, :, 0] + 251 * raw[0, :, 1]) == set(range(32))
        turned += not top_is_top
        if not d4:
            assert top_is_top
    assert (turned > 0) == d4


def test_jitter_stays_in_range_and_changes_pixels() -> None:
    import tensorflow as tf

    img, lab = _coded(16, 16)
    x, _, _ = augment_fn(Augment(d4=False, jitter=0.2), 3, np.ones(3, np.float32))(
        tf.constant(img), tf.constant(lab), tf.constant([1, 2], tf.int64))
    x = x.numpy()
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert not np.allclose(x, img / 255.0)


def test_dataset_is_repeatable_and_pads_small_images() -> None:
    data = LabelledImages([np.full((20, 40, 1), 9, np.uint8)], [np.ones((20, 40), np.uint8)], ["small"])
    batches = [next(iter(make_dataset(data, 32, 2, seed=5, aug=Augment(jitter=0.0), weights=np.ones(2, np.float32))))
               for _ in range(2)]
    (x1, y1, w1), (x2, y2, w2) = ([t.numpy() for t in b] for b in batches)
    assert x1.shape == (2, 32, 32, 1) and y1.shape == (2, 32, 32)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    # The crop is larger than the image in height: padded rows are ignored (weight 0).
    assert 0 < (w1 == 0).mean() < 1 and np.all(y1[w1 == 0] == 0) and np.all(y1[w1 > 0] == 1)


def test_photometric_options_keep_range_and_grey_makes_bands_equal() -> None:
    import tensorflow as tf

    img, lab = _coded(32, 32)
    strong = Augment(d4=False, jitter=0.0, gamma=0.4, hue=0.05, blur=1.0, noise=0.05)
    x, y, _ = augment_fn(strong, 3, np.ones(3, np.float32))(tf.constant(img), tf.constant(lab),
                                                            tf.constant([4, 2], tf.int64))
    x = x.numpy()
    assert x.min() >= 0.0 and x.max() <= 1.0 and not np.allclose(x, img / 255.0, atol=0.02)
    plain = augment_fn(Augment(d4=False, jitter=0.0), 3, np.ones(3, np.float32))
    assert np.array_equal(y.numpy(), plain(tf.constant(img), tf.constant(lab), tf.constant([4, 2], tf.int64))[1].numpy())
    grey = augment_fn(Augment(d4=False, jitter=0.0, grey=1.0), 3, np.ones(3, np.float32))
    g = grey(tf.constant(img), tf.constant(lab), tf.constant([4, 2], tf.int64))[0].numpy()
    assert np.allclose(g[..., 0], g[..., 1]) and np.allclose(g[..., 1], g[..., 2])
    luma = (img.astype(np.float32) / 255.0) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(g[..., 0], luma, atol=2e-3)


def test_partial_crops_come_from_their_source_with_not_class_labels_and_weight_one() -> None:
    full = LabelledImages([np.zeros((40, 40, 3), np.uint8)], [np.ones((40, 40), np.uint8)], ["full"])
    partial = LabelledImages([np.full((40, 40, 3), 200, np.uint8)],
                             [np.full((40, 40), NOT_CLASS + 2, np.uint8)], ["partial"])
    weights = np.array([0.5, 1.5, 2.5], np.float32)
    ds = make_dataset(full, 32, 8, seed=3, aug=Augment(jitter=0.0), weights=weights, partial=partial,
                      partial_fraction=0.5)
    x, y, w = (t.numpy() for t in next(iter(ds)))
    from_partial = x.reshape(8, -1).mean(axis=1) > 0.5
    assert 0 < from_partial.sum() < 8
    assert np.all(y[from_partial] == NOT_CLASS + 2) and np.all(w[from_partial] == 1.0)
    assert np.all(y[~from_partial] == 1) and np.all(w[~from_partial] == 1.5)


def test_class_weights_are_inverse_sqrt_frequency_with_mean_one() -> None:
    w = class_weights(np.array([90, 10, 0]), "sqrt")
    assert w[2] == 0 and np.isclose(w[:2].mean(), 1.0) and np.isclose(w[1] / w[0], 3.0)
    assert np.array_equal(class_weights(np.array([5, 5]), "none"), [1, 1])
    with pytest.raises(ValueError):
        class_weights(np.array([1]), "median")


def test_bilinear_upsampling_head_matches_tf_resize() -> None:
    import keras
    import tensorflow as tf

    for factor in (2, 4):
        layer = keras.layers.Conv2DTranspose(3, 2 * factor, strides=factor, padding="same", use_bias=False)
        z = np.random.default_rng(0).random((1, 6, 5, 3)).astype(np.float32)
        layer(z)
        layer.set_weights([bilinear_kernel(factor, 3)])
        ref = tf.image.resize(z, (6 * factor, 5 * factor)).numpy()
        out = layer(z).numpy()
        assert np.allclose(out[:, factor:-factor, factor:-factor], ref[:, factor:-factor, factor:-factor], atol=1e-6)


def test_strided_unet_and_fcn_shapes_and_float32_head() -> None:
    unet = build_unet(4, 3, depth=2, base_filters=4, input_stride=2)
    fcn = build_fcn(4, 1, depth=3, base_filters=4)
    assert unet(np.zeros((1, 24, 40, 3), np.float32)).shape == (1, 24, 40, 4)
    assert fcn(np.zeros((2, 16, 24, 1), np.float32)).shape == (2, 16, 24, 4)
    fast = set_precision(unet, "bfloat16")
    assert fast.get_layer("logits_upsample").dtype_policy.name == "float32"
    assert fast.get_layer("down0_conv1").dtype_policy.name == "mixed_bfloat16"
    assert not fast.get_layer("logits_upsample").trainable


def test_macs_per_pixel_counts_convolutions() -> None:
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)                   # 9*3*8 = 216 per pixel
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(4, 1)(x)                                         # 8*4/4 = 8 per pixel
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)                     # 4*4*2/4 = 8 per pixel
    assert macs_per_pixel(keras.Model(inputs, x), size=32) == pytest.approx(232)


def _tiny_config(**kw: object) -> TrainConfig:
    base = dict(dataset="synthetic", name="tiny", depth=2, base_filters=4, crop=64, batch=4, epochs=2,
                steps_per_epoch=8, lr=5e-3, warmup_steps=2, patience=0, patch_size=64, halo=8,
                max_minutes=5.0, class_weighting="sqrt")
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.slow  # fits a model for a few steps
@pytest.mark.parametrize("iou_weight", [0.0, 1.0])
def test_a_few_training_steps_lower_the_loss(iou_weight: float) -> None:
    import keras

    cfg = _tiny_config()
    data = _scene_data(3, 96, first_seed=1)
    weights = class_weights(data.class_counts(5), "sqrt")
    x, y = pack_targets(*next(iter(make_dataset(data, 64, 8, seed=9, aug=Augment(jitter=0.0), weights=weights))))
    keras.utils.set_random_seed(0)
    model = build_model(cfg, 5, 3, "mixed_bfloat16")
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=segmentation_loss(5, iou_weight))
    ce, iou = segmentation_loss(5), segmentation_loss(5, 1.0)

    def parts() -> tuple[float, float]:  # (cross-entropy, 1 - soft mIoU) on the fixed batch
        logits = model.predict(x, verbose=0)
        cross_entropy = float(ce(y, logits))
        return cross_entropy, float(iou(y, logits)) - cross_entropy

    before = parts()
    model.fit(make_dataset(data, 64, 4, seed=1, aug=Augment(), weights=weights).map(pack_targets),
              steps_per_epoch=30, epochs=1, verbose=0, shuffle=False)
    after = parts()
    assert after[0] < 0.8 * before[0], (before, after)
    assert after[1] < before[1], (before, after)


@pytest.mark.slow  # fits a model for a few steps
@pytest.mark.parametrize("ema,select", [(0.0, "best"), (0.9, "best"), (0.9, "last")])
def test_train_and_export_write_a_model_the_pipeline_reads(tmp_path: Path, ema: float, select: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from model.predictor import Predictor

    # The export recalibrates batch norm on 3e7 pixels: 1831 eager calls of 4 x 64² here, about
    # four minutes on a 2-core CPU without bf16. What the recalibration computes is tested in
    # test_batchnorm.py; here 32 batches show the export uses it.
    monkeypatch.setattr("training.fit.EXPORT_BN_PIXELS", 32 * 4 * 64 * 64)

    data = TrainingData(AERIAL, _scene_data(3, 96, first_seed=1), _scene_data(1, 80, first_seed=40),
                        {"rule": "synthetic test scenes"})
    # One case also trains with partial labels (a generated scene whose labels only say Building
    # or not) and grey crops: the card then says grey_ok and records both sources and the grey mIoU.
    broadened = ema == 0.0
    if broadened:
        scene = _scene_data(1, 96, first_seed=70)
        partial = np.where(scene.labels[0] == 0, 0, NOT_CLASS).astype(np.uint8)
        data.partial = LabelledImages(scene.images, [partial], ["partial"])
        data.sources = [{"name": "synthetic", "use": "full labels", "license": "test"},
                        {"name": "partial test scene", "use": "partial labels", "license": "test"}]
    cfg = _tiny_config(select=select, patience=5, ema=ema, **(dict(grey=0.3, partial_fraction=0.3, gamma=0.2, hue=0.02,
                                                                   blur=0.2, noise=0.02) if broadened else {}))
    result = train(cfg, data, str(tmp_path), verbose=0)
    assert len(result.history) == 2 and result.steps == 16
    # "last" (cross-validation) never looks at the validation split while training.
    assert all(("val_miou" in h) == (select == "best") for h in result.history)
    assert (tmp_path / "checkpoints" / "best.weights.h5").is_file() == (select == "best")
    assert (tmp_path / "checkpoints" / "last.weights.h5").is_file()
    card = export_model(cfg, data, result, str(tmp_path), "tileseg train (test)")
    again = load_card(str(tmp_path))
    assert again == card
    assert again.size_multiple == 4 and again.patch_size == 64 and again.halo == 8
    assert [c.name for c in again.classes] == [n for n, _ in CLASSES]
    m = again.metrics
    cm = np.array(m["confusion"])
    assert cm.sum() == 80 * 80 == m["pixels"]
    assert m["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-4)
    assert m["pixel_error"] == pytest.approx(1 - m["pixel_accuracy"], abs=1e-4)
    assert set(again.precision_agreement) == {"bfloat16", "float16"}
    assert all(0.9 <= v <= 1 for v in again.precision_agreement.values())
    assert again.training["steps"] == 16 and again.training["wall_time_s"] > 0
    assert again.training["best_epoch"] in ((1, 2) if select == "best" else (2,))
    assert (again.training["best_val_miou_during_training"] is None) == (select == "last")
    json.dumps(again.to_json())  # everything in the card is plain JSON
    # The card's input statistics are the run's training images' (radiometry and the domain check use them).
    pixels = np.concatenate([i.reshape(-1, 3) for i in data.train.images]) / 255.0
    assert again.input_stats["mean"] == pytest.approx(pixels.mean(axis=0), abs=1e-3)
    assert again.grey_ok == broadened and ("grey" in m) == broadened
    if broadened:
        assert 0 <= m["grey"]["miou"] <= 1 and m["grey"]["ratio_to_rgb"] == pytest.approx(
            m["grey"]["miou"] / m["miou"], rel=0.01)
        assert [src["name"] for src in again.training["sources"]] == ["synthetic", "partial test scene"]
        assert "partial test scene, test" in again.license
        assert "hotosm-kampala" not in m  # scored only for models trained on Kampala's labels
    pred = Predictor.from_dir(str(tmp_path), "float32")
    labels = pred.predict_labels(np.zeros((1, 64, 64, 3), np.uint8), divisor=255.0)
    assert labels.shape == (1, 64, 64) and labels.max() < 5


def test_bad_train_options_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from training.train import main

    assert main(["--dataset", "membrane", "--crop", "100"]) == 2
    assert "--crop 100 must be a multiple of 16" in capsys.readouterr().err
    assert main(["--dataset", "membrane", "--stem", "maxpool", "--iou_loss", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--stem must be pool or conv" in err and "--iou_loss must be >= 0" in err
    assert main(["--dataset", "camvid", "--fold", "all"]) == 2
    assert "cross-validated datasets" in capsys.readouterr().err
    assert main(["--dataset", "membrane", "--fold", "none"]) == 2
    assert "--fold none (train on every image) is for aeroscapes" in capsys.readouterr().err
    assert main(["--dataset", "aeroscapes", "--fold", "none", "--select", "best"]) == 2
    assert "--fold none holds nothing out to select on: give --select last" in capsys.readouterr().err
    assert main(["--dataset", "aeroscapes", "--fold", "first"]) == 2
    assert "--fold must be a number, 'all' or 'none'" in capsys.readouterr().err
    assert main(["--dataset", "folder", "--images", "x", "--labels", "y"]) == 2
    assert "--classes" in capsys.readouterr().err
    assert main(["--dataset", "dubai-aerial", "--grey", "1.5", "--partial_fraction", "0.95", "--hue", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "--grey must be in [0, 1]" in err and "--synthetic_fraction + --partial_fraction" in err and "--hue" in err


def test_folder_dataset_loads_rgb_labels(tmp_path: Path) -> None:
    from PIL import Image

    from training.splits import load_training_data

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(tmp_path / "img" / f"{i}.png")
        lab = np.zeros((8, 8, 3), np.uint8)
        lab[:, 4:] = (255, 0, 0)
        lab[0, 0] = (1, 2, 3)  # not a class colour: ignored
        Image.fromarray(lab).save(tmp_path / "lab" / f"{i}.png")
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([{"name": "bg", "color": [0, 0, 0]}, {"name": "red", "color": [255, 0, 0]}]))
    a = argparse.Namespace(dataset="folder", images=str(tmp_path / "img"), labels=str(tmp_path / "lab"),
                           val_images=None, val_labels=None, label_format="rgb", classes=str(classes),
                           channels=3, license="CC0")
    data = load_training_data(a, 0)
    assert data.spec.class_names == ("bg", "red")
    assert len(data.train.images) == 2 and data.val.names == ["0"]
    lab = data.val.labels[0]
    assert lab[0, 0] == IGNORE and np.all(lab[1:, :4] == 0) and np.all(lab[:, 4:] == 1)


def test_zoomed_crops_are_resized_with_labels_kept_apart() -> None:
    # Left half class 0, right half class 1: after any zoom the label edge stays where the image edge is.
    img = np.zeros((64, 64, 1), np.uint8)
    img[:, 32:] = 200
    lab = (img[..., 0] > 0).astype(np.uint8)
    data = LabelledImages([img], [lab], ["halves"])
    ds = make_dataset(data, 32, 8, seed=3, aug=Augment(d4=False, jitter=0.0, scale=(0.5, 2.0)),
                      weights=np.ones(2, np.float32))
    x, y, w = (t.numpy() for t in next(iter(ds)))
    assert x.shape == (8, 32, 32, 1) and y.shape == (8, 32, 32)
    bright = x[..., 0] > 0.6
    dark = x[..., 0] < 0.2
    assert np.all(y[bright & (w > 0)] == 1) and np.all(y[dark & (w > 0)] == 0)


def test_elastic_warp_moves_pixels_and_labels_together_and_ignores_outside() -> None:
    import tensorflow as tf

    from training.train_data import elastic_displacement, elastic_warp

    img, lab = _coded(24, 24)
    x = tf.constant(img[..., :1].astype(np.float32))
    y = tf.constant(lab[..., None])
    # No displacement: identity.
    same_x, same_y = elastic_warp(x, y, tf.zeros((24, 24, 2)))
    assert np.array_equal(same_x.numpy(), img[..., :1]) and np.array_equal(same_y.numpy()[..., 0], lab)
    # A constant displacement of (+2 rows, -3 cols) is a shift; pixels from outside are ignored.
    shift = tf.concat([tf.fill((24, 24, 1), 2.0), tf.fill((24, 24, 1), -3.0)], -1)
    sx, sy = (t.numpy() for t in elastic_warp(x, y, shift))
    assert np.array_equal(sx[:22, 3:, 0], img[2:, :21, 0]) and np.array_equal(sy[:22, 3:, 0], lab[2:, :21])
    assert np.all(sy[22:, :, 0] == IGNORE) and np.all(sy[:, :3, 0] == IGNORE)
    # Half a pixel: the image interpolates, the label takes a neighbour's value.
    half = tf.concat([tf.fill((24, 24, 1), 0.5), tf.zeros((24, 24, 1))], -1)
    hx, _ = elastic_warp(x, y, half)
    assert np.allclose(hx.numpy()[:23, :, 0], (img[:23, :, 0] + img[1:, :, 0].astype(np.float32)) / 2)
    # Random fields: smooth (bicubic between 3x3 nodes), about sigma pixels, repeatable per seed.
    d1 = elastic_displacement(tf.constant([4, 2], tf.int64), 64, 10.0, 3).numpy()
    d2 = elastic_displacement(tf.constant([4, 2], tf.int64), 64, 10.0, 3).numpy()
    assert d1.shape == (64, 64, 2) and np.array_equal(d1, d2)
    assert 2 < np.abs(d1).max() < 60 and np.abs(np.diff(d1, axis=0)).max() < 3


def test_elastic_augmentation_keeps_each_label_on_its_pixel() -> None:
    import tensorflow as tf

    # Piecewise-constant image whose grey level encodes the class: after warping, every labelled
    # pixel's (nearest-neighbour) label must match the class of the image pixel it came from.
    img = np.zeros((48, 48, 1), np.uint8)
    lab = np.zeros((48, 48), np.uint8)
    for k, (r, c) in enumerate([(0, 0), (0, 24), (24, 0), (24, 24)]):
        img[r:r + 24, c:c + 24] = 60 * (k + 1)
        lab[r:r + 24, c:c + 24] = k % 3
    fn = augment_fn(Augment(d4=True, jitter=0.0, elastic=8.0), 1, np.ones(3, np.float32))
    moved = 0
    for s in range(8):
        x, y, w = (t.numpy() for t in fn(tf.constant(img), tf.constant(lab), tf.constant([s, 9], tf.int64)))
        grey = np.rint(x[..., 0] * 255)
        # Away from interpolated edges: a 3x3 neighbourhood of one grey level.
        pad = np.pad(grey, 1, mode="edge")
        flat = (w > 0) & np.all([pad[1 + dy:49 + dy, 1 + dx:49 + dx] == grey
                                 for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        assert flat.mean() > 0.5
        assert np.array_equal(y[flat], ((grey[flat] / 60 - 1) % 3).astype(np.int32))
        assert np.all(y[w == 0] == 0)
        moved += not np.array_equal(np.sort(grey.ravel()), np.sort(img.ravel().astype(np.float64)))
    assert moved > 0


@pytest.mark.slow  # fits a model for a few steps
@pytest.mark.parametrize("builder", [build_unet, build_fcn])
def test_conv_stem_keeps_shapes_and_alignment_and_learns_texture_the_pool_stem_averages_away(builder) -> None:
    import keras

    kw = dict(num_classes=2, in_channels=1, depth=2, base_filters=4, input_stride=2)
    if builder is build_fcn:
        kw["depth"] = 3
    pool = builder(**kw, stem="pool")
    conv = builder(**kw, stem="conv")
    x = np.random.default_rng(0).random((1, 32, 48, 1), np.float32)
    assert conv.predict(x, verbose=0).shape == pool.predict(x, verbose=0).shape == (1, 32, 48, 2)
    # A 4x4 stride-2 kernel, "same" padding: output pixel (i, j) is centred on input (2i + 0.5, 2j + 0.5),
    # exactly where the 2x2 average pool's output sits.
    layer = conv.get_layer("stem_conv")
    assert layer.kernel_size == (4, 4) and layer.strides == (2, 2) and layer.filters == 4
    probe = keras.Model(conv.input, layer.output)
    kernel = np.zeros((4, 4, 1, 4), np.float32)
    kernel[1:3, 1:3, 0, 0] = 0.25  # the pool's footprint inside the kernel
    kernel[1, 1, 0, 1], kernel[1, 2, 0, 1] = 1.0, -1.0  # a full-resolution texture the pool loses
    layer.set_weights([kernel, np.zeros(4, np.float32)])
    stripes = np.tile(np.array([0.0, 1.0], np.float32), 24)[None, None, :, None].repeat(32, 1)
    out = probe.predict(stripes, verbose=0)
    np.testing.assert_allclose(out[0, :, :, 0], 0.5, atol=1e-6)   # what the average pool sees
    np.testing.assert_allclose(out[0, :, :, 1], -1.0, atol=1e-6)  # the stripes the pool averages away
    with pytest.raises(ValueError, match="stem"):
        builder(**kw, stem="bogus")


def test_cross_validation_means_skip_folds_where_a_class_is_absent() -> None:
    from training.train import _cv_mean

    rows = [{"miou": 0.5, "pixel_error": 0.2, "per_class_iou": {"road": 0.8, "person": None},
             "per_class_recall": {"road": 0.9, "person": None}},
            {"miou": 0.7, "pixel_error": 0.1, "per_class_iou": {"road": 0.6, "person": 0.4},
             "per_class_recall": {"road": 0.7, "person": 0.5}}]
    mean = _cv_mean(rows)
    assert mean["miou"] == 0.6 and mean["pixel_error"] == 0.15 and "cell_iou" not in mean
    assert mean["per_class_iou"] == {"road": 0.7, "person": 0.4}  # person: the one fold it occurs in
    assert mean["per_class_recall"] == {"road": 0.8, "person": 0.5}


def _saved_model(model_dir: Path, cfg: TrainConfig, spec: datasets.DatasetSpec) -> object:
    from model.card import save_card
    from training.fit import MODEL_FILE, provisional_card

    model = build_model(cfg, len(spec.class_names), 3, "float32")
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(model_dir / MODEL_FILE))
    save_card(provisional_card(cfg, spec), str(model_dir))
    return model


def test_init_copies_every_layer_but_a_new_class_head_and_refuses_other_mismatches(tmp_path: Path) -> None:
    from training.fit import start_from

    cfg = _tiny_config()
    source = _saved_model(tmp_path / "source", cfg, AERIAL)
    eight = datasets.DatasetSpec("eight", tuple(f"c{i}" for i in range(8)), ((0, 0, 0),) * 8, "test", 3)
    target = build_model(cfg, 8, 3, "float32")
    start_from(target, str(tmp_path / "source"))
    theirs = {layer.name: layer.get_weights() for layer in source.layers}  # type: ignore[attr-defined]
    for layer in target.layers:
        ours = layer.get_weights()
        if layer.name == "logits_conv":  # 8 classes here, 5 there: its own fresh weights
            assert ours[0].shape[-1] == 8 and ours[0].shape != theirs[layer.name][0].shape
        elif ours and layer.name != "logits_upsample":
            assert all(np.array_equal(a, b) for a, b in zip(ours, theirs[layer.name])), layer.name
    wider = build_model(_tiny_config(base_filters=8), len(eight.class_names), 3, "float32")
    with pytest.raises(datasets.DatasetError, match=r"down0_conv1: \[.*\] here, \[.*\] there"):
        start_from(wider, str(tmp_path / "source"))


def test_a_cross_validation_reuses_finished_runs_of_the_same_configuration(tmp_path: Path) -> None:
    import dataclasses

    from model.card import load_card, save_card
    from training.config import config_record
    from training.train import _finished

    cfg = _tiny_config(fold=1)
    out = tmp_path / "fold1"
    _saved_model(out, cfg, AERIAL)
    card = load_card(str(out))
    assert _finished(str(out), cfg) is None  # a card without a training record: not a finished run
    save_card(dataclasses.replace(card, training={"config": config_record(cfg)}), str(out))
    assert _finished(str(out), cfg) is not None
    assert _finished(str(out), dataclasses.replace(cfg, lr=1e-4)) is None  # another configuration: trained again
    assert _finished(str(tmp_path / "nothing"), cfg) is None
    (out / "model.keras").unlink()
    assert _finished(str(out), cfg) is None


def test_the_every_image_model_carries_the_folds_figures_and_chosen_threshold(tmp_path: Path) -> None:
    import dataclasses

    from model.card import load_card
    from training.train import CV_FILE, _with_cv_figures

    cfg = _tiny_config()
    _saved_model(tmp_path, cfg, AERIAL)
    card = dataclasses.replace(load_card(str(tmp_path)), landing={"roles": {n: "hazard" for n, _ in CLASSES},
                                                                    "threshold_for": "Building"})
    chosen = {"max_hazard_probability": 0.1, "recall": {"Building": 0.9}, "false_alarm_rate": 0.04}
    report = {"folds": [{"fold": 0, "miou": 0.5, "per_class_iou": {}, "per_class_recall": {}, "pixel_error": 0.1}],
              "mean": {"miou": 0.5, "pixel_error": 0.1, "per_class_iou": {}, "per_class_recall": {}},
              "hazards": {"chosen": chosen, "focus": "Building", "rule": "highest Building recall"}}
    _with_cv_figures(card, report, str(tmp_path))
    again = load_card(str(tmp_path))
    assert again.metrics["miou"] == 0.5 and "cross-validation" in again.metrics["split"]
    assert again.landing["max_hazard_probability"] == 0.1 and "Building recall 0.9" in again.landing["threshold_how"]
    assert json.loads((tmp_path / CV_FILE).read_text()) == report


def test_a_folds_miou_over_the_classes_present_leaves_out_classes_only_predicted() -> None:
    import dataclasses

    from model.card import ClassInfo, ModelCard, Normalisation
    from training.train import _cv_row

    card = ModelCard(name="m", version="1", model_file="model.keras",
                     classes=tuple(ClassInfo(i, n, (0, 0, 0)) for i, n in enumerate(("road", "car", "person"))),
                     input_bands=("red", "green", "blue"), normalisation=Normalisation((0.0,) * 3, (1.0,) * 3),
                     patch_size=64, halo=8, size_multiple=16)
    # No car in the held-out truth, but 5 pixels predicted car: IoU 0 in miou, left out of miou_present.
    cm = [[90, 5, 5], [0, 0, 0], [2, 0, 8]]
    card = dataclasses.replace(card, metrics={"miou": 0.4, "pixel_error": 0.1, "confusion": cm,
                                              "per_class_iou": {"road": 0.88, "car": 0.0, "person": 0.53}},
                               training={"wall_time_s": 1.0})
    row = _cv_row(0, card)
    assert row["classes_present"] == ["road", "person"] and row["miou_present"] == pytest.approx(0.705)
