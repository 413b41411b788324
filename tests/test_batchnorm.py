"""Precise batch-norm statistics (model/batchnorm.py): the moving statistics become the plain
average of the batches' statistics, so inference matches training-mode normalisation."""

from __future__ import annotations

import numpy as np

from training.batchnorm import recalibrate


def _model() -> tuple[object, object]:
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 2))
    conv = layers.Conv2D(4, 3, padding="same", use_bias=False)(inp)
    drop = layers.Dropout(0.5)(conv)
    norm = layers.BatchNormalization(momentum=0.99)(drop)
    out = layers.Conv2D(3, 1)(layers.ReLU()(norm))
    return keras.Model(inp, out), keras.Model(inp, conv)


def test_recalibrated_statistics_are_the_average_of_the_batches() -> None:
    import keras

    model, features = _model()
    norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    drop = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dropout))
    rng = np.random.default_rng(0)
    # Three batches with different scales and offsets: the average is not any one batch.
    batches = [(rng.normal(k, 1 + k, (4, 16, 16, 2)).astype(np.float32), None) for k in range(3)]
    assert recalibrate(model, batches) == 3

    feats = [np.asarray(features(x), np.float64) for x, _ in batches]
    mean = np.mean([f.mean((0, 1, 2)) for f in feats], axis=0)
    var = np.mean([f.var((0, 1, 2)) for f in feats], axis=0)
    # Dropout was off while measuring (with it on, the variance would be ~2x), and is back on after.
    np.testing.assert_allclose(norm.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), var, rtol=1e-4)
    assert norm.momentum == 0.99 and drop.rate == 0.5


def test_one_batch_makes_inference_equal_training_mode_normalisation() -> None:
    model, _ = _model()
    x = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 2)).astype(np.float32)
    before = np.asarray(model(x, training=False))
    assert recalibrate(model, [x]) == 1
    after = np.asarray(model(x, training=False))
    # Dropout aside, training mode normalises with this batch's statistics: compare with dropout off.
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    reference = np.asarray(model(x, training=True))
    np.testing.assert_allclose(after, reference, rtol=1e-3, atol=1e-4)
    assert np.abs(before - reference).max() > 1e-2  # the initial statistics (0, 1) were wrong


def test_no_batches_leave_the_model_unchanged() -> None:
    model, _ = _model()
    weights = [w.copy() for w in model.get_weights()]
    assert recalibrate(model, []) == 0
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
