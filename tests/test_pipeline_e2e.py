"""End to end on the DirectRunner: real GeoTIFFs and broken files in one run.

The model is a real ``.keras`` file whose labels are known in closed form (tests/models.py), so
every mask pixel can be checked against the input pixels it came from.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from pipelines.config import ConfigError
from pipelines.segment import run
from tests.models import binning_labels, write_binning_model
from tests.rasters import write_raster
from transforms.tiles import describe_tile

pytestmark = pytest.mark.slow

REAL = ["RGB.byte.tif", "RGBA.byte.tif", "RGBA.uint16.tif", "cogeo.tif", "all-nodata.tif", "float_nan.tif", "shade.tif"]
K = 5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("binning")
    write_binning_model(str(d), num_classes=K, patch_size=128, halo=16, size_multiple=16)
    return str(d)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory, geotiffs: Path, model_dir: str) -> dict[str, object]:
    inp = tmp_path_factory.mktemp("in")
    (inp / "real").mkdir()
    for name in REAL:
        os.symlink(geotiffs / name, inp / "real" / name)
    bad = inp / "bad"
    bad.mkdir()
    rng = np.random.default_rng(1)
    big = rng.integers(0, 255, (3, 600, 600), dtype=np.uint8)
    write_raster(bad / "truncated.tif", big, tiled=True, blockxsize=128, blockysize=128, compress="deflate")
    full = (bad / "truncated.tif").read_bytes()
    (bad / "truncated.tif").write_bytes(full[: len(full) // 2])
    (bad / "empty.tif").write_bytes(b"")
    (bad / "notes.tif").write_text("this is not a raster\n")
    write_raster(bad / "two_band.tif", rng.integers(0, 255, (2, 40, 50), dtype=np.uint8))
    # A good tile with the same file name as one elsewhere: ids must not collide.
    (inp / "other").mkdir()
    write_raster(inp / "other" / "RGB.byte.tif", rng.integers(0, 255, (3, 70, 90), dtype=np.uint8),
           photometric="RGB")
    out = tmp_path_factory.mktemp("out")
    tmp_before = {p for p in os.listdir("/tmp") if p.startswith("tileseg-")}
    summary = run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--precision", "float32",
                   "--patches_per_block", "2"])
    return {"summary": summary, "out": out, "inp": inp, "tmp_before": tmp_before}


def _stats(run_info: dict[str, object]) -> list[dict[str, object]]:
    return pq.read_table(run_info["summary"].stats_uri).to_pylist()  # type: ignore[attr-defined]


def _failures(run_info: dict[str, object]) -> dict[str, dict[str, object]]:
    rows = pq.read_table(run_info["summary"].failures_uri).to_pylist()  # type: ignore[attr-defined]
    return {r["tile_id"]: r for r in rows}


def test_every_bad_file_is_one_clear_failure_row(mixed_run: dict[str, object]) -> None:
    failures = _failures(mixed_run)
    assert set(failures) == {"bad/truncated", "bad/empty", "bad/notes", "bad/two_band"}
    assert failures["bad/empty"]["stage"] == "discover" and "empty (0 bytes)" in failures["bad/empty"]["message"]
    assert "not a readable raster" in failures["bad/notes"]["message"]
    assert "--bands" in failures["bad/two_band"]["message"] and "2 band(s)" in failures["bad/two_band"]["message"]
    assert failures["bad/truncated"]["stage"] in ("discover", "read")
    truncated = failures["bad/truncated"]["message"]
    assert "truncated or corrupt" in truncated or "not a readable raster" in truncated
    for tile_id, row in failures.items():
        assert row["uri"].endswith(tile_id.split("/")[-1] + ".tif") and row["uri"] in row["message"]
        assert row["error_type"] and row["run_id"] == mixed_run["summary"].run_id  # type: ignore[attr-defined]
    assert mixed_run["summary"].tiles_written == len(REAL) + 1  # type: ignore[attr-defined]


def test_no_masks_or_temporary_files_left_for_failed_tiles(mixed_run: dict[str, object]) -> None:
    out = Path(mixed_run["out"])  # type: ignore[arg-type]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    masks = [f for f in files if f.startswith("masks/")]
    assert sorted(masks) == sorted([f"masks/real/{Path(n).stem}.tif" for n in REAL] + ["masks/other/RGB.byte.tif"])
    views = ("report/", "stac/")  # the report and the catalog: only of the tiles that have masks
    others = [f for f in files if not f.startswith(("masks/", "quicklooks/", *views))]
    run_id = mixed_run["summary"].run_id  # type: ignore[attr-defined]
    # An input picture per mask, none for the tiles that failed.
    assert sorted(f for f in files if f.startswith("quicklooks/")) == sorted(
        "quicklooks/" + m[len("masks/"):-len(".tif")] + ".jpg" for m in masks)
    assert sorted(others) == [f"failures/{run_id}.parquet", "manifest/done.parquet", f"stats/{run_id}.json",
                              f"stats/{run_id}.parquet"]
    items = sorted(f[len("stac/items/"): -len(".json")] for f in files if f.startswith("stac/items/"))
    assert items == sorted(m[len("masks/"): -len(".tif")] for m in masks)
    pictures = [f for f in files if f.startswith(f"report/{run_id}/img/")]
    assert len(pictures) == 2 * len(masks) and f"report/{run_id}/index.html" in files
    assert not (out / "_staging").exists()
    tmp_after = {p for p in os.listdir("/tmp") if p.startswith("tileseg-")}
    assert tmp_after <= mixed_run["tmp_before"]  # type: ignore[operator]


@pytest.mark.parametrize("name", REAL)
def test_mask_keeps_georeferencing_and_is_a_valid_cog(mixed_run: dict[str, object], geotiffs: Path, name: str) -> None:
    from rio_cogeo.cogeo import cog_validate

    mask = Path(mixed_run["out"]) / "masks" / "real" / f"{Path(name).stem}.tif"  # type: ignore[arg-type]
    valid, errors, _ = cog_validate(str(mask))
    assert valid, errors
    with rasterio.open(geotiffs / name) as src, rasterio.open(mask) as m:
        assert (m.width, m.height) == (src.width, src.height)
        assert m.crs == src.crs
        assert m.transform.almost_equals(src.transform, precision=1e-12)
        assert m.dtypes[0] == "uint8" and m.nodata == 255
        assert m.colormap(1)[1][:3] == (0 * 40 % 256, 255, 100) or m.colormap(1)[0][:3] == (0, 255, 100)
        assert m.tags()["TILESEG_MODEL_ID"] == "binning@0.0.1"
        if min(m.width, m.height) > 512:
            assert m.overviews(1), "a large mask has internal overviews"


def assert_mask_follows_input(source: Path, mask: Path, model_dir: str) -> np.ndarray:
    """Every mask pixel is the binning model's label of its input pixel, nodata exactly where the
    input is invalid; returns the mask's labels."""
    from model.card import load_card

    card = load_card(model_dir)
    spec = describe_tile(str(source), str(source.parent), card)
    with rasterio.open(source) as src, rasterio.open(mask) as m:
        labels = m.read(1)
        pixels = np.moveaxis(src.read(list(spec.bands)), 0, -1)
        valid = src.dataset_mask() > 0
        if pixels.dtype.kind == "f":
            valid &= np.isfinite(pixels).all(-1)
    assert ((labels == 255) == ~valid).all(), "nodata exactly where the input is invalid"
    expected = binning_labels(np.nan_to_num(pixels), K, spec.scale_divisor)
    x = np.nan_to_num(pixels).astype(np.float64).mean(-1) / spec.scale_divisor * (K - 1)
    clear = valid & (np.abs(x - np.floor(x) - 0.5) > 1e-3)  # away from rounding ties
    np.testing.assert_array_equal(labels[clear], expected[clear])
    return labels


@pytest.mark.parametrize("name", REAL)
def test_mask_pixels_follow_input_and_nodata(mixed_run: dict[str, object], geotiffs: Path, model_dir: str, name: str) -> None:
    mask = Path(mixed_run["out"]) / "masks" / "real" / f"{Path(name).stem}.tif"  # type: ignore[arg-type]
    labels = assert_mask_follows_input(geotiffs / name, mask, model_dir)
    if name == "all-nodata.tif":
        assert (labels == 255).all()


def test_generated_tiles_end_to_end(tile_set: dict[str, str], model_dir: str, tmp_path: Path) -> None:
    """The pipeline over the generated tile set (tests/rasters.py): needs no files beside the checkout."""
    from rio_cogeo.cogeo import cog_validate

    folder = Path(next(iter(tile_set.values()))).parent
    summary = run(["--input", str(folder), "--output", str(tmp_path), "--model", model_dir, "--precision", "float32"])
    assert (summary.tiles_written, summary.failures) == (len(tile_set), 0)
    stats = pq.read_table(summary.stats_uri).to_pylist()
    for name, path in tile_set.items():
        mask = tmp_path / "masks" / f"{name}.tif"
        assert cog_validate(str(mask))[0]
        labels = assert_mask_follows_input(Path(path), mask, model_dir)
        rows = {r["class_index"]: r for r in stats if r["tile_id"] == name}
        assert [rows[k]["pixel_count"] for k in range(K)] == [int((labels == k).sum()) for k in range(K)]
        with rasterio.open(path) as src, rasterio.open(mask) as m:
            assert (m.crs, m.transform) == (src.crs, src.transform)
            if src.crs is None:
                assert all(r["area_m2"] is None for r in rows.values())
            elif src.crs.is_projected:
                px = abs(src.transform.a * src.transform.e)
                assert rows[0]["area_m2"] == pytest.approx(rows[0]["pixel_count"] * px)
            else:  # geographic: about 1.11 m x 1.00 m per 1e-5 degree pixel at 25 N
                per_px = sum(r["area_m2"] for r in rows.values()) / rows[0]["valid_pixel_count"]
                assert per_px == pytest.approx(1.113 * 1.003, rel=0.01)
    alpha = {r["class_index"]: r for r in stats if r["tile_id"] == "mercator_alpha"}
    assert alpha[0]["valid_pixel_count"] == 97 * 131 - 20 * 40
    nodata = {r["class_index"]: r for r in stats if r["tile_id"] == "nodata"}
    assert nodata[0]["valid_pixel_count"] == 150 * 61 - 20 * 61


def test_stats_parquet_contents(mixed_run: dict[str, object], geotiffs: Path) -> None:
    rows = _stats(mixed_run)
    required = {"run_id", "tile_id", "source_uri", "model_id", "class_index", "class_name", "pixel_count",
                "valid_pixel_count", "fraction", "area_m2", "crs", "pixel_size_m", "processed_at"}
    assert required <= set(rows[0])
    by_tile: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_tile.setdefault(str(r["tile_id"]), []).append(r)
    assert set(by_tile) == {f"real/{Path(n).stem}" for n in REAL} | {"other/RGB.byte"}
    for tile_id, trs in by_tile.items():
        assert [r["class_index"] for r in sorted(trs, key=lambda r: r["class_index"])] == list(range(K))
        valid = trs[0]["valid_pixel_count"]
        assert sum(r["pixel_count"] for r in trs) == valid
        mask = Path(mixed_run["out"]) / "masks" / f"{tile_id}.tif"  # type: ignore[arg-type]
        with rasterio.open(mask) as m:
            labels = m.read(1)
        for r in trs:
            assert r["pixel_count"] == int((labels == r["class_index"]).sum())
        assert valid == int((labels != 255).sum())
    rgb = {r["class_index"]: r for r in by_tile["real/RGB.byte"]}
    with rasterio.open(geotiffs / "RGB.byte.tif") as src:
        px_area = abs(src.transform.a * src.transform.e)
    for r in rgb.values():
        assert r["crs"] == "EPSG:32618" and r["pixel_size_m"] == pytest.approx(px_area ** 0.5)
        assert r["area_m2"] == pytest.approx(r["pixel_count"] * px_area)
        assert r["fraction"] == pytest.approx(r["pixel_count"] / r["valid_pixel_count"])
    nan_tile = by_tile["real/float_nan"]
    assert all(r["area_m2"] is None and r["crs"] is None for r in nan_tile)
    assert nan_tile[0]["valid_pixel_count"] == 5  # 3x2 with one NaN
    empty = by_tile["real/all-nodata"]
    assert all(r["valid_pixel_count"] == 0 and r["pixel_count"] == 0 and r["fraction"] is None for r in empty)


def test_rerun_skips_finished_tiles_and_changes_nothing(mixed_run: dict[str, object], model_dir: str) -> None:
    out = Path(mixed_run["out"])  # type: ignore[arg-type]
    before = {p: p.read_bytes() for p in (out / "masks").rglob("*.tif")}
    summary = run(["--input", str(mixed_run["inp"]), "--output", str(out), "--model", model_dir,
                   "--precision", "float32", "--patches_per_block", "2"])
    assert summary.tiles_written == 0 and summary.tiles_skipped == len(before) and summary.failures == 4
    assert {p: p.read_bytes() for p in (out / "masks").rglob("*.tif")} == before


def test_bad_options_fail_before_the_pipeline(tmp_path: Path, model_dir: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    write_raster(src / "a.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match="no files match"):
        run(["--input", str(tmp_path / "nothing" / "*.tif"), "--output", str(tmp_path / "o"), "--model", model_dir])
    no_card = tmp_path / "model"
    no_card.mkdir()
    with pytest.raises(ConfigError, match="no card.json"):
        run(["--input", str(src), "--output", str(tmp_path / "o"), "--model", str(no_card)])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        run(["--input", str(src), "--output", str(blocker / "sub"), "--model", model_dir])
    with pytest.raises(ConfigError, match="--bands"):
        run(["--input", str(src), "--output", str(tmp_path / "o"), "--model", model_dir, "--bands", "1,2"])
    with pytest.raises(ConfigError, match="--halo"):
        run(["--input", str(src), "--output", str(tmp_path / "o"), "--model", model_dir, "--halo", "64"])
    assert not (tmp_path / "o").exists()


def test_a_card_that_does_not_fit_its_model_is_a_bad_option(tmp_path: Path) -> None:
    import json

    bad_model = tmp_path / "model"
    write_binning_model(str(bad_model), bands=("gray",), num_classes=3)  # the .keras takes 1 channel
    card = json.loads((bad_model / "card.json").read_text())
    card["input_bands"] = ["red", "green", "blue"]
    card["normalisation"]["mean"], card["normalisation"]["std"] = [0, 0, 0], [1, 1, 1]
    (bad_model / "card.json").write_text(json.dumps(card))
    src = tmp_path / "in"
    src.mkdir()
    write_raster(src / "a.tif", np.zeros((3, 40, 40), np.uint8), photometric="RGB")
    with pytest.raises(ConfigError, match="takes 1 input band.*lists 3"):
        run(["--input", str(src), "--output", str(tmp_path / "out"), "--model", str(bad_model)])
    assert not (tmp_path / "out").exists()


def test_model_that_fails_at_inference_fails_its_tiles_not_the_run(tmp_path: Path, model_dir: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from model.predictor import Predictor

    real = Predictor.predict_labels_confidence

    def flaky(self: Predictor, patches: np.ndarray, *args: object, **kw: object) -> np.ndarray:
        if patches.max() == 200:  # the pixels of tile a
            raise RuntimeError("device out of memory")
        return real(self, patches, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Predictor, "predict_labels_confidence", flaky)
    src = tmp_path / "in"
    src.mkdir()
    write_raster(src / "a.tif", np.full((3, 40, 40), 200, np.uint8), photometric="RGB")
    write_raster(src / "b.tif", np.full((3, 40, 40), 10, np.uint8), photometric="RGB")
    summary = run(["--input", str(src), "--output", str(tmp_path / "out"), "--model", model_dir,
                   "--precision", "float32"])
    assert (summary.tiles_written, summary.failures) == (1, 1)
    row = pq.read_table(summary.failures_uri).to_pylist()[0]
    assert row["stage"] == "inference" and row["tile_id"] == "a" and str(src / "a.tif") in row["message"]
    assert "device out of memory" in row["message"]
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["b.tif"]


def test_plain_jpeg_and_png_frames(tmp_path: Path, model_dir: str) -> None:
    from PIL import Image

    src = tmp_path / "frames"
    src.mkdir()
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (97, 131, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(src / "street.png")
    Image.fromarray(rgb).save(src / "street2.jpg", quality=95)
    summary = run(["--input", str(src), "--output", str(tmp_path / "out"), "--model", model_dir,
                   "--precision", "float32"])
    assert (summary.tiles_written, summary.failures) == (2, 0)
    with rasterio.open(tmp_path / "out" / "masks" / "street.tif") as m:
        labels = m.read(1)
        assert m.crs is None and (m.width, m.height) == (131, 97)
    x = rgb.astype(np.float64).mean(-1) / 255 * (K - 1)
    clear = np.abs(x - np.floor(x) - 0.5) > 1e-3
    np.testing.assert_array_equal(labels[clear], binning_labels(rgb, K, 255.0)[clear])
    rows = pq.read_table(summary.stats_uri).to_pylist()
    assert all(r["area_m2"] is None and r["crs"] is None for r in rows)
    assert sum(r["pixel_count"] for r in rows if r["tile_id"] == "street") == 97 * 131

    # --gsd gives frames without a CRS square pixels of that edge: areas in m², and the frames
    # are redone (their stored areas change), with the same labels.
    again = run(["--input", str(src), "--output", str(tmp_path / "out"), "--model", model_dir,
                 "--precision", "float32", "--gsd", "0.05"])
    assert (again.tiles_written, again.tiles_skipped) == (2, 0)
    rows = pq.read_table(again.stats_uri).to_pylist()
    assert all(r["crs"] is None and r["pixel_size_m"] == 0.05 for r in rows)
    assert all(r["area_m2"] == pytest.approx(r["pixel_count"] * 0.05 ** 2, rel=1e-12) for r in rows)
    assert sum(r["area_m2"] for r in rows if r["tile_id"] == "street") == pytest.approx(97 * 131 * 0.0025)
    with rasterio.open(tmp_path / "out" / "masks" / "street.tif") as m:
        np.testing.assert_array_equal(m.read(1), labels)
        assert m.crs is None
    # The same --gsd again: up to date.
    third = run(["--input", str(src), "--output", str(tmp_path / "out"), "--model", model_dir,
                 "--precision", "float32", "--gsd", "0.05"])
    assert (third.tiles_written, third.tiles_skipped) == (0, 2)


def test_each_tile_reports_the_models_mean_confidence(tmp_path: Path, model_dir: str) -> None:
    """The stats' mean_confidence is the mean over the tile's valid pixels of the model's
    probability of the class it chose, as a whole-image pass gives it (to the 1/255 it travels in)."""
    from model.predictor import Predictor

    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    pixels = rng.integers(0, 256, (3, 96, 80), dtype=np.uint8)
    pixels[:, :10, :] = 0
    write_raster(src / "t.tif", pixels, photometric="RGB", nodata=0)
    for stitch in ("overlap", "blend"):
        summary = run(["--input", str(src), "--output", str(tmp_path / stitch), "--model", model_dir,
                       "--precision", "float32", "--stitch", stitch])
        (confidence,) = {r["mean_confidence"] for r in pq.read_table(summary.stats_uri).to_pylist()}
        image = np.moveaxis(pixels, 0, -1)
        scores = Predictor.from_dir(model_dir, "float32").segment_scores(image, 255.0)
        valid = np.any(image != 0, axis=-1)
        expected = float(scores.max(-1)[valid].mean())
        assert 0 < confidence <= 1 and confidence == pytest.approx(expected, abs=3e-3), (stitch, confidence, expected)
