"""ReadBlock and Patchify: one windowed read per block, cut into raw patches for the model.

The read window is clipped to the tile; anything outside (only when a tile is smaller than one
patch) is filled by mirroring and marked invalid, so the model sees natural-looking context and
the padded pixels never reach a mask. Validity comes from nodata, alpha or GDAL's internal mask,
and NaN is always invalid.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.utils.windowed_value import WindowedValue

from model.card import ModelCard
from transforms import fileio
from transforms.plan import BlockSpec
from transforms.records import FAILED, failure_record
from transforms.tiles import TileSpec

log = logging.getLogger(__name__)


class BlockReadError(IOError):
    """A block of a tile could not be read (truncated or corrupt file, lost object)."""


@dataclass
class BlockInput:
    """What the model handler needs: the block's patches and where their pixels are valid.

    ``patches``: (K, Hp, Wp, C) raw pixels in the source dtype (the model normalises them with
    ``tile.scale_divisor`` and the card's mean/std). ``valid``: (Hw, Ww) bool over the block window.
    """

    tile: TileSpec
    block: BlockSpec
    patches: np.ndarray
    valid: np.ndarray


def read_window(src: object, tile: TileSpec, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (row_off, col_off, height, width) of the tile's model bands.

    Returns raw (H, W, C) in the source dtype and valid (H, W) bool. Parts of the window outside
    the tile are mirrored in and marked invalid.
    """
    from rasterio.windows import Window

    row, col, h, w = window
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + h, tile.height), min(col + w, tile.width)
    win = Window(c0, r0, c1 - c0, r1 - r0)
    unique = sorted(set(tile.bands))
    data = src.read(unique, window=win)  # type: ignore[attr-defined]  # (C', h, w)
    if data.shape[1:] != (r1 - r0, c1 - c0):
        raise BlockReadError(f"{tile.uri}: short read of window {window}")
    pos = {b: i for i, b in enumerate(unique)}
    raw = np.moveaxis(data, 0, -1)[..., [pos[b] for b in tile.bands]]  # (h, w, C)
    if tile.mask_kind == "gdal":
        valid = src.dataset_mask(window=win) > 0  # type: ignore[attr-defined]
    elif tile.mask_kind == "nodata" and tile.nodata is not None and not np.isnan(tile.nodata):
        valid = np.any(data != np.asarray(tile.nodata, dtype=data.dtype), axis=0)
    else:
        valid = np.ones(raw.shape[:2], dtype=bool)
    if raw.dtype.kind == "f":
        finite = np.isfinite(raw).all(axis=-1)
        valid &= finite
        if not finite.all():
            raw = np.where(np.isfinite(raw), raw, 0).astype(raw.dtype)
    pad = ((r0 - row, row + h - r1), (c0 - col, col + w - c1))
    if any(p for pair in pad for p in pair):
        raw = np.pad(raw, (*pad, (0, 0)), mode="symmetric")
        valid = np.pad(valid, pad, mode="constant", constant_values=False)
    return raw, valid


def patchify(image: np.ndarray, offsets: tuple[tuple[int, int], ...], shape: tuple[int, int]) -> np.ndarray:
    """Cut (H, W, C) ``image`` into (K, ph, pw, C) patches at the given (row, col) offsets."""
    ph, pw = shape
    return np.stack([image[r:r + ph, c:c + pw] for r, c in offsets])


def read_block(tile: TileSpec, block: BlockSpec, card: ModelCard) -> BlockInput:
    try:
        with fileio.open_raster(tile.uri) as src:
            raw, valid = read_window(src, tile, block.window)
    except BlockReadError:
        raise
    except Exception as exc:  # rasterio/GDAL raise many types for damaged files
        raise BlockReadError(
            f"{tile.uri}: cannot read block {block.index} window {block.window} ({exc}); "
            "the file is probably truncated or corrupt - re-copy or re-export it"
        ) from None
    patches = patchify(raw, block.patch_offsets, block.patch_shape)
    return BlockInput(tile=tile, block=block, patches=patches, valid=valid)


class ReadBlockFn(beam.DoFn):
    """(TileSpec, BlockSpec) → BlockInput, or a failure record on ``failed``.

    Reads run ``prefetch`` blocks ahead on a small thread pool, so decoding (and, for ``gs://``,
    network latency) overlaps with inference on the blocks before; GDAL and numpy release the GIL.
    Elements still in flight at the end of a bundle are emitted from ``finish_bundle``.
    """

    def __init__(self, card: ModelCard, prefetch: int = 1) -> None:
        self._card = card
        self._prefetch = prefetch
        self._bytes = beam.metrics.Metrics.counter("tileseg", "bytes_read")

    def setup(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, self._prefetch), thread_name_prefix="tileseg-read")

    def teardown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def start_bundle(self) -> None:
        self._pending: deque[tuple[Future[object], Any, Any]] = deque()

    def _read(self, element: tuple[TileSpec, BlockSpec]) -> object:
        tile, block = element
        try:
            result = read_block(tile, block, self._card)
        except Exception as exc:  # noqa: BLE001 - recorded as a failure of this tile
            return beam.pvalue.TaggedOutput(FAILED, failure_record(tile.uri, tile.tile_id, "read", exc))
        self._bytes.inc(int(result.patches.nbytes))
        return result

    def process(self, element: tuple[TileSpec, BlockSpec], window: Any = beam.DoFn.WindowParam,
                timestamp: Any = beam.DoFn.TimestampParam) -> Iterator[object]:
        self._pending.append((self._pool.submit(self._read, element), window, timestamp))
        while len(self._pending) > self._prefetch:
            yield self._pending.popleft()[0].result()

    def finish_bundle(self) -> Iterator[object]:
        while self._pending:
            future, window, timestamp = self._pending.popleft()
            out = future.result()
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, [window]))
            else:
                yield WindowedValue(out, timestamp, [window])
