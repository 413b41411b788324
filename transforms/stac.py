"""A run's outputs as a STAC catalog: ``OUT/stac/catalog.json`` and one Item per tile.

Layout (every href in it is relative, the catalog is *self-contained*: the folder can be copied
or served from a bucket as it is)::

    OUT/stac/catalog.json              id "tileseg"; one ``item`` link per file under items/
    OUT/stac/items/<tile_id>.json      Item id = tile id (a tile id may hold '/', like masks/)

An Item describes one published mask:

- ``geometry``/``bbox``: the mask's outline in EPSG:4326 (lon, lat), edges densified before
  reprojection so a curved edge stays close; a mask without a CRS has neither (STAC allows
  ``geometry: null``) and says ``"tileseg:georeferenced": false``.
- ``datetime`` (and ``created``): when the mask was made (``TileResult.processed_at``, UTC).
  tileseg does not know when the input was acquired, so this is *not* the acquisition time.
- projection extension v2.0.0 on the Item (every asset shares the mask's grid): ``proj:code``
  (``EPSG:n``, or null with ``proj:wkt2``), ``proj:shape`` [rows, cols], ``proj:transform``,
  ``proj:bbox`` in the mask's CRS.
- assets: ``mask`` (the class COG, with classification extension v2.0.0 classes: one per card
  class with its pixel ``count``, plus the nodata value), ``hazard`` (the landing-hazard COG,
  when the run made one) and ``source`` (the input, as given: an absolute path or URI).
- links ``related`` to the run's stats table and landing-zone table, when given.

The catalog is rebuilt from the listing of ``stac/items/`` on every call, sorted, so runs over
different tiles add up, and calling again with the same inputs writes the same bytes (nothing
here depends on the clock). It lists the Items present, nothing more: an Item whose mask was
deleted by hand stays listed until its Item file is deleted too. Two runs finishing at once on
the same output may each write a catalog missing the other's new Items; the next run's catalog
lists them all again.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pystac
import shapely
import shapely.affinity
import shapely.geometry
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_geom

from common import fileio
from common.safepath import check_relative
from model.card import ModelCard
from transforms.masks import OutputLayout
from transforms.results import TileResult

CATALOG_ID = "tileseg"
PREFIX = "tileseg:"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
PARQUET_TYPE = "application/vnd.apache.parquet"
#: Pieces the longest edge of the outline is cut into before reprojection (shorter edges into
#: pieces of the same length): a straight edge in a projected CRS is curved in lon/lat, and
#: four corners alone would cut across that curve.
EDGE_SEGMENTS = 16
HEADER_READERS = 8  # threads reading masks' headers (network round trips on gs://)


class CatalogError(IOError):
    """The STAC catalog could not be written; the message names the file."""


# --- pure parts ---------------------------------------------------------------------------------


def class_slug(name: str, index: int) -> str:
    """A class name as the classification extension's ``name`` (``^[0-9A-Za-z-_]+$``):
    "Land (unpaved area)" -> "land-unpaved-area"; a name with no letter or digit -> "class-<index>"."""
    slug = re.sub(r"[^0-9a-z]+", "-", name.lower()).strip("-")
    return slug or f"class-{index}"


def class_slugs(card: ModelCard) -> list[str]:
    """One unique slug per class, in index order (a clash gets its class index appended), so
    the slugs can key per-class properties."""
    slugs: list[str] = []
    for c in card.classes:
        slug = class_slug(c.name, c.index)
        slugs.append(slug if slug not in slugs and slug != "nodata" else f"{slug}-{c.index}")
    return slugs


def color_hint(rgb: tuple[int, int, int]) -> str:
    """``RRGGBB``, upper case, no ``#`` (the extension's pattern)."""
    return "".join(f"{v:02X}" for v in rgb)


def footprint(crs: Any, transform: Any, width: int, height: int) -> dict[str, Any]:
    """The outline of a ``height`` x ``width`` pixel grid as a GeoJSON geometry in EPSG:4326.

    The outline is densified in pixel space (see EDGE_SEGMENTS), mapped to the CRS by the
    affine ``transform`` (rotation included) and reprojected; GDAL cuts it at the antimeridian
    (a MultiPolygon then). Rings are counter-clockwise, as GeoJSON asks."""
    outline = shapely.segmentize(shapely.box(0, 0, width, height), max(width, height) / EDGE_SEGMENTS)
    t = transform
    in_crs = shapely.affinity.affine_transform(outline, [t.a, t.b, t.d, t.e, t.c, t.f])
    lonlat = shapely.geometry.shape(transform_geom(crs, "EPSG:4326", shapely.geometry.mapping(in_crs)))
    # 1e-9 degrees is 0.1 mm: more digits only carry floating-point noise (55.200700000000005).
    oriented = shapely.orient_polygons(shapely.transform(lonlat, lambda xy: np.round(xy, 9)), exterior_cw=False)
    # Through JSON: tuples become lists, as JSON Schema validators and readers expect.
    return dict(json.loads(json.dumps(shapely.geometry.mapping(oriented))))


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _href(uri: str, root: str, up: str) -> str:
    """A relative href (``up`` leads from the Item's folder to the output folder) to ``uri``,
    or ``uri`` itself when it lies outside the output folder."""
    rel = fileio.relative_to(uri, root)
    return uri if rel is None else up + rel


def build_item(layout: OutputLayout, card: ModelCard, result: TileResult, header: dict[str, Any],
               stats_uri: str | None, zones_uri: str | None) -> pystac.Item:
    """The Item of one tile. ``header``: the mask's ``crs`` (rasterio CRS or None), ``transform``
    (Affine), ``width`` and ``height`` in pixels."""
    tile_id = result.tile_id
    check_relative(tile_id, "tile id")
    # The Item lives at stac/items/<tile_id>.json: one "../" per folder up to the output folder.
    up = "../" * (2 + tile_id.count("/"))
    crs, transform = header["crs"], header["transform"]
    width, height = int(header["width"]), int(header["height"])
    geometry = _footprint_or_none(crs, transform, width, height)
    bbox = list(shapely.geometry.shape(geometry).bounds) if geometry is not None else None

    properties: dict[str, Any] = {
        "title": tile_id,
        f"{PREFIX}georeferenced": crs is not None,
        # A local or engineering CRS (a site grid) has no way to longitude/latitude: no footprint.
        f"{PREFIX}footprint": None if crs is None or geometry is not None else "none: the CRS has no transformation "
                                                                                "to longitude/latitude",
        f"{PREFIX}model_id": card.model_id,
        f"{PREFIX}run_id": result.run_id,  # the run that made the mask
        f"{PREFIX}precision": result.precision,
        f"{PREFIX}pixels": result.pixels,
        f"{PREFIX}valid_pixels": int(sum(result.counts)),
        f"{PREFIX}pixel_size_m": _finite(result.pixel_size_m),
        f"{PREFIX}in_domain": result.in_domain,
        f"{PREFIX}mean_confidence": _finite(result.mean_confidence),
    }
    slugs = class_slugs(card)
    if result.areas is not None:
        properties[f"{PREFIX}class_area_m2"] = {s: float(a) for s, a in zip(slugs, result.areas)}
    item = pystac.Item(tile_id, geometry, bbox, result.processed_at,
                       {k: v for k, v in properties.items() if v is not None})
    item.common_metadata.created = result.processed_at  # the mask's time, never "now": same bytes on rerun

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    if crs is None:
        proj.apply(code=None, shape=[height, width])  # a pixel grid without a place on Earth
    else:
        epsg = crs.to_epsg()
        proj.apply(code=f"EPSG:{epsg}" if epsg else None, wkt2=None if epsg else crs.to_wkt(version="WKT2_2019"),
                   shape=[height, width], transform=[float(v) for v in list(transform)[:6]],
                   bbox=[float(v) for v in _grid_bounds(transform, width, height)])

    mask = pystac.Asset(up + f"masks/{tile_id}.tif", title=f"Class mask ({card.model_id})", media_type=COG_TYPE,
                        roles=["data"], extra_fields={"data_type": "uint8", "nodata": card.mask_nodata})
    item.add_asset("mask", mask)
    classes = [Classification.create(value=c.index, name=s, title=c.name, color_hint=color_hint(c.shown_color),
                                     count=int(result.counts[c.index]))
               for c, s in zip(card.classes, slugs)]
    classes.append(Classification.create(value=card.mask_nodata, name="nodata", title="No data", nodata=True,
                                         count=int(result.pixels - sum(result.counts))))
    ClassificationExtension.ext(mask, add_if_missing=True).apply(classes=classes)
    if result.hazard_classes is not None:
        names = ", ".join(card.classes[k].name for k in result.hazard_classes)
        item.add_asset("hazard", pystac.Asset(
            up + f"hazard/{tile_id}.tif", title="Landing-hazard probability", media_type=COG_TYPE, roles=["data"],
            description=f"The model's summed probability of the hazard classes ({names}) per pixel, in 255ths "
                        "(0 = surely none, 255 = surely one of them).",
            extra_fields={"data_type": "uint8"}))
    item.add_asset("source", pystac.Asset(result.source_uri, title="Input image", roles=["source"]))

    item.add_link(pystac.Link("root", up + "stac/catalog.json", pystac.MediaType.JSON))
    item.add_link(pystac.Link("parent", up + "stac/catalog.json", pystac.MediaType.JSON))
    if stats_uri is not None:
        item.add_link(pystac.Link("related", _href(stats_uri, layout.root, up), PARQUET_TYPE,
                                  f"Per-class area statistics (run {layout.run_id})"))
    if zones_uri is not None:
        item.add_link(pystac.Link("related", _href(zones_uri, layout.root, up), PARQUET_TYPE,
                                  f"Landing zones (GeoParquet, run {layout.run_id})"))
    return item


def _footprint_or_none(crs: Any, transform: Any, width: int, height: int) -> dict[str, Any] | None:
    if crs is None:
        return None
    try:
        return footprint(crs, transform, width, height)
    except Exception:  # noqa: BLE001 - rasterio/GDAL raise several types for CRSs without a path to WGS 84
        return None


def _grid_bounds(transform: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) in the CRS of the grid's four corners (rotation included)."""
    xs, ys = zip(*(transform @ (c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))))
    return min(xs), min(ys), max(xs), max(ys)


def build_catalog(layout: OutputLayout, item_paths: list[str]) -> pystac.Catalog:
    """The catalog listing ``item_paths`` (relative to stac/items/, '/' separators), sorted."""
    root = layout.root.rstrip("/")
    catalog = pystac.Catalog(CATALOG_ID, f"Segmentation masks written by tileseg to {root}: one item per tile, "
                             "with its class mask, landing-hazard probabilities (when made) and input.",
                             title=f"tileseg outputs in {root}", catalog_type=pystac.CatalogType.SELF_CONTAINED)
    catalog.clear_links()  # pystac's own links point at objects; ours are plain relative hrefs
    catalog.add_link(pystac.Link("root", "./catalog.json", pystac.MediaType.JSON))
    for path in sorted(item_paths):
        catalog.add_link(pystac.Link("item", f"./items/{path}", pystac.MediaType.GEOJSON, path[: -len(".json")]))
    return catalog


def _dumps(obj: pystac.STACObject) -> str:
    # transform_hrefs=False: the hrefs stay the relative ones given; sort_keys: stable bytes.
    data = obj.to_dict(include_self_link=False, transform_hrefs=False)
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"


# --- I/O ----------------------------------------------------------------------------------------


def read_header(uri: str) -> dict[str, Any]:
    """The mask's grid: ``crs`` (None without one), ``transform``, ``width``, ``height``."""
    try:
        # A mask without a CRS is described as such (geometry null), not warned about.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = fileio.open_raster(uri)
        with src:
            return {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}
    except OSError as exc:
        raise CatalogError(f"{uri}: cannot read the mask to describe it ({exc}); rerun the tile") from exc


def listed_items(layout: OutputLayout) -> list[str]:
    """Item files under stac/items/ (recursively), relative to it with '/' separators."""
    folder = layout.stac_items_dir()
    found = (fileio.relative_to(uri, folder) for uri in fileio.match(folder) if uri.endswith(".json"))
    return sorted(rel for rel in found if rel is not None)


def write_catalog(layout: OutputLayout, card: ModelCard, results: list[TileResult], stats_uri: str | None,
                  zones_uri: str | None) -> str:
    """Write or refresh OUT/stac: one STAC Item per tile of ``results``, then OUT/stac/catalog.json
    listing every item present under OUT/stac/items/ (so items of tiles from earlier runs stay).
    Returns the catalog's URI.

    A tile skipped as up to date keeps the item it has (an item describes the mask, which did not
    change, and its links name the run that made it), so a nightly rerun over 10^4 done tiles
    reads no mask; only a run with landing zones rewrites them, to link its zone table. Masks'
    headers are read on a few threads: on ``gs://`` each read is a round trip."""
    ordered = sorted(results, key=lambda r: r.tile_id)
    uris = [layout.stac_item_uri(r.tile_id) for r in ordered]  # every tile id checked before anything is written
    todo = [(r, u) for r, u in zip(ordered, uris) if not (r.reused and zones_uri is None and fileio.exists(u))]

    def write(job: tuple[TileResult, str]) -> None:
        result, uri = job
        header = read_header(layout.mask_uri(result.tile_id))  # the file the mask asset's href names
        text = _dumps(build_item(layout, card, result, header, stats_uri, zones_uri))
        with fileio.open_file(uri, "w") as f:
            f.write(text)

    with ThreadPoolExecutor(max_workers=HEADER_READERS) as pool:
        list(pool.map(write, todo))  # list(): the first failure is raised here
    catalog_uri = layout.stac_catalog_uri()
    with fileio.open_file(catalog_uri, "w") as f:
        f.write(_dumps(build_catalog(layout, listed_items(layout))))
    return catalog_uri
