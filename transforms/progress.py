"""Progress a person can follow, on any local runner: tiles written and failed of the total, and
tile megapixels per second.

Tiles are finished by whichever worker stages their last block, in this process or in the worker
processes of the multi-process DirectRunner or a portable runner, so no in-process counter sees
them all. What every worker does leave is its trace in the run's staging folder: a tile's
``result.json`` once its mask is published, ``failed.json`` once it failed, and a core file per
block still waiting. The monitor, a thread beside the launcher's wait, reads those every few
seconds. On Dataflow the launcher does not wait; the job's Beam counters (``tileseg/tiles_written``,
``tiles_failed``, ``pixels_segmented``, ``patch_bytes``) show the same in the Dataflow console.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
import time
from types import TracebackType

from common import fileio
from transforms.masks import CORE_SUFFIX, FAILED_NAME, RESULT_NAME, OutputLayout

log = logging.getLogger("tileseg.progress")

#: Seconds between two looks at the staging folder.
EVERY_S = 5.0


class ProgressMonitor:
    """``with ProgressMonitor(layout, total):`` logs progress every ``every_s`` while the job runs."""

    def __init__(self, layout: OutputLayout, total_tiles: int, every_s: float | None = None) -> None:
        self._layout = layout
        self._total = total_tiles
        self._every = EVERY_S if every_s is None else every_s
        self._stop = threading.Event()
        self._pixels: dict[str, int] = {}  # tile folder → pixels, read once per written tile
        self._thread = threading.Thread(target=self._loop, name="tileseg-progress", daemon=True)
        self._start = time.monotonic()
        self.last: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __enter__(self) -> ProgressMonitor:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - progress is a courtesy; never break the run
                log.debug("progress: %s", exc)

    def poll(self) -> tuple[int, int, int, int]:
        """(tiles written, tiles failed, blocks waiting, pixels written) so far; logs a line when
        anything changed."""
        root = self._layout.staging_root()
        written = failed = waiting = 0
        for uri, _ in fileio.match_detail(root):
            name = posixpath.basename(uri.replace("\\", "/"))
            folder = uri[: len(uri) - len(name) - 1]
            if name == RESULT_NAME:
                written += 1
                if folder not in self._pixels:
                    with fileio.open_file(uri, "r") as f:
                        self._pixels[folder] = int(json.loads(json.load(f)["result"])["pixels"])
            elif name == FAILED_NAME:
                failed += 1
            elif name.endswith(CORE_SUFFIX):
                waiting += 1
        pixels = sum(self._pixels.values())
        now = (written, failed, waiting, pixels)
        # The run's last step removes the staging: counts that fall mean that, not lost tiles.
        if now != self.last and written >= self.last[0] and failed >= self.last[1]:
            rate = pixels / max(time.monotonic() - self._start, 1e-9) / 1e6
            log.info("%d of %d tiles written (%.1f MPix, %.2f MPix/s), %d failed, %d block(s) staged for tiles "
                     "in progress", written, self._total, pixels / 1e6, rate, failed, waiting)
            self.last = now
        return now
