"""The zone mapper (common/zones.py) on synthetic masks whose zones are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from rasterio.crs import CRS

from common.ground import GroundError, GroundMetric
from common.zones import ZoneRules, array_reader, disc_rows, map_zones, score

SAFE, CAUTION, HAZARD, WATER = 0, 1, 2, 3
NODATA = 255
GSD = 0.5


def rules(radius: float = 1.5, buffer: float = 2.0, water_buffer: float | None = None, default: float | None = None,
          min_area: float = 0.0, p: float = 1.0) -> ZoneRules:
    water = buffer if water_buffer is None else water_buffer
    return ZoneRules(roles=("safe", "caution", "hazard", "hazard"),
                     clearance_m=(radius + buffer, radius + buffer, radius + buffer, radius + water),
                     default_clearance_m=radius + (buffer if default is None else default), radius_m=radius,
                     min_area_m2=min_area, max_hazard_probability=p, nodata=NODATA)


def reader(labels: np.ndarray, prob: np.ndarray | None = None):
    return array_reader(labels, prob, NODATA)


def gsd_metric(shape: tuple[int, int], gsd: float = GSD) -> GroundMetric:
    return GroundMetric.of(None, (1, 0, 0, 0, 1, 0), shape[0], shape[1], gsd_m=gsd)


def run(labels: np.ndarray, r: ZoneRules, metric: GroundMetric | None = None, block: int = 1024,
        prob: np.ndarray | None = None, in_domain: bool | None = None):
    m = metric or gsd_metric(labels.shape)
    return map_zones(labels.shape[0], labels.shape[1], reader(labels, prob), m, r, block, in_domain, keep_mask=True)


def edge_distance(shape: tuple[int, int], gsd: float = GSD) -> np.ndarray:
    """Ground distance from each pixel centre to the nearest pixel centre beyond the raster (the
    mapper takes half a pixel off: a hazard covers its pixel)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return np.minimum.reduce([yy + 1, xx + 1, shape[0] - yy, shape[1] - xx]) * gsd


def test_one_hazard_pixel_in_a_safe_field_leaves_the_field_minus_a_disc() -> None:
    labels = np.full((200, 240), SAFE, np.uint8)
    labels[90, 130] = HAZARD
    z = run(labels, rules(radius=1.5, buffer=2.0, default=0.5))
    yy, xx = np.mgrid[0:200, 0:240]
    expected = (np.hypot(yy - 90, xx - 130) * GSD - GSD / 2 >= 3.5) & (edge_distance(labels.shape) - GSD / 2 >= 2.0)
    assert z.mask is not None
    np.testing.assert_array_equal(z.mask > 0, expected)
    assert len(z.zones) == 1
    zone = z.zones[0]
    assert zone.pixels == int(expected.sum())
    assert zone.area_m2 == pytest.approx(expected.sum() * GSD**2)
    assert zone.geometry.is_valid and zone.geometry.area == pytest.approx(expected.sum())  # pixel units
    assert zone.caution_share == 0.0 and zone.mean_hazard_probability is None
    assert z.hazard_area_m2 == pytest.approx(GSD**2)
    assert z.assessed_area_m2 == pytest.approx(200 * 240 * GSD**2)


def test_a_corridor_narrower_than_twice_the_clearance_has_no_zone() -> None:
    c = 1.5 + 2.0
    for width_px, zones in ((int(2 * c / GSD) - 1, 0), (int(2 * c / GSD) + 6, 1)):
        labels = np.full((120, 300), HAZARD, np.uint8)
        labels[60 - width_px // 2: 60 - width_px // 2 + width_px, :] = SAFE
        z = run(labels, rules())
        # the corridor runs off both ends of the raster: beyond the edge is hazard too
        assert len(z.zones) == zones, width_px


def test_zones_do_not_depend_on_the_block_size() -> None:
    rng = np.random.default_rng(3)
    labels = np.full((333, 410), SAFE, np.uint8)
    for _ in range(25):  # buildings, water and roads scattered over the field
        r, c, h, w = rng.integers(0, 320), rng.integers(0, 400), rng.integers(3, 30), rng.integers(3, 30)
        labels[r:r + h, c:c + w] = rng.choice([HAZARD, WATER, CAUTION])
    labels[:, 200:203] = NODATA  # a nodata seam
    prob = rng.integers(0, 100, labels.shape).astype(np.uint8)
    prob[50:53, 300:304] = 140  # probably a hazard
    r = rules(water_buffer=5.0, min_area=20.0, p=0.45)
    ref = run(labels, r, prob=prob)
    assert len(ref.zones) >= 2
    for block in (64, 97, 150):
        z = run(labels, r, block=block, prob=prob)
        assert z.blocks > 1
        np.testing.assert_array_equal(z.mask, ref.mask)
        assert [q.touchdown for q in z.zones] == [q.touchdown for q in ref.zones]
        for a, b in zip(z.zones, ref.zones):
            assert a.clearance_m == b.clearance_m
            assert a.pixels == b.pixels
            assert a.area_m2 == pytest.approx(b.area_m2, rel=1e-12)
            assert a.caution_share == pytest.approx(b.caution_share, rel=1e-12)
            assert a.mean_hazard_probability == pytest.approx(b.mean_hazard_probability, rel=1e-12)
            assert a.geometry.symmetric_difference(b.geometry).area == 0
            assert a.geometry.is_valid


def test_nodata_and_the_tile_edge_are_hazards_with_the_default_buffer() -> None:
    labels = np.full((100, 100), SAFE, np.uint8)
    labels[:, :10] = NODATA
    r = rules(radius=1.0, buffer=0.0, default=3.0)  # centres 4 m from nodata and the edge
    z = run(labels, r)
    assert z.mask is not None
    cols = np.flatnonzero((z.mask > 0).any(axis=0))
    rows = np.flatnonzero((z.mask > 0).any(axis=1))
    # 4 m from the edge of the last nodata column (index 9) and from the raster's edges
    assert cols[0] == 10 + 8 and cols[-1] == 100 - 8 - 1
    assert rows[0] == 8 and rows[-1] == 100 - 8 - 1
    assert z.assessed_area_m2 == pytest.approx(90 * 100 * GSD**2)


def test_an_all_nodata_tile_has_no_zone_and_nothing_assessed() -> None:
    z = run(np.full((50, 60), NODATA, np.uint8), rules())
    assert z.zones == [] and z.assessed_area_m2 == 0.0


def test_small_fields_are_not_zones_and_the_touchdown_is_the_farthest_centre() -> None:
    labels = np.full((100, 200), HAZARD, np.uint8)
    labels[10:30, 10:30] = SAFE      # 10 m square: centres 3.5 m from its edges form a 3 m square, 9 m² < 20
    labels[40:56, 100:190] = SAFE    # 8 x 45 m strip: clearance below the horizon (7 m), exact
    z = run(labels, rules(min_area=20.0))
    assert len(z.zones) == 1
    zone = z.zones[0]
    row, col = zone.touchdown
    assert row == 47  # the middle rows of the strip (16 px: rows 40-55) tie: the first
    assert zone.clearance_m == pytest.approx(min(row - 39, 56 - row) * GSD - GSD / 2)
    assert zone.clearance_m < z.horizon_m


def test_a_big_field_lands_in_its_middle_with_a_lower_bound_of_its_clearance() -> None:
    labels = np.full((300, 400), HAZARD, np.uint8)
    labels[40:240, 60:360] = SAFE    # 100 x 150 m: every centre deeper than the 7 m horizon ties there
    z = run(labels, rules())
    zone = z.zones[0]
    row, col = zone.touchdown
    assert abs(row - 139.5) <= 16 and abs(col - 209.5) <= 16
    true = min(row - 39, 240 - row, col - 59, 360 - col) * GSD - GSD / 2
    assert z.horizon_m < zone.clearance_m <= true
    assert zone.clearance_m >= true - 16 * GSD * math.sqrt(2) - 16 * GSD  # cell diagonal and cell size
    for block in (64, 100):
        other = run(labels, rules(), block=block).zones[0]
        assert (other.touchdown, other.clearance_m) == (zone.touchdown, zone.clearance_m)


def test_a_zone_across_four_blocks_is_one_row() -> None:
    labels = np.full((120, 120), SAFE, np.uint8)
    z = run(labels, rules(), block=50)
    assert z.blocks == 9 and len(z.zones) == 1
    assert z.zones[0].geometry.geom_type == "Polygon"


def test_probability_hazards_shrink_the_zones() -> None:
    labels = np.full((100, 100), SAFE, np.uint8)
    prob = np.full((100, 100), 10, np.uint8)
    prob[50, 50] = 200  # the model is 78 % sure there is a building here
    at_one = run(labels, rules(), prob=prob)
    strict = run(labels, rules(p=0.5), prob=prob)
    loose = run(labels, rules(p=0.9), prob=prob)
    assert at_one.mask is not None and strict.mask is not None and loose.mask is not None
    np.testing.assert_array_equal(loose.mask > 0, at_one.mask > 0)
    assert not strict.mask[50, 50] and (strict.mask > 0).sum() < (at_one.mask > 0).sum()
    assert ((strict.mask > 0) <= (at_one.mask > 0)).all()
    # the mean hazard probability within R of the centres is kept
    assert strict.zones[0].mean_hazard_probability == pytest.approx(10 / 255)


def test_caution_share_and_score() -> None:
    labels = np.full((80, 80), CAUTION, np.uint8)
    z = run(labels, rules())
    assert z.zones[0].caution_share == pytest.approx(1.0)
    assert z.zones[0].score == pytest.approx(score(z.zones[0].clearance_m, 1.0, None, z.horizon_m, None))
    flagged = run(labels, rules(), in_domain=False)
    assert flagged.zones[0].score == pytest.approx(z.zones[0].score / 2)
    assert score(100.0, 0.0, 0.0, 10.0, True) == 1.0
    assert score(5.0, 0.5, 0.2, 10.0, True) == pytest.approx(0.5 * 0.75 * 0.8)


def test_disc_rows_cover_the_pixels_within_the_radius() -> None:
    rows = disc_rows(1.5, 0.5, 0.5)
    cells = {(dy, dx) for dy, wx in rows for dx in range(-wx, wx + 1)}
    expected = {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if math.hypot(dy, dx) * 0.5 <= 1.5}
    assert cells == expected


def _disc_hole_area_m2(z) -> float:
    """Ground area of the non-admissible hole around the lone hazard (the zone's interior ring)."""
    return sum(shapely.Polygon(ring).area for ring in z.zones[0].geometry.interiors)


@pytest.mark.parametrize("epsg, lat", [(3857, 60.0), (4326, 45.0), (32633, 45.0)])
def test_geographic_and_mercator_tiles_measure_true_metres(epsg: int, lat: float) -> None:
    """The same 0.5 m ground grid in EPSG:3857 (scale sec(lat) taken out), EPSG:4326 (degrees) and
    UTM gives a disc of the same ground radius around a lone hazard, and the same zone area."""
    import pyproj

    shape = (160, 160)
    if epsg == 4326:
        dlat = GSD / 111132.954  # metres per degree of latitude at 45 degrees (WGS84)
        dlon = GSD / (111412.84 * math.cos(math.radians(45.0)) - 93.5 * math.cos(math.radians(135.0)))
        transform = (dlon, 0, 15.0, 0, -dlat, lat + shape[0] / 2 * dlat)
    elif epsg == 3857:
        k = 1 / math.cos(math.radians(lat))  # the spherical Mercator's scale at that latitude
        y = pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(10.0, lat)[1]
        transform = (GSD * k, 0, 1.0e6, 0, -GSD * k, y + shape[0] / 2 * GSD * k)
    else:
        transform = (GSD, 0, 500000.0, 0, -GSD, 4985000.0 + shape[0] / 2 * GSD)
    metric = GroundMetric.of(CRS.from_epsg(epsg).to_wkt(), transform, *shape)
    sy, sx = metric.sampling
    f = float(np.min(metric.factors(80, 81, 80, 81)))
    assert (sy * f, sx * f) == pytest.approx((GSD, GSD), rel=2e-3)  # reference metres times the factor
    labels = np.full(shape, SAFE, np.uint8)
    labels[80, 80] = HAZARD
    r = rules(radius=4.0, buffer=6.0, default=-3.5)  # the edge demands only 0.5 m
    z = run(labels, r, metric=metric)
    ref = run(labels, r, metric=gsd_metric(shape))
    assert len(z.zones) == len(ref.zones) == 1
    # the hole is the disc of 10 m ground radius, in pixels of 0.5 m
    assert _disc_hole_area_m2(z) == pytest.approx(_disc_hole_area_m2(ref), rel=0.02)
    assert z.zones[0].area_m2 == pytest.approx(ref.zones[0].area_m2, rel=5e-3)


def test_a_raster_without_crs_needs_a_gsd() -> None:
    with pytest.raises(GroundError, match="--gsd"):
        GroundMetric.of(None, (1, 0, 0, 0, 1, 0), 10, 10)
    with pytest.raises(GroundError, match="sheared"):
        GroundMetric.of(CRS.from_epsg(32633).to_wkt(), (0.5, 0.3, 0, 0, -0.5, 0), 10, 10)
