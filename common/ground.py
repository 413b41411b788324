"""Ground metric of a raster: how far apart pixels are in true ground metres, and how much ground
each pixel covers, for landing zones (common/zones.py).

A distance transform needs one constant sampling, so distances are computed in *reference
metres*: the raster's pixel steps (``sampling``, y then x) in metres at a reference point. A
per-pixel ``factor`` f(p) <= about 1 then turns a reference distance from p into a guaranteed
ground distance: ground >= reference * f(p), with equality for conformal projections.

* Projected CRSs: the reference is the projected metre; f(p) = 1 / (largest scale factor of the
  projection at p, Tissot's semi-major axis). For conformal projections (UTM, Web Mercator,
  Lambert conformal) the scale is the same in every direction, so the ground distance is exact
  (EPSG:3857's sec(latitude) is taken out); for others it is a lower bound (conservative).
* Geographic CRSs (degrees): the reference is the pixel's metre size at the raster's centre row;
  f(p) = min(x step / reference x step, y step / reference y step) at p's latitude (meridional
  and prime-vertical radii of the CRS's ellipsoid): exact along rows, conservative by the relative
  change of cos(latitude) across a tile otherwise (< 0.1 % for tiles under 0.05 degrees).
* No CRS: ``--gsd M`` metres per pixel, f = 1. Without it, a raster has no ground metric.

Factors and projected areas come from a grid anchored at the raster's origin (every ``GRID``
pixels, bilinear between nodes), so a pixel gets the same value whatever window it is read in:
zones do not depend on the block size. Areas: geographic rasters use the exact ellipsoidal pixel
areas of common/areas.py; projected ones divide the map area by the areal scale factor.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pyproj

from common.areas import PixelAreaModel, _ellipsoid, _parse

GRID = 256  # pixels between the nodes of the factor and area grids


class GroundError(ValueError):
    """A raster whose pixels cannot be measured in ground metres."""


@dataclass(frozen=True)
class GroundMetric:
    """Plain, picklable description of a raster's ground geometry (see the module docstring)."""

    kind: str  # "projected", "geographic" or "gsd"
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int
    crs_wkt: str | None = None
    unit_to_m: float = 1.0
    gsd_m: float | None = None

    @classmethod
    def of(cls, crs_wkt: str | None, transform: tuple[float, ...], height: int, width: int,
           gsd_m: float | None = None) -> GroundMetric:
        """The metric of a raster; GroundError when it has no CRS and no ``gsd_m``, or a transform
        whose pixel axes are not at right angles (shear: warp the raster first)."""
        t = tuple(float(v) for v in tuple(transform)[:6])
        coeffs = (t[0], t[1], t[2], t[3], t[4], t[5])
        if not crs_wkt:
            if gsd_m is None:
                raise GroundError("the raster has no CRS, so its pixels have no size in metres; give --gsd M "
                                  "(metres per pixel) to map landing zones on it")
            if not (math.isfinite(gsd_m) and gsd_m > 0):
                raise GroundError(f"--gsd must be a positive number of metres per pixel, not {gsd_m}")
            return cls("gsd", coeffs, int(height), int(width), gsd_m=float(gsd_m))
        a, b, _, d, e, _ = coeffs
        if abs(a * b + d * e) > 1e-9 * (a * a + d * d + b * b + e * e):
            raise GroundError(f"transform {coeffs} is sheared (pixel axes not at right angles); warp the raster "
                              "to a north-up grid (gdalwarp) before mapping landing zones")
        crs = _parse(crs_wkt)
        if crs.is_projected:
            area = PixelAreaModel("projected", crs_wkt, coeffs, _unit(crs), int(height), int(width))
            return cls("projected", coeffs, int(height), int(width), crs_wkt, float(area.unit_to_m or 1.0))
        if crs.is_geographic:
            if b != 0.0 or d != 0.0:
                raise GroundError("rotated geographic rasters are not supported for landing zones; warp the raster "
                                  "north-up (gdalwarp) first")
            return cls("geographic", coeffs, int(height), int(width), crs_wkt)
        raise GroundError(f"CRS {crs.name!r} is neither projected nor geographic; landing zones need ground metres")

    # -- distances ---------------------------------------------------------------------------

    @property
    def sampling(self) -> tuple[float, float]:
        """(y, x) size of one pixel step in reference metres."""
        a, b, _, d, e, _ = self.transform
        if self.kind == "gsd":
            assert self.gsd_m is not None
            return self.gsd_m, self.gsd_m
        if self.kind == "projected":
            return math.hypot(b, e) * self.unit_to_m, math.hypot(a, d) * self.unit_to_m
        sy, sx = _geographic_steps(self, np.array([self._centre_lat()]))
        return float(sy[0]), float(sx[0])

    def _centre_lat(self) -> float:
        return self.transform[5] + self.transform[4] * self.height / 2.0

    def factors(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """f(p) for the pixels of rows [row0, row1) and columns [col0, col1), broadcastable to
        (rows, cols): ground metres >= reference metres * f."""
        if self.kind == "gsd":
            return np.ones((1, 1))
        if self.kind == "geographic":
            lats = self.transform[5] + self.transform[4] * (np.arange(row0, row1) + 0.5)
            sy, sx = _geographic_steps(self, lats)
            ry, rx = self.sampling
            return np.minimum(sy / ry, sx / rx)[:, None]
        rows, cols, factor, _ = _projected_grid(self)
        return _bilinear(factor, rows, cols, row0, row1, col0, col1)

    def min_factor(self) -> float:
        """The smallest f over the raster (a halo in pixels must reach that far)."""
        if self.kind == "gsd":
            return 1.0
        if self.kind == "geographic":
            return float(self.factors(0, max(self.height, 1), 0, 1).min()) if self.height else 1.0
        return float(_projected_grid(self)[2].min())

    # -- areas -------------------------------------------------------------------------------

    def areas(self, row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
        """Ground area in m² of each pixel, broadcastable to (rows, cols)."""
        if self.kind == "gsd":
            assert self.gsd_m is not None
            return np.full((1, 1), self.gsd_m**2)
        if self.kind == "geographic":
            model = PixelAreaModel("geographic", self.crs_wkt, self.transform, None, self.height, self.width)
            rows = model.row_areas_m2(max(row0, 0), max(row1, 0), col0, col1)
            assert rows is not None
            return rows[:, None]
        a, b, _, d, e, _ = self.transform
        plane = abs(a * e - b * d) * self.unit_to_m**2
        rows, cols, _, areal = _projected_grid(self)
        scale = _bilinear(areal, rows, cols, row0, row1, col0, col1)
        return np.divide(plane, scale, out=scale)

    # -- coordinates -------------------------------------------------------------------------

    def to_lonlat(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (fractional column, row) → OGC:CRS84 longitude, latitude; for a raster
        without a CRS, the pixel coordinates themselves."""
        a, b, c, d, e, f = self.transform
        if self.kind == "gsd":
            return np.asarray(cols, np.float64), np.asarray(rows, np.float64)
        x = a * cols + b * rows + c
        y = d * cols + e * rows + f
        lon, lat = _to_crs84(self.crs_wkt).transform(x, y)
        return np.asarray(lon, np.float64), np.asarray(lat, np.float64)


def _unit(crs: pyproj.CRS) -> float:
    axes = crs.axis_info
    if len(axes) < 2:
        raise GroundError(f"projected CRS {crs.name!r} declares no axis units")
    fx, fy = axes[0].unit_conversion_factor, axes[1].unit_conversion_factor
    return fx if fx == fy else math.sqrt(fx * fy)


def _geographic_steps(m: GroundMetric, lats_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) metres of one pixel step at these latitudes: meridional radius M and prime-vertical
    radius N cos(latitude) of the CRS's ellipsoid, times the pixel's angular size."""
    assert m.crs_wkt is not None
    ell = _ellipsoid(m.crs_wkt)
    crs = _parse(m.crs_wkt)
    major = crs.ellipsoid.semi_major_metre if crs.ellipsoid is not None else 6378137.0
    phi = np.clip(np.asarray(lats_deg, np.float64) * ell.unit_to_rad, -math.pi / 2, math.pi / 2)
    w = 1.0 - ell.e2 * np.sin(phi) ** 2
    meridional = major * (1.0 - ell.e2) / w**1.5
    prime = major / np.sqrt(w)
    return (meridional * abs(m.transform[4]) * ell.unit_to_rad,
            prime * np.cos(phi) * abs(m.transform[0]) * ell.unit_to_rad)


@functools.lru_cache(maxsize=16)
def _to_crs84(wkt: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(_parse(wkt), "OGC:CRS84", always_xy=True)


@functools.lru_cache(maxsize=16)
def _projected_grid(m: GroundMetric) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Factor f = 1 / Tissot semi-major axis and the areal scale at the grid's nodes (pixel
    centres of rows and columns 0, GRID, 2 GRID, ... and the last)."""
    assert m.crs_wkt is not None
    crs = _parse(m.crs_wkt)
    rows = _nodes(m.height)
    cols = _nodes(m.width)
    cc, rr = np.meshgrid(cols + 0.5, rows + 0.5)
    a, b, c, d, e, f = m.transform
    x = a * cc + b * rr + c
    y = d * cc + e * rr + f
    lon, lat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True).transform(x, y)
    factors = pyproj.Proj(crs).get_factors(lon, lat)
    semimajor = np.asarray(factors.tissot_semimajor, np.float64)
    areal = np.asarray(factors.areal_scale, np.float64)
    if not (np.all(np.isfinite(semimajor)) and np.all(semimajor > 0) and np.all(np.isfinite(areal))):
        raise GroundError(f"the projection {crs.name!r} has no finite scale factor over this raster (outside "
                          "its domain?); check the CRS and the transform")
    return rows, cols, 1.0 / semimajor, areal


def _nodes(n: int) -> np.ndarray:
    last = max(n - 1, 0)
    return np.unique(np.append(np.arange(0, last + 1, GRID), last)).astype(np.float64)


def _bilinear(grid: np.ndarray, rows_nodes: np.ndarray, cols_nodes: np.ndarray, row0: int, row1: int, col0: int,
              col1: int) -> np.ndarray:
    """Bilinear interpolation of node values at pixel rows/cols (clamped to the raster: halo
    pixels beyond its edge take the edge's value)."""
    ri, ty = _span(rows_nodes, np.arange(row0, row1, dtype=np.float64))
    ci, tx = _span(cols_nodes, np.arange(col0, col1, dtype=np.float64))
    c1 = np.minimum(ci + 1, len(cols_nodes) - 1)
    # Along the columns at the node rows first (small), then, for the rows between two node rows,
    # the first node row's values plus a share of the step to the next: two full-size passes.
    # Each pixel's value depends only on its own row and column, not on the window.
    along = grid[:, ci] + (grid[:, c1] - grid[:, ci]) * tx
    out = np.empty((len(ri), len(ci)))
    starts = np.flatnonzero(np.concatenate([[True], np.diff(ri) != 0, [True]]))
    for a, b in zip(starts[:-1], starts[1:]):
        k = ri[a]
        first = along[k]
        np.multiply.outer(ty[a:b], along[min(k + 1, len(rows_nodes) - 1)] - first, out=out[a:b])
        out[a:b] += first
    return out


def _span(nodes: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position, the node before it and where it lies towards the next one, in [0, 1]."""
    if len(nodes) == 1:
        return np.zeros(len(pos), np.intp), np.zeros(len(pos))
    idx = np.clip(np.searchsorted(nodes, pos, side="right") - 1, 0, len(nodes) - 2)
    t = np.clip((pos - nodes[idx]) / (nodes[idx + 1] - nodes[idx]), 0.0, 1.0)
    return idx, t
