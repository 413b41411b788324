"""The run report (transforms/report.py): made by a real pipeline run, checked against its Parquet
tables and masks, rebuilt by ``tileseg report``, self-contained, and paginated for large runs.

The model is the identity model of tests/models.py (a grey band of class indexes in, the same
labels out), so the masks equal the inputs and every number on the page can be predicted.
"""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from common.quicklook import QUICKLOOK_SIDE
from model.card import load_card
from pipelines import report as report_command
from pipelines import segment
from tests.models import write_landing_model
from tests.rasters import write_raster
from transforms import report
from transforms.masks import OutputLayout

pytestmark = pytest.mark.slow

PROFILE = {"touchdown_radius_m": 1.5, "hazard_buffer_m": {"default": 1.0}, "min_area_m2": 10.0,
           "max_hazard_probability": 1.0}


def labels_scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint8)
    labels[:, w // 3: w // 3 + 4] = 3
    for _ in range(5):
        r, c = rng.integers(0, h - 30), rng.integers(0, w - 30)
        labels[r:r + rng.integers(8, 30), c:c + rng.integers(8, 30)] = 2
    labels[h // 2: h // 2 + 30, : w // 4] = 1
    return labels


class Page(HTMLParser):
    """The parts of a report page the tests read: tile rows' data attributes, the chart's values,
    the failures table's cells, every src/href, and the zone overlays' shapes per tile."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.chart: dict[str, float] = {}
        self.refs: list[str] = []
        self.tags: list[str] = []
        self.failure_cells: list[list[str]] = []
        self.circles: dict[str, int] = {}
        self._tile: str | None = None
        self._failure: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "tr" and a.get("class") == "tile":
            self.rows.append(a)
            self._tile = a["data-tile"]
        elif tag == "tr" and a.get("class") == "failure":
            self._failure = []
        elif tag == "td" and self._failure is not None:
            self._cell = []
        elif tag == "text" and "data-class" in a:
            self.chart[a["data-class"]] = float(a["data-value"])
        elif tag == "circle" and self._tile is not None:
            self.circles[self._tile] = self.circles.get(self._tile, 0) + 1
        for k in ("src", "href"):
            if k in a:
                self.refs.append(a[k])

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._failure is not None and self._cell is not None:
            self._failure.append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            if self._failure is not None:
                self.failure_cells.append(self._failure)
            self._failure = None
            self._tile = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("identity"))
    write_landing_model(d)
    return d


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory, model_dir: str) -> dict[str, object]:
    inp = tmp_path_factory.mktemp("in")
    out = tmp_path_factory.mktemp("out")
    (inp / "sub").mkdir()
    tiles = {
        "utm": (labels_scene(300, 420, 1), "EPSG:32633", from_origin(500000, 4000000, 0.5, 0.5)),
        "sub/mercator": (labels_scene(260, 300, 2), "EPSG:3857", from_origin(1.1e6, 8.4e6, 1.0, 1.0)),
        "frame": (labels_scene(200, 260, 3), None, None),
    }
    for name, (labels, crs, transform) in tiles.items():
        kw = {"crs": crs, "transform": transform} if crs else {"crs": None}
        write_raster(inp / f"{name}.tif", labels[None], **kw)
    (inp / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    profile = inp / "profile.json"
    profile.write_text(json.dumps(PROFILE))
    summary = segment.run(["--input", str(inp), "--output", str(out), "--model", model_dir, "--precision",
                           "float32", "--landing", str(profile), "--run_id", "night1"])
    return {"out": out, "inp": inp, "tiles": tiles, "summary": summary}


def index_of(out: Path, run_id: str = "night1") -> Path:
    return out / "report" / run_id / "index.html"


def test_every_run_writes_its_report_and_names_it_in_the_summary(run_out: dict, model_dir: str) -> None:
    out = run_out["out"]
    data = json.loads((out / "stats" / "night1.json").read_text())
    assert data["report_uri"] == str(index_of(out))
    assert index_of(out).is_file()
    colour = list(load_card(model_dir).classes[2].shown_color)
    assert data["model"]["classes"][2] == {"index": 2, "name": "class2", "color": colour}
    assert data["settings"]["landing"]["profile"] == "profile"


def test_page_numbers_equal_the_parquet_tables(run_out: dict) -> None:
    out = run_out["out"]
    page = parse(index_of(out))
    stats = pq.read_table(out / "stats" / "night1.parquet").to_pylist()
    rows = {r["data-tile"]: r for r in page.rows}
    assert sorted(rows) == ["frame", "sub/mercator", "utm"]
    for s in stats:
        row = rows[s["tile_id"]]
        assert int(row[f"data-count-{s['class_index']}"]) == s["pixel_count"]
        assert int(row["data-valid"]) == s["valid_pixel_count"]
        if s["area_m2"] is None:
            assert f"data-area-{s['class_index']}" not in row
        else:
            assert float(row[f"data-area-{s['class_index']}"]) == s["area_m2"]
    # One tile has no CRS, so the run's chart counts pixels per class, over all tiles.
    for name, value in page.chart.items():
        assert value == sum(s["pixel_count"] for s in stats if s["class_name"] == name)
    # And the counts are the input labels' (identity model).
    for tile_id, (labels, _, _) in run_out["tiles"].items():
        counts = np.bincount(labels.ravel(), minlength=7)
        assert [int(rows[tile_id][f"data-count-{k}"]) for k in range(7)] == counts.tolist()


def test_failures_table_lists_every_failure_with_its_reason(run_out: dict) -> None:
    out = run_out["out"]
    page = parse(index_of(out))
    failures = pq.read_table(out / "failures" / "night1.parquet").to_pylist()
    assert {f["tile_id"] for f in failures} == {"broken", "frame"}  # frame: no CRS, no --gsd for its zones
    expected = sorted([f["tile_id"], f["stage"], f["error_type"], f["message"]] for f in failures)
    assert sorted(page.failure_cells) == expected
    text = index_of(out).read_text()
    # broken has no mask; frame has its mask but no zones: told apart, on the page and the last line
    assert "<b>1 tile(s) failed</b> (no mask)" in text and "<b>1 tile(s) have a mask but no landing zones</b>" in text
    assert "<b>1</b> failed, 1 with a mask but no landing zones" in text
    assert "0 failed" not in run_out["summary"].line() and ", 1 failed, 1 without landing zones" in run_out["summary"].line()


def test_the_page_is_self_contained_and_its_pictures_are_real(run_out: dict) -> None:
    out = run_out["out"]
    folder = index_of(out).parent
    page = parse(index_of(out))
    assert "script" not in page.tags and "link" not in page.tags  # no scripts, no external styles
    text = index_of(out).read_text()
    assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text
    for ref in page.refs:
        assert not re.match(r"^[a-z]+:|^/", ref), ref  # relative links only
        target = (folder / ref.split("#")[0]).resolve()
        assert target.exists(), ref
    images = [r for r in page.refs if r.endswith((".png", ".jpg"))]
    assert len(images) == 6  # input and mask of three tiles
    for ref in images:
        with Image.open(folder / ref) as im:
            assert max(im.size) <= QUICKLOOK_SIDE and im.format == ("JPEG" if ref.endswith(".input.jpg") else "PNG")


def test_mask_quicklook_shows_the_masks_labels_in_the_cards_colours(run_out: dict, model_dir: str) -> None:
    out = run_out["out"]
    card = load_card(model_dir)
    lut = {c.index: c.shown_color for c in card.classes}
    folder = index_of(out).parent
    name = next(r for r in parse(index_of(out)).refs if r.endswith(".mask.png")
                and r.startswith(report._picture_name("utm", "mask")))
    with Image.open(folder / name) as im:
        rgba = np.asarray(im.convert("RGBA"))
    with rasterio.open(out / "masks" / "utm.tif") as src:
        small = src.read(1, out_shape=rgba.shape[:2], resampling=Resampling.nearest)
    expected = np.array([lut[v] for v in small.ravel()], np.uint8).reshape(*small.shape, 3)
    assert np.array_equal(rgba[..., :3], expected) and (rgba[..., 3] == 255).all()


def test_input_pictures_are_made_from_the_blocks_the_run_read(run_out: dict,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tile's input picture is written beside its mask (quicklooks/) from the blocks the run
    read, shows the input's cell means, and is what the report uses: rebuilding the report reads
    no input at all."""
    out, inp = run_out["out"], run_out["inp"]
    for tile_id in ("utm", "sub/mercator", "frame"):
        made = (out / "quicklooks" / f"{tile_id}.jpg").read_bytes()
        shown = (index_of(out).parent / report._picture_name(tile_id, "input")).read_bytes()
        assert shown == made
        with rasterio.open(inp / f"{tile_id}.tif") as src:
            band = src.read(1).astype(np.float64)
        with Image.open(io.BytesIO(made)) as im:
            w, h = im.size
            grey = np.asarray(im.convert("L"), np.float64)
        assert max(w, h) == min(QUICKLOOK_SIDE, max(band.shape))
        # Independently: the mean of each cell (integer edges), stretched from its 2nd to 98th percentile.
        re_, ce = (np.arange(h + 1) * band.shape[0]) // h, (np.arange(w + 1) * band.shape[1]) // w
        means = np.array([[band[re_[i]:re_[i + 1], ce[j]:ce[j + 1]].mean() for j in range(w)] for i in range(h)])
        lo, hi = np.percentile(means, (2, 98))
        expected = np.clip((means - lo) / (hi - lo) * 255.0, 0, 255)
        assert np.abs(grey - expected).mean() < 6.0, tile_id  # JPEG at quality 85
    import shutil

    def no_reads(*_: object) -> None:
        raise AssertionError("the report read an input")

    pictures = {p.name: p.read_bytes() for p in (index_of(out).parent / "img").iterdir()}
    monkeypatch.setattr(report, "input_quicklook", no_reads)
    moved = out.parent / (out.name + "-rebuilt")
    shutil.copytree(out, moved)
    shutil.rmtree(moved / "report")
    assert report_command.main(["--output", str(moved)]) == 0
    assert {p.name: p.read_bytes() for p in (index_of(moved).parent / "img").iterdir()} == pictures


def test_quicklook_shares_of_any_partition_add_up_to_the_cell_means() -> None:
    """thumb_part over the pieces of a raster (blocks of any shape) sums to the same cells as
    one pass over the whole raster, sampled on one grid of the raster, invalid pixels left out."""
    from common.quicklook import sample_step, thumb_part

    rng = np.random.default_rng(5)
    h, w, side = 333, 250, 20  # cells of 16 x 12.5 px: sampled every 2nd pixel
    image = rng.integers(0, 4096, (h, w, 2), dtype=np.uint16)
    valid = rng.random((h, w)) > 0.2
    step = sample_step(h, w, side)
    assert step == 2
    sums, counts = np.zeros((20, 15, 2)), np.zeros((20, 15), np.int64)
    for r0, r1 in ((0, 101), (101, 102), (102, 333)):
        for c0, c1 in ((0, 77), (77, 250)):
            part = thumb_part(image[r0:r1, c0:c1], valid[r0:r1, c0:c1], r0, c0, h, w, side)
            nr, nc = part.counts.shape
            sums[part.row:part.row + nr, part.col:part.col + nc] += part.sums
            counts[part.row:part.row + nr, part.col:part.col + nc] += part.counts
    re_, ce = (np.arange(21) * h) // 20, (np.arange(16) * w) // 15
    on_grid = (np.arange(h)[:, None] % step == 0) & (np.arange(w)[None, :] % step == 0) & valid
    for i in range(20):
        for j in range(15):
            cell = on_grid[re_[i]:re_[i + 1], ce[j]:ce[j + 1]]
            assert counts[i, j] == cell.sum() > 0
            np.testing.assert_array_equal(sums[i, j], image[re_[i]:re_[i + 1], ce[j]:ce[j + 1]][cell].sum(axis=0))


def test_landing_zones_are_drawn_with_their_touchdown_points(run_out: dict) -> None:
    out = run_out["out"]
    page = parse(index_of(out))
    zones = pq.read_table(out / "zones" / "night1.parquet").to_pylist()
    for tile_id in ("utm", "sub/mercator"):
        n = sum(1 for z in zones if z["tile_id"] == tile_id)
        assert n > 0 and page.circles.get(tile_id, 0) == min(n, report.MAX_ZONES_DRAWN)
    assert "frame" not in page.circles
    assert "no zones: see failures" in index_of(out).read_text()


def test_tileseg_report_rebuilds_the_same_page(run_out: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_out["out"]
    before = index_of(out).read_bytes()
    pictures = {p.name: p.read_bytes() for p in (index_of(out).parent / "img").iterdir()}
    import shutil

    shutil.rmtree(out / "report")
    assert report_command.main(["--output", str(out)]) == 0  # the newest run
    assert index_of(out).read_bytes() == before
    assert {p.name: p.read_bytes() for p in (index_of(out).parent / "img").iterdir()} == pictures
    assert "night1" in capsys.readouterr().out


def test_a_moved_output_folder_is_reported_from_where_it_is_now(run_out: dict, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An output synced down or copied elsewhere (the summary names the old folder) is read from
    the folder given, and every link stays relative, with --output given relatively too."""
    import shutil

    moved = tmp_path / "copy"
    shutil.copytree(run_out["out"], moved)
    shutil.rmtree(moved / "report")
    monkeypatch.chdir(tmp_path)
    assert report_command.main(["--output", "copy"]) == 0
    page = parse(index_of(moved))
    assert sorted(r["data-tile"] for r in page.rows) == ["frame", "sub/mercator", "utm"]
    assert len(page.failure_cells) == 2
    for ref in page.refs:
        assert not ref.startswith("/") and str(run_out["out"]) not in ref, ref
        assert (index_of(moved).parent / ref.split("#")[0]).resolve().is_relative_to(moved.resolve()), ref
    assert f"written to {run_out['out']}" in index_of(moved).read_text()


@pytest.mark.parametrize("run_id, message", [("nope", "no run 'nope'"), ("../x", "must be 1-128")])
def test_tileseg_report_refuses_an_unknown_or_unsafe_run(run_out: dict, run_id: str, message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert report_command.main(["--output", str(run_out["out"]), "--run_id", run_id]) == 2
    assert message in capsys.readouterr().err
    assert not (Path(run_out["out"]) / "report" / "x").exists()


def test_an_output_without_runs_is_refused_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_command.main(["--output", str(tmp_path)]) == 2
    assert "run `tileseg run` with --output" in capsys.readouterr().err


# --- rendering alone: large runs, flagged tiles -----------------------------------------------


def fake_run(n: int, flagged: int = 0) -> report.RunData:
    classes = [report.ClassEntry(0, "Land", (230, 205, 150)), report.ClassEntry(1, "Water", (0, 114, 178))]
    tiles = [report.TileEntry(f"t{i:05d}", f"/in/t{i}.tif", f"/out/masks/t{i:05d}.tif", False, 100, 100, [60, 40],
                              [60.0, 40.0], "EPSG:32633", 1.0, 0.9, True,
                              "input_distance 3.1 > 2.47" if i >= n - flagged else "", "", None) for i in range(n)]
    for t in tiles[n - flagged:]:
        t.in_domain = False
    summary = {"run_id": "big", "tiles_total": n, "tiles_written": n, "tiles_skipped": 0, "tiles_failed": 0,
               "pixels_segmented": 100 * n, "wall_s": 10.0, "settings": {"input": "/in/*"}, "output": "/out",
               "tiles_out_of_domain": [t.tile_id for t in tiles[n - flagged:]]}
    return report.RunData(summary, classes, 255, tiles, [])


def test_a_large_run_is_paginated_and_says_where_pictures_stop() -> None:
    run = fake_run(2 * report.TILES_PER_PAGE + 7)
    pages = report.render(run, OutputLayout("/out", "big"), {})
    assert list(pages) == ["index.html", "tiles-2.html", "tiles-3.html"]
    seen = []
    for html_text in pages.values():
        seen += re.findall(r'<tr class="tile" data-tile="([^"]+)"', html_text)
        assert 'href="tiles-2.html"' in html_text or "<b>2</b>" in html_text
    assert seen == [t.tile_id for t in run.tiles]  # every tile once, in order
    many = fake_run(report.MAX_QUICKLOOKS + 1)
    assert f"Quicklooks are shown for the first {report.MAX_QUICKLOOKS} of" in report.render(
        many, OutputLayout("/out", "big"), {})["index.html"]
    chart = re.search(r'data-class="Land" data-value="([^"]+)"', pages["index.html"])
    assert chart is not None and float(chart.group(1)) == 60.0 * len(run.tiles)  # m²: every tile has a CRS
    assert re.search(r'data-class="Water"[^>]*>[^<]* \(40\.0 %\)<', pages["index.html"])  # share of the area plotted


def test_tiles_outside_the_models_domain_are_flagged_on_the_page() -> None:
    pages = report.render(fake_run(5, flagged=2), OutputLayout("/out", "big"), {})
    text = pages["index.html"]
    assert "2 tile(s) look unlike what the model was trained on" in text and "t00003, t00004" in text
    assert text.count('class="flag"') == 2 and "input_distance 3.1 &gt; 2.47" in text


def test_rendering_depends_on_nothing_but_the_run() -> None:
    a = report.render(fake_run(3), OutputLayout("/out", "big"), {})
    b = report.render(fake_run(3), OutputLayout("/out", "big"), {})
    assert a == b and "big" in a["index.html"]  # no "made at" time on the page: rebuilds give the same bytes


# --- in a real browser ------------------------------------------------------------------------

BROWSER = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
#: Where the browser test leaves its screenshot (CI keeps the folder as an artifact).
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def chromium() -> object:
    """A headless Chromium driven through chromedriver, or a skip saying what is missing."""
    import shutil

    browser, driver = shutil.which("chromium") or BROWSER, shutil.which("chromedriver") or DRIVER
    if not (Path(browser).exists() and Path(driver).exists()):
        pytest.skip("the browser test needs Debian's chromium and chromium-driver packages (.ci/run installs them: "
                    "apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("the browser test needs selenium (pip install -e .[test])")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)  # given paths: nothing is downloaded


def test_the_report_renders_in_headless_chromium_without_errors(run_out: dict) -> None:
    driver = chromium()
    try:
        driver.get(index_of(run_out["out"]).as_uri())  # type: ignore[attr-defined]
        images = driver.execute_script(  # type: ignore[attr-defined]
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]  # type: ignore[attr-defined]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report-night1.png"
        assert driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
        rows = driver.execute_script("return document.querySelectorAll('tr.tile').length")  # type: ignore[attr-defined]
    finally:
        driver.quit()  # type: ignore[attr-defined]
    assert errors == []
    assert len(images) == 6 and all(ok and width > 0 for _, ok, width in images), images
    assert rows == 3
    with Image.open(shot) as im:
        assert im.size[0] >= 1000 and len(set(np.asarray(im.convert("L")).ravel()[::97].tolist())) > 20  # not blank
