"""common/memory.py: freed heap memory goes back to the operating system."""

from __future__ import annotations

import ctypes.util
import threading

import numpy as np
import pytest

from common.memory import release_free_memory


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not ctypes.util.find_library("c") or not __import__("sys").platform.startswith("linux"),
                    reason="malloc_trim is glibc's (Linux)")
def test_memory_freed_in_another_thread_is_handed_back() -> None:
    kept: list[np.ndarray] = []

    def work() -> None:
        # 300 MB in 100 kB arrays (below glibc's mmap threshold, so they live in the thread's
        # arena), all freed but the last, which pins the top of the arena: nothing is returned.
        arrays = [np.ones(100_000 // 8) for _ in range(3000)]
        kept.append(arrays[-1])
        del arrays

    before = rss_mb()
    t = threading.Thread(target=work)
    t.start()
    t.join()
    held = rss_mb()
    release_free_memory()
    after = rss_mb()
    if held - before < 200:
        pytest.skip(f"this allocator returned the memory by itself ({before:.0f} -> {held:.0f} MB)")
    assert held - after > 200, (before, held, after)  # the arena kept what was freed; it is handed back now
