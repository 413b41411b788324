"""Production hardening (issue 12): names that could leave the output folder, statistics that
survive killed runs, steps that are safe to run twice, a complete skip key, leftovers of killed
runs, and options that are checked before anything starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from common.safepath import UnsafePathError, check_relative, check_segment
from model.card import ModelCardError, load_card
from pipelines.config import ConfigError, build_config
from pipelines.segment import run
from tests.models import write_binning_model
from tests.rasters import write_raster
from transforms.failures import BlockFailure, failure_record
from transforms.masks import OutputLayout, StageCoreFn, StageFailureFn, stage_core
from transforms.plan import PlanArgs
from transforms.read import read_block
from transforms.results import MaskSettings, TileResult
from transforms.stitch import stitch_block
from transforms.tiles import describe_tile

K = 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("binning")
    write_binning_model(str(d), num_classes=K, patch_size=64, halo=8, size_multiple=16)
    return str(d)


def _inputs(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    for i in range(n):
        write_raster(folder / f"t{i}.tif", rng.integers(0, 256, (3, 70 + 9 * i, 90), dtype=np.uint8), photometric="RGB")
    return folder


def _histogram(mask: Path) -> list[int]:
    with rasterio.open(mask) as m:
        return [int(v) for v in np.bincount(m.read(1).ravel(), minlength=256)[:K]]


# --- names that become paths ------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["..", "../../x", "a/b", ".hidden", "", "x" * 200, "a b", "line\nbreak"])
def test_run_id_must_be_one_plain_segment(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        check_segment(bad, "--run_id")


@pytest.mark.parametrize("bad", ["../x", "a/../b", "/abs", "a//b", "a/./b", "a\\b", "C:/x", "new\nline"])
def test_tile_ids_must_stay_inside_the_output(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        check_relative(bad, "tile id")
    assert check_relative("survey 2026/ünïcode tile", "tile id") == "survey 2026/ünïcode tile"


@pytest.mark.parametrize("run_id", ["..", "../../x", "."])
def test_a_run_id_that_leaves_the_output_deletes_nothing(tmp_path: Path, model_dir: str, run_id: str) -> None:
    inp = _inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    first = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--run_id", "first"])
    assert first.tiles_written == 1
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="--run_id"):
        run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--run_id", run_id])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_card_model_file_must_be_inside_the_model_folder(tmp_path: Path, model_dir: str) -> None:
    bad = tmp_path / "m"
    bad.mkdir()
    card = json.loads((Path(model_dir) / "card.json").read_text())
    (tmp_path / "outside.keras").write_bytes((Path(model_dir) / "model.keras").read_bytes())
    card["model_file"] = "../outside.keras"
    (bad / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="model_file"):
        load_card(str(bad))


def test_a_file_name_that_cannot_be_a_tile_id_is_one_failure_row(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 2)
    write_raster(inp / "bad\nname.tif", np.zeros((3, 20, 20), np.uint8), photometric="RGB")
    summary = run(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", model_dir])
    assert (summary.tiles_written, summary.failures) == (2, 1)
    (row,) = pq.read_table(summary.failures_uri).to_pylist()
    assert row["stage"] == "discover" and "rename the file" in row["message"]
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["t0.tif", "t1.tif"]


# --- statistics survive a killed run ----------------------------------------------------------


def test_stats_of_skipped_tiles_come_again_from_their_masks(tmp_path: Path, model_dir: str) -> None:
    """A run killed after publishing masks but before writing its stats (simulated by deleting
    them): the rerun skips those tiles, and its stats file still covers every tile, marked reused."""
    inp = _inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    first = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--run_id", "killed"])
    original = pq.read_table(first.stats_uri).to_pylist()
    os.remove(first.stats_uri)
    os.remove(out / "masks" / "t2.tif")  # this one was not published before the kill
    second = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--run_id", "rerun"])
    assert (second.tiles_written, second.tiles_skipped, second.failures) == (1, 2, 0)
    rows = pq.read_table(second.stats_uri).to_pylist()
    assert {r["tile_id"] for r in rows} == {"t0", "t1", "t2"}
    for r in rows:
        assert r["reused"] == (r["tile_id"] != "t2") and r["run_id"] == "rerun"
        assert r["pixel_count"] == _histogram(out / "masks" / f"{r['tile_id']}.tif")[r["class_index"]]
    keep = ("tile_id", "class_index", "pixel_count", "valid_pixel_count", "area_m2", "processed_at", "crs")
    by_key = {(r["tile_id"], r["class_index"]): {k: r[k] for k in keep} for r in rows}
    for r in original:
        if r["tile_id"] != "t2":
            assert by_key[(r["tile_id"], r["class_index"])] == {k: r[k] for k in keep}


# --- every step safe to run twice ------------------------------------------------------------


def _bundle(fn: Any, *elements: object) -> list[object]:
    """The outputs of one bundle of ``elements`` through a set-up DoFn, as Beam runs it: masks are
    written on the DoFn's writer thread and every one is out by the end of the bundle."""
    fn.start_bundle()
    outs = [o for e in elements for o in fn.process(e, window=GlobalWindow(), timestamp=MIN_TIMESTAMP)]
    for o in fn.finish_bundle():
        if isinstance(o, beam.pvalue.TaggedOutput) and isinstance(o.value, WindowedValue):
            o = beam.pvalue.TaggedOutput(o.tag, o.value.value)
        outs.append(o.value if isinstance(o, WindowedValue) else o)
    return outs


def _tile_cores(tmp_path: Path, model_dir: str, run_id: str = "r1") -> tuple[StageCoreFn, OutputLayout, list[object]]:
    """A 40x150 tile cut into 3 blocks, stitched with constant labels; the staging DoFn, set up."""
    card = load_card(model_dir)
    path = write_raster(tmp_path / "tile.tif", np.full((3, 40, 150), 128, np.uint8), photometric="RGB")
    tile = describe_tile(path, str(tmp_path), card)
    layout = OutputLayout(str(tmp_path / "out"), run_id)
    cores = []
    for block in PlanArgs(64, 8, 16, 1).blocks(tile):
        ctx, patches = read_block(tile, block)
        cores.append(stitch_block(ctx, np.full((len(patches.pixels), *block.patch_shape), 2, np.uint8), card))
    fn = StageCoreFn(card, layout, MaskSettings.of(test=1), "float32")
    fn.setup()
    return fn, layout, cores


def test_the_last_block_publishes_the_tile_and_a_retry_sends_the_same_result(tmp_path: Path, model_dir: str) -> None:
    fn, layout, cores = _tile_cores(tmp_path, model_dir)
    assert len(cores) == 3
    assert list(_bundle(fn, cores[0])) == [] and list(_bundle(fn, cores[1])) == []  # not complete yet
    (first,) = list(_bundle(fn, cores[2]))
    assert isinstance(first, TileResult) and first.counts[2] == 40 * 150 and sum(first.counts) == 40 * 150
    mask = Path(layout.mask_uri("tile"))
    stamp = (mask.stat().st_mtime_ns, mask.read_bytes())
    assert first.mask_bytes == len(stamp[1])
    # Retried bundles: any block of the published tile arrives again.
    for core in cores:
        assert list(_bundle(fn, core)) == [first]
    assert (mask.stat().st_mtime_ns, mask.read_bytes()) == stamp, "not written again"
    assert sorted(os.listdir(layout.staging_dir("tile"))) == ["result.json"], "cores removed after publish"


def test_one_bundle_of_every_block_writes_the_mask_once_before_it_ends(tmp_path: Path, model_dir: str) -> None:
    fn, layout, cores = _tile_cores(tmp_path, model_dir)
    outs = _bundle(fn, *cores)  # the mask is written on the writer thread, and out by the bundle's end
    assert len(outs) == 1 and isinstance(outs[0], TileResult) and outs[0].counts[2] == 40 * 150
    with rasterio.open(layout.mask_uri("tile")) as mask:
        assert (mask.read(1) == 2).all()


def test_a_failure_after_publish_is_not_a_false_failure(tmp_path: Path, model_dir: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import transforms.masks as masks

    fn, layout, cores = _tile_cores(tmp_path, model_dir)

    def lost(*_: object) -> None:
        raise RuntimeError("worker lost after publish")

    monkeypatch.setattr(masks, "_remove_cores", lost)
    outs = [o for core in cores for o in _bundle(fn, core)]
    assert len(outs) == 1 and isinstance(outs[0], TileResult), outs
    assert os.path.exists(layout.mask_uri("tile"))
    monkeypatch.undo()
    assert list(_bundle(fn, cores[0])) == outs


def test_a_tile_with_a_failed_block_gets_one_failure_and_no_mask(tmp_path: Path, model_dir: str) -> None:
    fn, layout, cores = _tile_cores(tmp_path, model_dir)
    card = load_card(model_dir)
    failing = StageFailureFn(card, layout, MaskSettings.of(test=1), "float32")
    failing.setup()
    bad = cores[1]
    record = failure_record(bad.tile.uri, bad.tile.tile_id, "read", OSError("short read"))
    outs = [*_bundle(fn, cores[0]), *_bundle(failing, BlockFailure(bad.tile, bad.block, record)), *_bundle(fn, cores[2])]
    assert len(outs) == 1 and outs[0].tag == "failed"
    tile_id, row = outs[0].value
    assert tile_id == "tile" and row["stage"] == "read" and "short read" in row["message"]
    assert not os.path.exists(layout.mask_uri("tile"))
    assert list(_bundle(fn, cores[0]))[0].value == (tile_id, row), "a retry repeats the failure"


def test_two_workers_finishing_one_tile_at_once_both_report_it_done(tmp_path: Path, model_dir: str) -> None:
    import threading

    fn, layout, cores = _tile_cores(tmp_path, model_dir)
    outs: list[object] = []
    list(_bundle(fn, cores[0]))
    barrier = threading.Barrier(2)

    def stage(core: object) -> None:
        barrier.wait()
        outs.extend(_bundle(fn, core))

    threads = [threading.Thread(target=stage, args=(c,)) for c in cores[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outs and all(isinstance(o, TileResult) for o in outs), outs
    with rasterio.open(layout.mask_uri("tile")) as m:
        assert (m.read(1) == 2).all()


def test_staging_a_core_twice_gives_the_same_file(tmp_path: Path, model_dir: str) -> None:
    _, layout, cores = _tile_cores(tmp_path, model_dir)
    a = stage_core(cores[0], layout)
    before = Path(a).read_bytes()
    assert stage_core(cores[0], layout) == a and Path(a).read_bytes() == before
    assert len(os.listdir(layout.staging_dir("tile"))) == 1


def test_a_model_that_runs_code_is_refused_before_the_pipeline(tmp_path: Path, model_dir: str) -> None:
    import keras

    lam = tmp_path / "lambda"
    write_binning_model(str(lam), num_classes=K)
    inputs = keras.Input((None, None, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    keras.Model(inputs, keras.layers.Conv2D(K, 1)(outputs)).save(str(lam / "model.keras"))
    inp = _inputs(tmp_path / "in", 1)
    with pytest.raises(ConfigError, match="safe mode") as err:
        run(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", str(lam)])
    assert "\n" not in str(err.value) and len(str(err.value)) < 700
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "card.json").write_text((lam / "card.json").read_text())
    (tmp_path / "broken" / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match="not a complete .keras file"):
        run(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", str(tmp_path / "broken")])
    assert not (tmp_path / "out").exists()


# --- the skip key ------------------------------------------------------------------------------


def _settings(model_dir: str, inp: Path, out: Path, *extra: str) -> str:
    # An explicit precision: "auto" resolves by this CPU; a later --precision in ``extra`` wins.
    argv = ["--input", str(inp), "--output", str(out), "--model", model_dir, "--run_id", "r", "--precision", "float32",
            *extra]
    config = build_config(PipelineOptions(argv), "DirectRunner")
    return config.settings.key(config.precision)


def test_every_option_that_changes_a_mask_changes_the_skip_key(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 1)
    base = _settings(model_dir, inp, tmp_path / "o")
    changing = [["--precision", "bfloat16"], ["--stitch", "blend"], ["--bands", "3,2,1"], ["--patch_size", "48"],
                ["--halo", "4"], ["--stitch", "blend", "--patches_per_block", "2"]]
    keys = [_settings(model_dir, inp, tmp_path / "o", *opts) for opts in changing]
    assert base not in keys and len(set(keys)) == len(keys)
    # Options that cannot change a mask keep the key: another output, run id, batch size, and
    # patches per block with overlap-tile stitching (exact placement whatever the grouping).
    same = [["--batch_size", "9"], ["--patches_per_block", "2"], ["--overwrite"]]
    assert all(_settings(model_dir, inp, tmp_path / "o", *opts) == base for opts in same)
    assert _settings(model_dir, inp, tmp_path / "elsewhere") == base
    other = tmp_path / "other_card"
    write_binning_model(str(other), num_classes=K, patch_size=64, halo=8, size_multiple=16)
    card = json.loads((other / "card.json").read_text())
    card["classes"][0]["color"] = [1, 2, 3]  # same name@version, another colour table
    (other / "card.json").write_text(json.dumps(card))
    assert _settings(str(other), inp, tmp_path / "o") != base


# --- inputs ------------------------------------------------------------------------------------


def test_inputs_under_hidden_folders_and_dotted_paths_are_found(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / ".cache" / "snapshot", 2)
    (inp / ".hidden").mkdir()
    write_raster(inp / ".hidden" / "skip.tif", np.zeros((3, 8, 8), np.uint8), photometric="RGB")
    write_raster(inp / ".skip.tif", np.zeros((3, 8, 8), np.uint8), photometric="RGB")
    dotted = str(tmp_path / ".cache" / "snapshot" / ".." / "snapshot" / ".")
    summary = run(["--input", dotted, "--output", str(tmp_path / "out"), "--model", model_dir])
    assert (summary.tiles_total, summary.tiles_written) == (2, 2)
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["t0.tif", "t1.tif"]


def test_files_whose_ids_would_collide_all_end_as_masks(tmp_path: Path, model_dir: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    data = np.full((3, 20, 30), 100, np.uint8)
    write_raster(inp / "x.tif", data, photometric="RGB")
    write_raster(inp / "x.png.tif", data, photometric="RGB")
    write_raster(inp / "x.png", data, driver="PNG", crs=None)
    summary = run(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", model_dir])
    assert (summary.tiles_total, summary.tiles_written, summary.failures) == (3, 3, 0)
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert masks == ["x.png.tif", "x.png.tif.tif", "x.tif.tif"]


def test_an_output_folder_inside_the_input_is_never_read(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 2)
    out = inp / "out"
    for _ in range(2):
        summary = run(["--input", str(inp), "--output", str(out), "--model", model_dir])
        assert summary.tiles_total == 2 and summary.failures == 0
    assert sorted(str(p.relative_to(out / "masks")) for p in (out / "masks").rglob("*.tif")) == ["t0.tif", "t1.tif"]


def test_a_tile_over_the_pixel_limit_fails_at_once(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 2)  # t0 is 70x90, t1 79x90
    summary = run(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", model_dir,
                   "--max_tile_pixels", str(75 * 90)])
    assert (summary.tiles_written, summary.failures) == (1, 1)
    (row,) = pq.read_table(summary.failures_uri).to_pylist()
    assert row["tile_id"] == "t1" and row["stage"] == "discover" and "--max_tile_pixels" in row["message"]
    with pytest.raises(ConfigError, match="--max_tile_pixels"):
        run(["--input", str(inp), "--output", str(tmp_path / "o2"), "--model", model_dir, "--max_tile_pixels", "0"])


def test_a_huge_header_is_refused_without_reading_it(tmp_path: Path, model_dir: str) -> None:
    """A 200000 x 200000 header (40 000 MPix, a few KB on disk): one failure row, at once."""
    inp = tmp_path / "in"
    inp.mkdir()
    with rasterio.open(inp / "huge.tif", "w", driver="GTiff", width=200_000, height=200_000, count=3,
                       dtype="uint8", tiled=True, compress="deflate", sparse_ok=True, photometric="RGB") as dst:
        dst.write(np.zeros((3, 16, 16), np.uint8), window=rasterio.windows.Window(0, 0, 16, 16))
    assert (inp / "huge.tif").stat().st_size < 50_000_000
    _inputs(inp, 1)
    summary = run(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", model_dir])
    assert (summary.tiles_written, summary.failures) == (1, 1)
    (row,) = pq.read_table(summary.failures_uri).to_pylist()
    assert row["tile_id"] == "huge" and "40,000 MPix" in row["message"]


# --- options -----------------------------------------------------------------------------------


def test_misspelled_and_missing_options_exit_before_anything(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--overwite"):
        run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--overwite"])
    with pytest.raises(ConfigError, match="--input is required"):
        run(["--output", str(out), "--model", model_dir])
    assert not out.exists()
    summary = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--overwrite=true"])
    again = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--overwrite=false"])
    assert (summary.tiles_written, again.tiles_written, again.tiles_skipped) == (1, 0, 1)


def test_importing_the_job_leaves_beam_options_usable() -> None:
    code = ("import pipelines.segment; from apache_beam.options.pipeline_options import PipelineOptions; "
            "print(len(PipelineOptions([]).get_all_options()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) > 10


# --- leftovers of killed runs --------------------------------------------------------------------


def test_a_later_run_removes_what_killed_runs_left(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    staging = out / "_staging"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for run_id, pid in (("killed", dead_pid), ("running", alive.pid)):
            (staging / run_id / "tile").mkdir(parents=True)
            (staging / run_id / "tile" / "0_0.npy").write_bytes(b"x" * 100)
            (staging / f"{run_id}.owner").write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                                                 "started": 1e12}))
        scratch = Path(tempfile.mkdtemp(prefix=f"tileseg-{dead_pid}-"))
        (scratch / "mask.tif").write_bytes(b"half a COG")
        summary = run(["--input", str(inp), "--output", str(out), "--model", model_dir])
        assert summary.tiles_written == 1
        assert not (staging / "killed").exists() and not (staging / "killed.owner").exists()
        assert (staging / "running" / "tile" / "0_0.npy").exists(), "a run still going on is left alone"
        assert not scratch.exists()
        assert sorted(p.name for p in staging.iterdir()) == ["running", "running.owner"]
    finally:
        alive.kill()
        alive.wait()


# --- the run's last step -------------------------------------------------------------------------


def test_the_pipeline_writes_its_summary_and_removes_its_staging(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    write_raster(inp / "broken.tif", np.zeros((2, 8, 8), np.uint8))  # two bands: one failure
    summary = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--run_id", "nightly"])
    data = json.loads((out / "stats" / "nightly.json").read_text())
    assert {k: data[k] for k in ("run_id", "tiles_total", "tiles_written", "tiles_skipped", "tiles_failed")} == {
        "run_id": "nightly", "tiles_total": 3, "tiles_written": 2, "tiles_skipped": 0, "tiles_failed": 1}
    assert data["pixels_segmented"] == 70 * 90 + 79 * 90 and data["wall_s"] > 0
    assert data["stats_uri"] == summary.stats_uri and data["failures_uri"] == summary.failures_uri
    assert not (out / "_staging").exists()


def _result(tile_id: str, processed: int, reused: bool = False) -> TileResult:
    import datetime as dt

    return TileResult(tile_id, f"/in/{tile_id}.tif", "fp", "key", f"/out/masks/{tile_id}.tif", "float32", 4, None,
                      None, (4, 0, 0, 0, 0), None, "r1", dt.datetime(2026, 1, 1, processed, tzinfo=dt.UTC),
                      reused=reused, mask_bytes=100)


def test_finishing_twice_gives_the_same_tables(tmp_path: Path, model_dir: str) -> None:
    import datetime as dt

    from transforms.finish import finish_run
    from transforms.tiles import InputFile

    card = load_card(model_dir)
    layout = OutputLayout(str(tmp_path / "out"), "r1")
    (tmp_path / "out" / "_staging" / "r1" / "t").mkdir(parents=True)
    results = [_result("t", 1)]
    listed = [InputFile("/in/t.tif", "t", "fp")]
    started = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    first = finish_run(results, [], listed, card, layout, started)
    table = pq.read_table(layout.stats_uri()).to_pylist()
    second = finish_run(results, [], listed, card, layout, started)
    assert pq.read_table(layout.stats_uri()).to_pylist() == table
    assert [r["pixel_count"] for r in table] == [4, 0, 0, 0, 0]
    assert {k: v for k, v in first.items() if k not in ("finished_at", "wall_s")} == \
        {k: v for k, v in second.items() if k not in ("finished_at", "wall_s")}
    assert first["failures_uri"] is None and not (tmp_path / "out" / "_staging" / "r1").exists()


def test_the_books_keep_one_outcome_per_input(tmp_path: Path) -> None:
    """Duplicates from retries or racing finishers count once; a failure of a tile whose mask was
    published is dropped; a listed input with no outcome at all gets a failure row."""
    import datetime as dt

    from transforms.finish import one_per_tile
    from transforms.tiles import InputFile

    layout = OutputLayout(str(tmp_path / "out"), "r1")
    staged = tmp_path / "out" / "_staging" / "r1" / "lost"
    staged.mkdir(parents=True)
    (staged / "0_0.npz").write_bytes(b"x")
    failure = {"uri": "/in/a.tif", "tile_id": "a", "stage": "write", "error_type": "E", "message": "m",
               "failed_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
    listed = [InputFile(f"/in/{t}.tif", t, "fp") for t in ("a", "b", "lost")]
    kept, failed = one_per_tile([_result("a", 1), _result("a", 3), _result("a", 2, reused=True), _result("b", 1)],
                                [("a", failure)], listed, layout)
    assert [(r.tile_id, r.processed_at.hour) for r in kept] == [("a", 3), ("b", 1)]
    (lost,) = failed
    assert lost["tile_id"] == "lost" and "only 1 of its blocks arrived" in lost["message"]


def test_a_submitted_job_keeps_its_staging_until_it_is_old(tmp_path: Path) -> None:
    from pipelines.segment import waits_for_job
    from transforms.leftovers import claim_staging, clean_leftovers

    assert not waits_for_job("DataflowRunner") and waits_for_job(None) and waits_for_job("DirectRunner")
    submitted = OutputLayout(str(tmp_path / "out"), "cloud")
    (tmp_path / "out" / "_staging" / "cloud").mkdir(parents=True)
    claim_staging(submitted, this_process=False)  # the launcher exits; the job goes on
    assert clean_leftovers(OutputLayout(str(tmp_path / "out"), "later")) == []
    assert (tmp_path / "out" / "_staging" / "cloud").exists()


# --- tiles finish independently ----------------------------------------------------------------


def test_a_small_tile_is_written_before_a_big_one_is_read(tmp_path: Path, model_dir: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No step waits for all tiles: in one process tiles go smallest first, each straight through,
    so a small tile is published before a big one (listed first) is more than begun."""
    import transforms.masks as masks
    import transforms.read as read

    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(1)
    write_raster(inp / "a_big.tif", rng.integers(0, 256, (3, 300, 400), dtype=np.uint8), photometric="RGB")
    write_raster(inp / "z_small.tif", rng.integers(0, 256, (3, 40, 50), dtype=np.uint8), photometric="RGB")
    events: list[tuple[str, str]] = []
    real_read, real_write = read.read_block, masks.write_mask_cog

    def reading(tile: object, block: object) -> object:
        events.append(("read", tile.tile_id))  # type: ignore[attr-defined]
        return real_read(tile, block)  # type: ignore[arg-type]

    def writing(tile: object, *args: object) -> None:
        events.append(("write", tile.tile_id))  # type: ignore[attr-defined]
        real_write(tile, *args)  # type: ignore[arg-type]
        events.append(("written", tile.tile_id))  # type: ignore[attr-defined]

    monkeypatch.setattr(read, "read_block", reading)
    monkeypatch.setattr(masks, "write_mask_cog", writing)
    summary = run(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", model_dir,
                   "--patches_per_block", "1"])
    assert (summary.tiles_written, summary.failures) == (2, 0)
    big_reads = events.count(("read", "a_big"))
    assert big_reads > 10
    # Reads run one block ahead of the model (prefetch), and a finished tile's mask is written on
    # a writer thread while the next blocks go on, so the big tile's first blocks may be in flight
    # when the small tile's mask starts; but the small one never waits for the big one.
    started = events[: events.index(("write", "z_small"))]
    assert started.count(("read", "a_big")) <= big_reads // 2, started
    last_big_read = len(events) - 1 - events[::-1].index(("read", "a_big"))
    assert events.index(("written", "z_small")) < last_big_read, events
    assert events[-2:] == [("write", "a_big"), ("written", "a_big")]


def test_precision_auto_is_recorded_as_the_precision_used(tmp_path: Path, model_dir: str) -> None:
    """'auto' is resolved where the model runs; masks, stats and the skip key name the result, so
    a run asking for that precision by name recognises the masks (and the other way round)."""
    from model.loading import resolve_precision

    used = resolve_precision("auto", load_card(model_dir))
    inp = _inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    first = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--precision", "auto"])
    assert first.tiles_written == 2
    assert {r["precision"] for r in pq.read_table(first.stats_uri).to_pylist()} == {used}
    with rasterio.open(out / "masks" / "t0.tif") as m:
        assert m.tags()["TILESEG_PRECISION"] == used
    assert json.loads((out / "stats" / f"{first.run_id}.json").read_text())["precision"] == [used]
    named = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--precision", used])
    assert (named.tiles_written, named.tiles_skipped) == (0, 2)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_stats_folder_is_a_bad_option(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    (out / "stats").mkdir(parents=True)
    (out / "stats").chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="stats is not writable"):
            run(["--input", str(inp), "--output", str(out), "--model", model_dir])
    finally:
        (out / "stats").chmod(0o700)
    assert not (out / "masks").exists(), "nothing segmented"


def test_a_file_where_a_run_folder_goes_is_a_bad_option(tmp_path: Path, model_dir: str) -> None:
    inp = _inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "failures").write_text("not a folder")
    with pytest.raises(ConfigError, match="failures is a file, not a folder"):
        run(["--input", str(inp), "--output", str(out), "--model", model_dir])


def test_a_file_with_one_huge_compressed_strip_fails_at_once(tmp_path: Path, model_dir: str) -> None:
    """Every window of a single-strip DEFLATE file would decode the image from its top again (a
    16384² one ran for over ten minutes at 1.5 GB); it fails at discovery with how to rewrite it,
    the other tiles are written."""
    import resource

    inp = _inputs(tmp_path / "in", 1)
    strip = inp / "one_strip.tif"
    with rasterio.open(strip, "w", driver="GTiff", width=6000, height=6000, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(0, 0, 1, 1), compress="deflate", tiled=False,
                       blockysize=6000, photometric="RGB") as dst:
        for b in range(1, 4):
            dst.write(np.full((6000, 6000), 40 * b, np.uint8), b)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    summary = run(["--input", str(inp), "--output", str(tmp_path / "out"), "--model", model_dir])
    (row,) = pq.read_table(summary.failures_uri).to_pylist()
    assert row["stage"] == "discover" and "blocks of 103 MiB" in row["message"] and "TILED=YES" in row["message"]
    assert (summary.tiles_written, summary.failures) == (1, 1)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"the strip was decoded ({grown_mb:.0f} MB more peak memory)"
