"""ListInputs: the run's input files, listed by the pipeline itself (on a worker), not the launcher.

A bucket may hold 10^5 tiles. Listing them in the launcher and embedding every URI in the job
graph makes a slow launch and a job graph too big to submit; here the pattern alone travels with
the job and one worker lists it, with one listing call that also gives each file's size and
modification time (its fingerprint), so no file is opened to decide what is up to date.

We list through common.fileio (fsspec/gcsfs) rather than Beam's MatchFiles: every other read and
write of tileseg goes through fileio, which the storage emulator tests cover, and Beam's GCS
filesystem would be a second client with its own credentials and retry rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import apache_beam as beam

from common import fileio
from transforms.tiles import InputFile, fingerprint_of, tile_ids

log = logging.getLogger(__name__)

RASTER_EXTENSIONS = (".tif", ".tiff", ".gtiff", ".jp2", ".png", ".jpg", ".jpeg", ".img", ".vrt")


def normalise_pattern(pattern: str) -> str:
    """Local paths without ``file://``, ``./`` or ``..`` segments; remote URIs as given."""
    if fileio.is_remote(pattern):
        return pattern
    return os.path.normpath(pattern[len("file://"):] if pattern.startswith("file://") else pattern)


def list_files(pattern: str, output: str | None = None) -> tuple[list[tuple[str, dict]], str]:
    """(uri, listing entry) of every input file, and the root their tile ids are relative to.

    A directory yields its rasters, leaving out hidden files and folders inside it (not the
    folders above it: a snapshot under ``~/.cache`` is still listed). Nothing under ``output`` is
    ever an input, so an output folder inside the input folder is not segmented again.
    """
    pattern = normalise_pattern(pattern)
    fs, path = fileio.filesystem(pattern)
    is_dir = not any(ch in path for ch in "*?[") and fs.isdir(path)
    entries = fileio.match_detail(pattern)
    root = fileio.glob_root(pattern)
    if is_dir:
        entries = [(u, e) for u, e in entries if u.lower().endswith(RASTER_EXTENSIONS)
                   and not any(part.startswith(".") for part in _relative(u, root).split("/"))]
    if output is not None:
        out = output.rstrip("/") if fileio.is_remote(output) else os.path.abspath(output)
        inside = [u for u, _ in entries if u.startswith(out + "/")]
        if inside:
            log.warning("leaving out %d file(s) under the output folder %s", len(inside), out)
            entries = [(u, e) for u, e in entries if not u.startswith(out + "/")]
    return entries, root


def list_inputs(pattern: str, output: str | None = None) -> tuple[list[str], str]:
    """Input URIs and their root (see list_files)."""
    entries, root = list_files(pattern, output)
    return [u for u, _ in entries], root


def input_files(pattern: str, output: str | None = None) -> list[InputFile]:
    """Every input file with its unique tile id and fingerprint."""
    entries, root = list_files(pattern, output)
    ids = tile_ids([u for u, _ in entries], root)
    return [InputFile(u, ids[u], fingerprint_of(u, e)) for u, e in entries]


def _relative(uri: str, root: str) -> str:
    return uri[len(root.rstrip("/")) + 1:] if uri.startswith(root.rstrip("/") + "/") else uri


class ListInputs(beam.PTransform):
    """The pipeline's root → InputFiles (from one listing, on a worker), spread over workers."""

    def __init__(self, pattern: str, output: str) -> None:
        super().__init__()
        self._pattern = pattern
        self._output = output

    def expand(self, root: beam.pvalue.PBegin) -> beam.PCollection:
        return (root
                | "Pattern" >> beam.Create([self._pattern])
                | "List" >> beam.FlatMap(_list, output=self._output)
                | "SpreadTiles" >> beam.Reshuffle())


def _list(pattern: str, output: str) -> Iterator[InputFile]:
    files = input_files(pattern, output)
    if not files:
        log.warning("--input %s: no files match", pattern)
    log.info("listed %d input file(s) under %s", len(files), pattern)
    yield from files
