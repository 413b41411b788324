"""The per-tile domain check (common/domain.py): its sums add up across blocks exactly as over the
whole tile, each signal sees what it is meant to see, and the verdict names why."""

from __future__ import annotations

import numpy as np
import pytest

from common.domain import STRIDE, InputSums, block_input_sums, check_domain, input_distance, judge

THRESHOLDS = {"min_confidence": 0.6, "max_input_distance": 3.0, "max_oblique_view": 0.2}
STATS = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}


def _street(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A street-like frame: a bright, detailed top (sky over a far skyline), a dark, smooth bottom (road)."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[: h // 2] = np.clip(200 + rng.normal(0, 25, (h // 2, w, 1)), 0, 255).astype(np.uint8)
    img[h // 2:] = np.clip(70 + rng.normal(0, 2, (h - h // 2, w, 1)), 0, 255).astype(np.uint8)
    return img


def _sums(img: np.ndarray, valid: np.ndarray | None = None) -> InputSums:
    valid = np.ones(img.shape[:2], bool) if valid is None else valid
    return block_input_sums(img, valid, 0, img.shape[0], 255.0)


def test_block_sums_add_up_to_the_whole_tiles_whatever_the_cut() -> None:
    img = _street(203, 150)
    valid = np.random.default_rng(1).random(img.shape[:2]) > 0.1
    whole = _sums(img, valid)
    for cut in (1, 37, 64, 101):  # block rows that are and are not multiples of STRIDE
        top = block_input_sums(img[:cut], valid[:cut], 0, 203, 255.0)
        bottom = block_input_sums(img[cut:], valid[cut:], cut, 203, 255.0)
        both = top + bottom
        assert both.n == whole.n
        np.testing.assert_allclose(both.band_sum, whole.band_sum)
        np.testing.assert_allclose(both.top, whole.top)
        np.testing.assert_allclose(both.bottom, whole.bottom)
    assert InputSums.from_array(whole.to_array()) == whole
    assert whole.n == int(valid[::STRIDE].sum())


def test_a_street_view_is_oblique_and_the_same_frame_upside_down_is_not() -> None:
    street = _sums(_street())
    assert street.top_minus_bottom == pytest.approx((200 - 70) / 255, abs=0.02)
    assert street.oblique_view is not None and street.oblique_view > 0.5
    upside_down = _sums(_street()[::-1])
    assert upside_down.oblique_view == 0.0  # a bright detailed bottom is just ground
    rotated = _sums(np.ascontiguousarray(np.rot90(_street(320, 320))))
    assert rotated.oblique_view == pytest.approx(0.0, abs=0.01)  # no up in the sideways frame


def test_a_constant_image_is_far_from_the_training_inputs() -> None:
    flat = _sums(np.full((64, 64, 3), 100, np.uint8))
    assert input_distance(flat, STATS) > 7  # ln(0.2 / 1e-4)
    like = _sums(np.clip(np.random.default_rng(2).normal(102, 51, (64, 64, 3)), 0, 255).astype(np.uint8))
    assert input_distance(like, STATS) < 0.3


def test_the_verdict_names_every_failed_signal_and_is_unknown_without_thresholds() -> None:
    sums = _sums(_street())
    street = check_domain(sums, 0.9, STATS, THRESHOLDS)
    assert street.in_domain is False and len(street.reasons) == 1 and "oblique" in street.reasons[0]
    unsure = judge(0.5, 10.0, 0.0, THRESHOLDS)
    assert unsure.in_domain is False and len(unsure.reasons) == 2
    assert "unsure" in unsure.reasons[0] and "far from the training" in unsure.reasons[1]
    assert judge(0.9, 1.0, 0.0, THRESHOLDS).in_domain is True
    assert check_domain(sums, 0.9, STATS, {}).in_domain is None  # a card without thresholds never says "yes"
    assert judge(None, 1.0, 0.0, THRESHOLDS).in_domain is None  # a signal missing: unknown, not in domain


def _reference_sums(raw: np.ndarray, valid: np.ndarray, first_row: int, tile_height: int, divisor: float,
                    offset: float) -> InputSums:
    """The definition, written plainly in float64 (the module computes it without float copies)."""
    start = (-first_row) % STRIDE
    x = (raw[start::STRIDE].astype(np.float64) - offset) / divisor
    ok = valid[start::STRIDE]
    luma = x @ np.array([0.299, 0.587, 0.114]) if x.shape[-1] == 3 else x.mean(axis=-1)
    steps, step_ok = np.abs(np.diff(luma, axis=1)), ok[:, 1:] & ok[:, :-1]
    rows = first_row + start + STRIDE * np.arange(x.shape[0])

    def third(which: np.ndarray) -> tuple[float, float, float, float]:
        return (luma[which][ok[which]].sum(), ok[which].sum(), steps[which][step_ok[which]].sum(), step_ok[which].sum())

    v = x[ok]
    return InputSums(len(v), tuple(v.sum(axis=0)), tuple((v * v).sum(axis=0)),
                     third(rows < tile_height / 3), third(rows >= 2 * tile_height / 3))


@pytest.mark.parametrize("dtype, divisor, offset, bands", [
    (np.uint8, 255.0, 0.0, 3), (np.uint16, 4095.0, 60.0, 3), (np.int16, 2000.0, -300.0, 1),
    (np.float32, 1.0, 0.0, 4), (np.uint16, 65535.0, 0.0, 2)])
@pytest.mark.parametrize("masked", [False, True])
def test_block_sums_equal_the_plain_float64_definition(dtype: type, divisor: float, offset: float, bands: int,
                                                       masked: bool) -> None:
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    lo, hi = (info.min, info.max) if info else (-0.5, 1.5)
    raw = (rng.uniform(lo, hi, (203, 77, bands))).astype(dtype)
    valid = rng.random((203, 77)) > 0.2 if masked else np.ones((203, 77), bool)
    for first_row, height in ((0, 203), (13, 600), (450, 600)):  # a whole tile, a top block, a bottom block
        got = block_input_sums(raw, valid, first_row, height, divisor, offset)
        want = _reference_sums(raw, valid, first_row, height, divisor, offset)
        assert got.n == want.n
        np.testing.assert_allclose(got.band_sum, want.band_sum, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.band_sumsq, want.band_sumsq, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got.top, want.top, rtol=1e-5, atol=1e-6)  # luminance in float32
        np.testing.assert_allclose(got.bottom, want.bottom, rtol=1e-5, atol=1e-6)
