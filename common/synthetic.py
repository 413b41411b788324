"""Procedural aerial scenes with exact ground truth, generated window by window.

A scene is a deterministic function of ``(seed, row, col)``: every quantity is derived from integer
hashes of global lattice or grid indices and combined with plain IEEE arithmetic (no
transcendental functions whose last bit could depend on vectorisation), so any window can be
rendered on its own and two overlapping windows agree pixel for pixel. Memory and time therefore
depend on the window, never on the scene size.

Content (distances in metres, so ``resolution_m`` changes the ground sampling, not the layout):

* a city of blocks separated by roads: horizontal roads are gently curving lines from a jittered
  grid; each strip between two of them is cut by vertical roads at jittered positions of its own
  (T-junctions), some roads left out so blocks merge, wide highways that also cross the desert;
  asphalt of varied shade with dashed centre lines on wide roads;
* blocks of four kinds (dense urban, villas with gardens, parks, open sand or gravel lots); built
  blocks are divided into lots holding rectangular or L-shaped buildings with varied roof colours,
  a dark parapet edge and a shadow cast to the south-east onto the ground;
* vegetation from multi-octave value noise (gardens, parks, street trees, desert shrubs);
* water: lakes from low-frequency noise thresholds and rivers along a noise contour, with a
  beach of light sand around them;
* undeveloped desert between districts, with dune shading.

Labels follow the Dubai aerial class map (``CLASSES``); the image colours are what an aerial
photo would show (green vegetation, blue water), not the class colours.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np

CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("Building", (60, 16, 152)),
    ("Land (unpaved area)", (132, 41, 246)),
    ("Road", (110, 193, 228)),
    ("Vegetation", (254, 221, 58)),
    ("Water", (226, 169, 41)),
)
BUILDING, LAND, ROAD, VEGETATION, WATER = range(5)

# --------------------------------------------------------------------------------------------
# Hashing: murmur3's 32-bit finaliser over a wrapped linear combination of the keys.

_U = np.uint32
_K = (_U(0x9E3779B1), _U(0x85EBCA77), _U(0xC2B2AE3D), _U(0x27D4EB2F), _U(0x165667B1))


def _u32(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.int64).astype(np.uint32)


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U(16))
    h = h * _U(0x85EBCA6B)
    h = h ^ (h >> _U(13))
    h = h * _U(0xC2B2AE35)
    return h ^ (h >> _U(16))


def _hash(seed: int, salt: int, *keys: Any) -> np.ndarray:
    """uint32 hash of (seed, salt, keys...); keys are broadcastable integer arrays."""
    h = _fmix(_u32([(seed * 0x3C6EF372 + salt * 0x6C8E9CF5 + 0x1B873593) & 0xFFFFFFFF]))[0]
    for i, k in enumerate(keys):
        h = _fmix(h ^ (_u32(k) * _K[i % len(_K)]))
    return np.asarray(h, dtype=np.uint32)


def _unit(h: np.ndarray, shift: int = 0, bits: int = 8) -> np.ndarray:
    """Bits ``shift .. shift+bits`` of ``h`` as float32 in [0, 1)."""
    return ((h >> _U(shift)) & _U((1 << bits) - 1)).astype(np.float32) * np.float32(1.0 / (1 << bits))


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


# Salts: one per independent random quantity.
(_S_HLINE, _S_HCURVE, _S_VLINE, _S_BLOCK, _S_ZONE, _S_WATER, _S_RIVER, _S_VEG, _S_TREE,
 _S_TEX, _S_ROOF, _S_PIX, _S_DUNE, _S_TINT, _S_GAIN) = range(101, 116)

# --------------------------------------------------------------------------------------------
# Value noise. The lattice is global (integer multiples of ``scale`` metres), the interpolation
# is separable: lattice values are interpolated along x once per lattice row touched by the
# window, then along y per pixel. Both steps only depend on global coordinates.


def _axis(coords: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    f = coords / scale
    i = np.floor(f)
    t = _smooth(f - i).astype(np.float32)
    return i.astype(np.int64), t


def _noise(seed: int, salt: int, ys: np.ndarray, xs: np.ndarray, scale: float) -> np.ndarray:
    """Value noise in [0, 1) on the (ys x xs) grid (1-D metre coordinates); float32 (H, W)."""
    iy, ty = _axis(ys, scale)
    ix, tx = _axis(xs, scale)
    y0, x0 = iy[0], ix[0]  # coordinates increase, so the first index is the smallest
    ly = np.arange(y0, iy[-1] + 2)
    lx = np.arange(x0, ix[-1] + 2)
    lattice = _unit(_hash(seed, salt, ly[:, None], lx[None, :]), 8, 16)
    cx = ix - x0
    a = lattice[:, cx]
    rows = a + (lattice[:, cx + 1] - a) * tx  # (lattice rows, W)
    cy = iy - y0
    top = rows[cy]
    return top + (rows[cy + 1] - top) * ty[:, None]


def _fbm(seed: int, salt: int, ys: np.ndarray, xs: np.ndarray, scales: Sequence[float],
         weights: Sequence[float]) -> np.ndarray:
    out: np.ndarray | None = None
    for k, (s, w) in enumerate(zip(scales, weights)):
        n = _noise(seed, salt + 1000 * k, ys, xs, s) * np.float32(w)
        out = n if out is None else out + n
    return cast(np.ndarray, out)  # scales is never empty


def _noise_points(seed: int, salt: int, y: np.ndarray, x: np.ndarray, scale: float) -> np.ndarray:
    """The same value noise as ``_noise`` at scattered points (y, x arrays of equal shape)."""
    fy, fx = y / scale, x / scale
    iy, ix = np.floor(fy), np.floor(fx)
    ty, tx = _smooth(fy - iy).astype(np.float32), _smooth(fx - ix).astype(np.float32)
    iy, ix = iy.astype(np.int64), ix.astype(np.int64)
    v = [_unit(_hash(seed, salt, iy + dy, ix + dx), 8, 16) for dy in (0, 1) for dx in (0, 1)]
    top = v[0] + (v[1] - v[0]) * tx
    bot = v[2] + (v[3] - v[2]) * tx
    return top + (bot - top) * ty


def _fbm_points(seed: int, salt: int, y: np.ndarray, x: np.ndarray, scales: Sequence[float],
                weights: Sequence[float]) -> np.ndarray:
    return cast(np.ndarray, sum(_noise_points(seed, salt + 1000 * k, y, x, s) * np.float32(w)
                    for k, (s, w) in enumerate(zip(scales, weights))))


# --------------------------------------------------------------------------------------------
# Layout parameters (metres).

CELL_Y, CELL_X = 125.0, 150.0          # nominal block pitch
JIT_Y, JIT_X = 20.0, 32.0               # jitter of road lines (|jitter| + curve < pitch / 2)
CURVE_AMP, CURVE_LEN = 14.0, 160.0      # horizontal road meander
SIDEWALK = 1.0
ZONE_SCALES, ZONE_WEIGHTS = (1100.0, 380.0), (0.7, 0.3)
ZONE_DEVELOPED = 0.65                   # zone noise below this is city
WATER_SCALES, WATER_WEIGHTS = (520.0, 190.0, 60.0), (0.6, 0.3, 0.1)
WATER_LEVEL, BEACH = 0.70, 0.02
RIVER_SCALES, RIVER_WEIGHTS = (800.0, 260.0), (0.7, 0.3)
RIVER_HALF, RIVER_BEACH = 0.010, 0.005

# Block kinds: (probability, build prob, lot size min, lot size range, margin min frac,
#               margin range frac, vegetation threshold, street trees, pool prob)
_KINDS = np.array([
    (0.46, 0.92, 22.0, 22.0, 0.07, 0.12, 0.74, 1.0, 0.06),   # dense urban
    (0.22, 0.80, 18.0, 10.0, 0.18, 0.12, 0.52, 1.0, 0.55),   # villas with gardens and pools
    (0.12, 0.06, 30.0, 10.0, 0.20, 0.10, 0.36, 1.0, 0.00),   # park
    (0.20, 0.00, 30.0, 10.0, 0.20, 0.10, 0.80, 0.0, 0.00),   # open lot (sand or gravel)
], dtype=np.float32)
_KIND_CUM = np.cumsum(_KINDS[:, 0])
_DESERT_VEG = 0.80

# Roof colours overlap the other classes on purpose: sand-coloured, asphalt-grey, blue and green
# roofs exist, so labels need shape and context (edges, parapets, shadows), not colour alone.
_ROOFS = np.array([
    (222, 222, 216), (186, 182, 172), (128, 128, 126), (172, 98, 72),
    (198, 178, 138), (92, 102, 118), (232, 226, 202), (72, 118, 160),
    (104, 132, 96), (150, 146, 136), (212, 196, 160), (84, 150, 158),
    (110, 108, 106), (196, 150, 110), (42, 64, 100), (160, 120, 96),
], dtype=np.float32)
_GROUNDS = np.array([
    (198, 178, 138),   # sand
    (150, 145, 133),   # compacted gravel (close to worn asphalt)
    (176, 164, 140),   # dusty beige
    (186, 160, 122),   # darker sand
    (118, 114, 106),   # dark compacted earth (like asphalt)
    (150, 118, 88),    # reddish soil
], dtype=np.float32)


def _curve_table(seed: int, js: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal road lines ``js`` evaluated along ``xs``: centre y (nj, W), half width (nj,)."""
    h = _hash(seed, _S_HLINE, js)
    base = js * CELL_Y + (_unit(h, 0).astype(np.float64) * 2 - 1) * JIT_Y
    curvy = _unit(h, 8) < 0.45
    amp = np.where(curvy, (0.3 + 0.7 * _unit(h, 16).astype(np.float64)) * CURVE_AMP, 0.0)
    kind = _unit(h, 24)
    half = np.where(kind < 0.12, 10.0, np.where(kind < 0.45, 6.0, np.where(kind < 0.8, 4.5, 3.5)))
    # 1-D value noise along x per line.
    f = xs / CURVE_LEN
    i = np.floor(f)
    t = _smooth(f - i)
    i = i.astype(np.int64)
    lx = np.arange(i[0], i[-1] + 2)
    lat = _unit(_hash(seed, _S_HCURVE, js[:, None], lx[None, :]), 8, 16).astype(np.float64)
    c = i - i[0]
    a = lat[:, c]
    n = a + (lat[:, c + 1] - a) * t
    centre = base[:, None] + amp[:, None] * (2.0 * n - 1.0)
    return centre, half, base, amp


def _block_tables(seed: int, js: np.ndarray, is_: np.ndarray, base: np.ndarray, amp: np.ndarray,
                  hhalf: np.ndarray) -> dict[str, np.ndarray]:
    """Per (strip, column) tables: vertical road x, half width, presence and block parameters."""
    hv = _hash(seed, _S_VLINE, js[:, None], is_[None, :])
    vx = is_[None, :] * CELL_X + (_unit(hv, 0).astype(np.float64) * 2 - 1) * JIT_X
    k = _unit(hv, 8)
    vhalf = np.where(k < 0.08, 8.0, np.where(k < 0.5, 4.5, 3.5))
    vpresent = _unit(hv, 16) < 0.86
    veff = np.where(vpresent, vhalf, 0.0)

    hb = _hash(seed, _S_BLOCK, js[:, None], is_[None, :])
    # Block box (straight, conservative w.r.t. the curving horizontal roads).
    x0 = vx + veff + SIDEWALK
    x1 = np.empty_like(x0)
    x1[:, :-1] = vx[:, 1:] - veff[:, 1:] - SIDEWALK
    x1[:, -1] = x0[:, -1]  # never used: the last column only serves as the right-hand line
    y0 = (base + hhalf + amp + SIDEWALK)[:, None] + 0 * vx
    y1 = np.empty_like(y0)
    y1[:-1] = (base[1:] - hhalf[1:] - amp[1:] - SIDEWALK)[:, None] + 0 * vx[:-1]
    y1[-1] = y0[-1]
    # Development from zone noise at the block centre.
    cyy, cxx = 0.5 * (y0 + y1), 0.5 * (x0 + x1)
    zone = _fbm_points(seed, _S_ZONE, cyy, cxx, ZONE_SCALES, ZONE_WEIGHTS)
    developed = zone < ZONE_DEVELOPED
    kind = np.searchsorted(_KIND_CUM, _unit(hb, 0) * _KIND_CUM[-1], side="right")
    kind = np.minimum(kind, len(_KINDS) - 1)
    params = _KINDS[kind]
    lot_size = params[..., 2] + params[..., 3] * _unit(hb, 8)
    w = np.maximum(x1 - x0, 1e-3)
    hgt = np.maximum(y1 - y0, 1e-3)
    nx = np.clip(np.floor(w / lot_size), 1, 6)
    ny = np.clip(np.floor(hgt / lot_size), 1, 6)
    # Very large single lots sometimes: malls and warehouses.
    big = (_unit(hb, 16) < 0.07) & (kind == 0)
    nx = np.where(big, 1, nx)
    ny = np.where(big, 1, ny)
    g = ((hb >> _U(24)) & _U(3)).astype(np.int64)
    ground = np.where(kind == 3, np.array([0, 1, 4, 5])[g], np.array([2, 3, 0, 1])[g])
    ground = np.where(kind == 2, np.array([0, 3, 5, 5])[g], ground)
    tables = {
        "vx": vx, "vhalf": np.where(vpresent, vhalf, -1.0),
        "x0": x0, "y0": y0, "lw": w / nx, "lh": hgt / ny, "nx": nx, "ny": ny,
        "hash": hb, "developed": developed,
        "pbuild": np.where(developed, params[..., 1], 0.0),
        "mmin": params[..., 4], "mrng": params[..., 5],
        "veg": np.where(developed, params[..., 6], _DESERT_VEG),
        "trees": np.where(developed, params[..., 7], 0.0),
        "ground": np.where(developed, ground, 0),
        "asphalt": 78.0 + 84.0 * _unit(hb, 26, 6),
        "pool": np.where(developed, params[..., 8], 0.0),
    }
    return {k: np.ascontiguousarray(v).ravel() for k, v in tables.items()}


_CHUNK_PIXELS = 1 << 18


def render_window(seed: int, row_off: int, col_off: int, height: int, width: int,
                  resolution_m: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) and labels uint8 (H, W) of the scene window (pixel coords in the full scene)."""
    height, width, row_off, col_off = int(height), int(width), int(row_off), int(col_off)
    if height <= 0 or width <= 0:
        raise ValueError("window height and width must be positive")
    if resolution_m <= 0:
        raise ValueError("resolution_m must be positive")
    # Every pixel is computed independently of its neighbours' window, so the window is rendered
    # in strips of rows: the temporaries (~70 bytes a pixel) stay small and cache friendly.
    step = max(1, _CHUNK_PIXELS // width)
    if height <= step:
        return _render(int(seed), row_off, col_off, height, width, float(resolution_m))
    img = np.empty((height, width, 3), np.uint8)
    labels = np.empty((height, width), np.uint8)
    for r in range(0, height, step):
        h = min(step, height - r)
        img[r:r + h], labels[r:r + h] = _render(int(seed), row_off + r, col_off, h, width,
                                                float(resolution_m))
    return img, labels


def _render(seed: int, row_off: int, col_off: int, height: int, width: int,
            resolution_m: float) -> tuple[np.ndarray, np.ndarray]:
    res = float(resolution_m)
    rows = np.arange(row_off, row_off + height, dtype=np.int64)
    cols = np.arange(col_off, col_off + width, dtype=np.int64)
    ys = (rows + 0.5) * res  # metres southwards from the scene origin
    xs = (cols + 0.5) * res
    Y = ys.astype(np.float32)[:, None]
    X = xs.astype(np.float32)[None, :]
    f32 = np.float32

    # --- horizontal roads -----------------------------------------------------------------
    j0 = np.floor(ys / CELL_Y).astype(np.int64)
    jlo = j0[0] - 1
    js = np.arange(jlo, j0[-1] + 3)
    centre, hhalf, base, amp = _curve_table(seed, js, xs)
    hw_major = hhalf >= 8.0
    centre32 = centre.astype(np.float32)
    r0 = j0 - jlo
    k = (r0 - 1)[:, None] + (Y >= centre32[r0]) + (Y >= centre32[r0 + 1])  # line above, (H, W)
    ctop = np.take_along_axis(centre32, k, axis=0)
    cbot = np.take_along_axis(centre32, k + 1, axis=0)
    dtop = Y - ctop
    dbot = cbot - Y
    hh = hhalf.astype(np.float32)
    htop, hbot = hh[k], hh[k + 1]

    # --- vertical roads and blocks ----------------------------------------------------------
    i0 = np.floor(xs / CELL_X).astype(np.int64)
    ilo = i0[0] - 1
    is_ = np.arange(ilo, i0[-1] + 3)
    ni = len(is_)
    T = _block_tables(seed, js, is_, base, amp, hhalf)
    vx32 = T["vx"].astype(np.float32)
    f = k * ni + (i0 - ilo)[None, :]
    f += (X >= vx32[f + 1]).astype(np.int64)
    f += (X >= vx32[f]).astype(np.int64) - 1  # f: block whose left road line is left of x
    left, right = vx32[f], vx32[f + 1]
    vh = T["vhalf"].astype(np.float32)
    vleft, vright = vh[f], vh[f + 1]
    dleft = X - left
    dright = right - X

    # --- zones, water -----------------------------------------------------------------------
    zone = _fbm(seed, _S_ZONE, ys, xs, ZONE_SCALES, ZONE_WEIGHTS)
    road_zone = zone < f32(ZONE_DEVELOPED + 0.03)
    road_h = ((dtop < htop) & (road_zone | hw_major[k])) | ((dbot < hbot) & (road_zone | hw_major[k + 1]))
    road_v = ((dleft < vleft) | (dright < vright)) & road_zone
    road = road_h | road_v
    # distance (m) to the nearest road edge, for street trees
    de = np.minimum(np.minimum(dtop - htop, dbot - hbot), np.minimum(
        np.where(vleft > 0, dleft - vleft, f32(1e4)), np.where(vright > 0, dright - vright, f32(1e4))))

    # --- lots and buildings -----------------------------------------------------------------
    lw = T["lw"].astype(np.float32)[f]
    lh = T["lh"].astype(np.float32)[f]
    lx = (X - T["x0"].astype(np.float32)[f]) / lw
    ly = (Y - T["y0"].astype(np.float32)[f]) / lh
    kx = np.floor(lx)
    ky = np.floor(ly)
    in_block = (lx >= 0) & (ly >= 0) & (kx < T["nx"].astype(np.float32)[f]) & (ky < T["ny"].astype(np.float32)[f])
    px = (lx - kx) * lw
    py = (ly - ky) * lh
    hl = _fmix(T["hash"][f] ^ (kx.astype(np.int32).view(np.uint32) * _K[0]))
    hl = _fmix(hl ^ (ky.astype(np.int32).view(np.uint32) * _K[1]))
    h2 = _fmix(hl ^ _K[2])
    mmin = T["mmin"].astype(np.float32)[f]
    mrng = T["mrng"].astype(np.float32)[f]
    shadow_len = f32(1.5) + f32(5.0) * _unit(h2, 16, 4)
    ml = lw * (mmin + mrng * _unit(hl, 8, 4)) + f32(0.5)
    mt = lh * (mmin + mrng * _unit(hl, 12, 4)) + f32(0.5)
    mr = np.maximum(lw * (mmin + mrng * _unit(hl, 16, 4)), shadow_len) + f32(0.5)
    mb = np.maximum(lh * (mmin + mrng * _unit(hl, 20, 4)), shadow_len * f32(0.7)) + f32(0.5)
    xr = lw - mr
    yb = lh - mb
    present = in_block & (_unit(hl, 0) < T["pbuild"].astype(np.float32)[f]) & (xr - ml > 3) & (yb - mt > 3)
    # L shapes: cut the corner quadrant (cx_side, cy_side) of size cut_f of the rectangle.
    lshape = _unit(h2, 0, 2) < 0.4
    cut_f = f32(0.35) + f32(0.3) * _unit(h2, 2, 4)
    cut_xr = ((h2 >> _U(6)) & _U(1)).astype(bool)
    cut_yb = ((h2 >> _U(7)) & _U(1)).astype(bool)
    cx_line = np.where(cut_xr, xr - (xr - ml) * cut_f, ml + (xr - ml) * cut_f)
    cy_line = np.where(cut_yb, yb - (yb - mt) * cut_f, mt + (yb - mt) * cut_f)

    def footprint(qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        inside = (qx >= ml) & (qx < xr) & (qy >= mt) & (qy < yb)
        in_cut = (np.where(cut_xr, qx >= cx_line, qx < cx_line)
                  & np.where(cut_yb, qy >= cy_line, qy < cy_line))
        return inside & ~(lshape & in_cut)

    building = present & footprint(px, py) & ~road
    sx = shadow_len
    shadow = present & ~building & footprint(px - sx, py - sx * f32(0.7))
    edge_d = np.minimum(np.minimum(px - ml, xr - px), np.minimum(py - mt, yb - py))
    edge_d = np.where(lshape, np.minimum(edge_d, np.maximum(np.abs(px - cx_line), np.abs(py - cy_line))), edge_d)
    parapet = building & (edge_d < f32(0.8))
    # swimming pools in the front yard (labelled water)
    pool_w = f32(3.0) + f32(5.0) * _unit(h2, 20, 4)
    pool_h = f32(2.5) + f32(2.0) * _unit(h2, 24, 4)
    pool_x = ml + (xr - ml - pool_w) * _unit(h2, 28, 4)
    pool = (present & (_unit(hl, 24, 8) < T["pool"].astype(np.float32)[f]) & (mt > pool_h + f32(1.6))
            & (xr - ml > pool_w) & (px >= pool_x) & (px < pool_x + pool_w)
            & (py >= mt - f32(0.8) - pool_h) & (py < mt - f32(0.8)) & ~road)

    # --- vegetation -------------------------------------------------------------------------
    vegn = _fbm(seed, _S_VEG, ys, xs, (48.0, 17.0, 6.0), (0.55, 0.3, 0.15))
    tree = _noise(seed, _S_TREE, ys, xs, 4.5)
    veg = (vegn > T["veg"].astype(np.float32)[f]) | (
        (T["trees"].astype(np.float32)[f] > 0) & (de >= 0) & (de < f32(4.5)) & (tree > f32(0.52)))
    veg &= ~road & ~building

    # --- water ------------------------------------------------------------------------------
    wn = _fbm(seed, _S_WATER, ys, xs, WATER_SCALES, WATER_WEIGHTS)
    rn = np.abs(_fbm(seed, _S_RIVER, ys, xs, RIVER_SCALES, RIVER_WEIGHTS) - f32(0.5))
    lake = wn > f32(WATER_LEVEL)
    river = rn < f32(RIVER_HALF)
    water = lake | river
    beach = ~water & ((wn > f32(WATER_LEVEL - BEACH)) | (rn < f32(RIVER_HALF + RIVER_BEACH)))
    pool &= ~beach & ~water
    veg &= ~pool
    depth = np.maximum(np.clip((wn - f32(WATER_LEVEL)) * f32(12.0), 0, 1),
                       np.clip((f32(RIVER_HALF) - rn) * f32(1.0 / RIVER_HALF), 0, 1))

    # --- labels -------------------------------------------------------------------------------
    labels = np.full((height, width), LAND, np.uint8)
    labels[veg] = VEGETATION
    labels[building] = BUILDING
    labels[road] = ROAD
    dry = beach | water
    labels[dry] = LAND
    labels[water] = WATER
    labels[pool] = WATER

    # --- colours ------------------------------------------------------------------------------
    tex = _fbm(seed, _S_TEX, ys, xs, (12.0, 3.0), (0.5, 0.5))  # mid-frequency texture
    pix = _unit(_hash(seed, _S_PIX, rows[:, None], cols[None, :]), 8, 8) - f32(0.5)  # white noise
    tint = _noise(seed, _S_TINT, ys, xs, 90.0)

    img = np.empty((height, width, 3), np.float32)
    # ground (land): per block material, desert with dune shading, beaches
    g = _GROUNDS[T["ground"][f]]
    dune = _fbm(seed, _S_DUNE, ys, xs, (35.0, 9.0), (0.7, 0.3))
    shade = f32(0.86) + f32(0.22) * tex[..., None] + np.where(
        T["developed"][f], f32(0.0), f32(0.18) * (dune - f32(0.5)))[..., None]
    img[:] = g * shade
    img[beach] = np.array([214, 198, 156], np.float32) * (f32(0.93) + f32(0.1) * tex[beach])[:, None]
    # vegetation: variable greens, some dry olive
    green_lo = np.array([42, 78, 36], np.float32)
    green_hi = np.array([118, 146, 62], np.float32)
    dry_veg = np.array([142, 128, 88], np.float32)
    vt = (f32(0.6) * _noise(seed, _S_TREE + 50, ys, xs, 2.5) + f32(0.4) * tint)[veg][:, None]
    vcol = green_lo + (green_hi - green_lo) * vt
    vcol = np.where((tint[veg] > f32(0.72))[:, None], dry_veg * (f32(0.85) + f32(0.3) * vt), vcol)
    img[veg] = vcol
    # shadows darken ground and vegetation
    img[shadow & ~road & ~water] *= f32(0.52)
    # buildings: roof palette and brightness; roof structure (seams, rooftop units) and a parapet
    # contrasting with the roof, so roofs are recognisable locally even in ground colours
    hb2 = h2[building]
    roof = _ROOFS[(hb2 >> _U(8)) & _U(15)]
    bright = f32(0.86) + f32(0.24) * _unit(hb2, 12, 4)
    roof *= (bright * (f32(0.95) + f32(0.08) * tex[building]))[:, None]
    h3 = _fmix(hb2 ^ _K[3])
    style = h3 & _U(3)
    pxb, pyb = px[building], py[building]
    period = f32(2.0) + f32(3.0) * _unit(h3, 2, 4)
    along = np.where(style == 1, pxb, pyb) / period
    seam = (style != 0) & (style != 3) & (along - np.floor(along) < f32(0.5) / period)
    roof[seam] *= f32(0.84)
    cx, cy = np.floor(pxb / f32(5.0)), np.floor(pyb / f32(5.0))
    ux, uy = pxb - cx * f32(5.0), pyb - cy * f32(5.0)
    cell = _fmix(h3 ^ (cx.astype(np.int32).view(np.uint32) * _K[0]) ^ (cy.astype(np.int32).view(np.uint32) * _K[1]))
    unit_ = ((style == 3) & ((cell & _U(3)) == 0) & (ux >= 1.5) & (ux < 3.0) & (uy >= 1.5) & (uy < 3.0))
    roof[unit_] = np.array([212, 212, 208], np.float32)
    rim = parapet[building]
    lum = roof[rim].mean(axis=1, keepdims=True)
    contrast = np.where(lum < f32(150.0), np.array([230, 230, 224], np.float32), np.array([66, 66, 68], np.float32))
    roof[rim] = f32(0.5) * roof[rim] + f32(0.5) * contrast
    img[building] = roof
    # roads: asphalt per block, dashed centre lines on wide roads
    asphalt = T["asphalt"].astype(np.float32)[f][road]
    rt = (f32(0.93) + f32(0.1) * tex[road])
    img[road] = (asphalt * rt)[:, None] * np.array([1.0, 1.01, 1.05], np.float32)
    dash_h = (np.abs(dtop) < f32(0.35)) & (htop >= 4.5) & (np.floor(X / f32(6.0)) % 2 == 0)
    dash_h |= (np.abs(dbot) < f32(0.35)) & (hbot >= 4.5) & (np.floor(X / f32(6.0)) % 2 == 0)
    dash_v = ((np.abs(dleft) < f32(0.35)) & (vleft >= 4.5)) | ((np.abs(dright) < f32(0.35)) & (vright >= 4.5))
    dash_v &= np.floor(Y / f32(6.0)) % 2 == 0
    marks = road & (dash_h | (dash_v & road_v))
    img[marks] = np.array([226, 224, 212], np.float32)
    # water: turquoise shallows to deep blue, turbid green-brown in places; bright pools
    shallow = np.array([72, 168, 172], np.float32)
    turbid = np.array([104, 122, 98], np.float32)
    deep = np.array([24, 66, 112], np.float32)
    tw = np.clip((tint[water] - f32(0.45)) * f32(4.0), 0, 1)[:, None]
    shore = shallow + (turbid - shallow) * tw
    d = (f32(0.75) * depth + f32(0.25) * tint)[water][:, None]
    img[water] = (shore + (deep - shore) * d) * (f32(0.95) + f32(0.08) * tex[water])[:, None]
    img[pool] = np.array([70, 176, 204], np.float32) * (f32(0.9) + f32(0.15) * tex[pool])[:, None]

    # illumination and colour balance drift (flight strips, haze), then sensor noise
    gain = f32(0.84) + f32(0.32) * _noise(seed, _S_GAIN, ys, xs, 700.0)
    for ch in range(3):
        img[..., ch] *= gain * (f32(0.94) + f32(0.12) * _noise(seed, _S_GAIN + 1 + ch, ys, xs, 450.0))
    img += (f32(24.0) * pix)[..., None]
    np.clip(img, 0, 255, out=img)
    return np.rint(img).astype(np.uint8), labels


# --------------------------------------------------------------------------------------------
# Writing scenes


def _windows(height: int, width: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield r, c, min(block, height - r), min(block, width - c)


def write_scene(image_path: str, size: int | tuple[int, int], seed: int = 0,
                labels_path: str | None = None, crs: str = "EPSG:32640",
                resolution_m: float = 0.5, origin: tuple[float, float] = (300000.0, 2800000.0),
                block: int = 1024, workers: int | None = None) -> None:
    """Write a tiled (512x512 blocks), deflate-compressed 3-band uint8 GeoTIFF with colour interp RGB,
    the given projected CRS and a north-up transform (pixel size resolution_m), and optionally the
    labels as a 1-band uint8 GeoTIFF with the same georeferencing (and a colormap). Generated and
    written window by window (rasterio windowed writes).

    ``size`` is ``(height, width)`` or one number for a square; ``origin`` is the (x, y) of the
    scene's upper-left corner in ``crs``. Windows of ``block`` pixels (a multiple of 512) are
    rendered by ``workers`` threads (default: up to 2) while the main thread writes, so at most a
    few windows are in memory at once whatever the scene size.
    """
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    sz = cast(Any, size)  # np.ndim narrows int vs (h, w) at runtime; mypy cannot follow it
    height, width = (int(sz), int(sz)) if np.ndim(sz) == 0 else (int(sz[0]), int(sz[1]))
    if height <= 0 or width <= 0:
        raise ValueError("size must be positive")
    if block <= 0 or block % 512:
        raise ValueError("block must be a positive multiple of 512")
    crs_obj = CRS.from_user_input(crs)
    if not crs_obj.is_projected:
        raise ValueError(f"crs {crs} is not a projected CRS")
    res = float(resolution_m)
    transform = Affine(res, 0.0, float(origin[0]), 0.0, -res, float(origin[1]))  # north up
    common = dict(driver="GTiff", width=width, height=height, dtype="uint8", crs=crs_obj,
                  transform=transform, tiled=True, blockxsize=512, blockysize=512,
                  compress="deflate", zlevel=6, BIGTIFF="IF_SAFER", num_threads="ALL_CPUS")
    workers = workers or min(2, os.cpu_count() or 1)
    # A small block cache: windows are written once, whole tiles at a time, so a large cache
    # only holds finished tiles in memory (GDAL's default is 5 % of RAM).
    with rasterio.Env(GDAL_CACHEMAX=_CACHE_MB):
        _write(image_path, labels_path, common, seed, height, width, block, resolution_m, workers)


_CACHE_MB = 128


def _write(image_path: str, labels_path: str | None, common: dict[str, Any], seed: int, height: int, width: int,
           block: int, resolution_m: float, workers: int) -> None:
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    def render(win: tuple[int, int, int, int]) -> tuple[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]]:
        r, c, h, w = win
        return win, render_window(seed, r, c, h, w, resolution_m)

    lab = None
    with rasterio.open(image_path, "w", count=3, photometric="RGB", interleave="pixel", **common) as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        try:
            if labels_path is not None:
                lab = rasterio.open(labels_path, "w", count=1, photometric="PALETTE", **common)
                lab.write_colormap(1, {i: (*col, 255) for i, (_, col) in enumerate(CLASSES)})
                lab.update_tags(1, **{f"CLASS_{i}": name for i, (name, _) in enumerate(CLASSES)})
            with ThreadPoolExecutor(max_workers=workers) as pool:
                pending = []
                wins = _windows(height, width, block)
                for win in wins:
                    pending.append(pool.submit(render, win))
                    if len(pending) >= 2 * workers:
                        _write_one(pending.pop(0).result(), dst, lab, Window)
                for fut in pending:
                    _write_one(fut.result(), dst, lab, Window)
        finally:
            if lab is not None:
                lab.close()


def _write_one(result: tuple[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]], dst: Any, lab: Any,
               Window: Any) -> None:
    (r, c, h, w), (rgb, labels) = result
    window = Window(c, r, w, h)
    dst.write(np.moveaxis(rgb, -1, 0), window=window)
    if lab is not None:
        lab.write(labels, 1, window=window)
