"""One code path for local files and ``gs://`` objects, through fsspec (gcsfs for ``gs://``).

Rasters are opened with rasterio; remote ones through rasterio's ``opener=`` hook, so GDAL reads
only the byte ranges a windowed read needs. Outputs are written to a local temporary file first
and published with one rename (local) or one upload (object stores, where an object appears only
once complete), so a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _strip_file_scheme(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path within it."""
    fs, path = fsspec.core.url_to_fs(_strip_file_scheme(uri))
    return fs, path


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Give a path from ``fs`` back its scheme when the user's URI had one."""
    if is_remote(like):
        return fs.unstrip_protocol(path)
    return path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def match(pattern: str) -> list[str]:
    """Files matching a glob (``**`` recurses), or the files under a directory; sorted URIs."""
    fs, path = filesystem(pattern)
    if fs.isdir(path):
        found = [p for p in fs.find(path) if not fs.isdir(p)]
    elif any(ch in path for ch in "*?["):
        found = [p for p in fs.glob(path) if not fs.isdir(p)]
    elif fs.exists(path):
        found = [path]
    else:
        found = []
    return sorted(_unstrip(fs, p, pattern) for p in found)


def glob_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: tile ids are relative to it."""
    stripped = _strip_file_scheme(pattern)
    fs, path = filesystem(stripped)
    if not any(ch in path for ch in "*?[") and fs.isdir(path):
        return stripped.rstrip("/")
    head = stripped
    for i, ch in enumerate(stripped):
        if ch in "*?[":
            head = stripped[:i]
            break
    else:
        return posixpath.dirname(stripped) if is_remote(stripped) else os.path.dirname(stripped)
    return head.rsplit("/", 1)[0] if "/" in head else "."


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return int(fs.size(path))


def info(uri: str) -> dict[str, Any]:
    fs, path = filesystem(uri)
    return dict(fs.info(path))


def makedirs(uri: str) -> None:
    if is_remote(uri):
        return  # object stores have no directories
    os.makedirs(uri, exist_ok=True)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    with contextlib.suppress(FileNotFoundError):
        if fs.exists(path):
            fs.rm(path, recursive=recursive)


def open_file(uri: str, mode: str = "rb") -> Any:
    fs, path = filesystem(uri)
    return fs.open(path, mode)


def open_raster(uri: str) -> Any:
    """Open a raster for reading with rasterio (headers only until a window is read)."""
    import rasterio

    if is_remote(uri):
        fs, _ = filesystem(uri)
        return rasterio.open(uri, opener=fs)
    return rasterio.open(_strip_file_scheme(uri))


def check_writable(uri: str) -> None:
    """Raise OSError with a clear message when ``uri`` (a directory) cannot be written."""
    probe = join(uri, f".tileseg-write-check-{uuid.uuid4().hex}")
    try:
        makedirs(uri)
        with open_file(probe, "wb") as f:
            f.write(b"ok")
        remove(probe)
    except Exception as exc:
        raise OSError(f"output {uri} is not writable ({exc}); choose a directory you can write") from None


@contextlib.contextmanager
def local_scratch(suffix: str = "") -> Iterator[str]:
    """A local temporary directory, removed afterwards whatever happens."""
    path = tempfile.mkdtemp(prefix="tileseg-", suffix=suffix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(local_path: str, uri: str) -> None:
    """Move a complete local file to ``uri`` atomically (rename locally, one upload remotely)."""
    if is_remote(uri):
        fs, path = filesystem(uri)
        fs.put_file(local_path, path)
        os.remove(local_path)
        return
    dest = _strip_file_scheme(uri)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    # A temp name in the destination directory makes the final rename atomic even across
    # filesystems: the copy (if any) goes to the hidden name, then one rename publishes it.
    tmp = os.path.join(os.path.dirname(dest) or ".", f".{os.path.basename(dest)}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.move(local_path, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
