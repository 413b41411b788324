"""FinishRun: the pipeline's last step, on every runner: the run's stats and failures tables, the
manifest of done tiles, its summary (``stats/<run_id>.json``) and the removal of its staging.

It is a step of the pipeline, not code after ``run()``, because a Dataflow (Flex Template)
launcher submits the job and exits: nothing after the submit may count on the job being done.
Every input of the step is a whole collected table, so it runs once all tiles are finished, and
it is safe to run twice (it rewrites the same files and removes what is already gone).

It also keeps the run's books: one result per tile (a retried bundle or two workers finishing a
tile at once may send two), no failure row for a tile whose mask was published, and a failure row
for every listed input that ended with neither, so each input ends as a mask or a failure row.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

import apache_beam as beam

from common import fileio
from model.card import ModelCard
from transforms.failures import now_utc, printable
from transforms.landing import LandingSettings, TileZoneRecord, write_zone_tables
from transforms.leftovers import release_staging
from transforms.manifest import write_manifest
from transforms.masks import CORE_SUFFIX, FAIL_SUFFIX, OutputLayout
from transforms.records import FAILURE_SCHEMA, STATS_SCHEMA, write_table
from transforms.report import write_report
from transforms.results import TileResult
from transforms.stac import write_catalog
from transforms.tiles import InputFile

log = logging.getLogger(__name__)


def one_per_tile(results: list[TileResult], failures: list[tuple[str, dict[str, Any]]],
                 listed: list[InputFile], layout: OutputLayout) -> tuple[list[TileResult], list[dict[str, Any]]]:
    """The run's books: one result per tile (the latest), failures only for tiles without a mask
    (the first per tile), and a failure for each listed input that has neither."""
    by_tile: dict[str, TileResult] = {}
    for r in results:
        seen = by_tile.get(r.tile_id)
        if seen is None or (not seen.reused, seen.processed_at) < (not r.reused, r.processed_at):
            by_tile[r.tile_id] = r
    failed: dict[str, dict[str, Any]] = {}
    for tile_id, record in sorted(failures, key=lambda kv: (kv[0], kv[1]["failed_at"])):
        if tile_id not in by_tile:
            failed.setdefault(tile_id, record)
    for item in listed:
        if item.tile_id not in by_tile and item.tile_id not in failed:
            failed[item.tile_id] = _lost(item, layout)
    return [by_tile[k] for k in sorted(by_tile)], [failed[k] for k in sorted(failed)]


def _lost(item: InputFile, layout: OutputLayout) -> dict[str, Any]:
    """The failure row of an input that ended with neither a mask nor a failure (a block lost)."""
    try:
        names = fileio.listdir(layout.staging_dir(item.tile_id))
    except (FileNotFoundError, ValueError):
        names = []
    staged = sum(1 for n in names if n.endswith((CORE_SUFFIX, FAIL_SUFFIX)))
    message = (f"{printable(item.uri)}: no mask was made; only {staged} of its blocks arrived at the mask writer. "
               "Rerun to retry this tile")
    log.warning(message)
    return {"uri": item.uri, "tile_id": item.tile_id, "stage": "write", "error_type": "IncompleteTile",
            "message": message, "failed_at": now_utc()}


def run_summary(results: list[TileResult], failures: list[dict[str, Any]], layout: OutputLayout, tiles_total: int,
                started_at: dt.datetime, finished_at: dt.datetime, stats_uri: str | None,
                failures_uri: str | None) -> dict[str, Any]:
    """The run's summary: tiles segmented, skipped as up to date and failed, pixels, timings."""
    written = [r for r in results if not r.reused]
    return {
        "run_id": layout.run_id,
        "tiles_total": tiles_total,
        "tiles_written": len(written),
        "tiles_skipped": len(results) - len(written),
        "tiles_failed": len(failures),
        "pixels_segmented": int(sum(r.pixels for r in written)),
        # Tiles the domain check says the model does not know (common/domain.py): their masks are
        # written, but they deserve a look before anyone relies on them.
        "tiles_out_of_domain": sorted(r.tile_id for r in results if r.in_domain is False),
        "precision": sorted({r.precision for r in written}),
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "wall_s": round((finished_at - started_at).total_seconds(), 3),
        "stats_uri": stats_uri,
        "failures_uri": failures_uri,
        "output": layout.root,
    }


def finish_run(results: list[TileResult], failures: list[tuple[str, dict[str, Any]]], listed: list[InputFile],
               card: ModelCard, layout: OutputLayout, started_at: dt.datetime,
               zones: list[TileZoneRecord] | None = None, landing_failures: list[tuple[str, dict[str, Any]]] | None = None,
               landing: LandingSettings | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keep the books, remove the run's staging, then write the tables (stats, failures, landing
    zones with --landing), the manifest, the summary (staging first: on a nearly full disk it
    is what leaves room for the tables), and the views of them: the STAC catalog and the report.

    ``settings``: how the run was asked for (input, model, patch, ...), shown by the report."""
    kept, failed = one_per_tile(results, failures, listed, layout)
    # A tile whose mask was made but whose zones were not is a failure of the landing stage (its
    # mask and stats stand): one row per tile, beside the tiles that failed earlier.
    seen: set[str] = set()
    for tile_id, record in sorted(landing_failures or [], key=lambda kv: (kv[0], kv[1]["failed_at"])):
        if tile_id not in seen and not any(z.tile_id == tile_id for z in zones or []):
            seen.add(tile_id)
            failed.append(record)
    release_staging(layout)
    rows = [row for r in kept for row in r.stats_rows(card)]
    stats_uri = write_table(rows, STATS_SCHEMA, layout.stats_uri(), layout.run_id)
    failures_uri = write_table(failed, FAILURE_SCHEMA, layout.failures_uri(), layout.run_id)
    zone_info = write_zone_tables(zones or [], layout, landing) if landing is not None else {}
    if kept:
        write_manifest(layout.root, kept)
    summary = run_summary(kept, failed, layout, len(listed), started_at, now_utc(), stats_uri, failures_uri)
    summary.update(zone_info)
    # Tiles whose mask was written but whose zones failed are failures too (the command exits 1),
    # named apart so that "N failed" is not read as N tiles without a mask.
    summary["tiles_without_zones"] = sorted({r["tile_id"] for r in failed if r["stage"] == "landing"})
    summary["model"] = {"id": card.model_id, "mask_nodata": card.mask_nodata,
                        "classes": [{"index": c.index, "name": c.name, "color": list(c.shown_color)}
                                    for c in card.classes]}
    summary["settings"] = settings or {}
    # The catalog and the report only describe the tables and masks: a failure to write them
    # is logged and named in the summary, and loses none of the run's results.
    summary["stac_uri"] = _view("STAC catalog", write_catalog, layout, card, kept, stats_uri,
                                zone_info.get("zones_uri"))
    # The summary is the run's record that it finished: written before the report (the slowest
    # view), then again to name the report once it exists.
    _write_summary(layout, summary)
    summary["report_uri"] = _view("report", write_report, layout, summary)
    if summary["report_uri"] is not None:
        _write_summary(layout, summary)
    log.info("run %s finished: %d written, %d up to date, %d failed", layout.run_id, summary["tiles_written"],
             summary["tiles_skipped"], summary["tiles_failed"])
    return summary


def _write_summary(layout: OutputLayout, summary: dict[str, Any]) -> None:
    with fileio.open_file(layout.summary_uri(), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")


def _view(what: str, write: Callable[..., str], *args: Any) -> str | None:
    try:
        return write(*args)
    except Exception as exc:  # noqa: BLE001 - a view of the results must not lose the results
        log.warning("the run's %s could not be written (%s: %s); its tables and masks are complete, and "
                    "`tileseg report --output %s --run_id %s` tries again", what, type(exc).__name__,
                    printable(str(exc))[:300], args[0].root, args[0].run_id)
        return None


class FinishRun(beam.PTransform):
    """(TileResults, keyed failures, listed InputFiles) → the run summary (one element), with the
    tables, manifest and summary written."""

    def __init__(self, card: ModelCard, layout: OutputLayout, started_at: dt.datetime,
                 landing: LandingSettings | None = None, settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._card = card
        self._layout = layout
        self._started_at = started_at
        self._landing = landing
        self._settings = settings

    def expand(self, pcolls: tuple[beam.PCollection, ...]) -> beam.PCollection:
        """(results, failures, listed) or, with landing, (results, failures, listed, zone records,
        landing failures)."""
        results, failures, listed = pcolls[:3]
        failures_list = failures | "CollectFailures" >> beam.combiners.ToList()
        listed_list = listed | "CollectListed" >> beam.combiners.ToList()
        extra = {}
        if self._landing is not None:
            extra = {"zones": beam.pvalue.AsSingleton(pcolls[3] | "CollectZones" >> beam.combiners.ToList()),
                     "landing_failures": beam.pvalue.AsSingleton(
                         pcolls[4] | "CollectLandingFailures" >> beam.combiners.ToList()),
                     "landing": self._landing}
        return (results | "CollectResults" >> beam.combiners.ToList()
                | "Finish" >> beam.Map(finish_run, beam.pvalue.AsSingleton(failures_list),
                                       beam.pvalue.AsSingleton(listed_list), card=self._card, layout=self._layout,
                                       started_at=self._started_at, settings=self._settings, **extra))
