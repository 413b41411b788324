"""WriteMasks: stage block cores; the block that completes a tile assembles and publishes its mask.

Each block core is staged as a small ``.npz`` (labels, per-class counts and areas) under
``OUT/_staging/<run_id>/<tile_id>/`` as soon as it is stitched; a block that failed stages a
``.fail.json`` record instead. Whoever stages a tile's last block (it lists the tile's staging
folder after writing its own file, and finds every block there) finishes the tile: it writes the
cores into a local tiled GeoTIFF window by window, converts it to a COG (common/cog.py: internal
overviews by mode, computed in numpy) and publishes it under ``masks/<tile_id>.tif`` in one step, or, if any block
failed, records the tile's failure. There is no grouping step: a tile is done as soon as its own
blocks are, whatever the other tiles are doing, so one huge tile never holds a small one back
and a killed run keeps every tile it finished.

Safe to run twice (Dataflow retries bundles), and safe when two workers finish the same tile at
once: the finisher leaves ``result.json`` (or ``failed.json``) in the tile's staging folder after
publishing, and any later arrival for that tile (a retried block) sends that same result again
instead of a false failure; the run's last step keeps one result per tile and removes the staging.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import functools
import io
import json
import logging
import operator
import os
import posixpath
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from common import fileio
from common.cog import write_cog
from common.domain import InputSums, check_domain
from common.memory import release_free_memory
from common.plan import BlockSpec
from common.quicklook import ThumbPart, thumb_jpeg
from common.safepath import check_relative, check_segment
from common.windows import Window
from model.card import ModelCard
from model.loading import resolve_precision
from transforms.failures import FAILED, BlockFailure, StageOutput, failure_record, now_utc, windowed
from transforms.results import TAG_FINGERPRINT, TAG_RESULT, TAG_SETTINGS, MaskSettings, TileResult
from transforms.stitch import BlockCore
from transforms.tiles import TileSpec

log = logging.getLogger(__name__)

MASK_BLOCK = 512
#: Bump when the mask's bytes change for the same labels (layout, codec, tags): older masks are redone.
MASK_FORMAT_VERSION = 3  # 2: statistics stored in the tags; 3: the whole TileResult stored
# Names in a tile's staging folder.
CORE_SUFFIX = ".npz"
FAIL_SUFFIX = ".fail.json"
RESULT_NAME = "result.json"
FAILED_NAME = "failed.json"


class MaskWriteError(IOError):
    """A mask could not be assembled or published."""


@dataclass(frozen=True)
class OutputLayout:
    """Where a run writes: masks, stats, failures, the manifest and staging under one root."""

    root: str
    run_id: str

    def __post_init__(self) -> None:
        check_segment(self.run_id, "run id")  # it names folders that are deleted at the end

    def mask_uri(self, tile_id: str) -> str:
        return fileio.join(self.root, "masks", f"{check_relative(tile_id, 'tile id')}.tif")

    def masks_dir(self) -> str:
        return fileio.join(self.root, "masks")

    def staging_parent(self) -> str:
        return fileio.join(self.root, "_staging")

    def staging_root(self) -> str:
        return fileio.join(self.staging_parent(), self.run_id)

    def staging_dir(self, tile_id: str) -> str:
        return fileio.join(self.staging_root(), check_relative(tile_id, "tile id"))

    def hazard_uri(self, tile_id: str) -> str:
        """The tile's landing-hazard probability COG (uint8 255ths; --landing only)."""
        return fileio.join(self.root, "hazard", f"{check_relative(tile_id, 'tile id')}.tif")

    def hazard_dir(self) -> str:
        return fileio.join(self.root, "hazard")

    def quicklook_uri(self, tile_id: str) -> str:
        """The tile's input quicklook (JPEG), made from the blocks the run read (the report's picture)."""
        return fileio.join(self.root, "quicklooks", f"{check_relative(tile_id, 'tile id')}.jpg")

    def zones_uri(self) -> str:
        return fileio.join(self.root, "zones", f"{self.run_id}.parquet")

    def zones_summary_uri(self) -> str:
        return fileio.join(self.root, "zones", f"{self.run_id}.summary.parquet")

    def zones_cache_uri(self, tile_id: str) -> str:
        """One tile's zones as last computed, reused while mask and rules are the same."""
        return fileio.join(self.root, "zones", "_tiles", f"{check_relative(tile_id, 'tile id')}.parquet")

    def stats_uri(self) -> str:
        return fileio.join(self.root, "stats", f"{self.run_id}.parquet")

    def failures_uri(self) -> str:
        return fileio.join(self.root, "failures", f"{self.run_id}.parquet")

    def summary_uri(self) -> str:
        return fileio.join(self.root, "stats", f"{self.run_id}.json")

    def stac_catalog_uri(self) -> str:
        """The outputs' STAC catalog (transforms/stac.py), one item per tile under stac/items/."""
        return fileio.join(self.root, "stac", "catalog.json")

    def stac_items_dir(self) -> str:
        return fileio.join(self.root, "stac", "items")

    def stac_item_uri(self, tile_id: str) -> str:
        return fileio.join(self.stac_items_dir(), f"{check_relative(tile_id, 'tile id')}.json")

    def report_dir(self) -> str:
        """The run's report: index.html and its pictures (transforms/report.py)."""
        return fileio.join(self.root, "report", self.run_id)


def _block_name(block: BlockSpec) -> str:
    return f"{block.index[0]}_{block.index[1]}"


def stage_core(core: BlockCore, layout: OutputLayout) -> str:
    """Write a block core (labels, counts, areas) to the tile's staging folder; returns its URI.
    Staging the same block twice writes the same bytes (np.savez stores no time)."""
    folder = layout.staging_dir(core.tile.tile_id)
    uri = fileio.join(folder, _block_name(core.block) + CORE_SUFFIX)
    w = core.block.core
    arrays: dict[str, np.ndarray] = {"labels": core.labels, "counts": np.asarray(core.counts, np.int64),
                                     "core": np.array([w.row, w.col, w.height, w.width], np.int64)}
    if core.areas is not None:
        arrays["areas"] = np.asarray(core.areas, np.float64)
    if core.confidence_sum is not None:
        arrays["confidence"] = np.asarray(core.confidence_sum, np.float64)
    if core.inputs is not None:
        arrays["inputs"] = core.inputs.to_array()
    if core.hazard is not None:
        arrays["hazard"] = core.hazard
    if core.thumb is not None:
        arrays.update(core.thumb.to_arrays())
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    fileio.makedirs(folder)
    with fileio.open_file(uri, "wb") as f:
        f.write(buf.getvalue())
    return uri


def stage_failure(failure: BlockFailure, layout: OutputLayout) -> None:
    folder = layout.staging_dir(failure.tile.tile_id)
    fileio.makedirs(folder)
    _write_record(fileio.join(folder, _block_name(failure.block) + FAIL_SUFFIX), failure.record)


def _write_record(uri: str, record: dict[str, Any]) -> None:
    """A failure record as JSON (its time as ISO text), read back by _record_from_json."""
    with fileio.open_file(uri, "w") as f:
        json.dump({**record, "failed_at": record["failed_at"].isoformat()}, f)


@dataclass
class StagedCore:
    """A staged block core as read back: its window in tile pixels, labels and small totals."""

    window: Window
    labels: np.ndarray
    counts: np.ndarray
    areas: np.ndarray | None
    confidence: float | None
    inputs: InputSums | None = None
    hazard: np.ndarray | None = None
    thumb: ThumbPart | None = None


def load_core(uri: str) -> StagedCore:
    with fileio.open_file(uri, "rb") as f:
        data = np.load(io.BytesIO(f.read()), allow_pickle=False)
        row, col, height, width = (int(v) for v in data["core"])
        return StagedCore(Window(row, col, height, width), data["labels"], data["counts"].astype(np.int64),
                          data["areas"].astype(np.float64) if "areas" in data.files else None,
                          float(data["confidence"]) if "confidence" in data.files else None,
                          InputSums.from_array(data["inputs"]) if "inputs" in data.files else None,
                          data["hazard"] if "hazard" in data.files else None, ThumbPart.from_arrays(data))


@dataclass(frozen=True)
class TileTotals:
    """A tile's per-class valid pixel counts, ground areas (None unless every core has them), sum
    of the model's confidence over its valid pixels and sampled input statistics (likewise)."""

    counts: tuple[int, ...]
    areas: tuple[float, ...] | None
    confidence: float | None
    inputs: InputSums | None = None

    @classmethod
    def of(cls, parts: list[StagedCore]) -> TileTotals:
        """Sum the totals of a tile's cores."""
        counts = np.sum([p.counts for p in parts], axis=0, dtype=np.int64)
        areas = [p.areas for p in parts if p.areas is not None]
        summed = np.sum(areas, axis=0, dtype=np.float64) if len(areas) == len(parts) else None
        confidence = [p.confidence for p in parts]
        inputs = [p.inputs for p in parts]
        return cls(tuple(int(v) for v in np.atleast_1d(counts)),
                   None if summed is None else tuple(float(v) for v in np.atleast_1d(summed)),
                   None if any(c is None for c in confidence) else float(sum(c or 0.0 for c in confidence)),
                   None if any(i is None for i in inputs) else functools.reduce(operator.add, inputs))


def mask_tags(card: ModelCard, result: TileResult) -> dict[str, str]:
    return {
        "TILESEG_MODEL_ID": card.model_id,
        "TILESEG_CLASSES": json.dumps([c.name for c in card.classes]),
        "TILESEG_SOURCE": result.source_uri,
        "TILESEG_PRECISION": result.precision,
        "TILESEG_RADIOMETRY": result.radiometry,
        TAG_FINGERPRINT: result.fingerprint,
        TAG_SETTINGS: result.settings,
        TAG_RESULT: result.to_json(),
    }


def write_mask_cog(tile: TileSpec, core_uris: list[str], card: ModelCard, out_local: str,
                   tags_for: Callable[[TileTotals], dict[str, str]], hazard_local: str | None = None,
                   hazard_tags: dict[str, str] | None = None) -> list[ThumbPart] | None:
    """Write the staged cores of ``tile`` into ``out_local`` as a COG (uint8, nodata, palette, tags),
    and with ``hazard_local`` their landing-hazard probabilities into a second COG (uint8 255ths).

    Each core is read once: its labels go into the mask and its totals into the tile's, which
    ``tags_for`` turns into the mask's tags once every core is in. Returns the cores' shares of
    the input quicklook (None unless every core has one)."""
    import rasterio

    tmp = out_local + ".stage.tif"
    tmp_hazard = None if hazard_local is None else hazard_local + ".stage.tif"
    try:
        with contextlib.ExitStack() as stack:
            dst = stack.enter_context(rasterio.open(tmp, "w", **_tiff_profile(tile, card.mask_nodata)))
            hz = None if tmp_hazard is None else stack.enter_context(
                rasterio.open(tmp_hazard, "w", **_tiff_profile(tile, None)))
            parts = []  # each core's small totals; its labels are written and let go
            for uri in core_uris:
                core = load_core(uri)
                if core.labels.shape != core.window.shape:
                    raise MaskWriteError(f"{tile.uri}: staged block {uri} has shape {core.labels.shape}, "
                                         f"expected {core.window.shape}")
                dst.write(core.labels, 1, window=core.window.to_rasterio())
                if hz is not None:
                    if core.hazard is None or core.hazard.shape != core.window.shape:
                        raise MaskWriteError(f"{tile.uri}: staged block {uri} has no hazard probabilities; "
                                             "rerun with --overwrite")
                    hz.write(core.hazard, 1, window=core.window.to_rasterio())
                parts.append(dataclasses.replace(core, labels=core.labels[:0, :0], hazard=None))  # totals only
            dst.write_colormap(1, card.palette())
            dst.update_tags(**tags_for(TileTotals.of(parts)))
            if hz is not None:
                hz.update_tags(**(hazard_tags or {}))
        write_cog(tmp, out_local, "mode", MASK_BLOCK, card.num_classes)
        if tmp_hazard is not None and hazard_local is not None:
            write_cog(tmp_hazard, hazard_local, "average", MASK_BLOCK)
        thumbs = [p.thumb for p in parts]
        return None if any(t is None for t in thumbs) else [t for t in thumbs if t is not None]
    finally:
        fileio.remove(tmp)
        if tmp_hazard is not None:
            fileio.remove(tmp_hazard)


def _tiff_profile(tile: TileSpec, nodata: int | None) -> dict[str, Any]:
    """A local tiled, uncompressed GTiff on the tile's grid (the COG is made from it)."""
    from affine import Affine
    from rasterio.crs import CRS

    profile: dict[str, Any] = {
        "driver": "GTiff", "width": tile.width, "height": tile.height, "count": 1, "dtype": "uint8",
        "nodata": nodata, "transform": Affine(*tile.transform), "tiled": True, "blockxsize": MASK_BLOCK,
        "blockysize": MASK_BLOCK, "compress": "none", "BIGTIFF": "IF_SAFER",
    }
    if tile.crs_wkt:
        profile["crs"] = CRS.from_wkt(tile.crs_wkt)
    return profile


class TileFinisher:
    """Called after each block of a tile is staged: finishes the tile once all its blocks are in.

    Returns what the block's DoFn emits: nothing (the tile is not complete), the tile's
    TileResult or its failure on ``failed`` (already decided), or a ``Publish`` job whose result
    is one of those (the mask still to be written).
    """

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: MaskSettings, precision: str,
                 hazard_classes: tuple[int, ...] | None = None) -> None:
        self._card = card
        self._layout = layout
        self._settings = settings
        self._requested = precision
        self._precision: str | None = None
        self._hazard = hazard_classes  # None: no hazard COG (a run without --landing)

    @property
    def precision(self) -> str:
        """The precision the model runs at in this process (``auto`` resolved as the model loader does)."""
        if self._precision is None:
            self._precision = resolve_precision(self._requested, self._card)
        return self._precision

    def arrived(self, tile: TileSpec, tile_blocks: int) -> list[Any]:
        """What the block's DoFn emits now (see the class docstring); a tile that is complete and
        has no failed block comes back as a ``Publish`` job, to be run (``job()``) where the caller
        likes: the decision is taken here, in block order, so only one block ever publishes a tile."""
        folder = self._layout.staging_dir(tile.tile_id)
        names = _names(folder)
        done = self._already_done(tile, folder, names)
        if done is not None:
            if any(n.endswith((CORE_SUFFIX, FAIL_SUFFIX)) for n in names):
                _remove_cores(folder)  # a retried block staged again after the tile was finished
            return done
        cores = {n[: -len(CORE_SUFFIX)] for n in names if n.endswith(CORE_SUFFIX)}
        failed = {n[: -len(FAIL_SUFFIX)] for n in names if n.endswith(FAIL_SUFFIX)} - cores
        if len(cores | failed) < tile_blocks:
            return []
        if failed:
            try:
                return [self._fail(tile, folder, sorted(failed))]
            except Exception as exc:  # noqa: BLE001 - one tile's failure must not stop the others
                return [self._write_failed(tile, folder, exc)]
        return [Publish(functools.partial(self._complete, tile, folder, sorted(cores)))]

    def _complete(self, tile: TileSpec, folder: str, cores: list[str]) -> Any:
        """Publish the tile's mask: its TileResult, or its failure on ``failed``."""
        try:
            return self._publish(tile, folder, cores)
        except Exception as exc:  # noqa: BLE001 - one tile's failure must not stop the others
            return self._write_failed(tile, folder, exc)

    def _write_failed(self, tile: TileSpec, folder: str, exc: BaseException) -> Any:
        # Another worker finishing the same tile at the same moment may have won the race.
        done = self._already_done(tile, folder, _names(folder))
        if done is not None:
            return done[0]
        error = MaskWriteError(write_error_message(tile, self._layout.mask_uri(tile.tile_id), exc))
        return self._give_up(tile, folder, failure_record(tile.uri, tile.tile_id, "write", error))

    def _already_done(self, tile: TileSpec, folder: str, names: set[str]) -> list[Any] | None:
        if RESULT_NAME in names:
            with fileio.open_file(fileio.join(folder, RESULT_NAME), "r") as f:
                data = json.load(f)
            return [dataclasses.replace(TileResult.from_json(data["result"]), mask_bytes=int(data["mask_bytes"]))]
        if FAILED_NAME in names:
            with fileio.open_file(fileio.join(folder, FAILED_NAME), "r") as f:
                return [beam.pvalue.TaggedOutput(FAILED, (tile.tile_id, _record_from_json(json.load(f))))]
        return None

    def _fail(self, tile: TileSpec, folder: str, failed: list[str]) -> beam.pvalue.TaggedOutput:
        with fileio.open_file(fileio.join(folder, failed[0] + FAIL_SUFFIX), "r") as f:
            first = _record_from_json(json.load(f))
        if len(failed) > 1:
            first["message"] += f" ({len(failed)} blocks failed)"
        return self._give_up(tile, folder, first)

    def _give_up(self, tile: TileSpec, folder: str, record: dict[str, Any]) -> beam.pvalue.TaggedOutput:
        """The tile fails: its cores go first (on a full disk they are what frees space), then the
        marker that a retried block finds; the failure is reported even if the marker cannot be
        written."""
        _remove_cores(folder)
        try:
            _write_record(fileio.join(folder, FAILED_NAME), record)
        except OSError as exc:
            log.warning("%s: cannot record the failure in the staging folder (%s)", tile.tile_id, exc)
        return beam.pvalue.TaggedOutput(FAILED, (tile.tile_id, record))

    def _publish(self, tile: TileSpec, folder: str, cores: list[str]) -> TileResult:
        core_uris = [fileio.join(folder, name + CORE_SUFFIX) for name in cores]
        mask_uri = self._layout.mask_uri(tile.tile_id)
        made: list[TileResult] = []

        def tags_for(totals: TileTotals) -> dict[str, str]:
            valid = sum(totals.counts)
            confidence = None if totals.confidence is None or not valid else round(totals.confidence / valid, 6)
            domain = check_domain(totals.inputs, confidence, self._card.input_stats, self._card.domain)
            if domain.in_domain is False:
                log.warning("%s: outside what model %s knows: %s; treat its mask (and any landing zones on it) "
                            "with suspicion", tile.uri, self._card.model_id, "; ".join(domain.reasons))
            made.append(TileResult.of_tile(tile, self._settings.key(self.precision), mask_uri, self.precision,
                                           totals.counts, totals.areas, self._layout.run_id, now_utc(), domain,
                                           self._hazard))
            return mask_tags(self._card, made[0])

        # The blocks' buffers were freed into the arenas of the threads that read and stitched them;
        # hand them back first, or the writer's own buffers (GDAL's threads) come on top of them.
        release_free_memory()
        with fileio.local_scratch() as tmpdir:
            local = fileio.join(tmpdir, "mask.tif")
            hazard_local = None if self._hazard is None else fileio.join(tmpdir, "hazard.tif")
            hazard_tags = {"TILESEG_MODEL_ID": self._card.model_id, TAG_FINGERPRINT: tile.fingerprint,
                           "TILESEG_HAZARD_CLASSES": json.dumps([self._card.classes[k].name for k in self._hazard or ()]),
                           "TILESEG_HAZARD_UNITS": "summed probability of the hazard classes, 255ths; 255 where nodata"}
            thumbs = write_mask_cog(tile, core_uris, self._card, local, tags_for, hazard_local, hazard_tags)
            result = dataclasses.replace(made[0], mask_bytes=os.path.getsize(local))
            # The quicklook and hazard COG first: a published mask says the tile is done, with
            # everything it needs.
            if thumbs:
                self._publish_quicklook(tile, thumbs, fileio.join(tmpdir, "input.jpg"))
            if hazard_local is not None:
                fileio.publish(hazard_local, self._layout.hazard_uri(tile.tile_id))
            fileio.publish(local, mask_uri)
        # Then the marker (a retried block finds it), then the cores: never the other way round.
        with fileio.open_file(fileio.join(folder, RESULT_NAME), "w") as f:
            json.dump({"result": result.to_json(), "mask_bytes": result.mask_bytes}, f)
        _remove_cores(folder)
        log.info("tile written: %s (%s)", tile.tile_id, mask_uri)
        return result

    def _publish_quicklook(self, tile: TileSpec, thumbs: list[ThumbPart], local: str) -> None:
        try:
            picture = thumb_jpeg(thumbs, tile.height, tile.width).data
        except Exception as exc:  # noqa: BLE001 - a picture must not cost the tile its mask
            log.warning("%s: no input quicklook (%s: %s); the report reads the input instead", tile.tile_id,
                        type(exc).__name__, exc)
            return
        with open(local, "wb") as f:
            f.write(picture)
        fileio.publish(local, self._layout.quicklook_uri(tile.tile_id))


def write_error_message(tile: TileSpec, mask_uri: str, exc: BaseException) -> str:
    """What to tell a person when a mask cannot be written: the destination and what to do, not
    the temporary files it went through."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (f"{tile.uri}: no space left on the disk of {mask_uri} (or of the temporary folder) while writing "
                "its mask; free some space or choose another --output, and rerun")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{tile.uri}: cannot write its mask to {mask_uri} ({exc.strerror}); make the output folder writable and rerun"
    if isinstance(exc, MaskWriteError):
        return str(exc)
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (str(exc) or type(exc).__name__)
    return f"{tile.uri}: cannot write its mask to {mask_uri} ({reason})"


def _names(folder: str) -> set[str]:
    try:
        return {posixpath.basename(u.replace(os.sep, "/")) for u in fileio.listdir(folder)}
    except FileNotFoundError:
        return set()


def _remove_cores(folder: str) -> None:
    for name in _names(folder):
        if name.endswith((CORE_SUFFIX, FAIL_SUFFIX)):
            fileio.remove(fileio.join(folder, name))


def _record_from_json(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "failed_at": dt.datetime.fromisoformat(data["failed_at"])}


@dataclass(frozen=True)
class Publish:
    """A complete tile's mask to write: ``job()`` returns its TileResult (or failure)."""

    job: Callable[[], Any]


class _FinishingFn(beam.DoFn):
    """Base of the two staging DoFns: stage the element, then let the TileFinisher look.

    A complete tile's mask is written on a thread of its own (one, so masks are written one at a
    time and in order) while the DoFn goes on with the next blocks: with many tiles, the next
    tile's inference overlaps this one's COG writing (measured on 16 tiles of 4096², free model:
    see the README's throughput section). At most ``WRITES_AHEAD`` masks wait; every mask is
    written before the bundle ends, so a retried bundle finds them as one clean run would.
    """

    #: Complete tiles that may wait for the writer thread before the DoFn waits for it.
    WRITES_AHEAD = 2

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: MaskSettings, precision: str,
                 hazard_classes: tuple[int, ...] | None = None) -> None:
        self._card = card
        self._layout = layout
        self._settings = settings
        self._precision = precision
        self._hazard = hazard_classes
        # Beam metrics: the Dataflow UI (and a local run's end) show how far the job got.
        self._tiles_written = beam.metrics.Metrics.counter("tileseg", "tiles_written")
        self._tiles_failed = beam.metrics.Metrics.counter("tileseg", "tiles_failed")
        self._pixels = beam.metrics.Metrics.counter("tileseg", "pixels_segmented")

    def setup(self) -> None:
        self._finisher = TileFinisher(self._card, self._layout, self._settings, self._precision, self._hazard)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tileseg-write")

    def teardown(self) -> None:
        self._writer.shutdown(wait=True)

    def start_bundle(self) -> None:
        self._writing: deque[tuple[Future[Any], Any, Any]] = deque()

    def _finish(self, tile: TileSpec, tile_blocks: int, window: Any, timestamp: Any) -> Iterator[Any]:
        for out in self._finisher.arrived(tile, tile_blocks):
            if isinstance(out, Publish):
                self._writing.append((self._writer.submit(out.job), window, timestamp))
            else:
                yield self._counted(out)
        while self._writing and (len(self._writing) > self.WRITES_AHEAD or self._writing[0][0].done()):
            yield self._counted(self._writing.popleft()[0].result())

    def finish_bundle(self) -> Iterator[Any]:
        while self._writing:
            future, window, timestamp = self._writing.popleft()
            yield windowed(self._counted(future.result()), window, timestamp)

    def _counted(self, out: Any) -> Any:
        """Counters are kept here, on the DoFn's thread (Beam's metrics are per thread)."""
        if isinstance(out, TileResult):
            self._tiles_written.inc()
            self._pixels.inc(out.pixels)
        else:
            self._tiles_failed.inc()
        return out


class StageCoreFn(_FinishingFn):
    """BlockCore → staged; the tile's TileResult (or failure) when it was the tile's last block."""

    def process(self, core: BlockCore, window: Any = beam.DoFn.WindowParam,
                timestamp: Any = beam.DoFn.TimestampParam) -> Iterator[Any]:
        try:
            stage_core(core, self._layout)
        except Exception as exc:  # noqa: BLE001 - becomes this block's failure
            # Staging is the first half of writing the mask: a full disk says so, and what to do.
            error = MaskWriteError(write_error_message(core.tile, self._layout.mask_uri(core.tile.tile_id), exc))
            record = failure_record(core.tile.uri, core.tile.tile_id, "stage", error)
            try:
                stage_failure(BlockFailure(core.tile, core.block, record), self._layout)
            except Exception:  # noqa: BLE001 - the staging itself is unusable: say so for the tile
                yield beam.pvalue.TaggedOutput(FAILED, (core.tile.tile_id, record))
                return
        yield from self._finish(core.tile, core.block.tile_blocks, window, timestamp)


class StageFailureFn(_FinishingFn):
    """BlockFailure → staged; the tile's failure when it was the tile's last block."""

    def process(self, failure: BlockFailure, window: Any = beam.DoFn.WindowParam,
                timestamp: Any = beam.DoFn.TimestampParam) -> Iterator[Any]:
        try:
            stage_failure(failure, self._layout)
        except Exception as exc:  # noqa: BLE001 - the staging itself is unusable: say so for the tile
            record = failure_record(failure.tile.uri, failure.tile.tile_id, "stage", exc)
            yield beam.pvalue.TaggedOutput(FAILED, (failure.tile.tile_id, record))
            return
        yield from self._finish(failure.tile, failure.block.tile_blocks, window, timestamp)


class WriteMasks(beam.PTransform):
    """(block cores, block failures) → TileResults of published masks (main) and keyed tile failures.

    No grouping: each tile is finished by the worker that stages its last block (see the module
    docstring), so tiles finish independently. A tile none of whose blocks ever arrive ends with
    no output here; the run's last step (transforms/finish.py) accounts for it.
    """

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: MaskSettings, precision: str,
                 hazard_classes: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self._args = (card, layout, settings, precision, hazard_classes)

    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection]) -> StageOutput:
        cores, block_failures = inputs
        from_cores = cores | "StageCores" >> beam.ParDo(StageCoreFn(*self._args)).with_outputs(FAILED, main="main")
        from_failures = (block_failures | "StageBlockFailures"
                         >> beam.ParDo(StageFailureFn(*self._args)).with_outputs(FAILED, main="main"))
        results = (from_cores.main, from_failures.main) | "TileResults" >> beam.Flatten()
        failed = (from_cores[FAILED], from_failures[FAILED]) | "TileFailures" >> beam.Flatten()
        return StageOutput(results, failed)
