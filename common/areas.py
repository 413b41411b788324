"""Per-pixel ground areas (m²) for class-area statistics.

A :class:`PixelAreaModel` is built once per raster by :func:`pixel_area_model` and travels inside
Beam elements, so it holds only plain, picklable fields; pyproj objects are made lazily from the
WKT (and cached per process) when areas are asked for.

* Projected CRSs: every pixel has the same map-plane area, ``|det(transform)| * unit_to_m**2``.
  This is the area on the projection plane, not corrected for the projection's scale factor
  (exact for equal-area projections, approximate for e.g. UTM, badly wrong far from the equator
  for Web Mercator).
* Geographic CRSs: a pixel is the region of the CRS's own ellipsoid whose longitude/latitude lie
  in the pixel's parallelogram (for a north-up raster, a quadrangle bounded by two meridians and
  two parallels). Its area is the integral of the ellipsoid's area element
  ``b² cos φ / (1 - e² sin² φ)² dλ dφ``, done in closed form along latitude (so north-up rows are
  exact and fully vectorised) and, for rotated transforms only, by Gauss-Legendre quadrature
  across the other pixel axis.
* No CRS: areas are unknown (``None``); pixel counts still work.

Transforms are taken as rasterio/GDAL report them: x = easting/longitude, y = northing/latitude,
whatever the CRS's declared axis order.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyproj

if TYPE_CHECKING:
    import affine
    import rasterio.crs

log = logging.getLogger(__name__)

_KINDS = ("projected", "geographic", "gsd", "none")

# Gauss-Legendre nodes/weights on [0, 1] for the one axis integrated numerically (rotated
# geographic rasters only). The integrand is analytic and a pixel spans a small angle, so five
# nodes are exact to rounding for any realistic pixel size.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(5)
_GL_NODES = (_GL_NODES + 1.0) / 2.0
_GL_WEIGHTS = _GL_WEIGHTS / 2.0

# Rotated rasters are evaluated per pixel; chunk rows so temporaries stay around 8 MB each.
_CHUNK_PIXELS = 1 << 20

# Latitudes past a pole by more than this (degrees) are reported; smaller overshoots are float
# noise in global rasters' transforms and are silently clipped.
_POLE_TOLERANCE_DEG = 1e-7


class AreaError(ValueError):
    """Pixel or class areas cannot be computed for the given raster or arrays."""


@dataclass(frozen=True)
class _Ellipsoid:
    """Ellipsoid and angular unit of a geographic CRS, as plain floats."""

    b2: float  # semi-minor axis squared, m²
    e2: float  # first eccentricity squared (0 for a sphere)
    unit_to_rad: float  # CRS angular unit -> radians


def _horizontal(crs: pyproj.CRS) -> pyproj.CRS:
    """The horizontal part of ``crs``: unwrap bound (TOWGS84) and compound (with vertical) CRSs."""
    # source_crs is typed Optional but is always set on a bound CRS.
    if crs.is_bound:
        crs = cast(pyproj.CRS, crs.source_crs)
    if crs.is_compound:
        crs = crs.sub_crs_list[0]
        if crs.is_bound:
            crs = cast(pyproj.CRS, crs.source_crs)
    return crs


@functools.lru_cache(maxsize=64)
def _parse(wkt: str) -> pyproj.CRS:
    """pyproj CRS for ``wkt`` (horizontal part), cached per process."""
    try:
        return _horizontal(pyproj.CRS.from_wkt(wkt))
    except pyproj.exceptions.CRSError as exc:
        raise AreaError(f"cannot parse CRS for pixel areas: {exc}") from exc


@functools.lru_cache(maxsize=64)
def _ellipsoid(wkt: str) -> _Ellipsoid:
    """Ellipsoid (via pyproj.Geod) and angular unit of a geographic CRS, cached per process."""
    crs = _parse(wkt)
    ell = crs.ellipsoid
    if ell is None:
        raise AreaError(f"CRS {crs.name!r} has no ellipsoid; geographic pixel areas can't be computed")
    geod = pyproj.Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre)
    axes = crs.axis_info
    unit_to_rad = axes[0].unit_conversion_factor if axes else math.pi / 180.0
    return _Ellipsoid(b2=geod.b**2, e2=geod.es, unit_to_rad=unit_to_rad)


def _f_diff(phi1: np.ndarray, delta: np.ndarray | float, e2: float) -> np.ndarray:
    """F(φ1 + Δ) - F(φ1) (dimensionless) for F' = cos φ / (1 - e² sin² φ)²; radians.

    Taking the band width Δ itself (not a second latitude, whose rounding would cost ~1e-16/Δ
    relative) and using sin- and atanh-difference identities instead of subtracting two values
    of F keeps full relative precision even for 1e-7° bands.
    """
    phi2 = phi1 + delta
    s1 = np.sin(phi1)
    s2 = np.sin(phi2)
    ds = 2.0 * np.cos(phi1 + delta / 2.0) * np.sin(delta / 2.0)  # sin φ2 - sin φ1
    d1 = 1.0 - e2 * s1 * s1
    d2 = 1.0 - e2 * s2 * s2
    term1 = ds * (1.0 + e2 * s1 * s2) / (2.0 * d1 * d2)
    if e2 == 0.0:
        term2 = ds / 2.0
    else:
        e = math.sqrt(e2)
        term2 = np.arctanh(e * ds / (1.0 - e2 * s1 * s2)) / (2.0 * e)
    return term1 + term2


def _geographic_pixel_areas(
    transform: tuple[float, float, float, float, float, float],
    ell: _Ellipsoid,
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """Ellipsoidal area in m² of pixels with top-left corners at (rows, cols) (broadcast).

    Latitudes beyond the poles are clipped, so the part of a pixel past a pole has no area.
    """
    a, b, c, d, e, f = transform
    k = ell.unit_to_rad
    det_rad2 = abs(a * e - b * d) * k * k
    half_pi = math.pi / 2.0
    # Integrate exactly along the pixel axis with the larger latitude step and numerically along
    # the other; for north-up (d == 0) or 90°-rotated (e == 0) rasters the other axis has no
    # latitude change, so a single node is exact.
    if abs(e) >= abs(d):
        p, q = k * e, k * d
    else:
        p, q = k * d, k * e
    phi0 = k * (f + d * cols + e * rows)
    if q == 0.0:
        nodes, weights = np.array([0.0]), np.array([1.0])
    else:
        nodes, weights = _GL_NODES, _GL_WEIGHTS
    total = np.zeros(np.broadcast(rows, cols).shape, dtype=np.float64)
    for t, w in zip(nodes, weights):
        start = phi0 + q * t
        end = start + p
        lo = np.clip(start, -half_pi, half_pi)
        hi = np.clip(end, -half_pi, half_pi)
        # Use the exact step p unless a pole clipped the band.
        delta = np.where((lo == start) & (hi == end), p, hi - lo)
        total += w * (_f_diff(lo, delta, ell.e2) / p)
    return ell.b2 * det_rad2 * total


@dataclass(frozen=True)
class PixelAreaModel:
    """How to get pixel areas for one raster.

    ``kind`` is "projected", "geographic", "gsd" or "none"; ``transform`` is the affine a, b, c,
    d, e, f (rasterio ``Affine[:6]``, CRS units per pixel); ``unit_to_m`` converts a projected CRS's
    linear unit to metres, and for "gsd" (a raster without a CRS, e.g. a drone frame, given
    ``--gsd``) is the user's metres per pixel (None otherwise); ``height``/``width`` are the
    raster's size in pixels, used only for :meth:`pixel_size_m` of geographic rasters.
    """

    kind: str
    crs_wkt: str | None
    transform: tuple[float, float, float, float, float, float]
    unit_to_m: float | None
    height: int = 0
    width: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise AreaError(f"unknown pixel-area kind {self.kind!r}; expected one of {_KINDS}")
        transform = tuple(float(v) for v in tuple(self.transform)[:6])
        if len(transform) != 6:
            raise AreaError(f"transform needs 6 coefficients, got {len(transform)}")
        # Coerce (e.g. from an Affine or a list) so equality and pickles are stable.
        object.__setattr__(self, "transform", transform)
        if self.kind in ("projected", "gsd") and (self.unit_to_m is None or not self.unit_to_m > 0):
            raise AreaError(f"{self.kind} model needs a positive unit_to_m, got {self.unit_to_m!r}")
        if self.kind == "geographic" and not self.crs_wkt:
            raise AreaError("geographic model needs the CRS WKT (for its ellipsoid)")

    @property
    def _north_up(self) -> bool:
        return self.transform[1] == 0.0 and self.transform[3] == 0.0

    def row_areas_m2(self, row_start: int, row_stop: int, col_start: int, col_stop: int) -> np.ndarray | None:
        """Area in m² of one pixel in each row of the window; shape (row_stop - row_start,), float64.

        None when kind is "none". Projected: the same map-plane area for every row. Geographic,
        north-up: the exact ellipsoidal area of the row's pixels (columns don't matter).
        Geographic, rotated transform: pixel areas vary along a row too, so each row gets the
        MEAN area of its pixels in columns [col_start, col_stop).
        """
        if row_stop < row_start or col_stop < col_start:
            raise AreaError(f"bad window rows [{row_start}, {row_stop}) cols [{col_start}, {col_stop})")
        if self.kind == "none":
            return None
        n = row_stop - row_start
        if self.kind == "gsd":
            assert self.unit_to_m is not None
            return np.full(n, self.unit_to_m**2, dtype=np.float64)
        if self.kind == "projected":
            a, b, _, d, e, _ = self.transform
            assert self.unit_to_m is not None
            return np.full(n, abs(a * e - b * d) * self.unit_to_m**2, dtype=np.float64)
        ell = _ellipsoid(self.crs_wkt)
        rows = np.arange(row_start, row_stop, dtype=np.float64)
        if self._north_up:
            return _geographic_pixel_areas(self.transform, ell, rows, np.zeros(1))
        if col_stop == col_start:
            raise AreaError("a rotated geographic raster needs at least one column to average row areas over")
        cols = np.arange(col_start, col_stop, dtype=np.float64)
        out = np.empty(n, dtype=np.float64)
        step = max(1, _CHUNK_PIXELS // cols.size)
        for i in range(0, n, step):
            chunk = rows[i : i + step, None]
            out[i : i + step] = _geographic_pixel_areas(self.transform, ell, chunk, cols[None, :]).mean(axis=1)
        return out

    def pixel_size_m(self) -> float | None:
        """Nominal pixel edge in metres: sqrt of one pixel's area in m²; None without a CRS.

        Projected: sqrt(|det|) * unit_to_m. Geographic: sqrt of the area of a pixel centred on the
        raster's centre (for north-up rasters, the pixel at the centre latitude).
        """
        if self.kind == "none":
            return None
        if self.kind == "gsd":
            return self.unit_to_m
        a, b, _, d, e, _ = self.transform
        if self.kind == "projected":
            assert self.unit_to_m is not None
            return math.sqrt(abs(a * e - b * d)) * self.unit_to_m
        ell = _ellipsoid(self.crs_wkt)
        # Top-left corner of a pixel-sized cell centred on the raster's centre.
        row = np.array([self.height / 2.0 - 0.5])
        col = np.array([self.width / 2.0 - 0.5])
        return math.sqrt(float(_geographic_pixel_areas(self.transform, ell, row, col)[0]))


def _wkt_of(crs: Any) -> str:
    """WKT of a rasterio/pyproj CRS or WKT string; "" for None or an empty CRS."""
    if crs is None:
        return ""
    if isinstance(crs, str):
        return crs.strip()
    if not crs:  # an empty rasterio CRS is falsy
        return ""
    return crs.to_wkt() or ""


def _check_poles(model: PixelAreaModel, crs_name: str) -> None:
    """Warn when the raster reaches past a pole: that part is clipped and gets no area. A raster
    lying wholly past a pole is not on the earth at all (typically projected coordinates under a
    geographic CRS): AreaError, rather than areas of zero."""
    a, b, c, d, e, f = model.transform
    lats = [f + d * col + e * row for row in (0, model.height) for col in (0, model.width)]
    limit = 90.0 * math.pi / 180.0 / _ellipsoid(model.crs_wkt).unit_to_rad + _POLE_TOLERANCE_DEG
    if min(lats) > limit or max(lats) < -limit:
        raise AreaError(
            f"the transform puts the raster at latitude {min(lats, key=abs):.6g} to {max(lats, key=abs):.6g} in "
            f"{crs_name}, wholly beyond ±90°: the CRS or the transform is wrong; pixel areas can't be computed"
        )
    if max(abs(v) for v in lats) > limit:
        log.warning(
            "raster in %s reaches latitude %.6g, past a pole; areas beyond ±90° are clipped to zero",
            crs_name,
            max(lats, key=abs),
        )


def pixel_area_model(crs: rasterio.crs.CRS | None, transform: affine.Affine, height: int, width: int,
                     gsd_m: float | None = None) -> PixelAreaModel:
    """Build the pixel-area model (areas in m²) for a raster's CRS, transform and size in pixels.

    No or empty CRS -> kind "gsd" with ``gsd_m`` metres per pixel (``--gsd``: square pixels of
    that edge), else "none" (areas will be null); ``gsd_m`` never overrides a CRS. Projected -> "projected", with the linear
    unit's factor to metres from pyproj (US survey feet, international feet, metres ...).
    Geographic -> "geographic" (AreaError when the raster lies wholly beyond a pole). Any other CRS
    (geocentric, engineering, ...) raises AreaError.
    """
    coeffs = cast("tuple[float, float, float, float, float, float]", tuple(float(v) for v in tuple(transform)[:6]))
    if height < 0 or width < 0:
        raise AreaError(f"raster size must be non-negative, got {height}x{width}")
    wkt = _wkt_of(crs)
    if not wkt:
        if gsd_m is not None:
            if not (math.isfinite(gsd_m) and gsd_m > 0):
                raise AreaError(f"--gsd must be a positive number of metres per pixel, not {gsd_m}")
            return PixelAreaModel("gsd", None, coeffs, float(gsd_m), int(height), int(width))
        log.info("raster has no CRS; pixel areas (m²) will be null, class areas reported as counts only")
        return PixelAreaModel("none", None, coeffs, None, int(height), int(width))
    if not all(math.isfinite(v) for v in coeffs):
        raise AreaError(f"transform {coeffs} is not finite; pixel areas can't be computed")
    a, b, _, d, e, _ = coeffs
    if a * e - b * d == 0.0:
        raise AreaError(f"transform {coeffs} is degenerate (zero determinant); pixel areas can't be computed")
    horizontal = _parse(wkt)
    name = horizontal.name
    if horizontal.is_projected:
        axes = horizontal.axis_info
        if len(axes) < 2:
            raise AreaError(f"projected CRS {name!r} declares no axis units; pixel areas can't be computed")
        fx, fy = axes[0].unit_conversion_factor, axes[1].unit_conversion_factor
        # Area needs fx * fy; the geometric mean keeps that exact if the axes ever differ.
        unit_to_m = fx if fx == fy else math.sqrt(fx * fy)
        if not unit_to_m > 0:
            raise AreaError(f"projected CRS {name!r} has unit factor {unit_to_m}; pixel areas can't be computed")
        return PixelAreaModel("projected", wkt, coeffs, unit_to_m, int(height), int(width))
    if horizontal.is_geographic:
        model = PixelAreaModel("geographic", wkt, coeffs, None, int(height), int(width))
        ell = _ellipsoid(wkt)
        if horizontal.is_derived and ell.e2 != 0.0:
            # Rotated-pole grids on an ellipsoid: the quadrangle formula is exact only on a sphere.
            log.warning("derived geographic CRS %r on an ellipsoid: pixel areas are approximate", name)
        _check_poles(model, name)
        return model
    raise AreaError(
        f"CRS {name!r} ({horizontal.type_name}) is neither projected nor geographic; "
        "pixel areas can't be computed"
    )


#: Up to this many classes, uint8 labels are counted one class at a time (a comparison and a count
#: per class, vectorised, ~1 ms per megapixel per class) rather than by np.bincount, which first
#: widens every label to 8 bytes (~4x slower for the handful of classes of a segmentation model).
FEW_CLASSES = 32


def _class_counts(flat: np.ndarray, num_classes: int, by_comparison: bool) -> np.ndarray:
    """(K,) int64 counts of labels 0..K-1 in ``flat`` (K itself: invalid, not counted)."""
    if by_comparison:
        return np.array([np.count_nonzero(flat == k) for k in range(num_classes)], np.int64)
    return np.bincount(flat.ravel(), minlength=num_classes + 1)[:num_classes].astype(np.int64)


def _row_class_counts(flat: np.ndarray, num_classes: int, by_comparison: bool) -> np.ndarray:
    """(H, K) counts of labels 0..K-1 per row of (H, W) ``flat`` (K itself: invalid, not counted)."""
    height = flat.shape[0]
    if by_comparison:
        wide = np.uint16 if flat.shape[1] < 2 ** 16 else np.uint32
        return np.stack([(flat == k).sum(axis=1, dtype=wide) for k in range(num_classes)], axis=1)
    bins = num_classes + 1
    coded = flat.astype(np.intp)  # a copy: the row offsets are added to it
    coded += (np.arange(height, dtype=np.intp) * bins)[:, None]
    return np.bincount(coded.ravel(), minlength=height * bins).reshape(height, bins)[:, :num_classes]


def class_areas_m2(
    labels: np.ndarray, valid: np.ndarray, num_classes: int, row_areas: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixel counts and ground areas (m²) per class over the valid pixels of a block.

    labels: (H, W) integer class indices; valid: (H, W) bool; row_areas: (H,) m² per pixel of each
    row, or None. Returns (counts int64 (num_classes,), areas float64 (num_classes,) or None).
    Valid pixels with labels outside [0, num_classes) raise AreaError.
    """
    labels = np.asarray(labels)
    valid = np.asarray(valid)
    if labels.ndim != 2 or valid.shape != labels.shape:
        raise AreaError(f"labels {labels.shape} and valid {valid.shape} must be the same 2-D shape")
    if not np.issubdtype(labels.dtype, np.integer):
        raise AreaError(f"labels must be integers, got {labels.dtype}")
    if num_classes < 1:
        raise AreaError(f"num_classes must be >= 1, got {num_classes}")
    valid = valid.astype(bool, copy=False)
    height, width = labels.shape
    if row_areas is not None:
        row_areas = np.asarray(row_areas, dtype=np.float64)
        if row_areas.shape != (height,):
            raise AreaError(f"row_areas has shape {row_areas.shape}, expected ({height},)")

    # Invalid pixels go to an extra bin (index num_classes) that is dropped, which avoids
    # compacting the arrays with a boolean index. uint8 labels stay uint8; other integer types are
    # widened.
    if labels.dtype == np.uint8 and num_classes < 255:
        flat = labels if valid.all() else np.where(valid, labels, np.uint8(num_classes))
        hi = int(flat.max()) if flat.size else 0
        if hi > num_classes or (hi == num_classes and np.any(valid & (labels == num_classes))):
            bad = int(labels[valid].max())
            raise AreaError(f"valid pixel has label {bad}, outside [0, {num_classes})")
    else:
        masked = np.where(valid, labels, 0).astype(np.intp, copy=False)
        if masked.size:
            lo, hi = int(masked.min()), int(masked.max())
            if lo < 0 or hi >= num_classes:
                bad = lo if lo < 0 else hi
                raise AreaError(f"valid pixel has label {bad}, outside [0, {num_classes})")
        flat = np.where(valid, masked, num_classes)
    by_comparison = flat.dtype == np.uint8 and num_classes <= FEW_CLASSES
    if row_areas is None or (height and np.all(row_areas == row_areas[0])):
        counts = _class_counts(flat, num_classes, by_comparison)
        if row_areas is None:
            return counts, None
        # Constant pixel area (any projected CRS): one product per class.
        return counts, counts.astype(np.float64) * (float(row_areas[0]) if height else 0.0)
    # Per-(row, class) counts, then one dot with the row areas: exact counts, one float sum per class.
    per_row = _row_class_counts(flat, num_classes, by_comparison)
    counts = per_row.sum(axis=0, dtype=np.int64)
    areas = row_areas @ per_row.astype(np.float64)
    return counts, areas
