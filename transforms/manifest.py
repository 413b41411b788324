"""The manifest of done tiles: ``OUT/manifest/done.parquet``, one row per published mask.

Deciding what is up to date must not open every mask of a bucket each night. The manifest holds,
per tile, the input file's fingerprint, the skip key, the mask's size and the tile's result
(transforms/results.py), so the skip step reads one file and one listing of ``masks/`` instead.

It is a cache, never the truth: an entry counts only while its mask is listed with the size it
records; tiles it does not know (a run killed before its last step wrote the manifest, two runs
at once where the last writer's manifest lacks the other's tiles) are checked from the mask's
own tags, as before. Each run's last step rewrites it: the old entries, with this run's tiles
(written or reused) replaced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from common import fileio
from transforms.results import TileResult

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema([
    ("tile_id", pa.string()),
    ("fingerprint", pa.string()),
    ("settings", pa.string()),
    ("mask_bytes", pa.int64()),
    ("result", pa.string()),  # TileResult.to_json()
])


@dataclass(frozen=True)
class DoneEntry:
    fingerprint: str
    settings: str
    mask_bytes: int
    result: str


def manifest_uri(root: str) -> str:
    return fileio.join(root, "manifest", "done.parquet")


def read_manifest(root: str) -> dict[str, DoneEntry]:
    """tile id → entry; empty when there is no manifest or it cannot be read (then every tile is
    checked from its mask, which is slower but as right)."""
    uri = manifest_uri(root)
    try:
        if not fileio.exists(uri):
            return {}
        with fileio.open_file(uri, "rb") as f:
            table = pq.read_table(f, schema=MANIFEST_SCHEMA)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("cannot read the manifest %s (%s); checking every mask instead", uri, exc)
        return {}
    return {
        str(row["tile_id"]): DoneEntry(str(row["fingerprint"]), str(row["settings"]), int(row["mask_bytes"]),
                                       str(row["result"]))
        for row in table.to_pylist()
    }


def write_manifest(root: str, results: list[TileResult]) -> str:
    """Merge ``results`` (with their mask sizes) into the manifest and publish it in one step."""
    entries = read_manifest(root)
    for r in results:
        if r.mask_bytes is not None:
            entries[r.tile_id] = DoneEntry(r.fingerprint, r.settings, r.mask_bytes, r.to_json())
    rows = [{"tile_id": k, "fingerprint": e.fingerprint, "settings": e.settings, "mask_bytes": e.mask_bytes,
             "result": e.result} for k, e in sorted(entries.items())]
    uri = manifest_uri(root)
    with fileio.local_scratch() as tmp:
        local = fileio.join(tmp, "done.parquet")
        pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), local, compression="zstd")
        fileio.publish(local, uri)
    return uri
