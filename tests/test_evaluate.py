"""tileseg evaluate on folders of images and labels, with a model whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.models import write_binning_model
from training.evaluate import main
from training.evaluation import D4, LEFT_RIGHT, _forward, _inverse, tta_views

K = 4


def _scene(tmp_path: Path, shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, (shape[0] // 8, shape[1] // 8)).repeat(8, 0).repeat(8, 1)
    image = np.repeat((labels * 255 // (K - 1)).astype(np.uint8)[..., None], 3, axis=-1)
    return image, labels.astype(np.uint8)


def test_d4_views_invert() -> None:
    x = np.arange(2 * 3 * 2).reshape(2, 3, 2)
    for k, flip in D4:
        np.testing.assert_array_equal(_inverse(_forward(x, k, flip), k, flip), x)


@pytest.mark.parametrize("tta", [False, True])
def test_folder_evaluation_counts_every_pixel(tmp_path: Path, capsys: pytest.CaptureFixture[str], tta: bool) -> None:
    model = tmp_path / "model"
    card = write_binning_model(str(model), num_classes=K, patch_size=64, halo=8)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    total = 0
    for i, shape in enumerate([(96, 136), (40, 72)]):
        image, labels = _scene(tmp_path, shape, i)
        if i == 1:
            labels[:8, :8] = (labels[:8, :8] + 1) % K  # 64 pixels the "truth" disagrees on
        Image.fromarray(image).save(tmp_path / "img" / f"f{i}.png")
        Image.fromarray(labels).save(tmp_path / "lab" / f"f{i}.png")
        total += labels.size
    argv = ["--model", str(model), "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
            "--precision", "float32"] + (["--tta"] if tta else [])
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cm = np.array(result["confusion"])
    assert cm.sum() == total and np.trace(cm) == total - 64
    assert result["pixel_accuracy"] == pytest.approx((total - 64) / total)
    assert set(result["per_class_iou"]) == {c.name for c in card.classes}
    # recall and precision by class name, from the same confusion matrix (rows: truth)
    for k, c in enumerate(card.classes):
        if cm[k].sum():
            assert result["per_class_recall"][c.name] == round(cm[k, k] / cm[k].sum(), 4)
        if cm[:, k].sum():
            assert result["per_class_precision"][c.name] == round(cm[k, k] / cm[:, k].sum(), 4)


def test_rgb_labels_use_the_card_colours(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    card = write_binning_model(str(model), num_classes=K, patch_size=64, halo=8)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    image, labels = _scene(tmp_path, (64, 64), 3)
    lut = np.array([c.color for c in card.classes], np.uint8)
    Image.fromarray(image).save(tmp_path / "img" / "a.jpg", quality=100)
    Image.fromarray(lut[labels]).save(tmp_path / "lab" / "a.png")
    assert main(["--model", str(model), "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
                 "--label_format", "rgb", "--precision", "float32"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["miou"] == pytest.approx(1.0)


def test_missing_label_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    write_binning_model(str(model), num_classes=K, patch_size=64, halo=8)
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "img" / "lonely.png")
    assert main(["--model", str(model), "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab")]) == 2
    assert "lonely.png has no label" in capsys.readouterr().err


@pytest.mark.parametrize("trained_d4", [None, True, False])
def test_tta_uses_only_the_views_the_model_was_trained_on(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          trained_d4: bool | None) -> None:
    from dataclasses import replace

    from model.card import load_card, save_card

    model = tmp_path / "model"
    card = write_binning_model(str(model), num_classes=K, patch_size=64, halo=8)
    if trained_d4 is not None:  # street and membrane models are trained with left-right flips only
        card = replace(card, training={"config": {"d4": trained_d4}})
        save_card(card, str(model))
    expected = LEFT_RIGHT if trained_d4 is False else D4
    assert tta_views(load_card(str(model))) == expected
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    image, labels = _scene(tmp_path, (48, 80), 5)
    Image.fromarray(image).save(tmp_path / "img" / "a.png")
    Image.fromarray(labels).save(tmp_path / "lab" / "a.png")
    assert main(["--model", str(model), "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
                 "--precision", "float32", "--tta"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["tta_views"] == len(expected) and f"TTA x{len(expected)}" in out
    assert result["miou"] == pytest.approx(1.0)
