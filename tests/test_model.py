"""Model card round trip and validation, safe-mode loading, precision chosen at load time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from model.card import ModelCardError, card_from_json, load_card, save_card
from model.loading import load_model, resolve_precision, set_precision
from model.predictor import Predictor
from model.unet import build_unet
from tests.models import write_binning_model


def test_card_round_trip(tmp_path: Path) -> None:
    card = write_binning_model(str(tmp_path), num_classes=4)
    again = load_card(str(tmp_path))
    assert again == card
    assert again.palette()[255] == (0, 0, 0, 0) and again.palette()[1][3] == 255
    assert card_from_json(json.loads((tmp_path / "card.json").read_text())) == card


def test_card_rejects_unknown_and_inconsistent_fields(tmp_path: Path) -> None:
    write_binning_model(str(tmp_path))
    data = json.loads((tmp_path / "card.json").read_text())
    with pytest.raises(ModelCardError, match="unknown fields"):
        card_from_json({**data, "patchsize": 256})
    with pytest.raises(ModelCardError, match="multiple of"):
        card_from_json({**data, "patch_size": 100})
    with pytest.raises(ModelCardError, match="halo"):
        card_from_json({**data, "halo": 32, "patch_size": 64})
    with pytest.raises(ModelCardError, match="missing field 'classes'"):
        card_from_json({k: v for k, v in data.items() if k != "classes"})
    with pytest.raises(ModelCardError, match="mean/std"):
        card_from_json({**data, "normalisation": {**data["normalisation"], "mean": [0.5]}})
    os.remove(tmp_path / "model.keras")
    with pytest.raises(ModelCardError, match="not in"):
        load_card(str(tmp_path))
    with pytest.raises(ModelCardError, match="no card.json"):
        load_card(str(tmp_path / ".." ))


def test_safe_mode_refuses_a_model_that_runs_code(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2.0)(inputs))
    model.save(tmp_path / "model.keras")
    card = write_binning_model(str(tmp_path / "ok"))
    save_card(card, str(tmp_path))
    with pytest.raises(ModelCardError, match="safe mode"):
        load_model(str(tmp_path), "float32")


def test_bfloat16_rebuild_changes_layer_policies_and_keeps_weights() -> None:
    model = build_unet(num_classes=3, depth=2, base_filters=4)
    fast = set_precision(model, "bfloat16")
    conv = fast.get_layer("down0_conv1")
    assert conv.dtype_policy.compute_dtype == "bfloat16" and conv.dtype_policy.variable_dtype == "float32"
    assert fast.get_layer("logits").dtype_policy.compute_dtype == "float32"
    for a, b in zip(model.get_weights(), fast.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((1, 32, 48, 3), dtype=np.float32)
    y32, y16 = np.asarray(model(x)), np.asarray(fast(x))
    assert y16.dtype == np.float32 and y16.shape == (1, 32, 48, 3)
    assert not np.array_equal(y32, y16) and np.allclose(y32, y16, atol=0.25)


def test_auto_precision_needs_recorded_agreement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    card = write_binning_model(str(tmp_path))
    monkeypatch.setattr("model.loading.has_gpu", lambda: False)
    monkeypatch.setattr("model.loading.cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", card) == "bfloat16"  # card records agreement 1.0
    low = card.__class__(**{**card.__dict__, "precision_agreement": {"bfloat16": 0.99}})
    assert resolve_precision("auto", low) == "float32"
    monkeypatch.setattr("model.loading.cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", card) == "float32"
    assert resolve_precision("float16", card) == "float16"
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("int8", card)


def test_unet_shapes_any_multiple_of_two_to_the_depth() -> None:
    model = build_unet(num_classes=5, depth=3, base_filters=4, upsampling="resize", dropout=0.1)
    for h, w in [(8, 8), (24, 40)]:
        assert model(np.zeros((2, h, w, 3), np.float32)).shape == (2, h, w, 5)


def test_predictor_labels_and_scores(tmp_path: Path) -> None:
    write_binning_model(str(tmp_path), num_classes=5)
    pred = Predictor.from_dir(str(tmp_path), "float32")
    x = np.linspace(0, 1, 16 * 32, dtype=np.float32).reshape(1, 16, 32, 1).repeat(3, axis=-1)
    labels = pred.predict_labels(x)
    np.testing.assert_array_equal(labels[0], np.rint(x[0, ..., 0] * 4).astype(np.uint8))
    scores = pred.predict_scores(x)
    assert scores.shape == (1, 16, 32, 5) and np.allclose(scores.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(scores.argmax(-1), labels)
    with pytest.raises(ValueError, match="multiple of 16"):
        pred.predict_labels(np.zeros((1, 20, 16, 3), np.float32))


def test_one_predictor_serves_many_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beam shares one loaded model between a worker's threads: the first calls race to build the
    graphs; each graph is built once and every thread gets the serial answer."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    write_binning_model(str(tmp_path), num_classes=5)
    pred = Predictor.from_dir(str(tmp_path), "float32")
    builds: list[str] = []
    build = Predictor._build_graph

    def slow_build(self: Predictor, kind: str, *args: object) -> object:
        builds.append(threading.current_thread().name)
        time.sleep(0.2)  # widen the window in which other threads would build it again
        return build(self, kind, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Predictor, "_build_graph", slow_build)
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, (2, 16, 32, 3), dtype=np.uint8) for _ in range(16)]
    with ThreadPoolExecutor(8) as pool:
        labels = list(pool.map(lambda x: pred.predict_labels(x, 2, 255.0), inputs))
        scores = list(pool.map(lambda x: pred.predict_scores(x, 2, 255.0), inputs))
    assert len(builds) == 2 and len(pred._graphs) == 2, "one graph per kind, built once"
    monkeypatch.undo()
    serial = Predictor.from_dir(str(tmp_path), "float32")
    for x, got, sc in zip(inputs, labels, scores, strict=True):
        np.testing.assert_array_equal(got, serial.predict_labels(x, 2, 255.0))
        np.testing.assert_array_equal(sc.argmax(-1), got)


def test_accelerator_check_reports_every_precision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from model.accelerator_check import main

    write_binning_model(str(tmp_path))
    assert main(["--model", str(tmp_path), "--batch", "2", "--seconds", "0.05"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["model"] == "binning@0.0.1" and report["patch"] == 64
    assert report["float32"]["agreement"] == 1.0
    assert {"bfloat16", "float16"} <= set(report) and report["bfloat16"]["mpix_s"] > 0
