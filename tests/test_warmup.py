"""Warming the model while a local run starts (model/warmup.py): the guess of the first model call,
and the handler taking the warm Predictor once, with the same outputs as a cold one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from model import warmup
from model.card import ModelCard
from model.handler import Patches, SegmentationModelHandler
from model.predictor import Predictor
from model.warmup import WarmShape
from pipelines.config import build_config
from pipelines.segment import first_model_call
from tests.models import write_binning_model
from tests.rasters import write_raster


def _model(tmp_path: Path) -> tuple[str, ModelCard]:
    model_dir = str(tmp_path / "model")
    return model_dir, write_binning_model(model_dir, patch_size=128, halo=16, size_multiple=16)


def test_the_guess_is_the_first_block_of_the_smallest_input(tmp_path: Path) -> None:
    model_dir, _ = _model(tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    write_raster(tmp_path / "in" / "big.tif", rng.integers(0, 255, (3, 700, 900)).astype(np.uint8))
    write_raster(tmp_path / "in" / "small.tif", rng.integers(0, 4000, (3, 150, 300)).astype(np.uint16))
    config = build_config(PipelineOptions(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                           "--model", model_dir, "--batch_size", "2"]), None)
    first = first_model_call(config)
    # The uint16 tile is the smaller one; both its axes need more than one patch of 128.
    assert first == WarmShape("labels_confidence", "uint16", (2, 128, 128, 3))


def test_the_handler_takes_the_warm_predictor_once_and_predicts_alike(tmp_path: Path) -> None:
    model_dir, card = _model(tmp_path)
    warmup.start(model_dir, "float32", card, WarmShape("labels_confidence", "uint8", (2, 128, 128, 3)))
    handler = SegmentationModelHandler(model_dir, card, "float32", batch_size=2)
    warm = handler.load_model()
    assert warm is not None and ("labels_confidence", "uint8", ()) in warm._graphs  # built while warming
    assert warmup.take(model_dir, "float32", card) is None  # handed over once
    cold = Predictor.from_dir(model_dir, "float32", card)
    pixels = np.random.default_rng(1).integers(0, 256, (3, 128, 128, 3)).astype(np.uint8)
    got = list(handler.run_inference([Patches(pixels, 255.0)], warm))[0]
    np.testing.assert_array_equal(got, cold.predict_labels_confidence(pixels, 2, 255.0))
    # Another model (or precision) never gets what was warmed for this one.
    warmup.start(model_dir, "float32", card, WarmShape("labels_confidence", "uint8", (1, 128, 128, 3)))
    assert warmup.take(model_dir, "bfloat16", card) is None
