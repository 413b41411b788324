"""Tile discovery: ids, band matching, scaling, validity and header checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from common.windows import Window
from model.card import load_card
from tests.models import write_binning_model
from tests.rasters import write_raster
from transforms.read import read_window
from transforms.tiles import TileError, describe_tile, match_bands, parse_bands, tile_id_for

RGB = ("red", "green", "blue")


def test_tile_ids_are_relative_paths_without_extension() -> None:
    assert tile_id_for("/data/in/a/x.tif", "/data/in") == "a/x"
    assert tile_id_for("/data/in/b/x.tif", "/data/in") == "b/x"
    assert tile_id_for("gs://bkt/tiles/2026/x.tiff", "gs://bkt/tiles") == "2026/x"
    assert tile_id_for("/elsewhere/y.tif", "/data/in") == "elsewhere/y"


def test_colliding_stems_keep_their_extension() -> None:
    from transforms.tiles import tile_ids

    ids = tile_ids(["/in/a/x.tif", "/in/a/x.png", "/in/b/x.tif", "/in/c.jpg"], "/in")
    assert ids == {"/in/a/x.tif": "a/x.tif", "/in/a/x.png": "a/x.png", "/in/b/x.tif": "b/x", "/in/c.jpg": "c"}


def test_tile_ids_stay_unique_when_kept_extensions_collide_again() -> None:
    from transforms.tiles import tile_ids

    uris = ["/in/x.tif", "/in/x.png", "/in/x.png.tif", "/in/x.png.tif.tif", "/in/y.tif"]
    ids = tile_ids(uris, "/in")
    assert len(set(ids.values())) == len(uris)
    assert ids == {"/in/x.tif": "x.tif", "/in/x.png": "x.png", "/in/x.png.tif": "x.png.tif",
                   "/in/x.png.tif.tif": "x.png.tif.tif", "/in/y.tif": "y"}


def test_band_matching_by_colour_interpretation(caplog: pytest.LogCaptureFixture) -> None:
    assert match_bands(["red", "green", "blue"], RGB, "f") == (1, 2, 3)
    assert match_bands(["blue", "green", "red", "alpha"], RGB, "f") == (3, 2, 1)
    assert match_bands(["gray"], RGB, "f") == (1, 1, 1)
    assert "replicating" in caplog.text
    assert match_bands(["gray", "alpha"], RGB, "f") == (1, 1, 1)
    assert match_bands(["undefined"] * 3, RGB, "f") == (1, 2, 3)
    assert match_bands(["gray"], ("gray",), "f") == (1,)
    assert match_bands(["red", "green", "blue"], RGB, "f", override=(3, 2, 1)) == (3, 2, 1)
    with pytest.raises(TileError, match=r"f: cannot match its 2 band\(s\).*--bands"):
        match_bands(["gray", "undefined"], RGB, "f")
    with pytest.raises(TileError, match="has 3 bands"):
        match_bands(["red", "green", "blue"], RGB, "f", override=(4, 2, 1))


def test_parse_bands() -> None:
    assert parse_bands("3,2,1") == (3, 2, 1) and parse_bands(None) is None
    with pytest.raises(ValueError, match="start at 1"):
        parse_bands("0,1,2")
    with pytest.raises(ValueError, match="separated by commas"):
        parse_bands("r,g,b")


def _tif(path: Path, data: np.ndarray, **kw: object) -> str:
    return write_raster(path, data, **{"transform": from_origin(0, 100, 1, 1), **kw})


@pytest.fixture
def card(tmp_path: Path):  # type: ignore[no-untyped-def]
    write_binning_model(str(tmp_path / "m"))
    return load_card(str(tmp_path / "m"))


def test_uint16_scaling_respects_nbits(tmp_path: Path, card) -> None:  # type: ignore[no-untyped-def]
    data = np.full((3, 4, 4), 4095, np.uint16)
    plain = describe_tile(_tif(tmp_path / "a.tif", data, photometric="RGB"), str(tmp_path), card,
                          radiometry_mode="none")
    assert plain.scale_divisor == card.normalisation.divisor_for("uint16")
    inferred = describe_tile(_tif(tmp_path / "c.tif", data, photometric="RGB"), str(tmp_path), card)
    assert inferred.scale_divisor == 4095.0 and inferred.radiometry.startswith("inferred 12-bit")
    twelve = describe_tile(_tif(tmp_path / "b.tif", data, photometric="RGB", nbits=12), str(tmp_path), card)
    assert twelve.scale_divisor == 4095.0


def test_nodata_alpha_and_nan_validity(tmp_path: Path, card) -> None:  # type: ignore[no-untyped-def]
    data = np.arange(3 * 5 * 6, dtype=np.uint8).reshape(3, 5, 6) + 1
    data[:, 0, 0] = 0  # nodata in all bands: invalid
    data[0, 1, 1] = 0  # nodata in one band only: still valid
    uri = _tif(tmp_path / "n.tif", data, nodata=0, photometric="RGB")
    tile = describe_tile(uri, str(tmp_path), card)
    assert tile.mask_kind == "nodata"
    with rasterio.open(uri) as src:
        raw, valid = read_window(src, tile, Window(0, 0, 5, 6))
    assert not valid[0, 0] and valid[1, 1] and valid.sum() == 29
    np.testing.assert_array_equal(raw, np.moveaxis(data, 0, -1))

    rgba = np.concatenate([data, np.full((1, 5, 6), 255, np.uint8)])
    rgba[3, 2:, :] = 0
    uri = _tif(tmp_path / "a.tif", rgba, photometric="RGB", alpha="YES")
    tile = describe_tile(uri, str(tmp_path), card)
    assert tile.mask_kind == "gdal" and tile.bands == (1, 2, 3)
    with rasterio.open(uri) as src:
        _, valid = read_window(src, tile, Window(0, 0, 5, 6))
    assert valid[:2].all() and not valid[2:].any()

    flt = np.ones((1, 3, 3), np.float32)
    flt[0, 1, 1] = np.nan
    uri = _tif(tmp_path / "f.tif", flt, crs=None, transform=None)
    tile = describe_tile(uri, str(tmp_path), card)
    with rasterio.open(uri) as src:
        raw, valid = read_window(src, tile, Window(0, 0, 3, 3))
    assert raw.shape == (3, 3, 3) and not valid[1, 1] and valid.sum() == 8 and np.isfinite(raw).all()
    assert tile.crs_wkt is None


def test_window_past_the_tile_is_mirrored_and_invalid(tmp_path: Path, card) -> None:  # type: ignore[no-untyped-def]
    data = np.random.default_rng(0).integers(1, 255, (3, 5, 7), dtype=np.uint8)
    uri = _tif(tmp_path / "s.tif", data, photometric="RGB")
    tile = describe_tile(uri, str(tmp_path), card)
    with rasterio.open(uri) as src:
        raw, valid = read_window(src, tile, Window(0, 0, 16, 16))
    assert raw.shape == (16, 16, 3) and valid[:5, :7].all() and valid.sum() == 35
    np.testing.assert_array_equal(raw[5], raw[4])  # symmetric padding


def test_header_problems_are_tile_errors(tmp_path: Path, card) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "z.tif").write_bytes(b"")
    with pytest.raises(TileError, match="empty"):
        describe_tile(str(tmp_path / "z.tif"), str(tmp_path), card)
    with pytest.raises(TileError, match="not found"):
        describe_tile(str(tmp_path / "missing.tif"), str(tmp_path), card)
    cplx = _tif(tmp_path / "c.tif", np.ones((3, 2, 2), np.complex64))
    with pytest.raises(TileError, match="complex"):
        describe_tile(cplx, str(tmp_path), card)
