"""Block/patch planning: cores partition the tile, every core has its halo of context."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.plan import computed_pixels, plan_axis, plan_blocks


@settings(max_examples=300, deadline=None)
@given(length=st.integers(1, 5000), mult=st.sampled_from([1, 8, 16, 32]), data=st.data())
def test_axis_cores_partition_and_keep_halo(length: int, mult: int, data: st.DataObject) -> None:
    patch = mult * data.draw(st.integers(2, 40))
    halo = data.draw(st.integers(0, (patch - 1) // 2))
    if patch - 2 * halo < mult:
        with pytest.raises(ValueError):
            plan_axis(max(length, patch + 1), patch, halo, mult)
        return
    plan = plan_axis(length, patch, halo, mult)
    assert plan.bounds[0] == 0 and plan.bounds[-1] == length
    assert all(a < b for a, b in zip(plan.bounds, plan.bounds[1:])), "cores are non-empty and ordered"
    assert plan.patch % mult == 0 and plan.patch <= max(patch, -(-length // mult) * mult)
    for i, start in enumerate(plan.starts):
        c0, c1 = plan.core(i)
        assert start <= c0 and c1 <= start + plan.patch, "core lies inside its patch"
        if c0 > 0:
            assert c0 - start >= halo, "context before an inner core boundary"
        if c1 < length:
            assert start + plan.patch - c1 >= halo, "context after an inner core boundary"
        assert start % mult == 0, "patches start on the model's pooling grid"
        if length >= plan.patch:
            assert 0 <= start and start + plan.patch <= -(-length // mult) * mult, "at most m-1 px past the tile"


def test_axis_grid_formula_example() -> None:
    # L=8192, s<=512, h=16, m=16: n = ceil((8192-32)/(512-32)) = 17 patches of 512, no padding.
    plan = plan_axis(8192, 512, 16, 16)
    assert (plan.n, plan.patch) == (17, 512)
    assert plan.starts[0] == 0 and plan.starts[-1] == 8192 - 512
    assert plan.starts[1] == 16 * ((1 * (512 - 32)) // 16)


def test_axis_smaller_than_patch_is_one_padded_patch() -> None:
    plan = plan_axis(37, 512, 32, 16)
    assert plan.starts == (0,) and plan.patch == 48 and plan.bounds == (0, 37)


def test_axis_picks_cheapest_patch() -> None:
    from common.plan import _grid

    plan = plan_axis(1000, 512, 32, 16)
    costs = [g.n * g.patch for s in (512, 448, 384, 320, 256, 192, 128) if (g := _grid(1000, s, 32, 16))]
    assert plan.n * plan.patch == min(costs)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 1500), w=st.integers(1, 1500), ppb=st.integers(1, 4),
       patch=st.sampled_from([64, 128, 256]), halo=st.sampled_from([0, 8, 16]))
def test_block_cores_cover_every_pixel_exactly_once(h: int, w: int, ppb: int, patch: int, halo: int) -> None:
    blocks = plan_blocks(h, w, patch, halo, 16, ppb)
    cover = np.zeros((h, w), dtype=np.int32)
    for b in blocks:
        cover[b.core.toslices()] += 1
        patch_cover = np.zeros(b.core.shape, dtype=np.int32)
        for k, (p, pc) in enumerate(zip(b.patches, b.patch_cores)):
            assert p.shape == b.patch_shape
            assert p.row >= 0 and p.col >= 0 and p.row_stop <= b.window.height and p.col_stop <= b.window.width
            assert b.patch_in_tile(k).intersection(pc) == pc, "a patch core lies inside its patch"
            patch_cover[pc.relative_to(b.core).toslices()] += 1
        assert (patch_cover == 1).all(), "patch cores partition the block core"
    assert (cover == 1).all(), "block cores partition the tile"
    assert computed_pixels(blocks) >= h * w


def test_plan_overhead_at_8192() -> None:
    blocks = plan_blocks(8192, 8192, 512, 16, 16, 4)
    assert computed_pixels(blocks) / 8192**2 == pytest.approx((17 * 512 / 8192) ** 2)
