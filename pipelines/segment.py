"""The main job: tiles in, COG masks + per-class area Parquet (+ failures) out.

    python -m pipelines.segment --input 'tiles/**/*.tif' --output out/ [--model DIR] [Beam options]

``run(argv, test_pipeline=None)`` builds and runs the pipeline; tests inject a TestPipeline.
Options are turned once into a frozen ``SegmentConfig``; transforms never see PipelineOptions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from model.card import ModelCard, ModelCardError, load_card
from model.handler import SegmentationModelHandler
from model.loading import PRECISIONS, resolve_precision
from transforms import fileio
from transforms.masks import AssembleTileFn, OutputLayout, StageCoreFn, is_done
from transforms.plan import PlanBlocksFn
from transforms.progress import PROGRESS
from transforms import coders
from transforms.read import BlockInput, ReadBlockFn
from transforms.records import FAILED, FAILURE_SCHEMA, STATS_SCHEMA, failure_record, write_table
from transforms.stitch import BlockCore, StitchBlockFn
from transforms.tiles import DescribeTileFn, parse_bands, tile_ids

log = logging.getLogger(__name__)

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model", "weights", "aerial-dubai6")
RASTER_EXTENSIONS = (".tif", ".tiff", ".gtiff", ".jp2", ".png", ".jpg", ".jpeg", ".img", ".vrt")


class ConfigError(ValueError):
    """A bad option: the message says what to fix. Raised before any pipeline starts."""


class SegmentOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input", required=True, help="glob, file or directory of rasters (local or gs://)")
        parser.add_argument("--output", required=True, help="output directory (local or gs://)")
        parser.add_argument("--model", default=DEFAULT_MODEL, help="model directory: card.json + .keras file")
        parser.add_argument("--precision", default="auto", choices=PRECISIONS)
        parser.add_argument("--batch_size", type=int, default=4, help="patches per model call")
        parser.add_argument("--stitch", default="overlap", choices=("overlap", "blend"),
                            help="overlap: keep each patch's centre (exact); blend: weight class scores")
        parser.add_argument("--bands", default=None, help="1-based source bands in model band order, e.g. 3,2,1")
        parser.add_argument("--patch_size", type=int, default=None, help="largest patch (default: the model card's)")
        parser.add_argument("--halo", type=int, default=None, help="context kept around each patch core (default: card)")
        parser.add_argument("--patches_per_block", type=int, default=4, help="patches per block edge (one read per block)")
        parser.add_argument("--overwrite", action="store_true", help="redo tiles whose masks are already up to date")
        parser.add_argument("--run_id", default=None, help="names this run's stats/failures files (default: time + random)")


@dataclass(frozen=True)
class SegmentConfig:
    input: str
    output: str
    model_dir: str
    card: ModelCard
    precision: str
    batch_size: int
    stitch: str
    bands: tuple[int, ...] | None
    patch_size: int
    halo: int
    patches_per_block: int
    overwrite: bool
    run_id: str
    uris: tuple[str, ...]
    root: str

    @property
    def plan_args(self) -> tuple[int, int, int, int]:
        return self.patch_size, self.halo, self.card.size_multiple, self.patches_per_block

    @property
    def settings(self) -> str:
        """Everything that changes a mask: a tile redone only when this or the file changes."""
        key = {
            "model": self.card.model_id, "precision": self.precision, "stitch": self.stitch,
            "bands": self.bands, "patch": self.patch_size, "halo": self.halo,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def layout(self) -> OutputLayout:
        return OutputLayout(self.output.rstrip("/"), self.run_id)


def list_inputs(pattern: str) -> tuple[list[str], str]:
    """Input URIs and the root their tile ids are relative to. A directory yields its rasters."""
    fs, path = fileio.filesystem(pattern)
    is_dir = not any(ch in path for ch in "*?[") and fs.isdir(path)
    uris = fileio.match(pattern)
    if is_dir:
        uris = [u for u in uris if u.lower().endswith(RASTER_EXTENSIONS) and "/." not in u]
    return uris, fileio.glob_root(pattern)


def build_config(opts: SegmentOptions, runner: str | None = None) -> SegmentConfig:
    """Validate options once, before any pipeline starts; raise ConfigError saying what to fix."""
    o = opts.view_as(SegmentOptions)
    try:
        card = load_card(o.model)
    except ModelCardError as exc:
        raise ConfigError(str(exc)) from None
    if o.batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, not {o.batch_size}")
    if o.patches_per_block < 1:
        raise ConfigError(f"--patches_per_block must be at least 1, not {o.patches_per_block}")
    patch = o.patch_size or card.patch_size
    halo = card.halo if o.halo is None else o.halo
    if patch % card.size_multiple or patch < card.size_multiple:
        raise ConfigError(f"--patch_size {patch} must be a positive multiple of {card.size_multiple} for model {card.model_id}")
    if halo < 0 or 2 * halo >= patch:
        raise ConfigError(f"--halo {halo} must be >= 0 and less than half of the patch size {patch}")
    try:
        bands = parse_bands(o.bands)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if bands is not None and len(bands) != card.num_bands:
        raise ConfigError(f"--bands gives {len(bands)} bands; model {card.model_id} takes {card.num_bands} ({', '.join(card.input_bands)})")
    try:
        uris, root = list_inputs(o.input)
    except Exception as exc:  # noqa: BLE001 - a listing error is a bad --input
        raise ConfigError(f"--input {o.input}: cannot list ({exc})") from None
    if not uris:
        raise ConfigError(f"--input {o.input}: no files match; check the path or glob (quote it so the shell does not expand it)")
    try:
        fileio.check_writable(o.output)
    except OSError as exc:
        raise ConfigError(f"--output: {exc}") from None
    precision = o.precision
    if runner in (None, "DirectRunner", "direct") and precision == "auto":
        precision = resolve_precision(precision, card)
    run_id = o.run_id or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    return SegmentConfig(
        input=o.input, output=o.output, model_dir=o.model, card=card, precision=precision,
        batch_size=o.batch_size, stitch=o.stitch, bands=bands, patch_size=patch, halo=halo,
        patches_per_block=o.patches_per_block, overwrite=o.overwrite, run_id=run_id,
        uris=tuple(uris), root=root,
    )


def _key_failure(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return record["tile_id"], record


def _inference_failures(element: Any) -> list[tuple[str, dict[str, Any]]]:
    """RunInference's dead-letter element (failed batch, exception) → keyed failure records."""
    batch, exc = element[0], element[1]
    if not isinstance(exc, BaseException):
        exc = RuntimeError(str(exc))
    items = batch if isinstance(batch, (list, tuple)) else [batch]
    return [(i.tile.tile_id, failure_record(i.tile.uri, i.tile.tile_id, "inference", exc)) for i in items]


class SegmentTiles(beam.PTransform):
    """(uri, tile_id) pairs → (stats rows, failure records). Masks are written per tile."""

    def __init__(self, config: SegmentConfig) -> None:
        super().__init__()
        self._c = config

    def expand(self, uris: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        c = self._c
        coders.register()
        layout = c.layout
        described = uris | "DescribeTiles" >> beam.ParDo(DescribeTileFn(c.root, c.card, c.bands)).with_outputs(FAILED, main="tiles")
        tiles = described.tiles
        if not c.overwrite:
            tiles = tiles | "SkipDone" >> beam.Filter(lambda t: not is_done(t, layout, c.settings))
        tiles = tiles | "CountPlanned" >> beam.Map(_count_planned)
        keyed_tiles = tiles | "KeyTiles" >> beam.Map(lambda t: (t.tile_id, t))
        blocks = (
            tiles
            | "PlanBlocks" >> beam.ParDo(PlanBlocksFn(*c.plan_args))
            | "SpreadBlocks" >> beam.Reshuffle()
        )
        read = blocks | "ReadBlocks" >> beam.ParDo(ReadBlockFn(c.card)).with_output_types(BlockInput).with_outputs(FAILED, main="blocks")
        handler = SegmentationModelHandler(
            c.model_dir, c.precision, c.batch_size, "labels" if c.stitch == "overlap" else "scores")
        inferred = read.blocks | "RunInference" >> RunInference(handler).with_exception_handling()
        predictions, dead = inferred[0], inferred[1]
        stitched = predictions | "StitchBlocks" >> beam.ParDo(_Guard(StitchBlockFn(c.card), "stitch")).with_output_types(BlockCore).with_outputs(FAILED, main="cores")
        staged = stitched.cores | "StageCores" >> beam.ParDo(StageCoreFn(layout)).with_outputs(FAILED, main="staged")
        block_failures = (
            (read.failed | "KeyReadFailures" >> beam.Map(_key_failure)),
            (dead.failed_inferences | "KeyInferenceFailures" >> beam.FlatMap(_inference_failures)),
            stitched.failed,
            staged.failed,
        ) | "FlattenBlockFailures" >> beam.Flatten()
        assembled = (
            {"tile": keyed_tiles, "staged": staged.staged, "failed": block_failures}
            | "GroupByTile" >> beam.CoGroupByKey()
            | "WriteMasks" >> beam.ParDo(AssembleTileFn(c.card, layout, c.plan_args, c.settings, c.precision)).with_outputs(FAILED, main="stats")
        )
        failures = (described.failed, assembled.failed) | "FlattenFailures" >> beam.Flatten()
        return assembled.stats, failures


def _count_planned(tile: Any) -> Any:
    PROGRESS.planned(tile.pixels)
    return tile


class _Guard(beam.DoFn):
    """Run a block-level DoFn; an exception becomes a keyed failure of the block's tile."""

    def __init__(self, fn: beam.DoFn, stage: str) -> None:
        self._fn = fn
        self._stage = stage

    def setup(self) -> None:
        self._fn.setup()

    def process(self, element: Any) -> Any:
        try:
            yield from self._fn.process(element)
        except Exception as exc:  # noqa: BLE001
            tile = element.tile
            yield beam.pvalue.TaggedOutput(FAILED, (tile.tile_id, failure_record(tile.uri, tile.tile_id, self._stage, exc)))


class WriteRunTables(beam.PTransform):
    """Collect the (small) stats and failure tables and write one Parquet file each."""

    def __init__(self, layout: OutputLayout) -> None:
        super().__init__()
        self._layout = layout

    def expand(self, pcolls: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        stats, failures = pcolls
        layout = self._layout
        s = (stats | "CollectStats" >> beam.combiners.ToList()
             | "WriteStats" >> beam.Map(lambda rows: write_table(rows, STATS_SCHEMA, layout.stats_uri(), layout.run_id)))
        f = (failures | "CollectFailures" >> beam.combiners.ToList()
             | "WriteFailures" >> beam.Map(lambda rows: write_table(rows, FAILURE_SCHEMA, layout.failures_uri(), layout.run_id)))
        return (s, f) | "FlattenWritten" >> beam.Flatten()


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    tiles_total: int
    tiles_written: int
    tiles_skipped: int
    failures: int
    stats_uri: str | None
    failures_uri: str | None
    output: str

    def line(self) -> str:
        text = (f"run {self.run_id}: {self.tiles_written} of {self.tiles_total} tiles segmented"
                f"{f', {self.tiles_skipped} already up to date' if self.tiles_skipped else ''}"
                f", {self.failures} failed; masks in {fileio.join(self.output, 'masks')}")
        if self.failures_uri:
            text += f"; failures listed in {self.failures_uri}"
        return text


def summarise(config: SegmentConfig) -> RunSummary:
    """Read back what the run wrote (works for any runner)."""
    import pyarrow.parquet as pq

    layout = config.layout
    written = failures = 0
    stats_uri = layout.stats_uri() if fileio.exists(layout.stats_uri()) else None
    failures_uri = layout.failures_uri() if fileio.exists(layout.failures_uri()) else None
    if stats_uri:
        with fileio.open_file(stats_uri) as f:
            written = len(set(pq.read_table(f, columns=["tile_id"]).column("tile_id").to_pylist()))
    if failures_uri:
        with fileio.open_file(failures_uri) as f:
            failures = pq.read_metadata(f).num_rows
    skipped = len(config.uris) - written - failures
    return RunSummary(config.run_id, len(config.uris), written, max(skipped, 0), failures,
                      stats_uri, failures_uri, config.output)


def build_pipeline(p: beam.Pipeline, config: SegmentConfig) -> None:
    ids = tile_ids(list(config.uris), config.root)
    results = (p | "ListTiles" >> beam.Create([(u, ids[u]) for u in config.uris])
               | "SegmentTiles" >> SegmentTiles(config))
    _ = results | "WriteRunTables" >> WriteRunTables(config.layout)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> RunSummary:
    """Parse ``argv``, validate, run the pipeline to completion and return what it wrote."""
    options = PipelineOptions(argv)
    runner = options.view_as(StandardOptions).runner
    config = build_config(options, runner)
    PROGRESS.reset(total_tiles=len(config.uris))
    log.info("run %s: %d input file(s), model %s (%s), patch %d halo %d, %s stitching",
             config.run_id, len(config.uris), config.card.model_id, config.precision,
             config.patch_size, config.halo, config.stitch)
    fileio.makedirs(config.output)
    try:
        if test_pipeline is not None:
            build_pipeline(test_pipeline, config)
            test_pipeline.run().wait_until_finish()
        else:
            with beam.Pipeline(options=options) as p:
                build_pipeline(p, config)
    finally:
        fileio.remove(config.layout.staging_root(), recursive=True)
        _remove_if_empty(fileio.join(config.output, "_staging"))
    summary = summarise(config)
    log.info(summary.line())
    return summary


def _remove_if_empty(uri: str) -> None:
    if fileio.is_remote(uri):
        return
    try:
        os.rmdir(uri)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    if argv and any(a in ("-h", "--help") for a in argv):
        parser = argparse.ArgumentParser(
            prog="tileseg run", description="Segment rasters into COG masks and per-class area Parquet.",
            epilog="Any Apache Beam option is accepted too, e.g. --runner DataflowRunner --project P "
                   "--region R --temp_location gs://B/tmp (see deploy/launch.sh).")
        SegmentOptions._add_argparse_args(parser)
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in ("apache_beam", "absl", "rasterio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        summary = run(argv)
    except ConfigError as exc:
        print(f"tileseg: {exc}", file=sys.stderr)
        return 2
    print(summary.line())
    return 1 if summary.failures else 0


if __name__ == "__main__":
    from pipelines.cli import exit_now

    exit_now(main(sys.argv[1:]))
