"""The committed models: cards valid and complete, files small, safe-mode loadable, right outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.card import load_card
from model.loading import load_model
from model.shipped import DEFAULT_MODEL
from training.datasets import spec

WEIGHTS = Path(__file__).resolve().parents[1] / "model" / "weights"
SHIPPED = {"aerial-dubai6": "dubai-aerial", "street-camvid11": "camvid", "drone-aeroscapes": "aeroscapes"}
#: Models whose figures are their own val split's (the drone model's are its cross-validation's).
VALIDATED = ("aerial-dubai6", "street-camvid11")


def test_default_model_is_the_aerial_model() -> None:
    assert Path(DEFAULT_MODEL).resolve() == WEIGHTS / "aerial-dubai6"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_card_is_complete(name: str) -> None:
    card = load_card(str(WEIGHTS / name))
    ds = spec(SHIPPED[name])
    assert card.name == name
    assert [c.name for c in card.classes] == list(ds.class_names)
    assert [c.color for c in card.classes] == list(ds.class_colors)
    assert card.input_bands == ("red", "green", "blue")
    assert (WEIGHTS / name / card.model_file).stat().st_size <= 40e6
    assert card.precision_agreement["bfloat16"] >= 0.995
    assert 0 < card.metrics["miou"] <= 1
    assert card.metrics["split"] == "val" if name in VALIDATED else "cross-validation" in card.metrics["split"]
    assert card.training["dataset"] == SHIPPED[name]
    assert 0 < card.training["wall_time_s"] <= 90 * 60
    assert card.training["command"].startswith("tileseg train --dataset")
    if "NC" in ds.license:
        assert "NON-COMMERCIAL" in card.license


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_loads_in_safe_mode_and_predicts(name: str) -> None:
    from common.synthetic import render_window
    from model.predictor import Predictor

    loaded = load_model(str(WEIGHTS / name), "float32")
    card = loaded.card
    h, w = 2 * card.size_multiple * 3, card.size_multiple * 5
    image = render_window(3, 0, 0, h, w)[0][None]
    scores = np.asarray(loaded.model.predict_on_batch(image.astype(np.float32) / 255.0))
    assert scores.shape == (1, h, w, card.num_classes) and scores.dtype == np.float32
    labels = Predictor(loaded).predict_labels(image, divisor=255.0)
    assert labels.shape == (1, h, w) and labels.dtype == np.uint8
    assert labels.max() < card.num_classes
    assert np.array_equal(labels[0], scores[0].argmax(-1))


@pytest.mark.slow
@pytest.mark.parametrize("name", VALIDATED)
def test_card_metrics_reproduce_on_real_validation(name: str, shared_data: Path) -> None:
    """The card's validation figures are what the current loaders, patch-and-stitch code and
    metrics give on the real validation images (so README and card cannot drift from the code)."""
    from common.metrics import summary
    from model.predictor import Predictor
    from training import datasets
    from training.evaluation import evaluate, segmenter

    dataset = SHIPPED[name]
    if not (shared_data / dataset).is_dir():
        pytest.skip(f"{shared_data / dataset} is missing; set TILESEG_DATA to the shared data folder")
    ds = spec(dataset)
    model_dir = str(WEIGHTS / name)
    card = load_card(model_dir)
    predictor = Predictor.from_dir(model_dir, "float32")
    samples = ((s.name, datasets.load_image(s, ds), datasets.load_label(s, ds)) for s in datasets.split(dataset, "val"))
    cm = evaluate(segmenter(predictor), samples, card.num_classes).confusion
    # Exact on the machine that exported it; another CPU's kernels may flip a few boundary pixels.
    assert cm.sum() == card.metrics["pixels"]
    assert np.abs(cm - np.array(card.metrics["confusion"])).sum() <= 0.001 * cm.sum()
    assert summary(cm, list(ds.class_names))["miou"] == pytest.approx(card.metrics["miou"], abs=0.002)


def test_the_drone_cards_figures_are_its_cross_validations_and_its_landing_rules_are_complete() -> None:
    import json

    from model.landing import load_profile, zone_rules

    model_dir = WEIGHTS / "drone-aeroscapes"
    card = load_card(str(model_dir))
    cv = json.loads((model_dir / "cv.json").read_text())
    assert [f["fold"] for f in cv["folds"]] == [0, 1, 2]
    assert card.metrics["miou"] == cv["mean"]["miou"] == pytest.approx(np.mean([f["miou"] for f in cv["folds"]]), abs=1e-4)
    assert card.metrics["per_class_iou"] == cv["mean"]["per_class_iou"]
    # The folds ran the shipped model's configuration, each holding one flight out.
    assert card.training["split"]["fold"] is None and card.training["config"]["fold"] is None
    chosen = cv["hazards"]["chosen"]
    assert card.landing["max_hazard_probability"] == chosen["max_hazard_probability"]
    assert chosen in cv["hazards"]["curve"] and chosen["false_alarm_rate"] <= cv["hazards"]["target_false_alarm"]
    assert any(s["name"].startswith("aerial-dubai6") for s in card.training["sources"])
    assert "WACV 2018" in card.license and "CC BY-SA 4.0" in card.license
    rules = zone_rules(card, load_profile("small-drone"))
    roles = dict(zip([c.name for c in card.classes], rules.roles))
    assert {n for n, r in roles.items() if r == "hazard"} == {"person", "bike", "car", "obstacle", "construction"}
    assert "safe" not in roles.values()  # nothing in these labels is landable without caution
    # small-drone says P 0.25; the stricter of that and the card's applies.
    assert rules.clearance_m[1] == 1.5 + 5.0 and rules.max_hazard_probability == min(0.25, chosen["max_hazard_probability"])
