"""The STAC catalog (transforms/stac.py) of one small real run (DirectRunner, --landing).

The model is the identity model of tests/models.py with classes renamed to what real cards hold
(spaces, parentheses, a '/', one display colour), so the mask equals the input labels. Every
object is validated with pystac offline: the core STAC schemas are bundled with pystac; the
projection and classification extension schemas are not, and tests have no network, so those
fields are checked by hand against the card and the mask instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely
import shapely.geometry
from pyproj import Geod
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.validation import JsonSchemaSTACValidator, RegisteredValidator, set_validator, validate_all, validate_dict
from pystac.validation.stac_validator import GetSchemaError
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from common.safepath import UnsafePathError
from model.card import ClassInfo, ModelCard, load_card, save_card
from pipelines import segment
from tests.models import write_identity_model
from tests.rasters import write_raster
from tests.test_landing_pipeline import profile_file, scene
from transforms.masks import OutputLayout
from transforms.results import TAG_RESULT, TileResult
from transforms.stac import CatalogError, write_catalog

pytestmark = pytest.mark.slow

NAMES = ["Land (unpaved area)", "Road", "Building", "Water", "Vegetation", "Sky/Clouds", "Unlabeled"]
SLUGS = ["land-unpaved-area", "road", "building", "water", "vegetation", "sky-clouds", "unlabeled"]
ROLES = dict(zip(NAMES, ["safe", "caution", "hazard", "hazard", "safe", "safe", "safe"]))
WATER_SHOWN = (250, 0, 0)  # a display colour: the catalog shows what the masks' palette shows
# A transverse Mercator without an EPSG code: the item must carry proj:wkt2 instead of an EPSG code.
CUSTOM_CRS = "+proj=tmerc +lat_0=0 +lon_0=10 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
TILES = {  # tile id: (labels, crs, transform)
    "utm": (scene(150, 210, 1), "EPSG:32633", from_origin(500000, 4000000, 0.5, 0.5)),
    "area/geo": (scene(120, 160, 2), "EPSG:4326", from_origin(55.2, 25.3, 5e-6, 5e-6)),
    "custom": (scene(100, 130, 3), CUSTOM_CRS, from_origin(1000, 5000000, 0.5, 0.5)),
    "frame": (scene(90, 110, 4), None, None),
}
PROJ_V2 = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CLASSIFICATION_V2 = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One pipeline run over TILES with --landing (hazard COGs and a zones table)."""
    model_dir = str(tmp_path_factory.mktemp("model"))
    card = write_identity_model(model_dir, patch_size=128, halo=16)
    classes = tuple(ClassInfo(c.index, NAMES[c.index], c.color, WATER_SHOWN if NAMES[c.index] == "Water" else None)
                    for c in card.classes)
    save_card(dataclasses.replace(card, classes=classes, landing={"roles": ROLES, "why": "test roles"}), model_dir)
    inp = tmp_path_factory.mktemp("in")
    for tile_id, (labels, crs, transform) in TILES.items():
        (inp / tile_id).parent.mkdir(parents=True, exist_ok=True)
        kw = {"crs": crs, "transform": transform} if crs else {"crs": None}
        write_raster(inp / f"{tile_id}.tif", labels[None], **kw)
    profile = profile_file(inp, hazard_buffer_m={"default": 1.0})
    out = tmp_path_factory.mktemp("out")
    summary = segment.run(["--input", str(inp / "**" / "*.tif"), "--output", str(out), "--model", model_dir,
                           "--precision", "float32", "--landing", profile])
    assert summary.tiles_written == len(TILES) and summary.zones_uri is not None
    results = {}
    for tile_id in TILES:
        with rasterio.open(out / "masks" / f"{tile_id}.tif") as src:
            results[tile_id] = TileResult.from_json(src.tags()[TAG_RESULT])
    return {"out": out, "run_id": summary.run_id, "card": load_card(model_dir), "results": results}


def fresh_output(run: dict[str, Any], folder: Path) -> OutputLayout:
    """A copy of the run's output without the catalog the run wrote, so each test writes its own."""
    copy = folder / "out"
    shutil.copytree(run["out"], copy, ignore=shutil.ignore_patterns("stac"))
    return OutputLayout(str(copy), run["run_id"])


def write(run: dict[str, Any], layout: OutputLayout, tile_ids: list[str] | None = None) -> str:
    results = [run["results"][t] for t in (tile_ids or list(TILES))]
    return write_catalog(layout, run["card"], results, layout.stats_uri(), layout.zones_uri())


@pytest.fixture(scope="module")
def catalog(run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """write_catalog once over every tile of the run; read-only for the tests that use it."""
    layout = fresh_output(run, tmp_path_factory.mktemp("catalog"))
    uri = write(run, layout)
    items = {t: json.loads(Path(layout.root, "stac", "items", f"{t}.json").read_text()) for t in TILES}
    return {"layout": layout, "uri": uri, "items": items}


def snapshot(folder: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# --- offline validation -------------------------------------------------------------------------


class OfflineValidator(JsonSchemaSTACValidator):
    """pystac's JSON Schema validator that never touches the network: schemas come only from the
    copies bundled with pystac; an extension schema that is not bundled is skipped and recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: set[str] = set()
        self.validated: list[tuple[str, str]] = []  # (object id, core schema URI)

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            raise GetSchemaError(schema_uri, LookupError("not bundled with pystac, and tests have no network"))
        return self.schema_cache[schema_uri]

    def validate_core(self, stac_dict: dict[str, Any], stac_object_type: Any, stac_version: str,
                      href: str | None = None) -> str | None:
        uri = super().validate_core(stac_dict, stac_object_type, stac_version, href)
        if uri is not None:
            self.validated.append((stac_dict["id"], uri))
        return uri

    def validate_extension(self, stac_dict: dict[str, Any], stac_object_type: Any, stac_version: str,
                           extension_id: str, href: str | None = None) -> str | None:
        if extension_id not in self.schema_cache:
            self.skipped.add(extension_id)
            return None
        return super().validate_extension(stac_dict, stac_object_type, stac_version, extension_id, href)


@contextlib.contextmanager
def offline() -> Iterator[OfflineValidator]:
    """Validate with OfflineValidator inside the block; pystac's validator as before afterwards."""
    previous = RegisteredValidator.get_validator()
    validator = OfflineValidator()
    set_validator(validator)
    try:
        yield validator
    finally:
        set_validator(previous)


def test_catalog_and_items_validate_against_the_core_schemas(catalog: dict[str, Any]) -> None:
    uri = catalog["uri"]
    with offline() as v:
        validate_all(json.loads(Path(uri).read_text()), uri)  # the catalog, then every item it links
    assert not isinstance(RegisteredValidator.get_validator(), OfflineValidator)  # restored
    ids = [i for i, _ in v.validated]
    assert sorted(ids) == sorted(["tileseg", *TILES])
    schemas = {s.rsplit("/", 1)[-1] for _, s in v.validated}
    assert schemas == {"catalog.json", "item.json"}


def test_extension_schemas_are_checked_by_hand_offline(catalog: dict[str, Any]) -> None:
    with offline() as v:
        validate_all(json.loads(Path(catalog["uri"]).read_text()), catalog["uri"])
    if v.skipped:
        assert v.skipped == {PROJ_V2, CLASSIFICATION_V2}
        pytest.skip(f"extension schemas are not bundled with pystac and tests have no network: {sorted(v.skipped)} "
                    "not validated (test_items_describe_the_masks checks their fields by hand)")


# --- content ------------------------------------------------------------------------------------


def test_catalog_lists_exactly_the_tiles_and_every_href_resolves(catalog: dict[str, Any]) -> None:
    layout: OutputLayout = catalog["layout"]
    cat = pystac.Catalog.from_file(catalog["uri"])
    assert cat.id == "tileseg" and layout.root in (cat.description or "") and layout.root in (cat.title or "")
    items = {i.id: i for i in cat.get_items()}
    assert sorted(items) == sorted(TILES)
    for tile_id, item in items.items():
        assert os.path.normpath(item.get_self_href() or "") == os.path.join(layout.root, "stac", "items",
                                                                            f"{tile_id}.json")
        assert item.assets["mask"].get_absolute_href() == layout.mask_uri(tile_id)
        assert item.assets["hazard"].get_absolute_href() == layout.hazard_uri(tile_id)
    # Every href on disk is relative (but the input's) and leads to an existing file.
    stac = Path(layout.root, "stac")
    for path in stac.rglob("*.json"):
        data = json.loads(path.read_text())
        assert "self" not in {link["rel"] for link in data["links"]}
        hrefs = [link["href"] for link in data["links"]]
        hrefs += [a["href"] for name, a in data.get("assets", {}).items() if name != "source"]
        for href in hrefs:
            assert not href.startswith("/") and "://" not in href, (path, href)
            assert (path.parent / href).resolve().is_file(), (path, href)
        if "assets" in data:
            assert Path(data["assets"]["source"]["href"]).is_file()
            assert data["assets"]["source"]["roles"] == ["source"]
    catalog_links = json.loads(Path(catalog["uri"]).read_text())["links"]
    assert [link["href"] for link in catalog_links if link["rel"] == "item"] == \
        sorted(f"./items/{t}.json" for t in TILES)


def test_items_describe_the_masks(run: dict[str, Any], catalog: dict[str, Any]) -> None:
    card: ModelCard = run["card"]
    layout: OutputLayout = catalog["layout"]
    wkt2_seen = False
    for tile_id, item in catalog["items"].items():
        result: TileResult = run["results"][tile_id]
        props = item["properties"]
        assert item["id"] == tile_id and item["stac_extensions"] == [PROJ_V2, CLASSIFICATION_V2]
        assert ProjectionExtension.get_schema_uri() == PROJ_V2 and ClassificationExtension.get_schema_uri() == \
            CLASSIFICATION_V2
        assert props["datetime"] == props["created"] == result.processed_at.isoformat().replace("+00:00", "Z")
        assert props["tileseg:model_id"] == card.model_id and props["tileseg:run_id"] == run["run_id"]
        assert "tileseg:reused" not in props and props["tileseg:mean_confidence"] == result.mean_confidence
        with rasterio.open(layout.mask_uri(tile_id)) as src:
            mask = src.read(1)
            crs, transform, bounds = src.crs, src.transform, src.bounds
        # classification: the card's classes, slugged names, shown colours, and the mask's own counts
        counts = np.bincount(mask.ravel(), minlength=256)
        classes = item["assets"]["mask"]["classification:classes"]
        assert [c["name"] for c in classes] == [*SLUGS, "nodata"]
        assert [c["title"] for c in classes[:-1]] == NAMES
        assert [c["value"] for c in classes] == [*range(len(NAMES)), card.mask_nodata]
        assert [c["color_hint"] for c in classes[:-1]] == ["".join(f"{v:02X}" for v in c.shown_color) for c in card.classes]
        assert classes[SLUGS.index("water")]["color_hint"] == "FA0000"
        assert [c["count"] for c in classes] == [int(counts[c["value"]]) for c in classes]
        assert classes[-1] == {"value": card.mask_nodata, "name": "nodata", "title": "No data", "nodata": True,
                               "count": 0}
        assert "nodata" not in [c.get("nodata") and c["name"] for c in classes[:-1]]
        assert item["assets"]["mask"]["nodata"] == card.mask_nodata
        # projection: the mask's grid
        assert props["proj:shape"] == list(mask.shape)
        assert props["tileseg:georeferenced"] is (crs is not None)
        if crs is None:
            continue
        epsg = crs.to_epsg()
        if epsg:
            assert props["proj:code"] == f"EPSG:{epsg}" and "proj:wkt2" not in props
        else:
            wkt2_seen = True
            assert props["proj:code"] is None and props["proj:wkt2"].startswith("PROJCRS")
            assert CRS.from_wkt(props["proj:wkt2"]) == crs
        assert props["proj:transform"] == pytest.approx(list(transform)[:6])
        assert props["proj:bbox"] == pytest.approx(list(bounds))
        # footprint: valid, counter-clockwise, holds the tile's centre and corners; bbox = its bounds
        geom = shapely.geometry.shape(item["geometry"])
        assert geom.geom_type == "Polygon" and geom.is_valid and shapely.is_ccw(geom.exterior)
        h, w = mask.shape
        pts = [transform @ (c, r) for c, r in ((w / 2, h / 2), (0, 0), (w, 0), (0, h), (w, h))]
        lons, lats = warp_transform(crs, "EPSG:4326", [p[0] for p in pts], [p[1] for p in pts])
        assert geom.contains(shapely.Point(lons[0], lats[0]))
        assert all(geom.buffer(1e-8).contains(shapely.Point(x, y)) for x, y in zip(lons[1:], lats[1:]))
        assert item["bbox"] == pytest.approx(list(geom.bounds), abs=1e-12)
        # its geodesic area is the tile's ground area (the sum of the per-class areas)
        assert result.areas is not None
        assert abs(Geod(ellps="WGS84").geometry_area_perimeter(geom)[0]) == pytest.approx(sum(result.areas), rel=1e-3)
        assert props["tileseg:class_area_m2"] == dict(zip(SLUGS, result.areas))
    assert wkt2_seen  # the custom CRS exercised the branch without an EPSG code


def test_hazard_asset_and_links_to_the_runs_tables(run: dict[str, Any], catalog: dict[str, Any]) -> None:
    layout: OutputLayout = catalog["layout"]
    for tile_id, item in catalog["items"].items():
        hazard = item["assets"]["hazard"]
        assert hazard["roles"] == ["data"] and hazard["type"].endswith("profile=cloud-optimized")
        assert "Building" in hazard["description"] and "Water" in hazard["description"]
        assert "Road" not in hazard["description"]
        base = Path(layout.root, "stac", "items", tile_id).parent
        related = {os.path.normpath(base / link["href"]): link for link in item["links"] if link["rel"] == "related"}
        assert set(related) == {layout.stats_uri(), layout.zones_uri()}
        assert related[layout.stats_uri()]["title"] == f"Per-class area statistics (run {run['run_id']})"
        assert related[layout.zones_uri()]["title"].startswith("Landing zones (GeoParquet")
        assert {link["type"] for link in related.values()} == {"application/vnd.apache.parquet"}
        assert [link["rel"] for link in item["links"][:2]] == ["root", "parent"]


def test_a_tile_without_crs_has_no_geometry_and_validates(catalog: dict[str, Any]) -> None:
    item = catalog["items"]["frame"]
    assert item["geometry"] is None and "bbox" not in item
    assert item["properties"]["tileseg:georeferenced"] is False
    assert item["properties"]["proj:code"] is None and "proj:transform" not in item["properties"]
    assert "tileseg:class_area_m2" not in item["properties"]  # no CRS, no ground areas
    with offline() as v:
        validate_dict(item)
        # not vacuous: the same item without its datetime is rejected
        broken = {**item, "properties": {k: x for k, x in item["properties"].items() if k != "datetime"}}
        with pytest.raises(pystac.STACValidationError, match="datetime"):
            validate_dict(broken)
    assert v.validated[0] == ("frame", "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json")


# --- reruns and unsafe ids -------------------------------------------------------------------------


def test_writing_again_with_the_same_inputs_writes_identical_bytes(run: dict[str, Any], tmp_path: Path) -> None:
    layout = fresh_output(run, tmp_path)
    write(run, layout)
    first = snapshot(os.path.join(layout.root, "stac"))
    write(run, layout)
    assert snapshot(os.path.join(layout.root, "stac")) == first
    assert sorted(first) == sorted(["catalog.json", *(f"items/{t}.json" for t in TILES)])


def test_a_later_run_over_other_tiles_keeps_the_earlier_items(run: dict[str, Any], tmp_path: Path) -> None:
    layout = fresh_output(run, tmp_path)
    uri = write(run, layout, ["utm"])
    utm = Path(layout.root, "stac", "items", "utm.json").read_bytes()
    assert [i.id for i in pystac.Catalog.from_file(uri).get_items()] == ["utm"]
    write(run, layout, ["area/geo"])
    assert sorted(i.id for i in pystac.Catalog.from_file(uri).get_items()) == ["area/geo", "utm"]
    assert Path(layout.root, "stac", "items", "utm.json").read_bytes() == utm


def test_a_nightly_rerun_keeps_the_items_of_tiles_skipped_as_up_to_date(run: dict[str, Any], tmp_path: Path) -> None:
    """A reused tile's item describes the same mask: it is kept as it is and its mask is not
    opened (here: removed, so opening it would fail); a new tile's item is written."""
    layout = fresh_output(run, tmp_path)
    write(run, layout, ["utm"])
    utm = Path(layout.root, "stac", "items", "utm.json").read_bytes()
    os.remove(layout.mask_uri("utm"))
    reused = dataclasses.replace(run["results"]["utm"], reused=True)
    write_catalog(layout, run["card"], [reused, run["results"]["frame"]], layout.stats_uri(), None)
    assert Path(layout.root, "stac", "items", "utm.json").read_bytes() == utm
    assert Path(layout.root, "stac", "items", "frame.json").exists()
    # With landing zones the items are rewritten to link this run's zone table: the mask is read.
    with pytest.raises(CatalogError, match="cannot read the mask"):
        write_catalog(layout, run["card"], [reused], layout.stats_uri(), layout.zones_uri())


@pytest.mark.parametrize("tile_id", ["../escape", "area/../../escape", "/abs/escape", "area//x"])
def test_a_tile_id_cannot_leave_the_output_folder(run: dict[str, Any], tmp_path: Path, tile_id: str) -> None:
    layout = fresh_output(run, tmp_path)
    bad = dataclasses.replace(run["results"]["utm"], tile_id=tile_id)
    with pytest.raises(UnsafePathError, match="tile id"):
        write_catalog(layout, run["card"], [run["results"]["custom"], bad], layout.stats_uri(), None)
    # nothing written: the ids are checked before the first item
    assert not Path(layout.root, "stac").exists()
    assert not list(tmp_path.rglob("escape*")) and not Path("/abs/escape.json").exists()
