"""One code path for local files and ``gs://`` objects, through fsspec (gcsfs for ``gs://``).

Rasters are opened with rasterio; remote ones through rasterio's ``opener=`` hook, so GDAL reads
only the byte ranges a windowed read needs. Outputs are written to a local temporary file first
and published with one rename (local) or one upload (object stores, where an object appears only
once complete), so a reader never sees a half-written file: :func:`publish` does this for a file
you made, and :func:`open_file` in a write mode does it for you when the file is closed.

Paths come back in the form they went in: ``gs://bucket/key`` for object-store URIs, plain
absolute paths for local ones (``file://`` is accepted and dropped). :func:`glob_root` returns
the same form as :func:`match`, so ``posixpath.relpath(uri, root)`` (``os.path.relpath``
locally) gives a tile id.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

import fsspec

# GDAL's block cache defaults to 5 % of RAM and keeps every decoded input tile and every written
# mask block until it is full, so a process's memory would grow with the tile size (measured:
# +2.4 bytes per tile pixel from 8192² to 16384²). A fixed cache keeps memory proportional to the
# block size; GDAL reads this once, before its first use, hence here at import of the I/O layer.
os.environ.setdefault("GDAL_CACHEMAX", "128")
from fsspec.implementations.local import LocalFileSystem

_MAGIC = re.compile(r"[*?\[]")
# Names this module gives to files that are not outputs yet: publish()'s hidden temp beside the
# destination and check_writable()'s probe. match() never lists them.
_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$|^\.tileseg-write-check-[0-9a-f]{32}$")
# Remote rasters: GDAL asks for the header, the tile index, then one read per tile. Each miss
# fetches the requested bytes plus this much read-ahead, so a window costs a few range requests
# of about a tile or two each, never the whole object. (Measured on 512x512 windows of a 50 MB
# GeoTIFF: a third of the requests of unbuffered reads for ~20% more bytes; bigger blocks only
# add bytes.)
RASTER_READ_BLOCK = 256 * 1024
# GDAL config while opening a remote raster. Without it GDAL looks for sidecar files
# (.aux.xml, .aux, .xml, .msk, .ovr, upper-case variants...) one stat at a time, which through
# the opener costs two or three object-store requests each: ~140 requests per open measured,
# against 2 with it. Consequence: external sidecars next to remote rasters are ignored
# (internal overviews and masks are read as usual).
_REMOTE_RASTER_OPEN_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


#: Local scratch folders are ``<tmp>/tileseg-<pid>-...``: the pid tells a later run whether the
#: process that made one is gone (killed), so its leftovers can be removed (remove_stale_scratch).
SCRATCH_PREFIX = "tileseg-"


def process_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine (or cannot be signalled by us)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_scratch() -> list[str]:
    """Remove scratch folders that processes killed mid-write left in the system temp folder."""
    removed = []
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        m = re.match(rf"^{SCRATCH_PREFIX}(\d+)-", name)
        if m and int(m.group(1)) != os.getpid() and not process_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _strip_file_scheme(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _has_magic(path: str) -> bool:
    return bool(_MAGIC.search(path))


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path within it.

    Remote filesystems are made without a listings cache: other workers write to the same
    bucket, and a cached listing would hide their objects (or show deleted ones).
    """
    uri = _strip_file_scheme(uri)
    if is_remote(uri):
        return fsspec.core.url_to_fs(uri, use_listings_cache=False)
    return fsspec.core.url_to_fs(uri)


def _unstrip(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Give a path from ``fs`` back its scheme when the user's URI had one."""
    if is_remote(like):
        return fs.unstrip_protocol(path)
    return path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def relative_to(uri: str, root: str) -> str | None:
    """``uri``'s path under the folder ``root``, with '/' separators (local paths compared as
    absolute ones), or None when it lies outside ``root``."""
    if is_remote(root) or is_remote(uri):
        base = root.rstrip("/") + "/"
        return uri[len(base):] if uri.startswith(base) else None
    rel = os.path.relpath(os.path.abspath(_strip_file_scheme(uri)), os.path.abspath(_strip_file_scheme(root)))
    return None if rel == ".." or rel.startswith(".." + os.sep) else rel.replace(os.sep, "/")


def _is_internal_temp(path: str) -> bool:
    return bool(_TMP_NAME.match(posixpath.basename(path.rstrip("/"))))


def match(pattern: str) -> list[str]:
    """Files matching a glob (``**`` recurses), or the files under a directory; sorted URIs.

    A path to one file gives ``[that file]``; nothing matching gives ``[]``. Directories (and
    object-store "directory" placeholders) are never returned, nor publish()'s temporary files.
    """
    return [uri for uri, _ in match_detail(pattern)]


def match_detail(pattern: str) -> list[tuple[str, dict[str, Any]]]:
    """Like :func:`match`, with each file's listing entry (``size``, and ``mtime`` locally or
    ``updated``/``generation`` on object stores), from the one listing call: no request per file."""
    fs, path = filesystem(pattern)
    try:
        if _has_magic(path):
            entries = fs.glob(path, detail=True)
        else:
            entry = fs.info(path)
            if entry["type"] == "directory":
                entries = fs.find(path, detail=True)
            else:
                entries = {entry["name"]: entry}
    except FileNotFoundError:
        return []
    found = (
        (name, entry) for name, entry in entries.items()
        if _is_file_entry(fs, name, entry) and not _is_internal_temp(name)
    )
    return sorted((_unstrip(fs, p, pattern), dict(e)) for p, e in found)


def _is_file_entry(fs: fsspec.AbstractFileSystem, name: str, entry: dict[str, Any]) -> bool:
    if entry.get("type") == "file":
        return not name.endswith("/")  # an object-store "directory" placeholder is not a file
    # fsspec lists a local symlink as type "other": keep links to regular files, and links that
    # lead nowhere (dangling, or a loop), so that they become a failure row naming the link
    # instead of vanishing from the run; links to directories are not followed.
    return entry.get("type") == "other" and isinstance(fs, LocalFileSystem) and not os.path.isdir(name)


def glob_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard: tile ids are relative to it.

    ``/a/b/*.tif`` and ``/a/b/**/*.tif`` give ``/a/b``; a directory gives itself; a single
    file gives its directory. Local results are absolute, like :func:`match`'s.
    """
    stripped = _strip_file_scheme(pattern)
    remote = is_remote(stripped)
    magic = _MAGIC.search(stripped)
    if magic:
        head = stripped[: magic.start()]
        root = head[: head.rfind("/") + 1]  # through the last "/" before the wildcard
    else:
        fs, path = filesystem(stripped)
        root = stripped if fs.isdir(path) else (posixpath if remote else os.path).dirname(stripped)
    if remote:
        return root.rstrip("/")
    return os.path.abspath(root or ".")


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def size(uri: str) -> int:
    fs, path = filesystem(uri)
    return int(fs.size(path))


def listdir(uri: str) -> list[str]:
    """The direct children (files and folders) of a folder or prefix, as URIs in the caller's
    form; FileNotFoundError when there is nothing there."""
    fs, path = filesystem(uri)
    try:
        names = fs.ls(path, detail=False)
    except FileNotFoundError:
        raise FileNotFoundError(uri) from None
    if not names:
        raise FileNotFoundError(uri)
    return [_unstrip(fs, str(n).rstrip("/"), uri) for n in names]


def info(uri: str) -> dict[str, Any]:
    """fsspec's info, with ``name`` in the caller's form (``gs://...`` or a local path)."""
    fs, path = filesystem(uri)
    out = dict(fs.info(path))
    out["name"] = _unstrip(fs, out["name"].rstrip("/") or out["name"], uri)
    out["size"] = int(out.get("size") or 0)
    return out


def makedirs(uri: str) -> None:
    if is_remote(uri):
        return  # object stores have no directories
    os.makedirs(_strip_file_scheme(uri), exist_ok=True)


def remove(uri: str, recursive: bool = False) -> None:
    """Delete a file or object; with ``recursive``, a directory or every object under a prefix.

    A missing path is not an error. Without ``recursive``, a directory (or a prefix with
    objects under it) raises IsADirectoryError, locally and remotely alike. A bucket itself
    is never deleted: ``remove("gs://bkt", recursive=True)`` empties it.
    """
    fs, path = filesystem(uri)
    try:
        entry = fs.info(path)
    except FileNotFoundError:
        return
    with contextlib.suppress(FileNotFoundError):
        if entry["type"] != "directory":
            fs.rm_file(path)
        elif not recursive:
            raise IsADirectoryError(f"{uri} is a directory; pass recursive=True to remove it")
        elif is_remote(uri) and "/" not in path.strip("/"):
            objects = fs.find(path)
            if objects:
                fs.rm(objects)
        else:
            fs.rm(path, recursive=True)


class _PublishOnClose:
    """A local temporary file that :func:`publish` moves to ``uri`` once closed successfully.

    Leaving a ``with`` block by an exception (or calling :meth:`discard`) deletes the temporary
    and publishes nothing, so a failed write never leaves a partial file or object behind.
    """

    def __init__(self, uri: str, mode: str):
        self._uri = uri
        self._scratch = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-write-")
        self._tmp = os.path.join(self._scratch, "part")
        self._done = True  # nothing to discard until the temporary is open
        try:
            encoding = None if "b" in mode else "utf-8"
            self._file: IO[Any] = open(self._tmp, mode.replace("x", "w"), encoding=encoding)
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise
        self._done = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (a failed __init__): no recursion via _file
            raise AttributeError(name)
        return getattr(self._file, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._file)

    def __enter__(self) -> _PublishOnClose:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    @property
    def closed(self) -> bool:
        return self._done

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._file.close()
            publish(self._tmp, self._uri)
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(Exception):
            self._file.close()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __del__(self) -> None:
        # Never publish from the garbage collector: an unclosed writer is discarded.
        with contextlib.suppress(Exception):
            self.discard()


def open_file(uri: str, mode: str = "rb") -> Any:
    """Open a file or object. Read modes stream (remote reads fetch byte ranges).

    Write modes (``w``, ``wb``, ``x``, ``xb``) write a local temporary and publish it on close,
    like :func:`publish`: nothing appears at ``uri`` until the file is closed without error;
    missing local parent directories are created. Other modes go straight to fsspec.
    Text modes are UTF-8 everywhere (not the machine's locale).
    """
    if mode.replace("b", "").replace("t", "") in ("w", "x"):
        if mode.startswith("x") and exists(uri):
            raise FileExistsError(uri)
        return _PublishOnClose(uri, mode)
    fs, path = filesystem(uri)
    if "b" not in mode:
        return fs.open(path, mode, encoding="utf-8")
    return fs.open(path, mode)


class _RasterSource:
    """A read-only file handle for GDAL with identity equality.

    fsspec read-mode files compare (and hash) equal when they are the same object version;
    rasterio keeps its open handles in a mapping, so a second handle on the same raster
    overwrote the first there, and closing them later failed (KeyError in
    ``pyopener_close``, surfacing as SystemError from ``DatasetBase.close``) once the same
    URI had been open twice at a time in a thread. Wrapping each handle keeps them apart.
    """

    def __init__(self, f: Any):
        self._f = f

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def __enter__(self) -> _RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._f, name)


def _raster_opener(fs: fsspec.AbstractFileSystem) -> Callable[..., Any]:
    """An ``opener=`` for rasterio that reads ``fs`` by byte ranges.

    Files are opened with a plain read-ahead cache of :data:`RASTER_READ_BLOCK` bytes instead
    of gcsfs's default adaptive prefetching, which suits sequential reads, not GDAL's seeks.
    """

    def opener(path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "r" not in mode or "+" in mode:
            raise OSError(f"remote rasters are read-only here (mode {mode!r}); write locally and publish()")
        kwargs.setdefault("block_size", RASTER_READ_BLOCK)
        kwargs.setdefault("cache_type", "readahead")
        return _RasterSource(fs.open(path, "rb", **kwargs))

    return opener


def open_raster(uri: str) -> Any:
    """Open a raster for reading with rasterio (headers only until a window is read).

    Remote rasters are read through fsspec by byte ranges (rasterio ``opener=``): a windowed
    read downloads the header, the tile index and the tiles it touches, not the whole object.
    A missing raster raises ``rasterio.errors.RasterioIOError`` (an OSError) either way.
    """
    import rasterio

    if is_remote(uri):
        fs, _ = filesystem(uri)
        with rasterio.Env(**_REMOTE_RASTER_OPEN_ENV):
            return rasterio.open(uri, opener=_raster_opener(fs))
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
        if not is_remote(uri) and os.path.lexists(_strip_file_scheme(uri)) and not os.path.isdir(_strip_file_scheme(uri)):
            raise OSError(f"{uri} is a file, not a folder; choose a folder for the output") from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OSError(f"{uri} is not writable ({reason}); choose a folder you can write") from None


@contextlib.contextmanager
def local_scratch(suffix: str = "") -> Iterator[str]:
    """A local temporary directory, removed afterwards whatever happens."""
    path = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", suffix=suffix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(local_path: str, uri: str) -> None:
    """Move a complete local file to ``uri`` atomically (rename locally, one upload remotely).

    The local file is gone afterwards. Remotely the object exists only once the upload has
    completed (gcsfs commits a single or resumable upload at its end). Locally the file is
    copied, if it must cross filesystems, to a hidden temporary beside the destination and
    renamed over it, so the destination never holds a partial file; if that fails, the file
    is moved back to ``local_path``.
    """
    if is_remote(uri):
        fs, path = filesystem(uri)
        fs.put_file(local_path, path)
        os.remove(local_path)
        return
    dest = _strip_file_scheme(uri)
    parent = os.path.dirname(dest) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(dest)}.{uuid.uuid4().hex}.tmp")
    try:
        shutil.move(local_path, tmp)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp) and not os.path.exists(local_path):
            with contextlib.suppress(OSError):
                shutil.move(tmp, local_path)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
