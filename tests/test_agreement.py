"""A real U-Net: patch-and-stitch agrees with one whole-image forward pass on >= 99.5 % of pixels.

The tile is several patches across in each direction (a tile one patch wide would prove nothing)
and uses the default model's patch size and halo, as the benchmark does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from common.plan import plan_axis
from model.card import load_card
from model.predictor import Predictor
from model.shipped import DEFAULT_MODEL, WEIGHTS_DIR

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unet() -> Predictor:
    if not os.path.exists(os.path.join(DEFAULT_MODEL, "card.json")):
        pytest.fail(f"the default model is missing from {DEFAULT_MODEL}")
    return Predictor.from_dir(DEFAULT_MODEL, "float32")


def test_stitched_mask_agrees_with_whole_image_pass(unet: Predictor) -> None:
    from common.synthetic import render_window

    card = load_card(DEFAULT_MODEL)
    patch, halo = card.patch_size, card.halo
    h, w = 3 * patch - 2 * halo + 100, 3 * patch + 37  # non-square, not a multiple of the patch
    assert plan_axis(h, patch, halo, card.size_multiple).n >= 3 and plan_axis(w, patch, halo, card.size_multiple).n >= 3
    image, _ = render_window(11, 4096, 8192, h, w)
    stitched = unet.segment(image, 255.0)
    reference = unet.whole_image_labels(image, 255.0)
    agreement = float((stitched == reference).mean())
    assert agreement >= 0.995, f"stitched vs whole-image agreement {agreement:.4f}"
    # Stitching is not a no-op: at least one patch boundary lies inside the image.
    assert len(np.unique(stitched)) > 1


def test_street_model_stitches_large_frames_like_one_pass(shared_data: Path) -> None:
    """The street model at its card's patch and halo, on real CamVid validation frames upscaled
    to 1200x900 (HD dash-cam size, several patches across)."""
    from PIL import Image

    from training import datasets

    if not (shared_data / "camvid").is_dir():
        pytest.skip(f"{shared_data / 'camvid'} is missing; set TILESEG_DATA to the shared data folder")
    model_dir = os.path.join(WEIGHTS_DIR, "street-camvid11")
    card = load_card(model_dir)
    street = Predictor.from_dir(model_dir, "float32")
    ds = datasets.spec("camvid")
    same = total = 0
    for sample in datasets.split("camvid", "val")[::50]:
        frame = np.asarray(Image.fromarray(datasets.load_image(sample, ds)).resize((1200, 900), Image.BILINEAR))
        assert plan_axis(1200, card.patch_size, card.halo, card.size_multiple).n >= 2
        stitched = street.segment(frame, 255.0)
        reference = street.whole_image_labels(frame, 255.0)
        same += int((stitched == reference).sum())
        total += stitched.size
        assert len(np.unique(stitched)) >= 4  # a street scene, not one class everywhere
    assert same / total >= 0.995, f"stitched vs whole-image agreement {same / total:.4f}"
