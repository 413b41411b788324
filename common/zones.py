"""Landing zones from a class mask (and the model's hazard probability), exact across blocks.

The definition (docs and tests use exactly this; model/landing.py makes the rules from a profile):

* A pixel is a **hazard** if its class is a hazard, or it is nodata, or (when P < 1) the model's
  summed probability of the hazard classes there is >= P. Everything beyond the raster's edge is
  nodata, so it is a hazard too: unknown ground is never safe.
* An **admissible centre** is a pixel whose ground distance to every hazard pixel of class k is
  >= R + b_k, where a hazard covers its whole pixel (the distance between pixel centres less
  half a pixel). Nodata and beyond the edge: R + the default buffer; hazards by probability:
  the largest R + b_k of the hazard classes, since they are probably one of them.
* A **zone** is an 8-connected set of admissible centres of ground area >= ``min_area_m2``.
  Its ``touchdown`` is its centre farthest from any hazard and ``clearance_m`` that distance,
  exact up to the horizon ``2 * max(R + b)`` (ties: the first pixel in raster order). Beyond it,
  both come from a coarse grid of the whole tile's hazards (16-pixel cells): the touchdown is the
  capped centre of largest coarse distance (a big field's middle) and the clearance a guaranteed
  lower bound (cell-centre distance less a cell diagonal, never below the horizon). Its
  ``caution_share`` and ``mean_hazard_probability`` the mean over its centres of the share of
  caution pixels, and of the hazard probability, within R of the centre.
* **Score** in [0, 1]: ``min(1, clearance_m / horizon) * (1 - caution_share / 2) *
  (1 - mean_hazard_probability) * (1/2 if the tile is out of the model's domain)``: more room,
  firmer ground and a surer model rank higher, and no zone of a tile the domain check flagged
  ranks as high as the same zone on a tile the model knows.

How it stays exact at any size with memory bounded by the block: the tile is cut into square
blocks; each block is read with a halo that reaches the horizon (in pixels, for the smallest
ground factor of common/ground.py), so every distance that matters sees the hazards of the
neighbouring blocks. Components are labelled per block and merged across block borders
(8-connectivity, one graph of the border pairs); their statistics add up, their polygons (pixel
edges, integer coordinates) are unioned exactly. Only border lines, per-component totals and
polygons outlive a block, never its pixels.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.ground import GroundMetric
from common.memory import release_free_memory

EIGHT = np.ones((3, 3), bool)
#: A component's outline: its polygons, or (row, col, shape, packed bits) of its pixels' crop.
Outline = list[Any] | tuple[int, int, tuple[int, ...], np.ndarray]
COARSE = 16  # pixels per cell edge of the coarse hazard grid (clearance beyond the horizon)


@dataclass(frozen=True)
class ZoneRules:
    """What the zone mapper needs of a profile and a model, per class index."""

    roles: tuple[str, ...]
    clearance_m: tuple[float, ...]  # R + b_k per class (used for hazard classes)
    default_clearance_m: float      # nodata and beyond the edge
    radius_m: float
    min_area_m2: float
    max_hazard_probability: float
    nodata: int

    @property
    def hazard_classes(self) -> tuple[int, ...]:
        return tuple(i for i, r in enumerate(self.roles) if r == "hazard")

    @property
    def caution_classes(self) -> tuple[int, ...]:
        return tuple(i for i, r in enumerate(self.roles) if r == "caution")

    @property
    def probability_clearance_m(self) -> float:
        hazards = [self.clearance_m[k] for k in self.hazard_classes]
        return max(hazards) if hazards else self.default_clearance_m

    @property
    def uses_probability(self) -> bool:
        return self.max_hazard_probability < 1.0 and bool(self.hazard_classes)

    @property
    def probability_level(self) -> int:
        return probability_level(self.max_hazard_probability)

    @property
    def horizon_m(self) -> float:
        """How far clearance is measured (and how far each block's halo reaches)."""
        used = [self.default_clearance_m, self.probability_clearance_m,
                *(self.clearance_m[k] for k in self.hazard_classes)]
        return 2.0 * max(used)


@dataclass
class Zone:
    zone_id: int
    geometry: Any               # shapely (Multi)Polygon in pixel coordinates (column, row)
    touchdown: tuple[int, int]  # (row, column) of the touchdown pixel
    clearance_m: float
    area_m2: float
    pixels: int
    caution_share: float
    mean_hazard_probability: float | None
    score: float


@dataclass
class TileZones:
    zones: list[Zone]
    assessed_area_m2: float   # valid (not nodata) ground
    hazard_area_m2: float     # valid ground that is a hazard
    horizon_m: float
    blocks: int
    mask: np.ndarray | None = field(default=None, repr=False)  # zone ids (0: none), only when asked

    @property
    def landable_area_m2(self) -> float:
        return float(sum(z.area_m2 for z in self.zones))


#: read(row0, row1, col0, col1) → (labels uint8, hazard probability uint8 255ths or None) of that
#: window, boundless: pixels beyond the raster are nodata.
Reader = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray | None]]


def probability_level(p: float) -> int:
    """Stored hazard probabilities are uint8 255ths: a probability is >= ``p`` exactly when its
    stored value is >= this."""
    return int(math.ceil(p * 255.0 - 1e-9))


def array_reader(labels: np.ndarray, prob: np.ndarray | None = None, nodata: int = 255) -> Reader:
    """A Reader of in-memory arrays (evaluation, tests): nodata and probability 255 beyond them."""
    def read(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray | None]:
        out = np.full((r1 - r0, c1 - c0), nodata, np.uint8)
        pr = None if prob is None else np.full((r1 - r0, c1 - c0), 255, np.uint8)
        rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, labels.shape[0]), min(c1, labels.shape[1])
        if rr1 > rr0 and cc1 > cc0:
            out[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = labels[rr0:rr1, cc0:cc1]
            if pr is not None and prob is not None:
                pr[rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = prob[rr0:rr1, cc0:cc1]
        return out, pr

    return read


def score(clearance_m: float, caution_share: float, mean_probability: float | None, horizon_m: float,
          in_domain: bool | None) -> float:
    """The zone score (module docstring)."""
    s = min(1.0, clearance_m / horizon_m) * (1.0 - caution_share / 2.0) * (1.0 - (mean_probability or 0.0))
    return float(s * (0.5 if in_domain is False else 1.0))


def disc_rows(radius_m: float, sy: float, sx: float) -> list[tuple[int, int]]:
    """The pixels within ``radius_m`` of a pixel, as (row offset, half-width in columns)."""
    ry = int(math.floor(radius_m / sy + 1e-9))
    out = []
    for dy in range(-ry, ry + 1):
        rest = radius_m * radius_m - (dy * sy) ** 2
        out.append((dy, int(math.floor(math.sqrt(max(rest, 0.0)) / sx + 1e-9))))
    return out


def disc_sums(values: np.ndarray, halo: int, h: int, w: int, rows: list[tuple[int, int]]) -> np.ndarray:
    """Integer sums of ``values`` (uint8, a window with ``halo`` around an h x w core) over the disc
    around each core pixel: exact, so the same pixel sums the same whatever window it is in. Only
    the rows and columns the discs reach are summed, in int32 where no sum can overflow it."""
    ry = max(abs(dy) for dy, _ in rows)
    rx = max(wx for _, wx in rows)
    sub = values[halo - ry: halo + h + ry, halo - rx: halo + w + rx]
    dtype = np.int32 if 255 * (sub.shape[1] + 1) * len(rows) < 2**31 else np.int64
    cum = np.zeros((sub.shape[0], sub.shape[1] + 1), dtype)
    np.cumsum(sub, axis=1, dtype=dtype, out=cum[:, 1:])
    total = np.zeros((h, w), dtype)
    for dy, wx in rows:
        band = cum[ry + dy: ry + dy + h]
        total += band[:, rx + wx + 1: rx + wx + 1 + w]
        total -= band[:, rx - wx: rx - wx + w]
    return total


@dataclass
class _Block:
    index: tuple[int, int]
    base: int               # global id of its component 1 is base + 1
    count: int
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray


class _BlockMapper:
    """Maps one block at a time (thread-safe: it holds only the tile's constants)."""

    def __init__(self, height: int, width: int, read: Reader, metric: GroundMetric, rules: ZoneRules, block: int,
                 keep_mask: bool) -> None:
        self.height, self.width, self.read, self.metric, self.rules = height, width, read, metric, rules
        self.block, self.keep_mask = block, keep_mask
        self.sy, self.sx = metric.sampling
        self.horizon = rules.horizon_m
        self.halo = int(math.ceil(self.horizon / (metric.min_factor() * min(self.sy, self.sx)))) + 1
        self.half = 0.5 * max(self.sy, self.sx)  # a hazard covers its whole pixel: distances run to its edge
        self.disc = disc_rows(rules.radius_m, self.sy, self.sx)
        self.disc_size = sum(2 * wx + 1 for _, wx in self.disc)
        self.groups = _groups(rules)
        self.hazard_lut = np.zeros(256, bool)
        self.hazard_lut[list(rules.hazard_classes)] = True
        self.hazard_lut[rules.nodata] = True
        self.caution_lut = np.zeros(256, np.uint8)
        self.caution_lut[list(rules.caution_classes)] = 1

    def run(self, index: tuple[int, int]) -> _BlockOut:
        from scipy import ndimage

        rules, halo = self.rules, self.halo
        bi, bj = index
        r0, c0 = bi * self.block, bj * self.block
        r1, c1 = min(r0 + self.block, self.height), min(c0 + self.block, self.width)
        h, w = r1 - r0, c1 - c0
        labels, prob = self.read(r0 - halo, r1 + halo, c0 - halo, c1 + halo)
        cut = (slice(halo, halo + h), slice(halo, halo + w))
        prob_hazard = (prob >= rules.probability_level) & (labels != rules.nodata) \
            if rules.uses_probability and prob is not None else None
        admissible, clearance = self._clearance(labels, prob_hazard, r0, r1, c0, c1)
        core = labels[cut]
        valid = core != rules.nodata
        hazard_core = self.hazard_lut[core]
        if prob_hazard is not None:
            hazard_core |= prob_hazard[cut]
        cells = _cells(~valid | hazard_core, r0, c0)
        area = self.metric.areas(r0, r1, c0, c1)  # broadcastable to (h, w)
        assessed = _masked_sum(area, valid)
        hazard_core &= valid
        hazard_area = _masked_sum(area, hazard_core)
        del core, valid, hazard_core, prob_hazard
        lab, n = ndimage.label(admissible, structure=EIGHT)
        del admissible
        blk = _Block(index, 0, n, lab[0].copy(), lab[-1].copy(), lab[:, 0].copy(), lab[:, -1].copy())
        comps: dict[str, np.ndarray] = {}
        lattice = np.zeros((3, 0), np.int64)
        crops: list[tuple[int, Outline]] = []
        if n:
            # Per-component totals over all pixels at once: label 0 (not admissible) is dropped.
            flat = lab.ravel()
            pixels = np.bincount(flat, minlength=n + 1)
            comps["pixels"] = pixels[1:]
            comps["area"] = (pixels[1:] * float(area.flat[0]) if area.size == 1 else
                             np.bincount(flat, weights=np.broadcast_to(area, (h, w)).ravel(), minlength=n + 1)[1:])
            best = np.full(n + 1, -np.inf)
            np.maximum.at(best, flat, clearance.ravel())  # no sort (ndimage.maximum sorts)
            best = best[1:]
            rows, cols = _first_at(lab, clearance, best)
            comps["clear"] = best
            comps["row"] = rows + r0
            comps["col"] = cols + c0
            lattice = _capped_at_cell_centres(lab, clearance, self.horizon, r0, c0, 0)
            del clearance
            # Caution pixels and hazard probability within R of each centre, summed per component.
            if rules.caution_classes:
                comps["caution"] = self._disc_totals(self.caution_lut[labels], flat, n, h, w)
            else:
                comps["caution"] = np.zeros(n)
            if prob is not None:
                comps["prob"] = self._disc_totals(prob, flat, n, h, w) / 255.0
            del labels, prob
            # Outlines of the components that can be (part of) a zone. Big enough ones are
            # polygonised now (they are zones or parts of one: their polygons are the output);
            # small ones touching the block's border (a neighbour may continue them, most are
            # slivers that never become zones) are kept as packed bit crops, polygonised only if
            # the merge makes them part of a zone. Neither holds a block's pixels.
            big = np.concatenate([[False], comps["area"] >= rules.min_area_m2])
            edge = np.zeros(n + 1, bool)
            edge[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
            pieces: dict[int, list[Any]] = {}
            if big.any():
                for geom, value in _shapes(np.where(big[lab], lab, 0), r0, c0):
                    pieces.setdefault(int(value), []).append(geom)
            crops.extend((k, parts) for k, parts in pieces.items())
            for k, box in enumerate(ndimage.find_objects(lab), start=1):
                if box is not None and edge[k] and not big[k]:
                    crop = lab[box] == k
                    crops.append((k, (box[0].start + r0, box[1].start + c0, crop.shape, np.packbits(crop))))
            # A component inside the block and too small can never be (part of) a zone: drop it
            # here, so what outlives the block grows with the zones, not with a noisy mask's specks.
            kept = big | edge
            kept[0] = False
            renumber = np.zeros(n + 1, np.int64)
            renumber[kept] = np.arange(1, int(kept.sum()) + 1)
            comps = {name: v[kept[1:]] for name, v in comps.items()}
            lattice = lattice[:, kept[lattice[0]]] if lattice.shape[1] else lattice
            lattice[0] = renumber[lattice[0]]
            crops = [(int(renumber[k]), outline) for k, outline in crops]
            blk = _Block(index, 0, int(kept.sum()), renumber[blk.top], renumber[blk.bottom], renumber[blk.left],
                         renumber[blk.right])
            if self.keep_mask:
                lab = renumber[lab].astype(np.int32)
        return _BlockOut(blk, comps, lattice, crops, assessed, hazard_area, cells, lab if self.keep_mask else None)

    def _clearance(self, labels: np.ndarray, prob_hazard: np.ndarray | None, r0: int, r1: int, c0: int,
                   c1: int) -> tuple[np.ndarray, np.ndarray]:
        """(admissible centres, ground distance to the nearest hazard capped at the horizon) of the
        core, from the window's hazards: one distance transform per clearance group that has
        hazards within the halo."""
        rules, halo, height, width = self.rules, self.halo, self.height, self.width
        h, w = r1 - r0, c1 - c0
        factor = None
        admissible = np.ones((h, w), bool)
        clearance = np.full((h, w), self.horizon)
        inside = (slice(max(halo - r0, 0), halo + h + min(height - r1, halo)),
                  slice(max(halo - c0, 0), halo + w + min(width - c1, halo)))
        for clear_m, lut, by_probability in self.groups:
            mask = lut[labels]
            if by_probability and prob_hazard is not None:
                mask |= prob_hazard
            if mask[inside].any():
                d = self._centre_distance(mask, h, w)
            elif lut[rules.nodata] and (r0 < halo or c0 < halo or r1 + halo > height or c1 + halo > width):
                # Only the ground beyond the raster's edge, within the halo: the nearest of it
                # lies straight across the nearest edge, so no transform is needed.
                d = _edge_distance(r0, r1, c0, c1, height, width, self.sy, self.sx)
            else:
                continue  # nothing of this group within the halo: farther than the horizon
            del mask
            if factor is None:
                factor = self.metric.factors(r0, r1, c0, c1)
            d -= self.half
            d *= factor
            admissible &= d >= clear_m
            np.minimum(clearance, d, out=clearance)
        return admissible, clearance

    def _centre_distance(self, mask: np.ndarray, h: int, w: int) -> np.ndarray:
        """Reference distance (metres) from each core pixel's centre to the nearest ``mask`` pixel's
        centre. scipy's feature transform of the window, then the distances of the core only: the
        window's distances (float64) and index grids are never made."""
        from scipy import ndimage

        halo = self.halo
        nearest = np.empty((2, *mask.shape), np.int32)
        ndimage.distance_transform_edt(~mask, sampling=(self.sy, self.sx), return_distances=False,
                                       return_indices=True, indices=nearest)
        dy = nearest[0, halo:halo + h, halo:halo + w] - np.arange(halo, halo + h, dtype=np.int32)[:, None]
        dx = nearest[1, halo:halo + h, halo:halo + w] - np.arange(halo, halo + w, dtype=np.int32)[None, :]
        del nearest
        d = dy * self.sy
        d *= d
        ex = dx * self.sx
        ex *= ex
        d += ex
        return np.sqrt(d, out=d)

    def _disc_totals(self, values: np.ndarray, flat: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
        """Per component (1..n), the sum over its centres of the mean of ``values`` within R."""
        sums = disc_sums(values, self.halo, h, w, self.disc)
        return np.bincount(flat, weights=sums.ravel(), minlength=n + 1)[1:] / self.disc_size


@dataclass
class _BlockOut:
    """What one block leaves behind: its border labels, per-component totals (local ids 1..n),
    the crops and lattice points of its components, its area sums and coarse hazard cells."""

    block: _Block
    comps: dict[str, np.ndarray]
    lattice: np.ndarray
    crops: list[tuple[int, Outline]]
    assessed: float
    hazard_area: float
    cells: tuple[int, int, np.ndarray]
    labels: np.ndarray | None


def map_zones(height: int, width: int, read: Reader, metric: GroundMetric, rules: ZoneRules, block: int = 1024,
              in_domain: bool | None = None, keep_mask: bool = False, threads: int = 2) -> TileZones:
    """The landing zones of a ``height`` x ``width`` raster (module docstring). Blocks are mapped
    by ``threads`` threads (the distance transforms and array work release the GIL; reads are
    serialised, a raster handle is not thread-safe) and gathered in raster order, so the result
    does not depend on the thread count either."""
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()

    def locked_read(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray | None]:
        with lock:
            return read(r0, r1, c0, c1)

    mapper = _BlockMapper(height, width, locked_read, metric, rules, block, keep_mask)
    horizon = rules.horizon_m
    blocks: dict[tuple[int, int], _Block] = {}
    comps: dict[str, list[np.ndarray]] = {k: [] for k in ("area", "pixels", "clear", "row", "col", "caution", "prob")}
    crops: dict[int, Outline] = {}
    kept_labels: dict[tuple[int, int], np.ndarray] = {}
    assessed = hazard_area = 0.0
    base = 0
    # Beyond the horizon, clearance comes from a coarse hazard grid over the whole tile (cells of
    # COARSE pixels, a cell a hazard if any of its pixels is) and the candidates are the capped
    # centres at cell centres: a big field's touchdown is its middle, not its first capped pixel.
    coarse = np.zeros((math.ceil(height / COARSE), math.ceil(width / COARSE)), bool)
    lattice: list[np.ndarray] = []  # (global component id, row, col) of capped centres at cell centres
    indexes = [(bi, bj) for bi in range(math.ceil(height / block)) for bj in range(math.ceil(width / block))]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for out in pool.map(mapper.run, indexes):
            b = dataclasses.replace(out.block, base=base)
            blocks[b.index] = b
            for name, v in out.comps.items():
                comps[name].append(v)
            if out.lattice.shape[1]:
                lattice.append(out.lattice + np.array([[base], [0], [0]], np.int64))
            for k, outline in out.crops:
                crops[base + k] = outline
            assessed += out.assessed
            hazard_area += out.hazard_area
            i, j, cells = out.cells
            coarse[i: i + cells.shape[0], j: j + cells.shape[1]] |= cells
            if out.labels is not None:
                kept_labels[b.index] = out.labels
            base += b.count
    release_free_memory()  # the blocks' buffers, before the polygons are merged
    have_prob = bool(comps["prob"])
    roots = _merge(blocks, base)
    if base == 0:
        return TileZones([], assessed, hazard_area, horizon, len(blocks),
                         np.zeros((height, width), np.int32) if keep_mask else None)
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in comps.items()}
    nroot = int(roots.max()) + 1
    area_r = np.bincount(roots, weights=cat["area"], minlength=nroot)
    pixels_r = np.bincount(roots, weights=cat["pixels"], minlength=nroot)
    caution_r = np.bincount(roots, weights=cat["caution"], minlength=nroot)
    prob_r = np.bincount(roots, weights=cat["prob"], minlength=nroot) if have_prob else None
    # touchdown: the largest clearance, then the first pixel in raster order
    order = np.lexsort((cat["col"], cat["row"], -cat["clear"], roots))
    first = order[np.concatenate([[True], np.diff(roots[order]) != 0])]
    touchdown = {int(roots[i]): (int(cat["row"][i]), int(cat["col"][i]), float(cat["clear"][i])) for i in first}
    touchdown.update(_beyond_horizon(coarse, np.concatenate(lattice, axis=1) if lattice else np.zeros((3, 0), np.int64),
                                     roots, metric, horizon))
    members_of: dict[int, list[int]] = {}
    for gid in crops:
        members_of.setdefault(int(roots[gid - 1]), []).append(gid)
    chosen = sorted((r for r in touchdown if area_r[r] >= rules.min_area_m2 and pixels_r[r] > 0),
                    key=lambda r: touchdown[r][:2])
    zones = []
    zone_of_root = np.zeros(nroot, np.int32)
    for zone_id, r in enumerate(chosen, start=1):
        row, col, clear = touchdown[r]
        n_px = float(pixels_r[r])
        caution_share = float(caution_r[r] / n_px)
        mean_p = None if prob_r is None else float(prob_r[r] / n_px)
        geom = _zone_geometry([_polygons(crops[gid]) for gid in members_of.get(r, [])])
        zones.append(Zone(zone_id, geom, (row, col), clear, float(area_r[r]), int(n_px), caution_share, mean_p,
                          score(clear, caution_share, mean_p, horizon, in_domain)))
        zone_of_root[r] = zone_id
    zone_mask: np.ndarray | None = None
    if keep_mask:
        zone_mask = np.zeros((height, width), np.int32)
        lut_all = np.concatenate([[0], zone_of_root[roots]])
        for (bi, bj), lab in kept_labels.items():
            b = blocks[(bi, bj)]
            ids = np.where(lab > 0, lab + b.base, 0)
            zone_mask[bi * block: bi * block + lab.shape[0], bj * block: bj * block + lab.shape[1]] = lut_all[ids]
    return TileZones(zones, assessed, hazard_area, horizon, len(blocks), zone_mask)


def _edge_distance(r0: int, r1: int, c0: int, c1: int, height: int, width: int, sy: float, sx: float) -> np.ndarray:
    """Reference distance from each core pixel's centre to the nearest pixel centre beyond the
    raster (one pixel past the nearest edge, straight across)."""
    rows = np.arange(r0, r1)
    cols = np.arange(c0, c1)
    dy = np.minimum(rows + 1, height - rows) * sy
    dx = np.minimum(cols + 1, width - cols) * sx
    return np.minimum(dy[:, None], dx[None, :])


def _cells(hazard: np.ndarray, r0: int, c0: int) -> tuple[int, int, np.ndarray]:
    """A block core's hazards as coarse cells, to be OR-ed into the tile's grid at (row, col) cell
    (a cell cut by a block border gets both parts: the result does not depend on the block size)."""
    oy, ox = r0 % COARSE, c0 % COARSE
    h, w = hazard.shape
    ny, nx = math.ceil((oy + h) / COARSE), math.ceil((ox + w) / COARSE)
    padded = np.zeros((ny * COARSE, nx * COARSE), bool)
    padded[oy:oy + h, ox:ox + w] = hazard
    return r0 // COARSE, c0 // COARSE, np.asarray(padded.reshape(ny, COARSE, nx, COARSE).any(axis=(1, 3)))


def _capped_at_cell_centres(lab: np.ndarray, clearance: np.ndarray, horizon: float, r0: int, c0: int,
                            base: int) -> np.ndarray:
    """(3, n) global component id, row and column of the centres at the horizon that sit at the
    centre pixel of a coarse cell."""
    half = COARSE // 2
    rows = np.arange((half - r0) % COARSE, lab.shape[0], COARSE)
    cols = np.arange((half - c0) % COARSE, lab.shape[1], COARSE)
    sub = lab[np.ix_(rows, cols)]
    hit = (sub > 0) & (clearance[np.ix_(rows, cols)] >= horizon)
    ri, ci = np.nonzero(hit)
    return np.stack([sub[ri, ci].astype(np.int64) + base, rows[ri] + r0, cols[ci] + c0]).astype(np.int64)


def _beyond_horizon(coarse: np.ndarray, lattice: np.ndarray, roots: np.ndarray, metric: GroundMetric,
                    horizon: float) -> dict[int, tuple[int, int, float]]:
    """Touchdown and clearance of the zones whose clearance reaches the horizon: the lattice
    candidate with the largest coarse distance (then raster order), and as clearance a lower bound
    of its true distance: the distance between cell centres, less one cell diagonal."""
    from scipy import ndimage

    if lattice.shape[1] == 0:
        return {}
    sy, sx = metric.sampling
    padded = np.pad(coarse, 1, constant_values=True)  # beyond the edge: hazard
    dist = ndimage.distance_transform_edt(~padded, sampling=(COARSE * sy, COARSE * sx))[1:-1, 1:-1]
    gid, row, col = lattice
    d = dist[row // COARSE, col // COARSE]
    root = roots[gid - 1]
    bound = metric.min_factor() * (d - COARSE * math.hypot(sy, sx))
    out = {}
    order = np.lexsort((col, row, -d, root))
    starts = np.flatnonzero(np.concatenate([[True], np.diff(root[order]) != 0]))
    for a, b in zip(starts, [*starts[1:], len(order)]):
        group = order[a:b]
        tied = group[d[group] == d[group[0]]]  # equally far: the one nearest their centroid, in raster order
        gap = (row[tied] - row[tied].mean()) ** 2 + (col[tied] - col[tied].mean()) ** 2
        i = tied[int(np.argmin(gap))]
        out[int(root[i])] = (int(row[i]), int(col[i]), float(max(horizon, bound[i])))
    return out


def _first_at(lab: np.ndarray, values: np.ndarray, best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each component's first pixel in raster order where ``values`` reach the
    component's ``best`` (scipy's maximum_position picks any of the tied pixels)."""
    flat = lab.ravel()
    target = np.concatenate([[np.inf], best])
    candidates = np.flatnonzero(values.ravel() == target[flat])  # label 0 never: its target is inf
    pos = np.full(len(best) + 1, flat.size, np.int64)
    np.minimum.at(pos, flat[candidates], candidates)  # the first in raster order, without a sort
    pos = pos[1:]
    return pos // lab.shape[1], pos % lab.shape[1]


def _masked_sum(values: np.ndarray, mask: np.ndarray) -> float:
    """The sum of ``values`` (broadcastable to ``mask``'s shape) where ``mask`` holds."""
    if values.shape[-1] == 1:  # one value per row (or one in all): weight the rows' counts
        counts = np.count_nonzero(mask, axis=1)
        return float(np.dot(np.broadcast_to(values[:, 0], counts.shape), counts))
    return float(np.sum(values, where=mask, dtype=np.float64))


def _groups(rules: ZoneRules) -> list[tuple[float, np.ndarray, bool]]:
    """Hazard pixels grouped by the clearance they demand: (clearance, a lookup table of the label
    values in the group, whether the probability hazards join it). One distance transform per
    group; the probability hazards demand the largest hazard-class clearance, which is a group."""
    by_clear: dict[float, list[int]] = {}
    for k in rules.hazard_classes:
        by_clear.setdefault(rules.clearance_m[k], []).append(k)
    by_clear.setdefault(rules.default_clearance_m, []).append(rules.nodata)
    out = []
    for c, classes in sorted(by_clear.items()):
        lut = np.zeros(256, bool)
        lut[classes] = True
        out.append((c, lut, rules.uses_probability and c == rules.probability_clearance_m))
    return out


def _shapes(lab: np.ndarray, row: int, col: int) -> Any:
    """(shapely polygon, value) of the 4-connected pieces of ``lab``'s non-zero values, in tile
    pixel coordinates (integers: pieces of one zone from different blocks union exactly)."""
    from affine import Affine
    from rasterio import features
    from shapely import linearrings, polygons

    for geom, value in features.shapes(lab.astype(np.int32, copy=False), mask=lab > 0, connectivity=4,
                                       transform=Affine.translation(col, row)):
        # GDAL's polygons are Polygons; made from coordinate arrays (shapely's shape() builds
        # each of a noisy mask's thousands of holes in Python).
        rings = geom["coordinates"]
        holes = [linearrings(np.asarray(r, np.float64)) for r in rings[1:]]
        yield polygons(linearrings(np.asarray(rings[0], np.float64)), holes=holes or None), value


def _zone_geometry(parts: list[list[Any]]) -> Any:
    """A zone's (Multi)Polygon from its components' polygons, one list per block it spans. Within
    one block the pieces are the 4-connected parts of one 8-connected component: they touch only
    at corners, so they are already a valid MultiPolygon; pieces of different blocks share edges
    along the block borders and are unioned (exactly: their coordinates are integers)."""
    from shapely import multipolygons, union_all

    if len(parts) == 1:
        return parts[0][0] if len(parts[0]) == 1 else multipolygons(parts[0])
    return union_all([p for block in parts for p in block])


def _polygons(outline: Outline) -> list[Any]:
    """A component's polygons: made already, or from its stored crop."""
    if isinstance(outline, list):
        return outline
    row, col, shape, bits = outline
    crop = np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape)
    return [geom for geom, _ in _shapes(crop, row, col)]


def _merge(blocks: dict[tuple[int, int], _Block], total: int) -> np.ndarray:
    """Root (a small integer) of every global component id 1..total, 8-connectivity across block
    borders; roots[gid - 1]."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs_a: list[np.ndarray] = []
    pairs_b: list[np.ndarray] = []

    def link(a: np.ndarray, abase: int, b: np.ndarray, bbase: int, shifts: tuple[int, ...]) -> None:
        n = len(a)
        for s in shifts:
            lo, hi = max(0, -s), min(n, len(b) - s)
            if hi <= lo:
                continue
            x, y = a[lo:hi], b[lo + s: hi + s]
            both = (x > 0) & (y > 0)
            pairs_a.append(x[both].astype(np.int64) + abase)
            pairs_b.append(y[both].astype(np.int64) + bbase)

    for (bi, bj), blk in blocks.items():
        right = blocks.get((bi, bj + 1))
        if right is not None:
            link(blk.right, blk.base, right.left, right.base, (-1, 0, 1))
        down = blocks.get((bi + 1, bj))
        if down is not None:
            link(blk.bottom, blk.base, down.top, down.base, (-1, 0, 1))
        diag = blocks.get((bi + 1, bj + 1))
        if diag is not None:
            link(blk.bottom[-1:], blk.base, diag.top[:1], diag.base, (0,))
        anti = blocks.get((bi + 1, bj - 1))
        if anti is not None:
            link(blk.bottom[:1], blk.base, anti.top[-1:], anti.base, (0,))
    if total == 0:
        return np.zeros(0, np.int64)
    a = np.concatenate(pairs_a) if pairs_a else np.zeros(0, np.int64)
    b = np.concatenate(pairs_b) if pairs_b else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a - 1, b - 1)), shape=(total, total))
    _, roots = connected_components(graph, directed=False)
    return np.asarray(roots, np.int64)
