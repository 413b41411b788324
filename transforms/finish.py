"""FinishRun: the pipeline's last step, on every runner: the run's stats and failures tables,
its summary (``stats/<run_id>.json``) and the removal of its staging.

It is a step of the pipeline, not code after ``run()``, because a Dataflow (Flex Template)
launcher submits the job and exits: nothing after the submit may count on the job being done.
Every input of the step is a whole collected table, so it runs once all tiles are finished, and
it is safe to run twice (it rewrites the same files and removes what is already gone).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import apache_beam as beam

from common import fileio
from transforms.failures import now_utc
from transforms.leftovers import release_staging
from transforms.masks import OutputLayout
from transforms.records import FAILURE_SCHEMA, STATS_SCHEMA, write_table

log = logging.getLogger(__name__)


def run_summary(stats: list[dict[str, Any]], failures: list[dict[str, Any]], layout: OutputLayout, tiles_total: int,
                started_at: dt.datetime, finished_at: dt.datetime, stats_uri: str | None,
                failures_uri: str | None) -> dict[str, Any]:
    """The run's summary: tiles segmented, skipped as up to date and failed, pixels, timings."""
    tiles: dict[str, dict[str, Any]] = {}
    for row in stats:
        tiles.setdefault(str(row["tile_id"]), row)
    written = [r for r in tiles.values() if not r.get("reused")]
    return {
        "run_id": layout.run_id,
        "tiles_total": tiles_total,
        "tiles_written": len(written),
        "tiles_skipped": len(tiles) - len(written),
        "tiles_failed": len({str(r["tile_id"]) for r in failures}),
        "pixels_segmented": int(sum(int(r["total_pixel_count"]) for r in written)),
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "wall_s": round((finished_at - started_at).total_seconds(), 3),
        "stats_uri": stats_uri,
        "failures_uri": failures_uri,
        "output": layout.root,
    }


def finish_run(stats: list[dict[str, Any]], failures: list[dict[str, Any]], layout: OutputLayout,
               tiles_total: int, started_at: dt.datetime) -> dict[str, Any]:
    """Write both tables and the summary, then remove the run's staging; returns the summary."""
    stats_uri = write_table(stats, STATS_SCHEMA, layout.stats_uri(), layout.run_id)
    failures_uri = write_table(failures, FAILURE_SCHEMA, layout.failures_uri(), layout.run_id)
    summary = run_summary(stats, failures, layout, tiles_total, started_at, now_utc(), stats_uri, failures_uri)
    with fileio.open_file(layout.summary_uri(), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    release_staging(layout)
    log.info("run %s finished: %d written, %d up to date, %d failed", layout.run_id, summary["tiles_written"],
             summary["tiles_skipped"], summary["tiles_failed"])
    return summary


class FinishRun(beam.PTransform):
    """(stats rows, keyed failures) → the run summary (one element), tables and summary written."""

    def __init__(self, layout: OutputLayout, tiles_total: int, started_at: dt.datetime) -> None:
        super().__init__()
        self._layout = layout
        self._tiles_total = tiles_total
        self._started_at = started_at

    def expand(self, pcolls: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        stats, failures = pcolls
        collected = failures | "DropTileKeys" >> beam.Values() | "CollectFailures" >> beam.combiners.ToList()
        return (stats | "CollectStats" >> beam.combiners.ToList()
                | "Finish" >> beam.Map(finish_run, beam.pvalue.AsSingleton(collected), layout=self._layout,
                                       tiles_total=self._tiles_total, started_at=self._started_at))
