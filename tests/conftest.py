"""Shared test fixtures: the real-data location and small raster factories."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Compiled XLA programs go to a folder of this test session's, not the user's cache (model/loading.py).
if "TILESEG_XLA_CACHE" not in os.environ:
    os.environ["TILESEG_XLA_CACHE"] = tempfile.mkdtemp(prefix="tileseg-test-xla-")
    atexit.register(shutil.rmtree, os.environ["TILESEG_XLA_CACHE"], True)

REPO = Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """Real datasets: $TILESEG_DATA, default ../shared/data beside the checkout."""
    return Path(os.environ.get("TILESEG_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}; set TILESEG_DATA to the shared data folder")
    return root


@pytest.fixture(scope="session")
def geotiffs(shared_data: Path) -> Path:
    path = shared_data / "rasterio-geotiffs"
    if not path.is_dir():
        pytest.skip(f"{path} is missing; set TILESEG_DATA to a folder with rasterio-geotiffs/")
    return path


# --- generated rasters (tests/rasters.py) ---------------------------------------------------


@pytest.fixture(scope="session")
def tile_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A folder of small generated tiles: odd sizes, UTM / geographic / Web Mercator / no CRS,
    alpha, nodata, NaN, uint16 with NBITS=12, one grey band, a 3x5 tile. Name → path."""
    from tests.rasters import write_tile_set

    return write_tile_set(tmp_path_factory.mktemp("tiles"))


# --- GCS emulator (tests/gcs_emulator.py) ------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_emulator():
    """An in-process gcp-storage-emulator on 127.0.0.1:<free port>; gs:// URIs go to it."""
    try:
        import gcp_storage_emulator.server  # noqa: F401
        import gcsfs  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"GCS emulator tests need gcp-storage-emulator and gcsfs (pip install -e .[test]): {exc}")
    from tests.gcs_emulator import GcsEmulator

    with GcsEmulator() as emulator:
        yield emulator


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
    """``gs://<bucket>``: a new, empty bucket in the emulator for each test."""
    import uuid

    return gcs_emulator.create_bucket(f"tileseg-test-{uuid.uuid4().hex[:12]}")
