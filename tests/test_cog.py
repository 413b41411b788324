"""common/cog.py: overviews computed in numpy, written as a COG by GDAL's COG driver."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.shutil import copy as rio_copy

from common.cog import average_2x, mode_2x, overview_factors, write_cog

NODATA = 255


def _mode_by_hand(labels: np.ndarray, nodata: int) -> np.ndarray:
    """The documented rule, one output pixel at a time."""
    h, w = labels.shape
    out = np.full(((h + 1) // 2, (w + 1) // 2), nodata, np.uint8)
    for r, c in itertools.product(range(out.shape[0]), range(out.shape[1])):
        seen = [int(v) for v in labels[2 * r:2 * r + 2, 2 * c:2 * c + 2].ravel() if v != nodata]
        if seen:
            out[r, c] = max(seen, key=lambda v: (seen.count(v), -seen.index(v)))
    return out


@pytest.mark.parametrize("classes", [3, 15, 20])  # 20: beyond the lookup table, by comparison
@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (1, 1), (2, 5)])
def test_mode_is_the_most_frequent_valid_label_first_in_reading_order(classes: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(classes * 100 + shape[0])
    labels = rng.integers(0, classes, shape).astype(np.uint8)
    labels[rng.random(shape) < 0.2] = NODATA
    np.testing.assert_array_equal(mode_2x(labels, classes, NODATA), _mode_by_hand(labels, NODATA))


def test_mode_ties_and_nodata() -> None:
    labels = np.array([[1, 2, 4, NODATA, NODATA, NODATA],
                       [2, 1, NODATA, NODATA, NODATA, 3]], np.uint8)
    # 1 and 2 tie: 1 comes first; 4 is the only valid label; nothing valid; 3 alone.
    assert mode_2x(labels, 5, NODATA).tolist() == [[1, 4, 3]]
    assert mode_2x(labels[:, :4], 5, NODATA).tolist() == [[1, 4]]
    assert mode_2x(np.full((2, 2), NODATA, np.uint8), 5, NODATA).tolist() == [[NODATA]]


def test_average_rounds_half_up_over_the_pixels_inside() -> None:
    values = np.array([[0, 1, 10], [0, 1, 11], [200, 201, 255]], np.uint8)
    # (0+1+0+1)/4 = 0.5 → 1; the odd column averages 10 and 11 → 10.5 → 11; the odd row 200, 201
    # → 200.5 → 201; the corner is 255 alone.
    assert average_2x(values).tolist() == [[1, 11], [201, 255]]


def test_overview_factors_halve_until_one_block() -> None:
    assert overview_factors(16384, 16384, 512) == [2, 4, 8, 16, 32]
    assert overview_factors(512, 512, 512) == []
    assert overview_factors(513, 100, 512) == [2]
    assert overview_factors(3000, 700, 512) == [2, 4, 8]


def _mask(path: Path, labels: np.ndarray, crs: str | None, nodata: int | None = NODATA) -> None:
    h, w = labels.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": "uint8", "nodata": nodata,
               "transform": Affine(0.5, 0, 300000.0, 0, -0.5, 5000000.0) if crs != "EPSG:4326"
               else Affine(1e-5, 0, 10.0, 0, -1e-5, 50.0),
               "tiled": True, "blockxsize": 256, "blockysize": 256}
    if crs:
        profile["crs"] = CRS.from_string(crs)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels, 1)
        if nodata is not None:
            dst.write_colormap(1, {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (9, 9, 9)})
        dst.update_tags(TILESEG_RESULT='{"a": "<b> & c"}', OTHER="x")


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326", None])
def test_write_cog_is_a_cog_with_these_overviews_and_everything_else_kept(tmp_path: Path, crs: str | None) -> None:
    rng = np.random.default_rng(3)
    # Blocks of one class with noise, some nodata: ties and all-nodata windows both occur.
    labels = np.kron(rng.integers(0, 4, (20, 25)), np.ones((37, 41), np.int64)).astype(np.uint8)[:700, :1000]
    noise = rng.random(labels.shape) < 0.1
    labels[noise] = rng.integers(0, 4, int(noise.sum()))
    labels[:50, :80] = NODATA
    full, out = tmp_path / "full.tif", tmp_path / "mask.tif"
    _mask(full, labels, crs)
    write_cog(str(full), str(out), "mode", 256, num_classes=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.tif", "mask.tif"]  # no temporary left
    with rasterio.open(out) as cog, rasterio.open(full) as src:
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert cog.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert cog.block_shapes == [(256, 256)]
        assert cog.crs == src.crs and cog.transform == src.transform and cog.nodata == NODATA
        assert cog.tags()["TILESEG_RESULT"] == '{"a": "<b> & c"}' and cog.tags()["OTHER"] == "x"
        assert cog.colormap(1)[2] == (0, 0, 255, 255)
        np.testing.assert_array_equal(cog.read(1), labels)
        assert cog.overviews(1) == [2, 4]
        expected = labels
        for factor in cog.overviews(1):
            expected = _mode_by_hand(expected, NODATA) if factor == 2 else mode_2x(expected, 4, NODATA)
            got = cog.read(1, out_shape=expected.shape)
            np.testing.assert_array_equal(got, expected)


def test_the_overviews_agree_with_gdals_mode_where_there_is_no_tie(tmp_path: Path) -> None:
    # Windows of 2x2 with three or four equal labels have one mode whatever the tie rule.
    rng = np.random.default_rng(5)
    base = rng.integers(0, 5, (300, 400)).astype(np.uint8)
    labels = np.kron(base, np.ones((2, 2), np.uint8))
    flip = rng.random(base.shape) < 0.3
    labels[0::2, 0::2][flip] = (base[flip] + 1) % 5
    full, ours, gdal = tmp_path / "full.tif", tmp_path / "ours.tif", tmp_path / "gdal.tif"
    _mask(full, labels, "EPSG:32633")
    write_cog(str(full), str(ours), "mode", 256, num_classes=5)
    rio_copy(str(full), str(gdal), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256, OVERVIEW_RESAMPLING="MODE")
    with rasterio.open(ours) as a, rasterio.open(gdal) as b:
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        shape = (300, 400)
        np.testing.assert_array_equal(a.read(1, out_shape=shape), b.read(1, out_shape=shape))
        np.testing.assert_array_equal(a.read(1, out_shape=shape), base)


def test_average_overviews_for_probabilities(tmp_path: Path) -> None:
    values = np.random.default_rng(9).integers(0, 256, (600, 520)).astype(np.uint8)
    full, out = tmp_path / "full.tif", tmp_path / "hazard.tif"
    _mask(full, values, "EPSG:32633", nodata=None)
    write_cog(str(full), str(out), "average", 256)
    with rasterio.open(out) as cog:
        assert cog.nodata is None and cog.overviews(1) == [2, 4]
        np.testing.assert_array_equal(cog.read(1, out_shape=(300, 260)), average_2x(values))


def test_mode_needs_a_nodata_value_and_a_known_resampling(tmp_path: Path) -> None:
    full = tmp_path / "full.tif"
    _mask(full, np.zeros((600, 600), np.uint8), "EPSG:32633", nodata=None)
    with pytest.raises(ValueError, match="nodata"):
        write_cog(str(full), str(tmp_path / "a.tif"), "mode", 256, num_classes=3)
    with pytest.raises(ValueError, match="cubic"):
        write_cog(str(full), str(tmp_path / "b.tif"), "cubic", 256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.tif"]
