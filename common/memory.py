"""Handing a worker's freed heap memory back to the operating system between big stages."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back this way
        return None


def release_free_memory() -> None:
    """Return the free pages of every malloc arena to the operating system.

    glibc keeps what a stage freed (numpy's, GDAL's and GEOS's short-lived buffers) in its arenas,
    one per thread, where the next stage, on other threads, cannot reuse it: a worker's resident
    memory then only grows, stage after stage. ``malloc_trim(0)`` gives those pages back (a few
    milliseconds); elsewhere this does nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
