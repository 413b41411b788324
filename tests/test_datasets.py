"""Real-data checks for training.datasets: split sizes, label decoding and documented class shares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import datasets
from training.datasets import IGNORE, DatasetError, Sample

# Pixel shares (%) documented in the shared data README, over all pixels including unlabelled.
DUBAI_SHARES = (13.3, 52.4, 9.4, 10.3, 13.6)
CAMVID_SHARES = (16.8, 23.2, 1.0, 31.6, 4.5, 9.9, 1.2, 1.1, 5.9, 0.6, 0.3)
CAMVID_IGNORE_SHARE = 4.0
# background, person, bike, car, obstacle, construction, vegetation, road (all 171 frames)
AEROSCAPES_SHARES = (15.8, 0.9, 0.2, 0.7, 0.3, 0.3, 29.8, 52.0)


@pytest.fixture(scope="session")
def root() -> Path:
    """The real data folder, or skip when it is absent (e.g. on a machine without shared data)."""
    path = datasets.data_root()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}; set TILESEG_DATA to the shared data folder")
    return path


def _shares(name: str, samples: list[Sample]) -> np.ndarray:
    """Percentage of all pixels per label value, as a (256,) float array."""
    ds = datasets.spec(name)
    counts = np.zeros(256, dtype=np.int64)
    for sample in samples:
        counts += np.bincount(datasets.load_label(sample, ds).ravel(), minlength=256)
    return 100.0 * counts / counts.sum()


@pytest.fixture(scope="session")
def dubai_shares(root: Path) -> np.ndarray:
    """Shares over all 72 dubai masks; computed once per session (about 3 s)."""
    samples = datasets.split("dubai-aerial", "train", root=root) + datasets.split(
        "dubai-aerial", "val", root=root
    )
    assert len(samples) == 72
    return _shares("dubai-aerial", samples)


def test_dubai_split_sizes(root: Path) -> None:
    train = datasets.split("dubai-aerial", "train", root=root)
    val = datasets.split("dubai-aerial", "val", root=root)
    assert (len(train), len(val)) == (56, 16)
    assert not {s.name for s in train} & {s.name for s in val}
    assert all(s.name.endswith(("image_part_008", "image_part_009")) for s in val)


def test_aeroscapes_folds_leave_one_flight_out(root: Path) -> None:
    sizes = {"001101": 37, "040001": 71, "200002": 63}
    for fold, (_, flight) in enumerate(datasets.AEROSCAPES_FLIGHTS):
        train = datasets.split("aeroscapes", "train", fold, root=root)
        val = datasets.split("aeroscapes", "val", fold, root=root)
        assert {s.name.split("_")[0] for s in val} == {flight} and len(val) == sizes[flight]
        assert flight not in {s.name.split("_")[0] for s in train}  # never frames of the held-out flight
        assert len(train) + len(val) == 171
    with pytest.raises(DatasetError, match="fold must be 0..2"):
        datasets.split("aeroscapes", "val", 3, root=root)
    # No fold held out (the shipped model): every frame trains, nothing is val.
    assert len(datasets.split("aeroscapes", "train", None, root=root)) == 171
    assert datasets.split("aeroscapes", "val", None, root=root) == []


def test_aeroscapes_labels_keep_the_eight_classes_that_occur(root: Path) -> None:
    samples = datasets.split("aeroscapes", "train", 0, root=root) + datasets.split("aeroscapes", "val", 0, root=root)
    shares = _shares("aeroscapes", samples)
    assert shares[8:].sum() == 0  # drone, boat, animal, sky: absent, never a class
    np.testing.assert_allclose(shares[:8], AEROSCAPES_SHARES, atol=0.06)
    image = datasets.load_image(samples[0], datasets.spec("aeroscapes"))
    assert image.shape == (720, 1280, 3) and image.dtype == np.uint8


def test_aeroscapes_values_beyond_its_classes_are_refused(tmp_path: Path) -> None:
    label = tmp_path / "x.png"
    Image.fromarray(np.full((4, 4), 12, np.uint8)).save(label)
    with pytest.raises(DatasetError, match="expected Aeroscapes class indices"):
        datasets.load_label(Sample(str(label), str(label), "x"), datasets.spec("aeroscapes"))
    Image.fromarray(np.array([[0, 4, 7, 11]], np.uint8)).save(label)  # background, drone, obstacle, sky
    np.testing.assert_array_equal(datasets.load_label(Sample(str(label), str(label), "x"), datasets.spec("aeroscapes")),
                                  [[0, IGNORE, 4, IGNORE]])


def test_camvid_split_sizes(root: Path) -> None:
    assert len(datasets.split("camvid", "train", root=root)) == 184
    assert len(datasets.split("camvid", "val", root=root)) == 101


def test_membrane_folds_partition(root: Path) -> None:
    seen: list[int] = []
    for fold in range(5):
        train = datasets.split("membrane", "train", fold=fold, root=root)
        val = datasets.split("membrane", "val", fold=fold, root=root)
        assert (len(train), len(val)) == (24, 6)
        assert not {s.name for s in train} & {s.name for s in val}
        seen += [int(s.name) for s in val]
    assert sorted(seen) == list(range(30))


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="TILESEG_DATA"):
        datasets.split("camvid", "train", root=tmp_path)


@pytest.mark.parametrize("tile", [1, 2])  # tile 1 is an RGB mask, tile 2 a palette (mode P) mask
def test_dubai_mask_decodes(root: Path, tile: int) -> None:
    ds = datasets.spec("dubai-aerial")
    wanted = f"tile{tile}/image_part_001"
    sample = next(s for s in datasets.split("dubai-aerial", "train", root=root) if s.name == wanted)
    assert Image.open(sample.label_path).mode == ("RGB" if tile == 1 else "P")
    image = datasets.load_image(sample, ds)
    label = datasets.load_label(sample, ds)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert label.dtype == np.uint8 and label.shape == image.shape[:2]
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 3, 4, IGNORE}


def test_dubai_class_shares(dubai_shares: np.ndarray) -> None:
    np.testing.assert_allclose(dubai_shares[:5], DUBAI_SHARES, atol=0.3)
    # Unlabeled #9B9B9B (0.51 %) + undocumented #000000 (0.56 %) are the only other values.
    assert dubai_shares[5:IGNORE].sum() == 0
    assert dubai_shares[IGNORE] == pytest.approx(1.07, abs=0.1)


def test_camvid_class_shares(root: Path) -> None:
    shares = _shares("camvid", datasets.split("camvid", "train", root=root))
    np.testing.assert_allclose(shares[:11], CAMVID_SHARES, atol=0.2)
    assert shares[IGNORE] == pytest.approx(CAMVID_IGNORE_SHARE, abs=0.2)
    assert shares[11:IGNORE].sum() == 0


def test_camvid_image(root: Path) -> None:
    ds = datasets.spec("camvid")
    sample = datasets.split("camvid", "val", root=root)[0]
    assert datasets.load_image(sample, ds).shape == (360, 480, 3)
    assert datasets.load_label(sample, ds).shape == (360, 480)


def test_membrane_labels(root: Path) -> None:
    ds = datasets.spec("membrane")
    train = datasets.split("membrane", "train", fold=0, root=root)
    image = datasets.load_image(train[0], ds)
    assert image.shape == (512, 512, 1) and image.dtype == np.uint8
    shares = _shares("membrane", train)
    assert shares[1] == pytest.approx(78.0, abs=2.0)
    assert shares[0] + shares[1] == pytest.approx(100.0)


def test_unknown_colour_raises(tmp_path: Path) -> None:
    ds = datasets.spec("dubai-aerial")
    mask = np.zeros((8, 8, 3), dtype=np.uint8)
    mask[:] = ds.class_colors[0]
    mask[3, 4] = (1, 2, 3)  # neither a class colour nor an ignore colour
    image_path, mask_path = tmp_path / "img.jpg", tmp_path / "bad_mask.png"
    Image.fromarray(mask).save(mask_path)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image_path)
    sample = Sample(str(image_path), str(mask_path), "bad")
    with pytest.raises(DatasetError, match=r"bad_mask\.png.*#010203"):
        datasets.load_label(sample, ds)


def test_size_mismatch_raises(tmp_path: Path) -> None:
    ds = datasets.spec("dubai-aerial")
    mask = np.zeros((8, 8, 3), dtype=np.uint8)
    mask[:] = ds.class_colors[1]
    image_path, mask_path = tmp_path / "img.jpg", tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    Image.fromarray(np.zeros((8, 9, 3), dtype=np.uint8)).save(image_path)
    with pytest.raises(DatasetError, match="same size"):
        datasets.load_label(Sample(str(image_path), str(mask_path), "x"), ds)


def test_unknown_dataset_raises() -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        datasets.spec("nope")
