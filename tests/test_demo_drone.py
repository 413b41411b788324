"""``tileseg demo --drone``: a real Aeroscapes frame through the shipped drone model and the real
pipeline (DirectRunner), with landing zones; the shared data is linked, never copied."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from model.shipped import DRONE_MODEL


@pytest.mark.slow  # the pipeline on one 1280x720 frame with the real model
def test_the_drone_demo_segments_a_real_frame_and_draws_its_zones(tmp_path: Path, shared_data: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow.parquet as pq
    import rasterio
    from PIL import Image

    from model.predictor import Predictor
    from pipelines.demo import DRONE_FRAME, PREVIEW_EDGE, drone_demo
    from training import datasets

    folder, name = DRONE_FRAME
    frame = shared_data / "aeroscapes" / folder / "images" / f"{name}.jpg"
    if not frame.is_file():
        pytest.skip(f"{frame} is missing; set TILESEG_DATA to the shared data folder")
    assert drone_demo(str(tmp_path), ["--precision", "float32"], datasets.aeroscapes_frame) == 0
    out = capsys.readouterr().out
    link = tmp_path / "input" / frame.name
    assert link.is_symlink() and Path(os.path.realpath(link)) == frame.resolve()  # linked, not copied

    with rasterio.open(tmp_path / "results" / "masks" / f"{name}.tif") as m:
        mask = m.read(1)
    image = datasets.load_image(datasets.Sample(str(frame), None, name), datasets.spec("aeroscapes"))
    expected = Predictor.from_dir(DRONE_MODEL, "float32").segment(image, 255.0)
    assert mask.shape == (720, 1280) and np.mean(mask == expected) >= 0.999

    summary_line = next(line for line in out.splitlines() if "landing zone(s)" in line)
    zones_uri = summary_line.split(" in ", 2)[-1].split(";")[0].strip()
    zones = pq.read_table(zones_uri).to_pylist()
    assert f"{len(zones)} landing zone(s)" in summary_line
    assert all(z["tile_id"] == name and not z["georeferenced"] for z in zones)
    # Areas in m² from the demo's --gsd: a zone is at least the profile's 20 m².
    assert all(z["area_m2"] >= 20.0 for z in zones)

    preview = np.asarray(Image.open(tmp_path / "preview.png").convert("RGB"))
    height = round(720 * PREVIEW_EDGE / 1280)
    assert preview.shape == (height, 2 * PREVIEW_EDGE + 8, 3)
    right = preview[:, PREVIEW_EDGE + 8:]
    white = np.all(right == 255, axis=-1)
    assert white.any() == bool(zones)  # zone outlines are drawn in white, which no class colour is
    assert "person IoU" in out and "training frames" in out
