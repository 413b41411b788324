"""The block plan: cut an image into model patches and group them into blocks.

Patch grid along one axis of length ``L`` (pixels), for a patch size ``s`` (a multiple of the
model's size multiple ``m``, at most the card's ``patch_size``) and halo ``h``. With
``L' = roundup(L, m)``, ``S = s / m`` and ``D = floor((s - 2h) / m)``:

    n      = 1                                        if L <= s
           = 1 + ceil((L'/m - S) / D)                 otherwise
    x_i    = m * floor(i * (L'/m - S) / (n - 1))      patch starts, i = 0 .. n-1 (first 0, last L' - s)
    b_i    = floor((x_{i+1} + x_i + s) / 2)           core boundary: the middle of two patches' overlap
    core_i = [b_{i-1}, b_i), with b_{-1} = 0 and b_{n-1} = L

Every start is a multiple of ``m``: a U-Net pools by ``m``, so a patch that starts off that grid
sees a different pooling phase than its neighbours (and than a whole-image pass) and disagrees
with them everywhere, not just near its edge. Consecutive starts differ by at most ``m * D <=
s - 2h``, so every core pixel has at least ``h`` pixels of context inside its patch on each side,
except at the tile border, where the image ends anyway. The last patch may run up to ``m - 1``
pixels past the tile (read as a mirror, never part of a core). The cores partition [0, L).
Among admissible ``s`` — the card's patch size, and smaller multiples of ``lcm(m, 64)`` — we
take the one with the least computed length ``n * s`` (ties: the larger ``s``). Edges that are
multiples of 64 matter: on the reference CPU (oneDNN, bfloat16) a U-Net runs 512² patches at
2.5 MPix/s but 496² or 480² patches at 1.3 MPix/s. A tile smaller than one patch gets one patch
of ``roundup(L, m)``, padded.

Blocks group up to ``patches_per_block`` consecutive patches per axis: one windowed read per
block, and blended stitching (an option) can blend the patches inside a block.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from common.windows import Window


@dataclass(frozen=True)
class AxisPlan:
    """Patch grid along one axis: patch length, patch starts and core boundaries (pixels)."""

    length: int
    patch: int
    starts: tuple[int, ...]
    bounds: tuple[int, ...]  # n + 1 core boundaries, 0 .. length

    @property
    def n(self) -> int:
        return len(self.starts)

    def core(self, i: int) -> tuple[int, int]:
        return self.bounds[i], self.bounds[i + 1]


def _roundup(v: int, m: int) -> int:
    return -(-v // m) * m


def _grid(length: int, s: int, halo: int, m: int) -> AxisPlan | None:
    """The grid for patch size ``s``, or None when ``s`` leaves no room for the halo on the m-grid."""
    if length <= s:
        return AxisPlan(length, s, (0,), (0, length))
    step = (s - 2 * halo) // m  # largest start-to-start step, in units of m
    if step < 1:
        return None
    span = _roundup(length, m) // m - s // m  # last start, in units of m
    n = 1 + -(-span // step)
    starts = tuple(m * ((i * span) // (n - 1)) for i in range(n))
    inner = tuple((starts[i + 1] + starts[i] + s) // 2 for i in range(n - 1))
    return AxisPlan(length, s, starts, (0, *inner, length))


#: Patch edges are kept to multiples of this where possible (see the module docstring).
FAST_STEP = 64


def plan_axis(length: int, max_patch: int, halo: int, multiple: int) -> AxisPlan:
    """Cheapest admissible patch grid along an axis of ``length`` pixels (see module docstring)."""
    if length < 1:
        raise ValueError(f"axis length must be >= 1, not {length}")
    if max_patch % multiple or max_patch <= 2 * halo:
        raise ValueError(f"patch size {max_patch} must be a multiple of {multiple} and exceed 2*halo ({2 * halo})")
    if length <= max_patch:
        return AxisPlan(length, _roundup(length, multiple), (0,), (0, length))
    step = math.lcm(multiple, FAST_STEP)
    candidates = [max_patch] + [s for s in range(max_patch - max_patch % step, 0, -step) if s != max_patch]
    best: AxisPlan | None = None
    for s in candidates:
        if s <= 2 * halo:
            break
        plan = _grid(length, s, halo, multiple)
        if plan is not None and (best is None or plan.n * plan.patch < best.n * best.patch):
            best = plan
    if best is None:
        raise ValueError(f"patch size {max_patch} leaves no room for halo {halo} on a grid of {multiple} px; "
                         f"use a patch of at least {2 * halo + multiple}")
    return best


@dataclass(frozen=True)
class BlockSpec:
    """One block of a tile: a read window holding several patches, and the core it is responsible for.

    ``window`` and ``core`` are in tile pixels. The window may extend past the tile's bottom/right
    edge by less than the size multiple, or to a whole patch when the tile is smaller than one
    (the read mirrors it in; those pixels are never in a core). ``patches`` are the patch windows
    in the pixels of ``window`` (all of ``patch_shape``); ``patch_cores`` are each patch's core,
    in tile pixels. The patch cores partition ``core``. ``tile_blocks`` is how many blocks the
    tile's plan has, so whoever stages a block can tell when the tile is complete.
    """

    index: tuple[int, int]
    window: Window
    core: Window
    patch_shape: tuple[int, int]
    patches: tuple[Window, ...]
    patch_cores: tuple[Window, ...]
    tile_blocks: int = 1

    def patch_in_tile(self, k: int) -> Window:
        """Patch ``k``'s window in tile pixels."""
        p = self.patches[k]
        return Window(self.window.row + p.row, self.window.col + p.col, p.height, p.width)


def plan_blocks(
    height: int, width: int, max_patch: int, halo: int, multiple: int, patches_per_block: int
) -> list[BlockSpec]:
    """All blocks of a ``height`` x ``width`` tile, row-major."""
    if patches_per_block < 1:
        raise ValueError("patches_per_block must be >= 1")
    rows = plan_axis(height, max_patch, halo, multiple)
    cols = plan_axis(width, max_patch, halo, multiple)
    g = patches_per_block
    blocks = []
    for bi, r0 in enumerate(range(0, rows.n, g)):
        ri = range(r0, min(r0 + g, rows.n))
        for bj, c0 in enumerate(range(0, cols.n, g)):
            ci = range(c0, min(c0 + g, cols.n))
            win_r, win_c = rows.starts[ri[0]], cols.starts[ci[0]]
            window = Window(win_r, win_c, rows.starts[ri[-1]] + rows.patch - win_r,
                            cols.starts[ci[-1]] + cols.patch - win_c)
            patches, cores = [], []
            for i in ri:
                for j in ci:
                    patches.append(Window(rows.starts[i] - win_r, cols.starts[j] - win_c, rows.patch, cols.patch))
                    cores.append(Window.from_bounds(*rows.core(i), *cols.core(j)))
            blocks.append(BlockSpec(
                index=(bi, bj),
                window=window,
                core=Window.from_bounds(rows.bounds[ri[0]], rows.bounds[ri[-1] + 1],
                                        cols.bounds[ci[0]], cols.bounds[ci[-1] + 1]),
                patch_shape=(rows.patch, cols.patch),
                patches=tuple(patches),
                patch_cores=tuple(cores),
            ))
    return [dataclasses.replace(b, tile_blocks=len(blocks)) for b in blocks]


#: Patch pixels per model call when no batch size is given: 4 patches of 768², 1 of 1280². On a
#: CPU a U-Net's rate hardly depends on how a batch's pixels are cut (1.25 MPix/s at 1 × 1280² and
#: 2 × 1280², 1.17 at 4 × 768², float32), while its memory grows with them; a GPU wants more
#: (e.g. --batch_size 16 of 640²). One batch size per run also means one graph shape to compile.
BATCH_PIXELS = 4 * 768 * 768
#: Core edge, in pixels, of a block when no patches per block are given: one windowed read per
#: block, and every block's pixels are held a few times over while it is in flight.
BLOCK_CORE = 2560


def default_batch_size(patch: int) -> int:
    """Patches per model call for patches of ``patch``² when none is given."""
    return max(1, BATCH_PIXELS // (patch * patch))


def default_patches_per_block(patch: int, halo: int) -> int:
    """Patches per block edge when none is given: blocks of about ``BLOCK_CORE``² core pixels."""
    return max(1, round(BLOCK_CORE / max(patch - 2 * halo, 1)))


def computed_pixels(blocks: list[BlockSpec]) -> int:
    """Patch pixels the model computes for these blocks (the overlap cost of a plan)."""
    return sum(len(b.patches) * b.patch_shape[0] * b.patch_shape[1] for b in blocks)
