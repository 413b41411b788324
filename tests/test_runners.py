"""The job on Beam's other local runners gives the DirectRunner's outputs.

The portable runner (Python's embedded job service, LOOPBACK environment) runs every step
through the Fn API harness, as Dataflow's runner v2 does: elements are encoded between stages
and DoFns are pickled to the harness. The multi-process DirectRunner runs steps in worker
processes, where nothing in the launcher's memory is shared: progress must still be visible.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from pipelines.segment import run
from tests.models import write_binning_model

K = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("bins")
    write_binning_model(str(d), num_classes=K, patch_size=64, halo=8, size_multiple=16)
    return str(d)


def _outputs(out: Path, run_id: str) -> tuple[dict[str, np.ndarray], list[tuple[object, ...]]]:
    masks = {}
    for path in sorted((out / "masks").rglob("*.tif")):
        with rasterio.open(path) as m:
            masks[str(path.relative_to(out))] = m.read(1)
    rows = pq.read_table(out / "stats" / f"{run_id}.parquet").to_pylist()
    keep = ("tile_id", "class_index", "pixel_count", "valid_pixel_count", "total_pixel_count", "area_m2", "crs")
    return masks, sorted(tuple(r[k] for k in keep) for r in rows)


@pytest.mark.parametrize("runner", [
    ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "LOOPBACK"],
    ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"],
], ids=["portable-loopback", "multi-process"])
def test_other_runners_give_the_direct_runners_outputs(tile_set: dict[str, str], model_dir: str, tmp_path: Path,
                                                       runner: list[str], caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import transforms.progress

    monkeypatch.setattr(transforms.progress, "EVERY_S", 0.2)  # these runs last seconds, not hours
    inp = os.path.dirname(next(iter(tile_set.values())))
    common = ["--input", inp, "--model", model_dir, "--precision", "float32", "--patches_per_block", "2"]
    direct = run([*common, "--output", str(tmp_path / "direct"), "--run_id", "d"])
    with caplog.at_level(logging.INFO, logger="tileseg.progress"):
        other = run([*common, "--output", str(tmp_path / "other"), "--run_id", "o", *runner])
    assert (other.tiles_total, other.tiles_written, other.failures) == \
        (direct.tiles_total, direct.tiles_written, direct.failures) == (len(tile_set), len(tile_set), 0)
    masks_d, rows_d = _outputs(tmp_path / "direct", "d")
    masks_o, rows_o = _outputs(tmp_path / "other", "o")
    assert sorted(masks_o) == sorted(masks_d) and len(masks_d) == len(tile_set)
    for name, labels in masks_d.items():
        np.testing.assert_array_equal(masks_o[name], labels, err_msg=name)
    assert rows_o == rows_d
    # Progress comes from the staging folder the workers write, whatever process they run in.
    progress = [r.getMessage() for r in caplog.records if r.name == "tileseg.progress"]
    assert progress and all(f"of {len(tile_set)} tiles written" in m for m in progress), progress
    assert any(not m.startswith("0 of") for m in progress), progress
    written = [int(m.split(" of ")[0]) for m in progress]
    assert written == sorted(written), progress  # never back to 0 when the last step removes the staging
