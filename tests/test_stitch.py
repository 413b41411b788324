"""Stitching: with a model that returns its input, the stitched labels are the input, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from common.patching import stitch_labels, stitch_scores, tent
from common.plan import plan_blocks
from model.predictor import Predictor
from tests.models import write_identity_model

K = 7


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    d = tmp_path_factory.mktemp("identity")
    write_identity_model(str(d), num_classes=K, patch_size=64, halo=8, size_multiple=16)
    return Predictor.from_dir(str(d), "float32")


SHAPES = [(1, 1), (3, 2), (17, 250), (250, 17), (64, 64), (65, 63), (200, 131), (333, 517)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("patch,halo,ppb", [(64, 8, 1), (64, 8, 3), (48, 0, 2), (128, 31, 2)])
@pytest.mark.parametrize("stitch", ["overlap", "blend"])
def test_identity_model_reproduces_labels(identity: Predictor, shape: tuple[int, int], patch: int, halo: int,
                                          ppb: int, stitch: str) -> None:
    rng = np.random.default_rng(hash((shape, patch, halo)) % 2**32)
    labels = rng.integers(0, K, shape, dtype=np.uint8)
    out = identity.segment(labels[..., None], divisor=K - 1, patch_size=patch, halo=halo,
                           patches_per_block=ppb, stitch=stitch)
    np.testing.assert_array_equal(out, labels)


def test_stitch_labels_takes_each_patch_core() -> None:
    # Patches filled with their own index: the stitched core must show which patch owns each pixel.
    block = plan_blocks(100, 100, 48, 8, 16, 4)[0]
    labels = np.stack([np.full(block.patch_shape, k, np.uint8) for k in range(len(block.patches))])
    core = stitch_labels(block, labels)
    for k, patch_core in enumerate(block.patch_cores):
        assert (core[patch_core.relative_to(block.core).toslices()] == k).all()


def test_blend_prefers_the_patch_whose_centre_is_nearer() -> None:
    block = plan_blocks(40, 90, 48, 8, 16, 4)[0]
    assert len(block.patches) >= 2
    n = len(block.patches)
    scores = np.zeros((n, *block.patch_shape, n), np.float32)
    for k in range(n):
        scores[k, ..., k] = 1.0  # patch k votes for class k everywhere
    core = stitch_scores(block, scores)
    w = tent(block.patch_shape[1])
    col = 44
    starts = [block.patch_in_tile(k).col for k in range(n)]
    votes = [w[col - start] if 0 <= col - start < block.patch_shape[1] else 0 for start in starts]
    assert core[0, col] == int(np.argmax(votes))


def test_tent_is_positive_and_peaks_in_the_middle() -> None:
    t = tent(10)
    assert (t > 0).all() and t.max() == pytest.approx(1.0, abs=0.1) and t[0] == t[-1] < t[5]
