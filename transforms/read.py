"""ReadBlocks: one windowed read per block, cut into raw patches for the model.

The read window is clipped to the tile; anything outside (only when a tile is smaller than one
patch, or the last patch runs past the edge) is filled by mirroring and marked invalid, so the
model sees natural-looking context and the padded pixels never reach a mask. Validity comes from
nodata, alpha or GDAL's internal mask, and NaN is always invalid.

Each block leaves as ``(BlockContext, Patches)``: the model handler sees only the patches; the
context (tile, block, validity) travels beside them as RunInference's key.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Tuple  # noqa: UP035 - Beam type hints need typing.Tuple (see KeyedPatches)

import apache_beam as beam
import numpy as np

from common import fileio
from common.domain import InputSums, block_input_sums
from common.patching import core_of_window, patchify
from common.plan import BlockSpec
from common.quicklook import ThumbPart, thumb_part
from common.windows import Window, mirror_pad
from model.handler import Patches
from transforms.failures import FAILED, StageOutput, block_failure, windowed
from transforms.tiles import TileSpec, gdal_reason

log = logging.getLogger(__name__)


class BlockReadError(IOError):
    """A block of a tile could not be read (truncated or corrupt file, lost object)."""


@dataclass
class BlockContext:
    """What stitching needs beside the model's output: the tile, the block, and where the block
    window's pixels are valid (``valid``: (Hw, Ww) bool over ``block.window``)."""

    tile: TileSpec
    block: BlockSpec
    valid: np.ndarray
    #: The core's sampled input statistics, for the tile's domain check (common/domain.py).
    inputs: InputSums | None = None
    #: The core's share of the tile's input quicklook (common/quicklook.py), for the report.
    thumb: ThumbPart | None = None


#: One block on its way to the model: its context (the RunInference key) and its patches.
KeyedPatches = Tuple[BlockContext, Patches]  # noqa: UP006 - runtime Beam type hint (with_output_types)


def read_window(src: Any, tile: TileSpec, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (tile pixels) of the tile's model bands.

    Returns raw (H, W, C) in the source dtype and valid (H, W) bool. Parts of the window outside
    the tile are mirrored in and marked invalid.
    """
    inside = window.intersection(Window(0, 0, tile.height, tile.width))
    if inside is None:
        raise BlockReadError(f"{tile.uri}: rows {window.row}-{window.row_stop - 1}, columns {window.col}-"
                             f"{window.col_stop - 1} lie outside the {tile.width}x{tile.height} tile")
    win = inside.to_rasterio()
    unique = sorted(set(tile.bands))
    data = src.read(unique, window=win)  # (C', h, w)
    if data.shape[1:] != inside.shape:
        raise BlockReadError(f"{tile.uri}: a read of {inside.height}x{inside.width} px gave {data.shape[1]}x{data.shape[2]}; "
                             "the file is probably truncated or corrupt - re-copy or re-export it")
    pos = {b: i for i, b in enumerate(unique)}
    raw = np.moveaxis(data, 0, -1)[..., [pos[b] for b in tile.bands]]  # (h, w, C)
    if tile.mask_kind == "gdal":
        valid = src.dataset_mask(window=win) > 0
    elif tile.mask_kind == "nodata" and tile.nodata is not None and not np.isnan(tile.nodata):
        valid = np.any(data != np.asarray(tile.nodata, dtype=data.dtype), axis=0)
    else:
        valid = np.ones(raw.shape[:2], dtype=bool)
    if raw.dtype.kind == "f":
        finite = np.isfinite(raw).all(axis=-1)
        valid &= finite
        if not finite.all():
            raw = np.where(np.isfinite(raw), raw, 0).astype(raw.dtype)
    placed = inside.relative_to(window)
    return mirror_pad(raw, placed, window.shape), mirror_pad(valid, placed, window.shape, fill=False)


def read_block(tile: TileSpec, block: BlockSpec) -> tuple[BlockContext, Patches]:
    """One windowed read of ``block``, cut into its patches: (context, patches)."""
    try:
        with fileio.open_raster(tile.uri) as src:
            raw, valid = read_window(src, tile, block.window)
    except BlockReadError:
        raise
    except Exception as exc:  # rasterio/GDAL raise many types for damaged files
        w = block.window
        raise BlockReadError(
            f"{tile.uri}: cannot read rows {max(w.row, 0)}-{min(w.row_stop, tile.height) - 1}, columns "
            f"{max(w.col, 0)}-{min(w.col_stop, tile.width) - 1} ({gdal_reason(exc)}); "
            "the file is probably truncated or corrupt - re-copy or re-export it"
        ) from None
    patches = Patches(patchify(raw, block.patches), tile.scale_divisor, tile.scale_offset)
    core_raw, core_valid = core_of_window(block, raw), core_of_window(block, valid)
    inputs = block_input_sums(core_raw, core_valid, block.core.row, tile.height, tile.scale_divisor, tile.scale_offset)
    thumb = thumb_part(core_raw, core_valid, block.core.row, block.core.col, tile.height, tile.width)
    return BlockContext(tile, block, valid, inputs, thumb), patches


class ReadBlockFn(beam.DoFn):
    """(TileSpec, BlockSpec) → (BlockContext, Patches), or a BlockFailure on ``failed``.

    Reads run ``prefetch`` blocks ahead on a small thread pool, so decoding (and, for ``gs://``,
    network latency) overlaps with inference on the blocks before; GDAL and numpy release the GIL.
    Elements still in flight at the end of a bundle are emitted from ``finish_bundle``.
    """

    def __init__(self, prefetch: int = 1) -> None:
        self._prefetch = prefetch
        # Bytes of raw patch pixels handed to the model (overlap counted), not bytes read from files.
        self._patch_bytes = beam.metrics.Metrics.counter("tileseg", "patch_bytes")

    def setup(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, self._prefetch), thread_name_prefix="tileseg-read")

    def teardown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def start_bundle(self) -> None:
        self._pending: deque[tuple[Future[object], Any, Any]] = deque()

    def _read(self, element: tuple[TileSpec, BlockSpec]) -> object:
        tile, block = element
        try:
            result = read_block(tile, block)
        except Exception as exc:  # noqa: BLE001 - recorded as a failure of this tile
            return block_failure(tile, block, "read", exc)
        self._patch_bytes.inc(int(result[1].pixels.nbytes))
        return result

    def process(self, element: tuple[TileSpec, BlockSpec], window: Any = beam.DoFn.WindowParam,
                timestamp: Any = beam.DoFn.TimestampParam) -> Iterator[object]:
        self._pending.append((self._pool.submit(self._read, element), window, timestamp))
        while len(self._pending) > self._prefetch:
            yield self._pending.popleft()[0].result()

    def finish_bundle(self) -> Iterator[object]:
        while self._pending:
            future, window, timestamp = self._pending.popleft()
            yield windowed(future.result(), window, timestamp)


class ReadBlocks(beam.PTransform):
    """(TileSpec, BlockSpec) → (BlockContext, Patches) per block, and BlockFailures of reads."""

    def __init__(self, prefetch: int = 1) -> None:
        super().__init__()
        self._prefetch = prefetch

    def expand(self, blocks: beam.PCollection) -> StageOutput:
        out = blocks | "Read" >> (beam.ParDo(ReadBlockFn(self._prefetch))
                                  .with_output_types(KeyedPatches).with_outputs(FAILED, main="main"))
        return StageOutput(out.main, out[FAILED])
