"""``tileseg zones``: landing zones again from an earlier run's outputs, for another vehicle.

    tileseg zones --output OUT --landing PROFILE [--gsd M] [--model DIR] [--run_id ID] [Beam options]

Nothing is segmented: every published mask under ``OUT/masks`` (with its hazard COG where the
profile's P < 1 needs one) is read in windows, and the zones go to ``OUT/zones/<run_id>.parquet``
with the per-tile summary beside it, exactly as ``tileseg run --landing`` writes them; a tile
whose zones are cached for the same mask and rules is not computed again. Tiles that cannot be
mapped are listed in ``OUT/failures/<run_id>.parquet``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import posixpath
import sys
import uuid
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from common import fileio
from common.cli import exit_now, setup_logging
from common.safepath import UnsafePathError, check_segment
from model.card import ModelCardError, load_card
from model.landing import LandingError, load_profile
from model.shipped import DEFAULT_MODEL
from transforms.failures import FAILED, now_utc
from transforms.landing import LandingSettings, LandingZones, TileZoneRecord, write_zone_tables
from transforms.masks import OutputLayout
from transforms.records import FAILURE_SCHEMA, write_table
from transforms.results import TAG_RESULT, TileResult
from transforms.skip import DoneIndex

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tileseg zones", description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="an earlier run's output folder (local or gs://)")
    p.add_argument("--landing", required=True, help="profile: a shipped name (small-drone) or a JSON file")
    p.add_argument("--gsd", type=float, default=None, help="metres per pixel of rasters without a CRS")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the model the masks were made with (its card's roles)")
    p.add_argument("--run_id", default=None, help="names the zone tables (default: time + random)")
    return p


def published_results(layout: OutputLayout) -> list[TileResult]:
    """The result of every published mask: from the manifest while it matches the mask's size,
    else from the mask's own tags."""
    index = DoneIndex.load(layout)
    masks = layout.masks_dir().rstrip("/") + "/"
    out = []
    for uri, size in sorted(index.mask_bytes.items()):
        tile_id = uri.replace("\\", "/")[len(masks.replace("\\", "/")):] if uri.startswith(masks) else \
            posixpath.basename(uri)
        tile_id = tile_id[: -len(".tif")] if tile_id.endswith(".tif") else tile_id
        entry = index.manifest.get(tile_id)
        if entry is not None and entry.mask_bytes == size:
            out.append(TileResult.from_json(entry.result))
            continue
        try:
            with fileio.open_raster(uri) as src:
                out.append(TileResult.from_json(src.tags()[TAG_RESULT]))
        except Exception as exc:  # noqa: BLE001 - not a tileseg mask (or unreadable): say so, go on
            log.warning("%s: not a readable tileseg mask (%s); skipped", uri, exc)
    return out


def finish(records: list[TileZoneRecord], failures: list[tuple[str, dict[str, Any]]], layout: OutputLayout,
           landing: LandingSettings, tiles: int, started: dt.datetime) -> dict[str, Any]:
    done = {r.tile_id for r in records}
    failed: dict[str, dict[str, Any]] = {}
    for tile_id, record in sorted(failures, key=lambda kv: (kv[0], kv[1]["failed_at"])):
        if tile_id not in done:
            failed.setdefault(tile_id, record)
    info = write_zone_tables(records, layout, landing)
    failures_uri = write_table(list(failed.values()), FAILURE_SCHEMA, layout.failures_uri(), layout.run_id)
    summary = {"run_id": layout.run_id, "tiles_total": tiles, "tiles_mapped": len(done), "tiles_failed": len(failed),
               "failures_uri": failures_uri, "started_at": started.isoformat(), "finished_at": now_utc().isoformat(),
               **info}
    with fileio.open_file(fileio.join(layout.root, "zones", f"{layout.run_id}.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def run(argv: list[str]) -> dict[str, Any]:
    a, beam_args = _parser().parse_known_args(argv)
    if a.run_id is not None:
        check_segment(a.run_id, "--run_id")
    if a.gsd is not None and not a.gsd > 0:
        raise LandingError(f"--gsd must be a positive number of metres per pixel, not {a.gsd}")
    card = load_card(a.model)
    landing = LandingSettings.of(card, load_profile(a.landing), a.gsd)
    output = a.output.rstrip("/")
    run_id = a.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    layout = OutputLayout(output, run_id)
    results = published_results(layout)
    if not results:
        raise LandingError(f"--output {a.output}: no published masks under {layout.masks_dir()}; run tileseg run first")
    made_by = _model_of(layout.mask_uri(results[0].tile_id))
    if made_by not in (None, card.model_id):
        raise LandingError(f"the masks under {layout.masks_dir()} were made by {made_by}, not {card.model_id}: "
                           "give that model with --model (its card names the classes and their landing roles)")
    started = now_utc()
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        zones = (p | "Results" >> beam.Create(results)
                 | "LandingZones" >> LandingZones(card, layout, landing))
        records = zones.main | "CollectZones" >> beam.combiners.ToList()
        failures = zones[FAILED] | "CollectFailures" >> beam.combiners.ToList()
        _ = records | "Finish" >> beam.Map(finish, beam.pvalue.AsSingleton(failures), layout=layout, landing=landing,
                                           tiles=len(results), started=started)
    with fileio.open_file(fileio.join(layout.root, "zones", f"{run_id}.json"), "r") as f:
        return dict(json.load(f))


def _model_of(mask_uri: str) -> str | None:
    """The model id in a mask's tags (one mask is asked: a run's masks share their model)."""
    try:
        with fileio.open_raster(mask_uri) as src:
            return src.tags().get("TILESEG_MODEL_ID")
    except Exception:  # noqa: BLE001 - unreadable here: the tile's own zones step reports it
        return None


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        summary = run(list(argv or []))
    except (LandingError, ModelCardError, UnsafePathError) as exc:
        print(f"tileseg zones: {exc}", file=sys.stderr)
        return 2
    print(f"zones {summary['run_id']}: {summary['tiles_mapped']} of {summary['tiles_total']} tiles mapped, "
          f"{summary['zones_total']} zone(s), {summary['landable_area_m2']:,.0f} m² landable, in {summary['zones_uri']}"
          + (f"; failures in {summary['failures_uri']}" if summary["failures_uri"] else ""))
    return 1 if summary["tiles_failed"] else 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
