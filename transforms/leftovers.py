"""Leftovers of killed runs: staging folders and local scratch, removed by the next run.

Each run claims its staging folder with an owner file, ``_staging/<run_id>.owner`` (host, pid,
start time). A later run on the same output removes another run's staging when that owner is
gone: a process on this host that no longer exists, or a claim older than
``STALE_AFTER_S`` (another host, an object store). A run still going on is left alone, so two runs
may share an output folder.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time

from common import fileio
from transforms.masks import OutputLayout

log = logging.getLogger(__name__)

#: A claim this old is taken as abandoned whoever made it (no nightly run lasts two days).
STALE_AFTER_S = 48 * 3600
OWNER_SUFFIX = ".owner"


def claim_staging(layout: OutputLayout, this_process: bool = True) -> str:
    """Write this run's owner file; returns its URI. ``this_process``: the run lives in this
    process (local runners). A job submitted to Dataflow outlives its launcher, so its claim names
    no process and only its age can make it abandoned."""
    uri = layout.staging_root() + OWNER_SUFFIX
    with fileio.open_file(uri, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid() if this_process else None,
                   "started": time.time()}, f)
    return uri


def release_staging(layout: OutputLayout) -> None:
    """Remove this run's staging folder and owner file (the run is over)."""
    fileio.remove(layout.staging_root(), recursive=True)
    fileio.remove(layout.staging_root() + OWNER_SUFFIX)


def _abandoned(owner_uri: str) -> bool:
    try:
        with fileio.open_file(owner_uri, "r") as f:
            owner = json.load(f)
        host, pid, started = str(owner["host"]), owner["pid"], float(owner["started"])
    except FileNotFoundError:
        return True
    except Exception:  # noqa: BLE001 - an unreadable claim counts by its age alone
        return _older_than(owner_uri, STALE_AFTER_S)
    if time.time() - started > STALE_AFTER_S:
        return True
    return pid is not None and host == socket.gethostname() and not fileio.process_alive(int(pid))


def clean_leftovers(layout: OutputLayout) -> list[str]:
    """Remove other runs' abandoned staging under this output and dead processes' local scratch.
    Returns the run ids whose staging was removed."""
    removed: list[str] = []
    parent = layout.staging_parent()
    try:
        entries = fileio.listdir(parent)
    except FileNotFoundError:
        entries = []
    names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries}
    for name in sorted(names):
        run_id = name[: -len(OWNER_SUFFIX)] if name.endswith(OWNER_SUFFIX) else name
        if run_id == layout.run_id or run_id in removed:
            continue
        owner = fileio.join(parent, run_id + OWNER_SUFFIX)
        if (run_id + OWNER_SUFFIX) in names and not _abandoned(owner):
            continue
        if (run_id + OWNER_SUFFIX) not in names and not _older_than(fileio.join(parent, run_id), STALE_AFTER_S):
            continue  # staging without a claim (an older tileseg): only once it is old
        fileio.remove(fileio.join(parent, run_id), recursive=True)
        fileio.remove(owner)
        removed.append(run_id)
    if removed:
        log.info("removed the staging of %d earlier run(s) that ended without cleaning up: %s",
                 len(removed), ", ".join(removed))
    fileio.remove_stale_scratch()
    return removed


def _older_than(uri: str, seconds: float) -> bool:
    try:
        info = fileio.info(uri)
    except FileNotFoundError:
        return False
    mtime = info.get("mtime") or info.get("updated")
    if mtime is None:
        return True
    if isinstance(mtime, str):
        mtime = dt.datetime.fromisoformat(mtime.replace("Z", "+00:00"))
    if not isinstance(mtime, (int, float)):
        mtime = mtime.timestamp()  # object stores report datetimes
    return time.time() - float(mtime) > seconds
