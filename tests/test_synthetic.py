"""The synthetic aerial scene generator (demo scene, and a quarter of the aerial model's training crops)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from common.synthetic import CLASSES, render_window, write_scene


def from_origin(west: float, north: float, xsize: float, ysize: float) -> Affine:
    return Affine(xsize, 0.0, west, 0.0, -ysize, north)


def test_classes_match_the_dubai_class_map():
    assert CLASSES == (
        ("Building", (60, 16, 152)),
        ("Land (unpaved area)", (132, 41, 246)),
        ("Road", (110, 193, 228)),
        ("Vegetation", (254, 221, 58)),
        ("Water", (226, 169, 41)),
    )


def test_render_window_is_deterministic_and_typed():
    a_img, a_lab = render_window(3, 1000, 2000, 130, 170)
    b_img, b_lab = render_window(3, 1000, 2000, 130, 170)
    assert a_img.shape == (130, 170, 3) and a_img.dtype == np.uint8
    assert a_lab.shape == (130, 170) and a_lab.dtype == np.uint8
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert a_lab.max() < len(CLASSES)
    other, _ = render_window(4, 1000, 2000, 130, 170)
    assert not np.array_equal(a_img, other)


@pytest.mark.parametrize("seed, row, col", [(0, 0, 0), (7, 5003, 12011), (2, -700, -300)])
def test_windows_agree_with_a_window_containing_them(seed, row, col):
    big_img, big_lab = render_window(seed, row, col, 700, 900)
    for dr, dc, h, w in [(0, 0, 300, 450), (123, 457, 577, 443), (350, 1, 1, 899), (699, 899, 1, 1)]:
        img, lab = render_window(seed, row + dr, col + dc, h, w)
        np.testing.assert_array_equal(img, big_img[dr:dr + h, dc:dc + w])
        np.testing.assert_array_equal(lab, big_lab[dr:dr + h, dc:dc + w])


def test_adjacent_windows_meet_at_the_seam():
    left_img, left_lab = render_window(1, 4000, 4000, 256, 300)
    right_img, right_lab = render_window(1, 4000, 4300, 256, 212)
    whole_img, whole_lab = render_window(1, 4000, 4000, 256, 512)
    np.testing.assert_array_equal(np.concatenate([left_img, right_img], axis=1), whole_img)
    np.testing.assert_array_equal(np.concatenate([left_lab, right_lab], axis=1), whole_lab)


def test_all_classes_present_with_plausible_shares():
    img, lab = render_window(0, 0, 0, 1024, 1024)
    share = np.bincount(lab.ravel(), minlength=len(CLASSES)) / lab.size
    assert len(share) == len(CLASSES)
    assert (share > 0.01).all(), dict(zip((n for n, _ in CLASSES), share.round(4)))
    # Not colour-thresholdable: classes overlap in colour, but each has its own typical colour.
    means = np.array([img[lab == k].mean(0) for k in range(len(CLASSES))])
    assert means[3, 1] > means[3, 0]  # vegetation is green
    assert means[4, 2] > means[4, 0]  # water is blue


def test_resolution_scales_the_layout():
    _, lab_half = render_window(0, 0, 0, 256, 256, resolution_m=0.5)
    _, lab_one = render_window(0, 0, 0, 128, 128, resolution_m=1.0)
    # the same ground at 1 m is the 0.5 m scene sampled every other pixel, up to the pixel centres
    agree = np.mean(lab_half[1::2, 1::2] == lab_one)
    assert agree > 0.9


def test_write_scene_georeferencing_tiling_and_pixels(tmp_path):
    image, labels = tmp_path / "scene.tif", tmp_path / "labels.tif"
    size = (1100, 1300)  # rows, cols: partial windows at the right and bottom
    write_scene(str(image), size, seed=5, labels_path=str(labels), block=1024)
    expected_transform = from_origin(300000.0, 2800000.0, 0.5, 0.5)
    with rasterio.open(image) as src:
        assert (src.height, src.width, src.count) == size + (3,)
        assert src.crs.to_epsg() == 32640 and src.crs.is_projected
        assert src.transform == expected_transform
        assert src.block_shapes == [(512, 512)] * 3
        assert src.dtypes == ("uint8",) * 3
        assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.compression.name == "deflate"
        window = Window(1000, 900, 300, 200)  # crosses write windows and tiles
        got = np.moveaxis(src.read(window=window), 0, -1)
        whole = np.moveaxis(src.read(), 0, -1)
    want_img, want_lab = render_window(5, 900, 1000, 200, 300)
    np.testing.assert_array_equal(got, want_img)
    np.testing.assert_array_equal(whole[:64, :64], render_window(5, 0, 0, 64, 64)[0])
    with rasterio.open(labels) as lab:
        assert (lab.height, lab.width, lab.count) == size + (1,)
        assert lab.crs == rasterio.crs.CRS.from_epsg(32640)
        assert lab.transform == expected_transform
        assert lab.block_shapes == [(512, 512)]
        assert lab.dtypes == ("uint8",)
        cmap = lab.colormap(1)
        for k, (_, colour) in enumerate(CLASSES):
            assert cmap[k][:3] == colour
        np.testing.assert_array_equal(lab.read(1, window=window), want_lab)


def test_write_scene_options(tmp_path):
    path = tmp_path / "small.tif"
    write_scene(str(path), 600, seed=1, crs="EPSG:3857", resolution_m=2.0, origin=(1000.0, 5000.0))
    with rasterio.open(path) as src:
        assert (src.height, src.width) == (600, 600)
        assert src.crs.to_epsg() == 3857
        assert src.transform == from_origin(1000.0, 5000.0, 2.0, 2.0)
        np.testing.assert_array_equal(np.moveaxis(src.read(window=Window(500, 500, 100, 100)), 0, -1),
                                      render_window(1, 500, 500, 100, 100, resolution_m=2.0)[0])
    assert not (tmp_path / "labels.tif").exists()
    with pytest.raises(ValueError):
        write_scene(str(tmp_path / "geo.tif"), 64, crs="EPSG:4326")
