"""Tests for common.areas: per-pixel ground areas (m²) and per-class area sums."""

from __future__ import annotations

import logging
import math
import pickle

import numpy as np
import pyproj
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rasterio.crs import CRS

from common.areas import AreaError, PixelAreaModel, class_areas_m2, pixel_area_model

US_FOOT = 0.3048006096  # 1200/3937 m
INTL_FOOT = 0.3048
WGS84 = pyproj.Geod(ellps="WGS84")


def geod_area(geod: pyproj.Geod, lons: list[float], lats: list[float]) -> float:
    """Unsigned geodesic area (m²) of the polygon through the given corners."""
    area, _ = geod.polygon_area_perimeter(lons, lats)
    return abs(area)


def cell_corners(transform: Affine, row: int, col: int, rows: float = 1, cols: float = 1) -> tuple[list[float], list[float]]:
    """Corner lon/lat of the cell spanning rows x cols pixels from (row, col)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    offsets = ((0, 0), (cols, 0), (cols, rows), (0, rows))
    lons = [a * (col + u) + b * (row + v) + c for u, v in offsets]
    lats = [d * (col + u) + e * (row + v) + f for u, v in offsets]
    return lons, lats


def densified_cell(west: float, north: float, size: float, steps: int) -> tuple[list[float], list[float]]:
    """A size x size degree cell with its parallels split into `steps` short geodesics,
    so the geodesic polygon follows the parallels (as the pixels do)."""
    top = [west + size * i / steps for i in range(steps + 1)]
    lons = top + top[::-1]
    lats = [north] * (steps + 1) + [north - size] * (steps + 1)
    return lons, lats


# --- projected --------------------------------------------------------------------------------


def test_projected_metres_rows_and_exact_class_areas() -> None:
    model = pixel_area_model(CRS.from_epsg(32618), Affine(30, 0, 500_000, 0, -30, 4_500_000), 10, 10)
    assert model.kind == "projected"
    assert model.unit_to_m == 1.0
    rows = model.row_areas_m2(0, 10, 0, 10)
    assert rows.dtype == np.float64 and rows.shape == (10,)
    assert np.all(rows == 900.0)
    assert model.pixel_size_m() == pytest.approx(30.0, rel=1e-12)

    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[:3, :] = 1  # 30 pixels
    labels[3:5, :5] = 2  # 10 pixels
    labels[9, 9] = 3  # 1 pixel
    valid = np.ones((10, 10), dtype=bool)
    counts, areas = class_areas_m2(labels, valid, 4, rows)
    assert counts.dtype == np.int64 and areas.dtype == np.float64
    np.testing.assert_array_equal(counts, [59, 30, 10, 1])
    np.testing.assert_array_equal(areas, [59 * 900.0, 30 * 900.0, 10 * 900.0, 900.0])


def test_projected_us_survey_feet() -> None:
    model = pixel_area_model(CRS.from_epsg(2229), Affine(10, 0, 6_000_000, 0, -10, 2_000_000), 5, 5)
    assert model.kind == "projected"
    assert model.unit_to_m == pytest.approx(US_FOOT, rel=1e-9)
    rows = model.row_areas_m2(0, 5, 0, 5)
    assert rows == pytest.approx([100 * US_FOOT**2] * 5, rel=1e-9)
    assert model.pixel_size_m() == pytest.approx(10 * US_FOOT, rel=1e-9)


def test_projected_international_feet() -> None:
    # EPSG:2222, NAD83 / Arizona East (ft), uses the international foot (0.3048 m exactly);
    # note EPSG:2263 (New York Long Island) is US survey feet, like 2229.
    model = pixel_area_model(CRS.from_epsg(2222), Affine(10, 0, 700_000, 0, -10, 1_000_000), 5, 5)
    assert model.unit_to_m == pytest.approx(INTL_FOOT, rel=1e-12)
    assert model.row_areas_m2(0, 5, 0, 5) == pytest.approx([100 * INTL_FOOT**2] * 5, rel=1e-12)
    us = pixel_area_model(CRS.from_epsg(2263), Affine(10, 0, 0, 0, -10, 0), 5, 5)
    assert us.unit_to_m == pytest.approx(US_FOOT, rel=1e-9)


def test_projected_rotated_uses_determinant() -> None:
    theta = math.radians(25)
    t = Affine(30 * math.cos(theta), -30 * math.sin(theta), 0, 30 * math.sin(theta), 30 * math.cos(theta), 0)
    model = pixel_area_model(CRS.from_epsg(32618), t, 4, 4)
    assert model.row_areas_m2(0, 4, 0, 4) == pytest.approx([900.0] * 4, rel=1e-12)


def test_compound_crs_uses_horizontal_part() -> None:
    wkt = pyproj.CRS("EPSG:2229+5703").to_wkt()
    model = pixel_area_model(wkt, Affine(10, 0, 0, 0, -10, 0), 3, 3)
    assert model.kind == "projected"
    assert model.unit_to_m == pytest.approx(US_FOOT, rel=1e-9)


# --- geographic -------------------------------------------------------------------------------


@pytest.mark.parametrize("north", [0.5, 45.0, 80.5, -44.5, -79.5, 89.99])
def test_geographic_rows_match_geod_polygons(north: float) -> None:
    t = Affine(0.01, 0, 10.0, 0, -0.01, north)
    model = pixel_area_model(CRS.from_epsg(4326), t, 100, 100)
    assert model.kind == "geographic" and model.unit_to_m is None
    height = min(100, int(round((north + 90) / 0.01)))
    rows = model.row_areas_m2(0, height, 0, 100)
    assert rows.shape == (height,) and rows.dtype == np.float64
    for r in range(height):
        expected = geod_area(WGS84, *cell_corners(t, r, 0))
        assert rows[r] == pytest.approx(expected, rel=1e-6), (north, r)
    # Columns don't matter for a north-up raster.
    np.testing.assert_array_equal(model.row_areas_m2(0, height, 37, 38), rows)


def test_geographic_areas_shrink_toward_the_poles() -> None:
    north = pixel_area_model(CRS.from_epsg(4326), Affine(0.01, 0, 0, 0, -0.01, 90), 9000, 1)
    rows = north.row_areas_m2(0, 9000, 0, 1)
    assert np.all(np.diff(rows) > 0)  # row 0 is at the pole, areas grow toward the equator
    south = pixel_area_model(CRS.from_epsg(4326), Affine(0.01, 0, 0, 0, -0.01, 0), 9000, 1)
    srows = south.row_areas_m2(0, 9000, 0, 1)
    assert np.all(np.diff(srows) < 0)  # going south from the equator
    # Symmetric about the equator.
    np.testing.assert_allclose(srows, rows[::-1], rtol=1e-12)
    # An equator pixel is about 1.11 km x 1.11 km.
    assert srows[0] == pytest.approx(1113.2 * 1105.7, rel=1e-3)


@pytest.mark.parametrize("north", [1.0, 46.0, 81.0, -45.0])
def test_one_degree_window_sums_to_the_cell_area(north: float) -> None:
    t = Affine(0.01, 0, 10.0, 0, -0.01, north)
    model = pixel_area_model(CRS.from_epsg(4326), t, 100, 100)
    total = model.row_areas_m2(0, 100, 0, 100).sum() * 100
    # The cell bounded by parallels (geodesic polygon densified along them): near-exact.
    assert total == pytest.approx(geod_area(WGS84, *densified_cell(10.0, north, 1.0, 1000)), rel=1e-8)
    # The plain 4-corner geodesic polygon bulges poleward along its top and bottom edges, which
    # changes a 1° cell's area by ~1e-5 relative; still a match at that level.
    assert total == pytest.approx(geod_area(WGS84, *cell_corners(t, 0, 0, 100, 100)), rel=1e-4)


def test_whole_ellipsoid_area() -> None:
    model = pixel_area_model(CRS.from_epsg(4326), Affine(360, 0, -180, 0, -180, 90), 1, 1)
    a, es = WGS84.a, WGS84.es
    e = math.sqrt(es)
    expected = 2 * math.pi * a**2 * (1 + (1 - es) / e * math.atanh(e))
    assert model.row_areas_m2(0, 1, 0, 1)[0] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(510_065_621.7e6, rel=1e-9)


def test_uses_the_crs_own_ellipsoid() -> None:
    # NAD27 is on Clarke 1866, noticeably different from WGS84 at this precision.
    t = Affine(0.01, 0, -100.0, 0, -0.01, 40.0)
    rows = pixel_area_model(CRS.from_epsg(4267), t, 10, 10).row_areas_m2(0, 10, 0, 10)
    clarke = pyproj.Geod(ellps="clrk66")
    for r in range(10):
        assert rows[r] == pytest.approx(geod_area(clarke, *cell_corners(t, r, 0)), rel=1e-6)
    wgs = pixel_area_model(CRS.from_epsg(4326), t, 10, 10).row_areas_m2(0, 10, 0, 10)
    assert not np.allclose(rows, wgs, rtol=1e-6, atol=0)


def test_sphere_matches_closed_form() -> None:
    radius = 6_371_000.0
    wkt = pyproj.CRS("+proj=longlat +R=6371000 +no_defs").to_wkt()
    t = Affine(0.5, 0, 0, 0, -0.5, 60.0)
    rows = pixel_area_model(wkt, t, 8, 8).row_areas_m2(0, 8, 0, 8)
    lat = 60.0 - 0.5 * np.arange(9)
    expected = radius**2 * math.radians(0.5) * (np.sin(np.radians(lat[:-1])) - np.sin(np.radians(lat[1:])))
    np.testing.assert_allclose(rows, expected, rtol=1e-12)


@pytest.mark.parametrize("deg", [1e-6, 1e-8])
def test_tiny_pixels_keep_precision(deg: float) -> None:
    # 1e-6° pixels (~0.1 m): a naive difference of band areas would lose ~10 digits here.
    t = Affine(deg, 0, 0, 0, -deg, 30.0)
    rows = pixel_area_model(CRS.from_epsg(4326), t, 3, 3).row_areas_m2(0, 3, 0, 3)
    a, es = WGS84.a, WGS84.es
    for r in range(3):
        phi = math.radians(30.0 - deg * (r + 0.5))
        w = 1 - es * math.sin(phi) ** 2
        m_radius, n_radius = a * (1 - es) / w**1.5, a / w**0.5
        expected = m_radius * n_radius * math.cos(phi) * math.radians(deg) ** 2
        assert rows[r] == pytest.approx(expected, rel=1e-12)


def test_geographic_pixel_size_is_centre_row() -> None:
    t = Affine(0.01, 0, 0, 0, -0.01, 50.0)
    model = pixel_area_model(CRS.from_epsg(4326), t, 101, 7)
    centre = model.row_areas_m2(50, 51, 0, 7)[0]
    assert model.pixel_size_m() == pytest.approx(math.sqrt(centre), rel=1e-12)
    assert 700 < model.pixel_size_m() < 1000  # ~0.72 km x 1.11 km at 49.5°N


def test_rotated_geographic_row_means_match_geod() -> None:
    theta = math.radians(30)
    s = 0.01
    t = Affine(s * math.cos(theta), -s * math.sin(theta), 10.0, s * math.sin(theta), -s * math.cos(theta), 60.0)
    model = pixel_area_model(CRS.from_epsg(4326), t, 50, 40)
    rows = model.row_areas_m2(3, 7, 5, 45)
    assert rows.shape == (4,)
    for i, r in enumerate(range(3, 7)):
        per_pixel = [geod_area(WGS84, *cell_corners(t, r, c)) for c in range(5, 45)]
        assert rows[i] == pytest.approx(np.mean(per_pixel), rel=1e-6)
    # Rotation moves pixels in latitude along a row, so the mean depends on the columns.
    assert model.row_areas_m2(3, 4, 0, 1)[0] != pytest.approx(model.row_areas_m2(3, 4, 30, 31)[0], rel=1e-6)


def test_rotated_90_degrees_and_nearly_north_up() -> None:
    # Columns step in latitude, rows in longitude: each row's mean is the mean of the band areas.
    t90 = Affine(0, 0.01, 10.0, -0.01, 0, 45.0)
    rows90 = pixel_area_model(CRS.from_epsg(4326), t90, 5, 20).row_areas_m2(0, 5, 0, 20)
    north_up = pixel_area_model(CRS.from_epsg(4326), Affine(0.01, 0, 10.0, 0, -0.01, 45.0), 20, 5)
    bands = north_up.row_areas_m2(0, 20, 0, 5)
    np.testing.assert_allclose(rows90, np.full(5, bands.mean()), rtol=1e-12)
    # A 1e-9 rotation term changes nothing measurable.
    tilt = Affine(0.01, 1e-9, 10.0, 1e-9, -0.01, 45.0)
    tilted = pixel_area_model(CRS.from_epsg(4326), tilt, 20, 5).row_areas_m2(0, 20, 0, 5)
    np.testing.assert_allclose(tilted, bands, rtol=1e-7)


def test_pixels_past_the_pole_are_clipped_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    t = Affine(1.0, 0, 0, 0, -1.0, 91.0)
    with caplog.at_level(logging.WARNING, logger="common.areas"):
        model = pixel_area_model(CRS.from_epsg(4326), t, 3, 1)
    assert any("pole" in rec.getMessage() for rec in caplog.records)
    rows = model.row_areas_m2(0, 3, 0, 1)
    assert rows[0] == 0.0
    inside = pixel_area_model(CRS.from_epsg(4326), Affine(1.0, 0, 0, 0, -1.0, 90.0), 2, 1).row_areas_m2(0, 2, 0, 1)
    np.testing.assert_allclose(rows[1:], inside, rtol=1e-12)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="common.areas"):
        # Global rasters often overshoot the poles by float noise: no warning for that.
        pixel_area_model(CRS.from_epsg(4326), Affine(0.1, 0, -180, 0, -0.1, 90.0 + 1e-12), 1800, 3600)
    assert not caplog.records


def test_geographic_rows_for_a_large_window() -> None:
    model = pixel_area_model(CRS.from_epsg(4326), Affine(1e-4, 0, 0, 0, -1e-4, 60.0), 10_000, 10_000)
    rows = model.row_areas_m2(0, 10_000, 0, 10_000)
    assert rows.shape == (10_000,) and np.all(rows > 0)
    assert np.all(np.diff(rows) > 0), "southward rows (towards the equator) grow"


# --- no CRS and unsupported CRSs ---------------------------------------------------------------


@pytest.mark.parametrize("crs", [None, CRS()])
def test_no_crs(crs: CRS | None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="common.areas"):
        model = pixel_area_model(crs, Affine.identity(), 4, 4)
    assert model.kind == "none"
    assert model.crs_wkt is None and model.unit_to_m is None
    assert any("null" in rec.getMessage() for rec in caplog.records)
    assert model.row_areas_m2(0, 4, 0, 4) is None
    assert model.pixel_size_m() is None
    labels = np.array([[0, 1, 1, 2]] * 4, dtype=np.uint8)
    valid = np.ones((4, 4), dtype=bool)
    valid[0, 1] = False
    counts, areas = class_areas_m2(labels, valid, 3, model.row_areas_m2(0, 4, 0, 4))
    np.testing.assert_array_equal(counts, [4, 7, 4])
    assert areas is None


def test_gsd_gives_a_raster_without_a_crs_square_pixels_of_that_edge() -> None:
    model = pixel_area_model(None, Affine.identity(), 4, 5, gsd_m=0.04)
    assert model.kind == "gsd" and model.pixel_size_m() == 0.04
    np.testing.assert_array_equal(model.row_areas_m2(1, 3, 0, 5), [0.04 ** 2] * 2)
    labels = np.array([[0, 1, 1, 2, 2]] * 4, dtype=np.uint8)
    counts, areas = class_areas_m2(labels, np.ones((4, 5), bool), 3, model.row_areas_m2(0, 4, 0, 5))
    np.testing.assert_array_equal(counts, [4, 8, 8])
    np.testing.assert_allclose(areas, [4 * 0.0016, 8 * 0.0016, 8 * 0.0016])
    # A CRS always wins over --gsd: a 2 m UTM grid keeps its 4 m² pixels.
    utm = pixel_area_model(CRS.from_epsg(32633), Affine(2, 0, 500000, 0, -2, 4e6), 4, 4, gsd_m=0.04)
    assert utm.kind == "projected" and utm.pixel_size_m() == 2.0
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(AreaError, match="--gsd"):
            pixel_area_model(None, Affine.identity(), 4, 4, gsd_m=bad)


def test_geocentric_crs_is_refused() -> None:
    with pytest.raises(AreaError, match=r"WGS 84.*can't be computed"):
        pixel_area_model(CRS.from_epsg(4978), Affine(1, 0, 0, 0, -1, 0), 2, 2)


def test_engineering_crs_is_refused() -> None:
    wkt = (
        'ENGCRS["Site grid",EDATUM["site"],CS[Cartesian,2],'
        'AXIS["x",east,LENGTHUNIT["metre",1]],AXIS["y",north,LENGTHUNIT["metre",1]]]'
    )
    with pytest.raises(AreaError, match=r"Site grid.*can't be computed"):
        pixel_area_model(wkt, Affine(1, 0, 0, 0, -1, 0), 2, 2)


def test_degenerate_transform_and_bad_window() -> None:
    with pytest.raises(AreaError, match="degenerate"):
        pixel_area_model(CRS.from_epsg(32618), Affine(30, 0, 0, 0, 0, 0), 2, 2)
    model = pixel_area_model(CRS.from_epsg(32618), Affine(30, 0, 0, 0, -30, 0), 2, 2)
    with pytest.raises(AreaError):
        model.row_areas_m2(5, 4, 0, 1)
    assert model.row_areas_m2(2, 2, 0, 1).shape == (0,)
    with pytest.raises(AreaError):
        PixelAreaModel("planar", None, (1, 0, 0, 0, -1, 0), None)


# --- class areas ------------------------------------------------------------------------------


def test_invalid_pixels_are_excluded_with_varying_row_areas() -> None:
    labels = np.array([[0, 1, 2], [2, 2, 1], [0, 0, 0]], dtype=np.uint8)
    valid = np.array([[True, False, True], [True, True, True], [False, False, True]])
    row_areas = np.array([1.0, 10.0, 100.0])
    counts, areas = class_areas_m2(labels, valid, 3, row_areas)
    np.testing.assert_array_equal(counts, [2, 1, 3])
    np.testing.assert_allclose(areas, [1.0 + 100.0, 10.0, 1.0 + 20.0], rtol=0, atol=0)


def test_out_of_range_labels() -> None:
    labels = np.array([[0, 5], [1, 1]], dtype=np.uint8)
    valid = np.ones((2, 2), dtype=bool)
    with pytest.raises(AreaError, match="5"):
        class_areas_m2(labels, valid, 3, np.ones(2))
    with pytest.raises(AreaError, match="5"):
        class_areas_m2(labels, valid, 3, None)
    # Out of range only under invalid pixels: ignored.
    valid[0, 1] = False
    counts, areas = class_areas_m2(labels, valid, 3, np.ones(2))
    np.testing.assert_array_equal(counts, [1, 2, 0])
    with pytest.raises(AreaError, match="-1"):
        class_areas_m2(np.array([[-1, 0]], dtype=np.int16), np.ones((1, 2), bool), 3, None)


def test_bad_inputs() -> None:
    valid = np.ones((2, 2), dtype=bool)
    with pytest.raises(AreaError):
        class_areas_m2(np.zeros((2, 2), np.float32), valid, 3, None)
    with pytest.raises(AreaError):
        class_areas_m2(np.zeros((2, 3), np.uint8), valid, 3, None)
    with pytest.raises(AreaError):
        class_areas_m2(np.zeros((2, 2), np.uint8), valid, 3, np.ones(3))
    with pytest.raises(AreaError):
        class_areas_m2(np.zeros((2, 2), np.uint8), valid, 0, None)


def test_empty_block_and_all_256_labels() -> None:
    counts, areas = class_areas_m2(np.zeros((0, 0), np.uint8), np.zeros((0, 0), bool), 2, np.zeros(0))
    np.testing.assert_array_equal(counts, [0, 0])
    np.testing.assert_array_equal(areas, [0.0, 0.0])
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    counts, areas = class_areas_m2(labels, np.ones((16, 16), bool), 256, np.full(16, 2.0))
    np.testing.assert_array_equal(counts, np.ones(256))
    np.testing.assert_array_equal(areas, np.full(256, 2.0))


def test_class_areas_on_2048_block() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(2048, 2048), dtype=np.uint8)
    valid = rng.random((2048, 2048)) > 0.2
    row_areas = np.linspace(800.0, 900.0, 2048)
    counts, areas = class_areas_m2(labels, valid, 6, row_areas)
    expected_counts = np.array([np.count_nonzero(valid & (labels == k)) for k in range(6)])
    np.testing.assert_array_equal(counts, expected_counts)
    expected_areas = [(row_areas[:, None] * (valid & (labels == k))).sum() for k in range(6)]
    np.testing.assert_allclose(areas, expected_areas, rtol=1e-12)


@st.composite
def blocks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    num_classes = draw(st.integers(1, 7))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12))
    labels = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, num_classes - 1)))
    valid = draw(hnp.arrays(np.bool_, shape))
    row_areas = draw(hnp.arrays(np.float64, (shape[0],), elements=st.floats(0.0, 1e7, allow_nan=False)))
    return labels, valid, num_classes, row_areas


@settings(max_examples=150, deadline=None)
@given(blocks())
def test_counts_and_areas_sum_property(block: tuple[np.ndarray, np.ndarray, int, np.ndarray]) -> None:
    labels, valid, num_classes, row_areas = block
    counts, areas = class_areas_m2(labels, valid, num_classes, row_areas)
    assert counts.shape == (num_classes,) and counts.dtype == np.int64
    assert areas.shape == (num_classes,) and areas.dtype == np.float64
    assert counts.sum() == valid.sum()
    assert areas.sum() == pytest.approx((valid * row_areas[:, None]).sum(), rel=1e-9, abs=1e-6)
    for k in range(num_classes):
        mask = valid & (labels == k)
        assert counts[k] == mask.sum()
        assert areas[k] == pytest.approx((mask * row_areas[:, None]).sum(), rel=1e-9, abs=1e-6)
    no_area_counts, no_areas = class_areas_m2(labels, valid, num_classes, None)
    np.testing.assert_array_equal(no_area_counts, counts)
    assert no_areas is None


# --- pickling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crs", "transform"),
    [
        (CRS.from_epsg(32618), Affine(30, 0, 500_000, 0, -30, 4_500_000)),
        (CRS.from_epsg(2229), Affine(10, 0, 0, 0, -10, 0)),
        (CRS.from_epsg(4326), Affine(0.01, 0, 10, 0, -0.01, 50)),
        (CRS.from_epsg(4326), Affine(0.008, -0.006, 10, 0.006, 0.008, 50)),
        (None, Affine.identity()),
    ],
)
def test_pickle_round_trip(crs: CRS | None, transform: Affine) -> None:
    model = pixel_area_model(crs, transform, 20, 30)
    clone = pickle.loads(pickle.dumps(model))
    assert clone == model
    assert isinstance(clone.transform, tuple) and all(type(v) is float for v in clone.transform)
    assert clone.crs_wkt is None or isinstance(clone.crs_wkt, str)
    before, after = model.row_areas_m2(0, 20, 0, 30), clone.row_areas_m2(0, 20, 0, 30)
    if before is None:
        assert after is None
    else:
        np.testing.assert_array_equal(before, after)
    assert clone.pixel_size_m() == model.pixel_size_m()


def test_a_raster_wholly_past_a_pole_is_refused() -> None:
    # Projected numbers under a geographic CRS: not on the earth, so no area at all (not zero).
    with pytest.raises(AreaError, match=r"latitude .*wholly beyond ±90°"):
        pixel_area_model(CRS.from_epsg(4326), Affine(1.0, 0, 500000, 0, -1.0, 4000000), 30, 40)
    with pytest.raises(AreaError, match="wholly beyond"):
        pixel_area_model(CRS.from_epsg(4326), Affine(1.0, 0, 0, 0, -1.0, -91.0), 3, 3)
    assert pixel_area_model(CRS.from_epsg(4326), Affine(1.0, 0, 0, 0, -1.0, 91.0), 3, 1).kind == "geographic"


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2 ** 32 - 1), st.booleans())
def test_uint8_class_counts_equal_a_plain_histogram(h: int, w: int, k: int, seed: int, geographic: bool) -> None:
    """uint8 labels of a few classes are counted class by class (common/areas.py): the same counts
    and areas as a plain per-row histogram, with and without invalid pixels and varying rows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, (h, w), dtype=np.uint8)
    valid = rng.random((h, w)) > 0.3
    rows = rng.uniform(0.1, 2.0, h) if geographic else np.full(h, 0.25)
    counts, areas = class_areas_m2(labels, valid, k, rows)
    per_row = np.array([[np.sum((labels[r] == c) & valid[r]) for c in range(k)] for r in range(h)])
    np.testing.assert_array_equal(counts, per_row.sum(axis=0))
    assert areas is not None
    np.testing.assert_allclose(areas, rows @ per_row, rtol=1e-12)
    assert class_areas_m2(labels, np.ones((h, w), bool), k, None)[0].tolist() == np.bincount(labels.ravel(), minlength=k).tolist()
