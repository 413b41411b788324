"""training.interpolate: the mix is exactly (1 - a) x start + a x tuned, read back in safe mode,
with the tuned run's figures removed from the card; bad requests are clear errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from common.synthetic import CLASSES
from model.card import load_card, save_card
from model.loading import load_model
from training import datasets
from training.config import TrainConfig, config_record
from training.fit import MODEL_FILE, build_model, provisional_card
from training.interpolate import interpolate, main, mix

SPEC = datasets.DatasetSpec("synthetic", tuple(n for n, _ in CLASSES), tuple(c for _, c in CLASSES), "test", 3)


def _model_dir(path: Path, seed: int, init: str = "") -> list[np.ndarray]:
    import keras

    cfg = TrainConfig(dataset="synthetic", name="tiny", depth=2, base_filters=4, patch_size=64, halo=8, init=init)
    keras.utils.set_random_seed(seed)
    model = build_model(cfg, len(SPEC.class_names), 3, "float32")
    # Batch-norm statistics too: the fresh ones are 0 / 1 on both sides, which would hide a skipped mix.
    model.set_weights([w + np.random.default_rng(seed + i).normal(0, 0.1, w.shape).astype(w.dtype) ** 2
                       for i, w in enumerate(model.get_weights())])
    path.mkdir(parents=True)
    model.save(str(path / MODEL_FILE))
    card = replace(provisional_card(cfg, SPEC), metrics={"miou": 0.5},
                   training={"config": config_record(cfg), "dataset": "synthetic"})
    save_card(card, str(path))
    return model.get_weights()


def test_the_mix_is_exact_and_the_card_says_what_it_is(tmp_path: Path) -> None:
    start = _model_dir(tmp_path / "start", 1)
    tuned = _model_dir(tmp_path / "tuned", 2, init=str(tmp_path / "start"))
    model_id = interpolate(str(tmp_path / "tuned"), 0.25, str(tmp_path / "mix"))
    got = load_model(str(tmp_path / "mix"), "float32").model.get_weights()  # safe mode, as the pipeline loads it
    assert len(got) == len(start) == len(tuned)
    for g, a, b in zip(got, start, tuned):
        np.testing.assert_allclose(g, 0.75 * a + 0.25 * b, rtol=1e-6, atol=1e-7)
    card = load_card(str(tmp_path / "mix"))
    assert model_id == card.model_id == "tiny@1.0.0+wise0.25"
    assert "miou" not in card.metrics and "not measured" in card.metrics["note"]
    assert card.training["interpolation"]["alpha"] == 0.25
    assert card.training["interpolation"]["start"] == "tiny@1.0.0"


def test_mix_refuses_different_shapes() -> None:
    with pytest.raises(datasets.DatasetError, match="differ in architecture"):
        mix([np.zeros((2, 3))], [np.zeros((2, 4))], 0.5)


def test_bad_requests_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _model_dir(tmp_path / "start", 1)
    _model_dir(tmp_path / "tuned", 2, init=str(tmp_path / "start"))
    assert main(["--tuned", str(tmp_path / "start"), "--alpha", "0.5", "--out", str(tmp_path / "x")]) == 2
    assert "names no starting weights" in capsys.readouterr().err
    assert main(["--tuned", str(tmp_path / "tuned"), "--alpha", "1.5", "--out", str(tmp_path / "x")]) == 2
    assert "--alpha must be in [0, 1]" in capsys.readouterr().err
    assert main(["--tuned", str(tmp_path / "tuned"), "--alpha", "0.5", "--out", str(tmp_path / "tuned")]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
