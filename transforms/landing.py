"""LandingZones: each finished tile's landing zones, from its published mask (and hazard COG).

The zones are computed from the run's outputs, not from the model's in-memory output, for three
reasons: a block's zones need its neighbours' labels (a halo of ground metres), which only the
published mask has; ``tileseg zones`` recomputes them for another vehicle from the same files,
without the model; and a tile skipped as up to date gets zones like any other.

A tile's zones are cached under ``zones/_tiles/<tile_id>.parquet`` with a key of the mask's
result (file, model, settings, when it was made) and the rules (profile hash, roles, --gsd):
a rerun with the same key reads them back instead of computing them again, as masks are reused.
The run's last step gathers every tile's zones into ``zones/<run_id>.parquet`` (GeoParquet) and
one summary row per tile into ``zones/<run_id>.summary.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common import fileio
from common.ground import GroundError, GroundMetric
from common.memory import release_free_memory
from common.zones import TileZones, ZoneRules, map_zones
from model.card import ModelCard
from model.landing import LandingError, Profile, zone_rules
from transforms.failures import FAILED, failure_record
from transforms.geoparquet import BBOX, bbox_of, write_geoparquet
from transforms.masks import OutputLayout
from transforms.results import TileResult

log = logging.getLogger(__name__)

#: Bump when the zones of the same mask and rules change (algorithm, columns): caches are redone.
ZONES_VERSION = 1
LANDING_BLOCK = 1024  # block edge of the zone mapper (memory ~ 60 bytes per block pixel)

ZONE_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("tile_id", pa.string()),
    ("zone_id", pa.int32()),           # 1.. per tile, in raster order of the touchdown points
    ("geometry", pa.binary()),         # WKB (Multi)Polygon: the admissible centres, OGC:CRS84 (or pixels)
    ("bbox", BBOX),
    ("touchdown", pa.binary()),        # WKB Point: the centre farthest from any hazard
    ("clearance_m", pa.float64()),     # its distance to the nearest hazard (up to the horizon)
    ("area_m2", pa.float64()),         # geodesic
    ("score", pa.float64()),
    ("caution_share", pa.float64()),   # mean over the centres of the caution share within R
    ("mean_hazard_probability", pa.float64()),  # likewise of the hazard probability (null: not kept)
    ("in_domain", pa.bool_()),         # the tile's domain check (false: the score is halved)
    ("pixels", pa.int64()),
    ("model_id", pa.string()),
    ("profile", pa.string()),
    ("profile_sha256", pa.string()),
])

SUMMARY_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("tile_id", pa.string()),
    ("zone_count", pa.int32()),
    ("landable_area_m2", pa.float64()),
    ("largest_clearance_m", pa.float64()),
    ("best_zone_id", pa.int32()),
    ("best_score", pa.float64()),
    ("best_touchdown", pa.binary()),   # WKB Point of the best-scoring zone
    ("assessed_area_m2", pa.float64()),  # valid (not nodata) ground
    ("hazard_area_m2", pa.float64()),
    ("clearance_horizon_m", pa.float64()),
    ("in_domain", pa.bool_()),
    ("georeferenced", pa.bool_()),
    ("model_id", pa.string()),
    ("profile", pa.string()),
    ("profile_sha256", pa.string()),
])


@dataclass(frozen=True)
class LandingSettings:
    """What a run's landing zones are made with."""

    profile: Profile
    rules: ZoneRules
    hazard_names: tuple[str, ...]
    gsd_m: float | None = None
    block: int = LANDING_BLOCK

    @classmethod
    def of(cls, card: ModelCard, profile: Profile, gsd_m: float | None = None, block: int = LANDING_BLOCK) -> LandingSettings:
        rules = zone_rules(card, profile)  # LandingError when the card has no roles
        return cls(profile, rules, tuple(card.classes[k].name for k in rules.hazard_classes), gsd_m, block)

    @property
    def hazard_classes(self) -> tuple[int, ...]:
        return self.rules.hazard_classes

    def key(self, result: TileResult) -> str:
        text = json.dumps({"mask": result.to_json(), "profile": self.profile.sha256, "rules": repr(self.rules),
                           "gsd": self.gsd_m, "version": ZONES_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class TileZoneRecord:
    """One tile's contribution to the run's zone tables (rows without run_id)."""

    tile_id: str
    zones: list[dict[str, Any]]
    summary: dict[str, Any]
    georeferenced: bool


def zones_of_tile(result: TileResult, layout: OutputLayout, card: ModelCard, settings: LandingSettings) -> TileZoneRecord:
    """The tile's zones: from the cache when its key matches, else computed and cached."""
    cache = layout.zones_cache_uri(result.tile_id)
    key = settings.key(result)
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached
    record = compute_tile_zones(result, layout, card, settings)
    _write_cache(cache, key, record)
    return record


def compute_tile_zones(result: TileResult, layout: OutputLayout, card: ModelCard,
                       settings: LandingSettings) -> TileZoneRecord:
    mask_uri = layout.mask_uri(result.tile_id)
    rules = settings.rules
    release_free_memory()  # what writing masks freed, so the zone mapper reuses it instead of adding to it
    with fileio.open_raster(mask_uri) as src:
        wkt = src.crs.to_wkt() if src.crs else None
        try:
            metric = GroundMetric.of(wkt, tuple(src.transform)[:6], src.height, src.width, settings.gsd_m)
        except GroundError as exc:
            raise LandingError(f"{result.source_uri}: {exc}") from None
        _check_resolution(result, metric, settings)
        hazard_src = _hazard_source(result, layout, settings)
        try:
            zones = map_zones(src.height, src.width, window_reader(src, hazard_src, rules.nodata), metric, rules,
                              settings.block, result.in_domain)
        finally:
            if hazard_src is not None:
                hazard_src.close()
    return _record(result, card, settings, zones, metric)


def _check_resolution(result: TileResult, metric: GroundMetric, settings: LandingSettings) -> None:
    """A pixel wider than the touchdown radius hides hazards the vehicle cannot land on (a person,
    a post): such a tile gets no zones rather than zones that look safe (e.g. 30 m satellite
    pixels for a 1.5 m drone)."""
    pixel_m = max(metric.sampling)
    radius = settings.profile.touchdown_radius_m
    if pixel_m > radius:
        raise LandingError(f"{result.source_uri}: its pixels are {pixel_m:.3g} m wide, coarser than the touchdown "
                           f"radius of {radius:g} m of profile {settings.profile.name!r}: a hazard smaller than a pixel "
                           f"cannot be seen, so no ground is called safe; map zones on imagery of at most {radius:g} m "
                           "per pixel (or check --gsd)")


def _hazard_source(result: TileResult, layout: OutputLayout, settings: LandingSettings) -> Any:
    """The tile's hazard COG when it holds these rules' hazard classes; LandingError when P < 1
    needs it and it is missing or made for other classes."""
    uri = layout.hazard_uri(result.tile_id)
    matches = result.hazard_classes == settings.hazard_classes and fileio.exists(uri)
    if matches:
        return fileio.open_raster(uri)
    if settings.rules.uses_probability:
        why = ("was made without --landing" if result.hazard_classes is None else
               "holds the probabilities of other hazard classes")
        raise LandingError(f"{result.source_uri}: its mask {why}, and max_hazard_probability < 1 needs the model's "
                           f"probabilities of {', '.join(settings.hazard_names)}; rerun tileseg run --landing "
                           f"{settings.profile.name} --overwrite for this tile")
    return None


def window_reader(src: Any, hazard_src: Any, nodata: int) -> Any:
    """Boundless windowed reads of the mask (nodata beyond the edge) and the hazard COG (255)."""
    from rasterio.windows import Window

    height, width = src.height, src.width

    def read(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray | None]:
        labels = np.full((r1 - r0, c1 - c0), nodata, np.uint8)
        prob = None if hazard_src is None else np.full((r1 - r0, c1 - c0), 255, np.uint8)
        rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, height), min(c1, width)
        if rr1 > rr0 and cc1 > cc0:
            window = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
            inner = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
            labels[inner] = src.read(1, window=window)
            if prob is not None:
                prob[inner] = hazard_src.read(1, window=window)
        return labels, prob

    return read


def _record(result: TileResult, card: ModelCard, settings: LandingSettings, zones: TileZones,
            metric: GroundMetric) -> TileZoneRecord:
    import shapely
    from shapely.geometry import Point

    georeferenced = metric.kind != "gsd"

    def out(geom: Any) -> Any:
        return shapely.transform(geom, lambda xy: np.column_stack(metric.to_lonlat(xy[:, 0], xy[:, 1])))

    common = {"tile_id": result.tile_id, "model_id": card.model_id, "profile": settings.profile.name,
              "profile_sha256": settings.profile.sha256}
    rows = []
    for z in zones.zones:
        geometry = shapely.to_wkb(out(z.geometry))
        row, col = z.touchdown
        rows.append({**common, "zone_id": z.zone_id, "geometry": geometry, "bbox": bbox_of(geometry),
                     "touchdown": shapely.to_wkb(out(Point(col + 0.5, row + 0.5))), "clearance_m": z.clearance_m,
                     "area_m2": z.area_m2, "score": z.score, "caution_share": z.caution_share,
                     "mean_hazard_probability": z.mean_hazard_probability, "in_domain": result.in_domain,
                     "pixels": z.pixels})
    best = max(rows, key=lambda r: (r["score"], -r["zone_id"]), default=None)
    summary = {**common, "zone_count": len(rows), "landable_area_m2": zones.landable_area_m2,
               "largest_clearance_m": max((r["clearance_m"] for r in rows), default=None),
               "best_zone_id": None if best is None else best["zone_id"],
               "best_score": None if best is None else best["score"],
               "best_touchdown": None if best is None else best["touchdown"],
               "assessed_area_m2": zones.assessed_area_m2, "hazard_area_m2": zones.hazard_area_m2,
               "clearance_horizon_m": zones.horizon_m, "in_domain": result.in_domain, "georeferenced": georeferenced}
    return TileZoneRecord(result.tile_id, rows, summary, georeferenced)


def _read_cache(uri: str, key: str) -> TileZoneRecord | None:
    try:
        if not fileio.exists(uri):
            return None
        with fileio.open_file(uri, "rb") as f:
            table = pq.read_table(pa.BufferReader(f.read()))
    except Exception:  # noqa: BLE001 - an unreadable cache is simply redone
        return None
    meta = table.schema.metadata or {}
    if meta.get(b"tileseg_zones_key", b"").decode() != key:
        return None
    summary = json.loads(meta[b"tileseg_zones_summary"])
    if summary.get("best_touchdown") is not None:
        summary["best_touchdown"] = bytes.fromhex(summary["best_touchdown"])
    rows = table.to_pylist()
    for r in rows:
        r.pop("run_id", None)
    return TileZoneRecord(str(summary["tile_id"]), rows, summary, bool(summary["georeferenced"]))


def _write_cache(uri: str, key: str, record: TileZoneRecord) -> None:
    summary = dict(record.summary)
    if summary.get("best_touchdown") is not None:
        summary["best_touchdown"] = summary["best_touchdown"].hex()
    table = pa.Table.from_pylist([{**r, "run_id": None} for r in record.zones], schema=ZONE_SCHEMA)
    table = table.replace_schema_metadata({b"tileseg_zones_key": key.encode(),
                                           b"tileseg_zones_summary": json.dumps(summary).encode()})
    try:
        with fileio.local_scratch() as tmp:
            local = fileio.join(tmp, "zones.parquet")
            pq.write_table(table, local, compression="zstd")
            fileio.publish(local, uri)
    except OSError as exc:  # the zones are still reported; only the reuse is lost
        log.warning("%s: cannot cache its zones at %s (%s)", record.tile_id, uri, exc)


def write_zone_tables(records: list[TileZoneRecord], layout: OutputLayout, settings: LandingSettings) -> dict[str, Any]:
    """The run's zone tables: ``zones/<run_id>.parquet`` (georeferenced tiles, OGC:CRS84), with
    ``<run_id>.pixels.parquet`` for tiles without a CRS when the run has both, and the per-tile
    summary. Returns what the run summary says about them."""
    by_tile = {r.tile_id: r for r in records}
    kept = [by_tile[k] for k in sorted(by_tile)]
    geo = [r for r in kept if r.georeferenced]
    pixel = [r for r in kept if not r.georeferenced]
    extra = {"tileseg_profile": json.dumps({"name": settings.profile.name, "sha256": settings.profile.sha256}),
             "tileseg_run_id": layout.run_id}
    cols = {"geometry": ["Polygon", "MultiPolygon"], "touchdown": ["Point"]}

    def rows(of: list[TileZoneRecord]) -> list[dict[str, Any]]:
        out = [{**z, "run_id": layout.run_id} for r in of for z in r.zones]
        return sorted(out, key=lambda z: (z["tile_id"], -z["score"], z["zone_id"]))

    main_uri = layout.zones_uri()
    if geo or not pixel:
        write_geoparquet(rows(geo), ZONE_SCHEMA, main_uri, cols, "geometry", True, extra=extra)
        pixel_uri = main_uri[: -len(".parquet")] + ".pixels.parquet" if pixel else None
    else:
        pixel_uri = main_uri
    if pixel_uri is not None:
        write_geoparquet(rows(pixel), ZONE_SCHEMA, pixel_uri, cols, "geometry", False, extra=extra)
    summary_rows = [{**r.summary, "run_id": layout.run_id} for r in kept]
    write_geoparquet(summary_rows, SUMMARY_SCHEMA, layout.zones_summary_uri(), {"best_touchdown": ["Point"]},
                     "best_touchdown", not pixel, covering=None, extra=extra)
    return {"zones_uri": main_uri, "zones_pixels_uri": pixel_uri if pixel_uri != main_uri else None,
            "zones_summary_uri": layout.zones_summary_uri(), "zones_total": sum(len(r.zones) for r in kept),
            "landable_area_m2": float(sum(r.summary["landable_area_m2"] for r in kept)),
            "landing_profile": settings.profile.name}


class ZonesFn(beam.DoFn):
    """TileResult → its TileZoneRecord, or a failure (stage "landing") on ``failed``."""

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: LandingSettings) -> None:
        self._card = card
        self._layout = layout
        self._settings = settings

    def process(self, result: TileResult) -> Iterator[Any]:
        try:
            yield zones_of_tile(result, self._layout, self._card, self._settings)
        except Exception as exc:  # noqa: BLE001 - one tile's zones must not stop the others
            yield beam.pvalue.TaggedOutput(FAILED, (result.tile_id, failure_record(result.source_uri, result.tile_id,
                                                                                 "landing", exc)))


class LandingZones(beam.PTransform):
    """TileResults → TileZoneRecords (main) and keyed landing failures (``failed``)."""

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: LandingSettings) -> None:
        super().__init__()
        self._fn = ZonesFn(card, layout, settings)

    def expand(self, results: beam.PCollection) -> Any:
        return results | "MapZones" >> beam.ParDo(self._fn).with_outputs(FAILED, main="main")
