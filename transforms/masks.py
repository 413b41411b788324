"""WriteMasks: stage block cores, then assemble each tile's mask as a Cloud-Optimised GeoTIFF.

Also SkipDone, which drops tiles whose published mask is already up to date.

Each block core is staged as a small ``.npy`` under ``DIR/_staging/<run_id>/<tile_id>/`` as
soon as it is stitched, so only file names and counts cross the shuffle and no stage (nor the
DirectRunner's in-memory shuffle) holds a whole tile's labels. Once every block of a tile is in,
the assembler writes the cores into a local tiled GeoTIFF window by window, converts it with
GDAL's COG driver (internal overviews by mode), and publishes it under ``masks/<tile_id>.tif``
in one step. A tile with any failed or missing block gets no mask at all, and its staging is
removed.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import apache_beam as beam
import numpy as np

from common import fileio
from common.plan import BlockSpec
from common.safepath import check_relative, check_segment
from model.card import ModelCard
from transforms.failures import FAILED, StageOutput, failure_record, keyed_failure, now_utc
from transforms.plan import PlannedTile
from transforms.progress import PROGRESS
from transforms.stitch import BlockCore
from transforms.tiles import TileSpec

log = logging.getLogger(__name__)

MASK_BLOCK = 512
TAG_FINGERPRINT = "TILESEG_FINGERPRINT"
TAG_SETTINGS = "TILESEG_SETTINGS"
TAG_STATS = "TILESEG_STATS"  # TileTotals as JSON
#: Bump when the mask's bytes change for the same labels (layout, codec, tags): older masks are redone.
MASK_FORMAT_VERSION = 2  # 2: statistics stored in the tags
REUSED = "reused"  # SkipDone's output of stats rows for tiles it skipped


class MaskWriteError(IOError):
    """A mask could not be assembled or published."""


@dataclass(frozen=True)
class StagedBlock:
    """A stitched block core on disk, with its per-class counts and areas."""

    tile_id: str
    block: BlockSpec
    uri: str
    counts: tuple[int, ...]
    areas: tuple[float, ...] | None


@dataclass(frozen=True)
class OutputLayout:
    """Where a run writes: masks, stats, failures and staging under one output root."""

    root: str
    run_id: str

    def __post_init__(self) -> None:
        check_segment(self.run_id, "run id")  # it names folders that are deleted at the end

    def mask_uri(self, tile_id: str) -> str:
        return fileio.join(self.root, "masks", f"{check_relative(tile_id, 'tile id')}.tif")

    def staging_parent(self) -> str:
        return fileio.join(self.root, "_staging")

    def staging_root(self) -> str:
        return fileio.join(self.staging_parent(), self.run_id)

    def staging_dir(self, tile_id: str) -> str:
        return fileio.join(self.staging_root(), check_relative(tile_id, "tile id"))

    def stats_uri(self) -> str:
        return fileio.join(self.root, "stats", f"{self.run_id}.parquet")

    def failures_uri(self) -> str:
        return fileio.join(self.root, "failures", f"{self.run_id}.parquet")

    def summary_uri(self) -> str:
        return fileio.join(self.root, "stats", f"{self.run_id}.json")


def stage_core(core: BlockCore, layout: OutputLayout) -> StagedBlock:
    uri = fileio.join(layout.staging_dir(core.tile.tile_id), f"{core.block.index[0]}_{core.block.index[1]}.npy")
    buf = io.BytesIO()
    np.save(buf, core.labels, allow_pickle=False)
    fileio.makedirs(layout.staging_dir(core.tile.tile_id))
    with fileio.open_file(uri, "wb") as f:
        f.write(buf.getvalue())
    return StagedBlock(
        tile_id=core.tile.tile_id,
        block=core.block,
        uri=uri,
        counts=tuple(int(c) for c in core.counts),
        areas=None if core.areas is None else tuple(float(a) for a in core.areas),
    )


def load_core(uri: str) -> np.ndarray:
    with fileio.open_file(uri, "rb") as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


def mask_tags(card: ModelCard, tile: TileSpec, settings: str, precision: str, totals: TileTotals) -> dict[str, str]:
    return {
        "TILESEG_MODEL_ID": card.model_id,
        "TILESEG_CLASSES": json.dumps([c.name for c in card.classes]),
        "TILESEG_SOURCE": tile.uri,
        "TILESEG_PRECISION": precision,
        TAG_FINGERPRINT: tile.fingerprint,
        TAG_SETTINGS: settings,
        TAG_STATS: totals.to_tag(),
    }


def write_mask_cog(
    tile: TileSpec, blocks: Iterable[StagedBlock], card: ModelCard, out_local: str, tags: dict[str, str]
) -> None:
    """Write the staged cores of ``tile`` into ``out_local`` as a COG (uint8, nodata, palette, tags)."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.shutil import copy as rio_copy

    tmp = out_local + ".stage.tif"
    profile = {
        "driver": "GTiff",
        "width": tile.width,
        "height": tile.height,
        "count": 1,
        "dtype": "uint8",
        "nodata": card.mask_nodata,
        "transform": Affine(*tile.transform),
        "tiled": True,
        "blockxsize": MASK_BLOCK,
        "blockysize": MASK_BLOCK,
        "compress": "none",
        "BIGTIFF": "IF_SAFER",
    }
    if tile.crs_wkt:
        profile["crs"] = CRS.from_wkt(tile.crs_wkt)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            for staged in blocks:
                window = staged.block.core
                core = load_core(staged.uri)
                if core.shape != window.shape:
                    raise MaskWriteError(f"{tile.uri}: staged block {staged.uri} has shape {core.shape}, expected {window.shape}")
                dst.write(core, 1, window=window.to_rasterio())
            dst.write_colormap(1, card.palette())
            dst.update_tags(**tags)
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            rio_copy(
                tmp, out_local, driver="COG", COMPRESS="DEFLATE", PREDICTOR="NO", BLOCKSIZE=MASK_BLOCK,
                OVERVIEW_RESAMPLING="MODE", BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
            )
    finally:
        fileio.remove(tmp)


@dataclass(frozen=True)
class TileTotals:
    """A tile's per-class valid pixel counts and ground areas (m², None without a CRS), and when
    and by which run its mask was made. Stored in the mask's tags, so a later run that skips the
    tile as up to date still reports its statistics."""

    counts: tuple[int, ...]
    areas: tuple[float, ...] | None
    run_id: str
    processed_at: dt.datetime

    @classmethod
    def of_blocks(cls, blocks: list[StagedBlock], run_id: str) -> TileTotals:
        counts = np.sum([b.counts for b in blocks], axis=0, dtype=np.int64)
        block_areas = [b.areas for b in blocks]
        areas = None
        if all(a is not None for a in block_areas):
            summed = np.sum(cast("list[tuple[float, ...]]", block_areas), axis=0, dtype=np.float64)
            areas = tuple(float(v) for v in np.atleast_1d(summed))
        return cls(tuple(int(c) for c in np.atleast_1d(counts)), areas, run_id, now_utc())

    def to_tag(self) -> str:
        return json.dumps({"counts": list(self.counts), "areas": None if self.areas is None else list(self.areas),
                           "run_id": self.run_id, "processed_at": self.processed_at.isoformat()})

    @classmethod
    def from_tag(cls, text: str) -> TileTotals:
        data = json.loads(text)
        areas = data["areas"]
        return cls(tuple(int(c) for c in data["counts"]), None if areas is None else tuple(float(a) for a in areas),
                   str(data["run_id"]), dt.datetime.fromisoformat(data["processed_at"]))


def stats_rows(tile: TileSpec, totals: TileTotals, card: ModelCard, mask_uri: str, precision: str,
               reused: bool = False) -> list[dict[str, Any]]:
    """One row per class: the tile's pixel counts and ground areas. ``reused``: the mask was made
    by an earlier run and skipped as up to date by this one."""
    counts = totals.counts
    valid = int(sum(counts))
    pixel_size_m = tile.pixel_areas.pixel_size_m()
    return [
        {
            "tile_id": tile.tile_id,
            "source_uri": tile.uri,
            "mask_uri": mask_uri,
            "model_id": card.model_id,
            "precision": precision,
            "class_index": c.index,
            "class_name": c.name,
            "pixel_count": counts[c.index],
            "valid_pixel_count": valid,
            "total_pixel_count": tile.pixels,
            "fraction": (counts[c.index] / valid) if valid else None,
            "area_m2": totals.areas[c.index] if totals.areas is not None else None,
            "crs": tile.crs,
            "pixel_size_m": pixel_size_m,
            "processed_at": totals.processed_at,
            "reused": reused,
        }
        for c in card.classes
    ]


def stored_totals(tile: TileSpec, layout: OutputLayout, settings: str,
                  num_classes: int) -> tuple[TileTotals, str] | None:
    """(totals, precision) stored with the tile's published mask when that mask was made from this
    very file with these settings; None when there is none, it is stale, or its tags are unreadable
    (such a tile is simply redone)."""
    uri = layout.mask_uri(tile.tile_id)
    try:
        if not fileio.exists(uri):
            return None
        with fileio.open_raster(uri) as src:
            tags = src.tags()
        if tags.get(TAG_FINGERPRINT) != tile.fingerprint or tags.get(TAG_SETTINGS) != settings:
            return None
        totals = TileTotals.from_tag(tags[TAG_STATS])
    except Exception:  # noqa: BLE001 - see the docstring
        return None
    if len(totals.counts) != num_classes:
        return None
    return totals, tags.get("TILESEG_PRECISION", "")


class StageCoreFn(beam.DoFn):
    """BlockCore → (tile_id, StagedBlock): the core goes to staging, only its name moves on."""

    def __init__(self, layout: OutputLayout) -> None:
        self._layout = layout

    def process(self, core: BlockCore) -> Iterator[object]:
        try:
            staged = stage_core(core, self._layout)
        except Exception as exc:  # noqa: BLE001
            yield keyed_failure(core.tile.uri, core.tile.tile_id, "stage", exc)
        else:
            PROGRESS.block_done(core.block.core.pixels)
            yield core.tile.tile_id, staged


class AssembleTileFn(beam.DoFn):
    """(tile_id, {tile, staged, failed}) → stats rows; a mask is published, or a failure recorded.

    Safe to run twice on one element (Dataflow retries bundles): a tile whose mask this run has
    already published is not written again, its stats come from the mask's tags; staged cores
    are removed only after a successful publish, so a retry after a failure still finds them
    (the run's last step removes what is left of its staging).
    """

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: str, precision: str) -> None:
        self._card = card
        self._layout = layout
        self._settings = settings
        self._precision = precision

    def process(self, element: tuple[str, dict[str, list[Any]]]) -> Iterator[object]:
        tile_id, groups = element
        # Only planned tiles have blocks, staged or failed, so every group holds its tile once.
        (planned,) = groups["tile"]
        return iter(self._assemble(tile_id, planned, list(groups["staged"]), list(groups["failed"])))

    def _assemble(self, tile_id: str, planned: PlannedTile, staged: list[StagedBlock],
                  failed: list[dict[str, Any]]) -> list[object]:
        tile = planned.tile
        mask_uri = self._layout.mask_uri(tile_id)
        try:
            if failed:
                first = failed[0]
                more = f" ({len(failed)} blocks failed)" if len(failed) > 1 else ""
                return [beam.pvalue.TaggedOutput(FAILED, (tile_id, {**first, "message": first["message"] + more}))]
            stored = stored_totals(tile, self._layout, self._settings, self._card.num_classes)
            if stored is not None and stored[0].run_id == self._layout.run_id:
                # A retry of a tile this run already published: nothing to write again.
                return list(stats_rows(tile, stored[0], self._card, mask_uri, stored[1]))
            if len(staged) != planned.blocks:
                raise MaskWriteError(f"{tile.uri}: {len(staged)} of {planned.blocks} blocks arrived; mask not written")
            started = time.monotonic()
            staged.sort(key=lambda s: s.block.index)
            totals = TileTotals.of_blocks(staged, self._layout.run_id)
            tags = mask_tags(self._card, tile, self._settings, self._precision, totals)
            with fileio.local_scratch() as tmpdir:
                local = fileio.join(tmpdir, "mask.tif")
                write_mask_cog(tile, staged, self._card, local, tags)
                fileio.publish(local, mask_uri)
            fileio.remove(self._layout.staging_dir(tile_id), recursive=True)
            PROGRESS.tile_done(tile.tile_id, time.monotonic() - started)
            return list(stats_rows(tile, totals, self._card, mask_uri, self._precision))
        except Exception as exc:  # noqa: BLE001 - one tile's failure must not stop the others
            return [beam.pvalue.TaggedOutput(FAILED, (tile_id, failure_record(tile.uri, tile.tile_id, "write", exc)))]


class SkipDoneFn(beam.DoFn):
    """TileSpec → itself when its mask must be made; else its stored stats rows on ``reused``."""

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: str) -> None:
        self._card = card
        self._layout = layout
        self._settings = settings

    def process(self, tile: TileSpec) -> Iterator[object]:
        stored = stored_totals(tile, self._layout, self._settings, self._card.num_classes)
        if stored is None:
            yield tile
            return
        mask_uri = self._layout.mask_uri(tile.tile_id)
        log.info("skipping %s: mask is up to date (%s)", tile.tile_id, mask_uri)
        for row in stats_rows(tile, stored[0], self._card, mask_uri, stored[1], reused=True):
            yield beam.pvalue.TaggedOutput(REUSED, row)


class SkipDone(beam.PTransform):
    """TileSpecs → those whose mask is missing or was made from another file or other settings
    (main), and the stats rows stored with the masks of the others (``reused``), so that every
    run's stats table covers all its tiles, even after an earlier run was killed."""

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: str) -> None:
        super().__init__()
        self._fn = SkipDoneFn(card, layout, settings)

    def expand(self, tiles: beam.PCollection) -> StageOutput:
        out = tiles | "CheckMasks" >> beam.ParDo(self._fn).with_outputs(REUSED, main="main")
        return StageOutput(out.main, out[REUSED])


class WriteMasks(beam.PTransform):
    """(planned tiles, block cores, block failures) → stats rows (main) and keyed tile failures.

    Cores are staged as they come; once all of a tile's blocks are in (grouped by tile id), its
    mask is written and published, or, if any block failed, the tile's first failure is recorded.
    """

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: str, precision: str) -> None:
        super().__init__()
        self._card = card
        self._layout = layout
        self._settings = settings
        self._precision = precision

    def expand(self, inputs: tuple[beam.PCollection, beam.PCollection, beam.PCollection]) -> StageOutput:
        planned, cores, block_failures = inputs
        staged = cores | "StageCores" >> beam.ParDo(StageCoreFn(self._layout)).with_outputs(FAILED, main="main")
        failures = (block_failures, staged[FAILED]) | "AddStagingFailures" >> beam.Flatten()
        assembled = (
            {"tile": planned, "staged": staged.main, "failed": failures}
            | "GroupByTile" >> beam.CoGroupByKey()
            | "Assemble" >> beam.ParDo(AssembleTileFn(self._card, self._layout, self._settings, self._precision))
            .with_outputs(FAILED, main="main")
        )
        return StageOutput(assembled.main, assembled[FAILED])
