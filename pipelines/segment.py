"""The main job: tiles in, COG masks + per-class area Parquet (+ failures) out.

    python -m pipelines.segment --input 'tiles/**/*.tif' --output out/ [--model DIR] [Beam options]

``run(argv, test_pipeline=None)`` builds and runs the pipeline; tests inject a TestPipeline.
Options are turned once into a frozen ``SegmentConfig`` (pipelines/config.py); the stages are the
composite transforms of ``transforms/``, chained in ``SegmentTiles.expand``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from common import fileio
from common.cli import exit_now, setup_logging
from model.handler import SegmentationModelHandler
from pipelines.config import ConfigError, SegmentConfig, SegmentOptions, build_config, unknown_options
from transforms import coders
from transforms.failures import FAILED, now_utc, printable
from transforms.finish import FinishRun
from transforms.infer import RunModel
from transforms.landing import LandingZones
from transforms.leftovers import claim_staging, clean_leftovers, release_staging
from transforms.listing import ListInputs
from transforms.masks import WriteMasks
from transforms.plan import PlanBlocks, SmallestFirst
from transforms.progress import ProgressMonitor
from transforms.read import ReadBlocks
from transforms.skip import SkipDone
from transforms.stitch import StitchBlocks
from transforms.tiles import DiscoverTiles

log = logging.getLogger(__name__)


class SegmentTiles(beam.PTransform):
    """InputFiles → (TileResults, keyed failure records). Masks are written tile by tile."""

    def __init__(self, config: SegmentConfig) -> None:
        super().__init__()
        self._c = config

    def expand(self, files: beam.PCollection) -> tuple[beam.PCollection, ...]:
        c = self._c
        coders.register()
        hazard = None if c.landing is None else c.landing.hazard_classes
        handler = SegmentationModelHandler(c.model_dir, c.card, c.precision, c.batch_size,
                                           "labels" if c.stitch == "overlap" else "scores", c.model_copies,
                                           hazard or ())
        if c.overwrite:
            todo, reused = files, files.pipeline | "NothingReused" >> beam.Create([])
        else:
            todo, reused = files | "SkipDone" >> SkipDone(c.card, c.layout, c.settings, c.precision, hazard)
        tiles = todo | "DiscoverTiles" >> DiscoverTiles(c.root, c.card, c.bands, c.max_tile_pixels, c.radiometry,
                                                                c.gsd_m)
        ordered = tiles.main | "SmallestFirst" >> SmallestFirst() if c.in_process else tiles.main
        plan = ordered | "PlanBlocks" >> PlanBlocks(c.plan_args, spread=not c.in_process)
        read = plan.main | "ReadBlocks" >> ReadBlocks()
        inferred = read.main | "RunModel" >> RunModel(handler)
        stitched = inferred.main | "StitchBlocks" >> StitchBlocks(c.card, hazard or ())
        block_failures = (read.failed, inferred.failed, stitched.failed) | "FlattenBlockFailures" >> beam.Flatten()
        masks = (stitched.main, block_failures) | "WriteMasks" >> WriteMasks(c.card, c.layout, c.settings, c.precision,
                                                                             hazard)
        failures = (tiles.failed, plan.failed, masks.failed) | "FlattenFailures" >> beam.Flatten()
        results = (masks.main, reused) | "FlattenResults" >> beam.Flatten()
        if c.landing is None:
            return results, failures
        zones = results | "LandingZones" >> LandingZones(c.card, c.layout, c.landing)
        return results, failures, zones.main, zones[FAILED]


@dataclass(frozen=True)
class RunSummary:
    """What a run did, from the summary the pipeline wrote as its last step (``stats/<run_id>.json``).
    ``submitted``: the job went to a remote runner and this process did not wait for it."""

    run_id: str
    tiles_total: int
    tiles_written: int
    tiles_skipped: int
    failures: int
    stats_uri: str | None
    failures_uri: str | None
    output: str
    submitted: bool = False
    pixels_segmented: int = 0
    wall_s: float | None = None
    input: str = ""
    out_of_domain: tuple[str, ...] = ()
    zones_uri: str | None = None
    zones_total: int = 0
    landable_area_m2: float = 0.0
    report_uri: str | None = None
    without_zones: int = 0  # of ``failures``: tiles with a mask whose landing zones failed

    def line(self) -> str:
        if self.submitted:
            what = f"{self.tiles_total} input file(s)" if self.tiles_total else self.input
            return (f"run {self.run_id}: submitted {what}; the job writes masks to "
                    f"{fileio.join(self.output, 'masks')} and its summary to "
                    f"{fileio.join(self.output, 'stats', self.run_id + '.json')} when it is done")
        text = (f"run {self.run_id}: {self.tiles_written} of {self.tiles_total} tiles segmented"
                f"{f', {self.tiles_skipped} already up to date' if self.tiles_skipped else ''}"
                f", {self.failures - self.without_zones} failed"
                f"{f', {self.without_zones} without landing zones (masks written)' if self.without_zones else ''}"
                f"; masks in {fileio.join(self.output, 'masks')}")
        if self.out_of_domain:
            shown = ", ".join(self.out_of_domain[:5]) + (", ..." if len(self.out_of_domain) > 5 else "")
            text += (f"; {len(self.out_of_domain)} tile(s) look unlike what the model was trained on ({shown}): "
                     "see in_domain and domain_note in the stats")
        if self.zones_uri:
            area = (f"{self.landable_area_m2 / 1e6:,.2f} km²" if self.landable_area_m2 >= 1e6
                    else f"{self.landable_area_m2:,.0f} m²")
            text += f"; {self.zones_total} landing zone(s), {area} landable, in {self.zones_uri}"
        if self.failures_uri:
            text += f"; failures listed in {self.failures_uri}"
        if self.report_uri:
            text += f"; report: {self.report_uri}"
        return text


def read_summary(config: SegmentConfig) -> RunSummary:
    """The summary the finished pipeline wrote (any runner)."""
    uri = config.layout.summary_uri()
    with fileio.open_file(uri, "r") as f:
        data = json.load(f)
    return RunSummary(config.run_id, int(data["tiles_total"]), int(data["tiles_written"]), int(data["tiles_skipped"]),
                      int(data["tiles_failed"]), data["stats_uri"], data["failures_uri"], config.output,
                      pixels_segmented=int(data["pixels_segmented"]), wall_s=float(data["wall_s"]),
                      out_of_domain=tuple(data.get("tiles_out_of_domain", ())), zones_uri=data.get("zones_uri"),
                      zones_total=int(data.get("zones_total", 0)),
                      landable_area_m2=float(data.get("landable_area_m2", 0.0)), report_uri=data.get("report_uri"),
                      without_zones=len(data.get("tiles_without_zones", ())))


def build_pipeline(p: beam.Pipeline, config: SegmentConfig, started_at: dt.datetime | None = None) -> None:
    files = p | "ListInputs" >> ListInputs(config.input, config.output)
    results, failures, *zones = files | "SegmentTiles" >> SegmentTiles(config)
    _ = ((results, failures, files, *zones)
         | "FinishRun" >> FinishRun(config.card, config.layout, started_at or now_utc(), config.landing,
                                   config.described()))


def waits_for_job(runner: str | None) -> bool:
    """Local runners run the job in (or beside) this process; a Dataflow launcher submits and exits."""
    return "dataflow" not in (runner or "").lower()


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Parse ``argv``, validate and run the pipeline; return what it did.

    On local runners this waits for the job and reads the summary it wrote. On Dataflow it submits
    the job and returns at once (``submitted``): the pipeline writes its tables and summary and
    removes its staging itself, as its last step, so nothing here waits or cleans up.
    """
    started = now_utc()
    unknown = unknown_options(argv)
    if unknown:
        raise ConfigError(f"unknown option(s) {' '.join(unknown)}; see tileseg run --help "
                          "(quote a glob so the shell does not expand it)")
    options = PipelineOptions(argv)
    runner = options.view_as(StandardOptions).runner
    config = build_config(options, runner)
    local = test_pipeline is not None or waits_for_job(runner)
    log.info("run %s: %s, model %s (precision %s), patch %d halo %d, %s stitching",
             config.run_id, f"{len(config.uris)} input file(s)" if config.uris else config.input,
             config.card.model_id, config.precision, config.patch_size, config.halo, config.stitch)
    fileio.makedirs(config.output)
    clean_leftovers(config.layout)
    claim_staging(config.layout, this_process=local)
    if not local:
        p = beam.Pipeline(options=options)
        build_pipeline(p, config, started)
        result = p.run()
        # A Flex Template launcher builds the job with --template_location: no job exists yet and
        # job_id() would raise, so ask only when the result has one.
        job = result.job_id() if getattr(result, "has_job", False) else None  # type: ignore[attr-defined]
        log.info("run %s submitted%s", config.run_id, f" as job {job}" if job else "")
        return RunSummary(config.run_id, len(config.uris), 0, 0, 0, None, None, config.output, submitted=True,
                          input=config.input)
    try:
        with ProgressMonitor(config.layout, len(config.uris)):
            if test_pipeline is not None:
                build_pipeline(test_pipeline, config, started)
                test_pipeline.run().wait_until_finish()
            else:
                with beam.Pipeline(options=options) as p:
                    build_pipeline(p, config, started)
    finally:
        # The pipeline's last step removed the staging; this is for a job that failed before it.
        release_staging(config.layout)
        _remove_if_empty(config.layout.staging_parent())
    summary = read_summary(config)
    log.info(summary.line())
    return summary


def _remove_if_empty(uri: str) -> None:
    if fileio.is_remote(uri):
        return
    try:
        os.rmdir(uri)
    except OSError:
        pass


def _last_line(exc: BaseException) -> str:
    """The root cause of a failed job in one line: Beam wraps a worker's exception, traceback
    and all, in its own; the innermost error is its last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return printable(lines[-1] if lines else type(exc).__name__)[:300]


def main(argv: list[str] | None = None) -> int:
    if argv and any(a in ("-h", "--help") for a in argv):
        parser = argparse.ArgumentParser(
            prog="tileseg run", description="Segment rasters into COG masks and per-class area Parquet.",
            epilog="Any Apache Beam option is accepted too, e.g. --runner DataflowRunner --project P "
                   "--region R --temp_location gs://B/tmp (see deploy/launch.sh).")
        SegmentOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    setup_logging()
    try:
        summary = run(argv)
    except ConfigError as exc:
        print(f"tileseg: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the job itself failed (e.g. its tables could not be written)
        print(f"tileseg: the run failed before it finished ({_last_line(exc)}); masks already published are "
              "kept, and a rerun finishes the rest", file=sys.stderr)
        return 1
    print(summary.line())
    return 1 if summary.failures else 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
