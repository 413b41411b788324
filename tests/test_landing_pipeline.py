"""Landing zones through the real pipeline (DirectRunner, real GeoTIFFs, GeoParquet read back).

The model is the identity model of tests/models.py (a grey band of class indexes in, the same
labels out), so the mask equals the input and the zones can be computed independently from it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from common.ground import GroundMetric
from common.zones import array_reader, map_zones
from model.landing import load_profile
from pipelines import segment
from pipelines import zones as zones_command
from tests.models import write_identity_model, write_landing_model
from tests.rasters import write_raster
from transforms.landing import LandingSettings

pytestmark = pytest.mark.slow

SAFE, CAUTION, BUILDING, WATER = 0, 1, 2, 3
PROFILE = {"touchdown_radius_m": 1.5, "hazard_buffer_m": {"default": 1.0, "class3": 4.0}, "min_area_m2": 10.0,
           "max_hazard_probability": 0.5}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("identity"))
    write_landing_model(d)
    return d


def scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.full((h, w), SAFE, np.uint8)
    labels[:, w // 3: w // 3 + 4] = WATER                  # a stream
    for _ in range(6):
        r, c = rng.integers(0, h - 30), rng.integers(0, w - 30)
        labels[r:r + rng.integers(8, 30), c:c + rng.integers(8, 30)] = BUILDING
    labels[h // 2: h // 2 + 40, w - 90: w - 40] = CAUTION  # a road
    return labels


def profile_file(folder: Path, **changes: object) -> str:
    path = folder / "profile.json"
    path.write_text(json.dumps({**PROFILE, **changes}))
    return str(path)


def expected_zones(labels: np.ndarray, crs: str | None, transform: tuple[float, ...], model_dir: str, profile: str,
                   gsd: float | None = None):
    """The zones of ``labels`` computed directly (the mask is the labels: identity model), P = 1."""
    from model.card import load_card

    settings = LandingSettings.of(load_card(model_dir), dataclasses.replace(load_profile(profile),
                                                                            max_hazard_probability=1.0), gsd)
    wkt = rasterio.crs.CRS.from_user_input(crs).to_wkt() if crs else None
    metric = GroundMetric.of(wkt, transform, labels.shape[0], labels.shape[1], gsd)

    return map_zones(labels.shape[0], labels.shape[1], array_reader(labels), metric, settings.rules, keep_mask=True)


@pytest.fixture(scope="module")
def landing_run(tmp_path_factory: pytest.TempPathFactory, model_dir: str) -> dict[str, object]:
    inp = tmp_path_factory.mktemp("in")
    out = tmp_path_factory.mktemp("out")
    tiles = {
        "utm": (scene(300, 420, 1), "EPSG:32633", from_origin(500000, 4000000, 0.5, 0.5)),
        "mercator": (scene(260, 300, 2), "EPSG:3857", from_origin(1.1e6, 8.4e6, 1.0, 1.0)),  # ~0.5 m at 60 N
        "frame": (scene(200, 260, 3), None, None),
    }
    for name, (labels, crs, transform) in tiles.items():
        kw = {"crs": crs, "transform": transform} if crs else {"crs": None}
        write_raster(inp / f"{name}.tif", labels[None], **kw)
    profile = profile_file(inp)
    argv = ["--input", str(inp), "--output", str(out), "--model", model_dir, "--precision", "float32",
            "--landing", profile]
    summary = segment.run(argv)
    return {"out": out, "inp": inp, "tiles": tiles, "summary": summary, "argv": argv, "profile": profile}


def zone_table(out: Path, run_id: str, suffix: str = ".parquet"):
    return pq.read_table(out / "zones" / f"{run_id}{suffix}")


def test_zones_are_geoparquet_in_crs84_with_valid_geometries(landing_run: dict) -> None:
    out, summary = landing_run["out"], landing_run["summary"]
    table = zone_table(out, summary.run_id)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and set(col["geometry_types"]) == {"Polygon", "MultiPolygon"}
    assert col["crs"]["id"] == {"authority": "OGC", "code": "CRS84"}
    assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert geo["columns"]["touchdown"]["geometry_types"] == ["Point"]
    rows = table.to_pylist()
    assert {r["tile_id"] for r in rows} == {"utm", "mercator"}
    for r in rows:
        g = shapely.from_wkb(r["geometry"])
        assert g.is_valid and g.area > 0
        b = g.bounds
        assert (r["bbox"]["xmin"], r["bbox"]["ymin"], r["bbox"]["xmax"], r["bbox"]["ymax"]) == pytest.approx(b)
        assert -180 <= b[0] <= 180 and -90 <= b[1] <= 90  # longitude, latitude
        assert g.buffer(1e-9).contains(shapely.from_wkb(r["touchdown"]))
        assert r["profile"] == "profile" and len(r["profile_sha256"]) == 64 and r["model_id"].startswith("identity")
        assert 0 <= r["score"] <= 1 and r["run_id"] == summary.run_id
    assert summary.zones_total == len(rows)


def test_zones_match_an_independent_computation_from_the_input_labels(landing_run: dict, model_dir: str) -> None:
    """P = 0.5 only removes ground the model doubts; with the identity model's soft outputs the
    zones are the P = 1 zones of the labels or inside them, and the areas add up per tile."""
    out, summary = landing_run["out"], landing_run["summary"]
    rows = zone_table(out, summary.run_id).to_pylist()
    for name in ("utm", "mercator"):
        labels, crs, transform = landing_run["tiles"][name]
        ref = expected_zones(labels, crs, tuple(transform)[:6], model_dir, landing_run["profile"])
        mine = [r for r in rows if r["tile_id"] == name]
        assert 0 < len(mine) <= len(ref.zones) + 2
        assert sum(r["area_m2"] for r in mine) <= ref.landable_area_m2 * 1.0001
        assert sum(r["area_m2"] for r in mine) >= 0.8 * ref.landable_area_m2
        # the geometries' geodesic area is the pixel sum's
        from pyproj import Geod

        geod = Geod(ellps="WGS84")
        for r in mine:
            area = abs(geod.geometry_area_perimeter(shapely.from_wkb(r["geometry"]))[0])
            assert area == pytest.approx(r["area_m2"], rel=0.01)


def test_summary_table_and_hazard_cogs(landing_run: dict) -> None:
    out, summary = landing_run["out"], landing_run["summary"]
    table = zone_table(out, summary.run_id, ".summary.parquet").to_pylist()
    zones = zone_table(out, summary.run_id).to_pylist()
    by_tile = {r["tile_id"]: r for r in table}
    assert set(by_tile) == {"utm", "mercator"}  # "frame" has no CRS and no --gsd: a landing failure
    for tile_id, r in by_tile.items():
        mine = [z for z in zones if z["tile_id"] == tile_id]
        assert r["zone_count"] == len(mine)
        assert r["landable_area_m2"] == pytest.approx(sum(z["area_m2"] for z in mine))
        assert r["largest_clearance_m"] == max(z["clearance_m"] for z in mine)
        best = max(mine, key=lambda z: z["score"])
        assert r["best_touchdown"] == best["touchdown"] and r["best_score"] == best["score"]
        assert 0 < r["hazard_area_m2"] < r["assessed_area_m2"]
    labels, _, _ = landing_run["tiles"]["utm"]
    # on the central meridian UTM's scale is 0.9996: the ground area is the map area / 0.9996²
    assert by_tile["utm"]["assessed_area_m2"] == pytest.approx(labels.size * 0.25 / 0.9996**2, rel=1e-5)
    with rasterio.open(out / "hazard" / "utm.tif") as src:
        hazard = src.read(1)
        assert json.loads(src.tags()["TILESEG_HAZARD_CLASSES"]) == ["class2", "class3"]
    assert hazard[labels == BUILDING].min() > 127 and hazard[labels == SAFE].max() < 128
    failures = pq.read_table(out / "failures" / f"{summary.run_id}.parquet").to_pylist()
    assert [(f["tile_id"], f["stage"]) for f in failures] == [("frame", "landing")]
    assert "--gsd" in failures[0]["message"]
    assert (out / "masks" / "frame.tif").exists()  # its mask and stats stand


def test_rerun_reuses_masks_and_zones(landing_run: dict) -> None:
    out = landing_run["out"]
    cache = out / "zones" / "_tiles" / "utm.parquet"
    before = cache.stat().st_mtime_ns
    mask_before = (out / "masks" / "utm.tif").stat().st_mtime_ns
    again = segment.run(landing_run["argv"])
    assert again.tiles_written == 0 and again.tiles_skipped == 3
    assert cache.stat().st_mtime_ns == before and (out / "masks" / "utm.tif").stat().st_mtime_ns == mask_before
    first = zone_table(out, landing_run["summary"].run_id).drop(["run_id"])
    second = zone_table(out, again.run_id).drop(["run_id"])
    assert first.equals(second)


def test_zones_command_maps_another_vehicle_without_the_model(landing_run: dict, tmp_path: Path,
                                                             model_dir: str) -> None:
    out = landing_run["out"]
    bigger = profile_file(tmp_path, touchdown_radius_m=4.0, max_hazard_probability=1.0)
    masks_before = {p.name: p.stat().st_mtime_ns for p in (out / "masks").iterdir()}
    summary = zones_command.run(["--output", str(out), "--landing", bigger, "--model", model_dir, "--run_id",
                                 "bigger"])
    assert {p.name: p.stat().st_mtime_ns for p in (out / "masks").iterdir()} == masks_before
    assert summary["tiles_mapped"] == 2 and summary["tiles_failed"] == 1
    rows = zone_table(out, "bigger").to_pylist()
    labels, crs, transform = landing_run["tiles"]["utm"]
    ref = expected_zones(labels, crs, tuple(transform)[:6], model_dir, bigger)
    mine = sorted((r for r in rows if r["tile_id"] == "utm"), key=lambda r: r["zone_id"])
    assert [r["area_m2"] for r in mine] == pytest.approx([z.area_m2 for z in ref.zones])
    assert [r["clearance_m"] for r in mine] == pytest.approx([z.clearance_m for z in ref.zones])


def test_frames_without_crs_get_pixel_geometries_with_gsd(tmp_path: Path, model_dir: str) -> None:
    labels = scene(200, 260, 3)
    write_raster(tmp_path / "frame.tif", labels[None], crs=None)
    out = tmp_path / "out"
    summary = segment.run(["--input", str(tmp_path / "frame.tif"), "--output", str(out), "--model", model_dir,
                           "--precision", "float32", "--landing", profile_file(tmp_path, max_hazard_probability=1.0),
                           "--gsd", "0.25"])
    table = zone_table(out, summary.run_id)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["columns"]["geometry"]["crs"] is None
    ref = expected_zones(labels, None, (1, 0, 0, 0, 1, 0), model_dir, str(tmp_path / "profile.json"), gsd=0.25)
    rows = sorted(table.to_pylist(), key=lambda r: r["zone_id"])
    assert [r["area_m2"] for r in rows] == pytest.approx([z.area_m2 for z in ref.zones])
    for r, z in zip(rows, ref.zones):
        assert shapely.from_wkb(r["geometry"]).equals(z.geometry)  # pixel coordinates (column, row)


def test_pixels_coarser_than_the_touchdown_radius_get_no_zones(tmp_path: Path, model_dir: str) -> None:
    """A 2 m pixel can hide a person from a drone that needs a 1.5 m disc: the tile keeps its mask
    and stats, gets no zones, and its failure row says why and what to do; a 1 m tile beside it
    is mapped."""
    for name, size in (("coarse", 2.0), ("fine", 1.0)):
        write_raster(tmp_path / f"{name}.tif", scene(200, 260, 4)[None], crs="EPSG:32633",
                     transform=from_origin(500000, 4000000, size, size))
    out = tmp_path / "out"
    summary = segment.run(["--input", str(tmp_path / "*.tif"), "--output", str(out), "--model", model_dir,
                           "--precision", "float32", "--landing", profile_file(tmp_path, max_hazard_probability=1.0)])
    assert (summary.tiles_written, summary.failures, summary.without_zones) == (2, 1, 1)
    assert "2 of 2 tiles segmented, 0 failed, 1 without landing zones (masks written)" in summary.line()
    (row,) = pq.read_table(out / "failures" / f"{summary.run_id}.parquet").to_pylist()
    assert (row["tile_id"], row["stage"]) == ("coarse", "landing")
    assert "pixels are 2 m wide, coarser than the touchdown radius of 1.5 m" in row["message"]
    assert {r["tile_id"] for r in zone_table(out, summary.run_id).to_pylist()} == {"fine"}


def test_a_vrt_mosaic_maps_across_the_seam(tmp_path: Path, model_dir: str) -> None:
    """Two tiles side by side as one VRT give the zones of the single image: none break at the seam."""
    labels = scene(240, 400, 5)
    labels[:, 100:106] = SAFE  # the stream of scene() would sit across the seam otherwise
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    write_raster(tiles / "left.tif", np.ascontiguousarray(labels[None, :, :200]),
                 transform=from_origin(500000, 4000000, 0.5, 0.5))
    write_raster(tiles / "right.tif", np.ascontiguousarray(labels[None, :, 200:]),
                 transform=from_origin(500100, 4000000, 0.5, 0.5))
    mosaic = tmp_path / "mosaic"
    mosaic.mkdir()
    wkt = rasterio.crs.CRS.from_epsg(32633).to_wkt()
    sources = "".join(
        f'<SimpleSource><SourceFilename relativeToVRT="1">../tiles/{name}.tif</SourceFilename><SourceBand>1'
        f'</SourceBand><SrcRect xOff="0" yOff="0" xSize="200" ySize="240"/><DstRect xOff="{x}" yOff="0" '
        f'xSize="200" ySize="240"/></SimpleSource>' for name, x in (("left", 0), ("right", 200)))
    (mosaic / "night.vrt").write_text(
        f'<VRTDataset rasterXSize="400" rasterYSize="240"><SRS>{wkt}</SRS><GeoTransform>500000, 0.5, 0, 4000000, '
        f'0, -0.5</GeoTransform><VRTRasterBand dataType="Byte" band="1">{sources}</VRTRasterBand></VRTDataset>')
    profile = profile_file(tmp_path, max_hazard_probability=1.0)
    out = tmp_path / "out"
    summary = segment.run(["--input", str(mosaic / "night.vrt"), "--output", str(out), "--model", model_dir,
                           "--precision", "float32", "--landing", profile])
    rows = sorted(zone_table(out, summary.run_id).to_pylist(), key=lambda r: r["zone_id"])
    ref = expected_zones(labels, "EPSG:32633", (0.5, 0, 500000, 0, -0.5, 4000000), model_dir, profile)
    assert [r["area_m2"] for r in rows] == pytest.approx([z.area_m2 for z in ref.zones])
    seam_lon = shapely.from_wkb(rows[0]["geometry"])  # some zone runs across the seam (x = 500100)
    from pyproj import Transformer

    to_utm = Transformer.from_crs("OGC:CRS84", "EPSG:32633", always_xy=True)
    crossing = [r for r in rows if shapely.transform(shapely.from_wkb(r["geometry"]),
                                                     lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
                .intersects(shapely.LineString([(500100, 3999000), (500100, 4001000)]))]
    assert crossing and seam_lon.is_valid


@pytest.mark.parametrize("change, message", [
    ({"touchdown_radius_m": -1}, "touchdown_radius_m must be > 0"),
    ({"max_hazard_probability": 0}, "max_hazard_probability must be in (0, 1]"),
    ({"max_hazard_probability": 1.5}, "max_hazard_probability must be in (0, 1]"),
    ({"roles": {"Runway": "safe"}}, "does not have"),
])
def test_bad_profiles_exit_2_with_a_clear_message(tmp_path: Path, model_dir: str, change: dict, message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    write_raster(tmp_path / "t.tif", scene(64, 64, 0)[None])
    code = segment.main(["--input", str(tmp_path / "t.tif"), "--output", str(tmp_path / "out"), "--model", model_dir,
                         "--landing", profile_file(tmp_path, **change)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "masks").exists()


def test_a_model_without_landing_roles_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = str(tmp_path / "plain")
    write_identity_model(plain, patch_size=128, halo=16)
    write_raster(tmp_path / "t.tif", scene(64, 64, 0)[None])
    code = segment.main(["--input", str(tmp_path / "t.tif"), "--output", str(tmp_path / "out"), "--model", plain,
                         "--landing", "small-drone"])
    assert code == 2 and "says nothing about landing" in capsys.readouterr().err


def test_landing_evaluation_of_a_perfect_model_is_never_false_safe(model_dir: str) -> None:
    """The identity model predicts the labels themselves: no predicted zone is false-safe, and all
    the truth's zones are found (at P = 1, and with any margin the zones only shrink)."""
    from model.card import load_card
    from model.predictor import Predictor
    from training.landing_eval import evaluate_landing

    card = load_card(model_dir)
    labels = scene(160, 200, 7)
    labels[5:9, 150:160] = 255  # unlabelled in the truth: unknown ground on both sides
    image = np.where(labels == 255, 0, labels)[..., None].astype(np.uint8)
    result = evaluate_landing(Predictor.from_dir(model_dir, "float32", card), card,
                              load_profile(profile_file(Path(model_dir), max_hazard_probability=1.0)),
                              [("a", image, labels)], gsd=0.5, sweep=(1.0, 0.5), margins=(0.0, 1.0))
    curve = {(c["max_hazard_probability"], c["margin_m"]): c for c in result["curve"]}
    assert curve[(1.0, 0.0)]["false_safe_rate"] == 0.0 and curve[(1.0, 0.0)]["safe_recall"] == 1.0
    assert curve[(1.0, 1.0)]["false_safe_rate"] == 0.0 and curve[(1.0, 1.0)]["safe_recall"] < 1.0
    assert result["suggested"]["max_hazard_probability"] == 1.0 and result["suggested"]["margin_m"] == 0.0
