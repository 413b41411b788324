"""Progress a person can follow: tiles done of total, tile pixels per second.

On the DirectRunner (in-process) every stage runs in this process, so one process-wide tracker
sees the whole run. On a distributed runner, or with the multi-process DirectRunner, each worker
process logs only the blocks and tiles it handled itself; nothing adds those up (the one Beam
counter, ``tileseg/patch_bytes``, counts raw patch bytes handed to the model).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("tileseg.progress")


class Progress:
    def __init__(self, every_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._every = every_s
        self.reset()

    def reset(self, total_tiles: int = 0) -> None:
        with self._lock:
            self.total_tiles = total_tiles
            self.planned_pixels = 0
            self.done_pixels = 0
            self.tiles_done = 0
            self._start = time.monotonic()
            self._last = 0.0

    def planned(self, pixels: int) -> None:
        with self._lock:
            self.planned_pixels += pixels

    def rate_mpix_s(self) -> float:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        return self.done_pixels / elapsed / 1e6

    def block_done(self, pixels: int) -> None:
        with self._lock:
            self.done_pixels += pixels
            now = time.monotonic()
            if now - self._last < self._every:
                return
            self._last = now
        pct = f" ({100 * self.done_pixels / self.planned_pixels:.0f}%)" if self.planned_pixels else ""
        log.info("segmented %.1f of %.1f MPix%s at %.2f MPix/s; %d of %d tiles written",
                 self.done_pixels / 1e6, self.planned_pixels / 1e6, pct, self.rate_mpix_s(),
                 self.tiles_done, self.total_tiles)

    def tile_done(self, tile_id: str, write_s: float) -> None:
        with self._lock:
            self.tiles_done += 1
        log.info("tile %d of %d written: %s (mask in %.1f s)", self.tiles_done, self.total_tiles, tile_id, write_s)


PROGRESS = Progress()
