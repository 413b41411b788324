"""The whole job with input, model and output in gs://, against a real (local) storage emulator."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from common import fileio
from pipelines.segment import run
from tests.models import binning_labels, write_binning_model

pytestmark = pytest.mark.slow


def _upload_tif(uri: str, data: np.ndarray, tmp: Path) -> None:
    local = tmp / "x.tif"
    with rasterio.open(local, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                       dtype="uint8", crs="EPSG:32633", transform=from_origin(500000, 4000000, 0.5, 0.5),
                       tiled=True, blockxsize=64, blockysize=64, photometric="RGB") as dst:
        dst.write(data)
    with fileio.open_file(uri, "wb") as f:
        f.write(local.read_bytes())


def test_segment_from_and_to_gcs(gcs_bucket: str, tmp_path: Path) -> None:
    model_local = tmp_path / "model"
    write_binning_model(str(model_local), num_classes=4, patch_size=64, halo=8)
    for name in ("card.json", "model.keras"):
        with fileio.open_file(f"{gcs_bucket}/models/bins/{name}", "wb") as f:
            f.write((model_local / name).read_bytes())
    rng = np.random.default_rng(5)
    images = {"north/a": rng.integers(0, 255, (3, 150, 170), dtype=np.uint8),
              "south/a": rng.integers(0, 255, (3, 90, 60), dtype=np.uint8)}
    for tile_id, data in images.items():
        _upload_tif(f"{gcs_bucket}/in/{tile_id}.tif", data, tmp_path)

    summary = run(["--input", f"{gcs_bucket}/in/**/*.tif", "--output", f"{gcs_bucket}/out",
                   "--model", f"{gcs_bucket}/models/bins", "--precision", "float32"])
    assert (summary.tiles_written, summary.failures) == (2, 0)

    for tile_id, data in images.items():
        with fileio.open_raster(f"{gcs_bucket}/out/masks/{tile_id}.tif") as m:
            labels = m.read(1)
            assert m.crs.to_epsg() == 32633 and m.transform.a == 0.5
        expected = binning_labels(np.moveaxis(data, 0, -1), 4, 255.0)
        x = np.moveaxis(data, 0, -1).astype(np.float64).mean(-1) / 255 * 3
        clear = np.abs(x - np.floor(x) - 0.5) > 1e-3
        np.testing.assert_array_equal(labels[clear], expected[clear])
    with fileio.open_file(summary.stats_uri) as f:  # type: ignore[arg-type]
        table = pq.read_table(io.BytesIO(f.read()))
    assert sorted(set(table.column("tile_id").to_pylist())) == ["north/a", "south/a"]
    assert sum(table.column("pixel_count").to_pylist()) == 150 * 170 + 90 * 60
    written = fileio.match(f"{gcs_bucket}/out/**")
    leftovers = [u for u in written if not any(f"/{d}/" in u for d in ("masks", "quicklooks", "stats", "report", "stac"))
                 and not u.endswith("/manifest/done.parquet")]
    assert leftovers == [], "no staging or temporary objects remain"
    # Each tile's input picture, made from the blocks read from the bucket, is the report's.
    assert sorted(u for u in written if "/quicklooks/" in u) == [f"{gcs_bucket}/out/quicklooks/{t}.jpg"
                                                                for t in ("north/a", "south/a")]
    # The report and the STAC catalog are written to the bucket too, pictures read from the masks there.
    report = f"{gcs_bucket}/out/report/{summary.run_id}/"
    assert sorted(u[len(report):] for u in written if u.startswith(report) and u.endswith(".png"))[:1]
    assert sum(1 for u in written if u.startswith(report + "img/")) == 4  # input and mask of both tiles
    with fileio.open_file(report + "index.html", "r") as f:
        page = f.read()
    assert 'data-tile="north/a"' in page and 'data-tile="south/a"' in page
    assert {f"{gcs_bucket}/out/stac/catalog.json", f"{gcs_bucket}/out/stac/items/north/a.json",
            f"{gcs_bucket}/out/stac/items/south/a.json"} <= set(written)

    # The bucket is listed by the job itself; a rerun finds both tiles done through the manifest.
    again = run(["--input", f"{gcs_bucket}/in/**/*.tif", "--output", f"{gcs_bucket}/out",
                 "--model", f"{gcs_bucket}/models/bins", "--precision", "float32"])
    assert (again.tiles_total, again.tiles_written, again.tiles_skipped, again.failures) == (2, 0, 2, 0)
