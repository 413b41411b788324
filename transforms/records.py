"""Output records (per-class statistics, failures), their Parquet schemas, and the Parquet writer.

Both tables are small (a row per tile and class, a row per failure), so each run writes one
Parquet file per table, named by run id, through a local temporary file and one publish.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from transforms import fileio

log = logging.getLogger(__name__)

FAILED = "failed"  # tag of every stage's failure output

STATS_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("tile_id", pa.string()),
    ("source_uri", pa.string()),
    ("mask_uri", pa.string()),
    ("model_id", pa.string()),
    ("precision", pa.string()),
    ("class_index", pa.int32()),
    ("class_name", pa.string()),
    ("pixel_count", pa.int64()),
    ("valid_pixel_count", pa.int64()),
    ("total_pixel_count", pa.int64()),
    ("fraction", pa.float64()),
    ("area_m2", pa.float64()),
    ("crs", pa.string()),
    ("pixel_size_m", pa.float64()),
    ("processed_at", pa.timestamp("us", tz="UTC")),
])

FAILURE_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("uri", pa.string()),
    ("tile_id", pa.string()),
    ("stage", pa.string()),
    ("error_type", pa.string()),
    ("message", pa.string()),
    ("failed_at", pa.timestamp("us", tz="UTC")),
])


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def failure_record(uri: str, tile_id: str, stage: str, exc: BaseException) -> dict[str, Any]:
    """A failures row (run_id is filled in when the table is written)."""
    message = str(exc) or type(exc).__name__
    if uri not in message:
        message = f"{uri}: {message}"
    log.warning("failed at %s: %s", stage, message)
    return {
        "uri": uri,
        "tile_id": tile_id,
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": message,
        "failed_at": now_utc(),
    }


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, uri: str, run_id: str) -> str | None:
    """Write ``rows`` as one Parquet file at ``uri`` (atomically); nothing when there are none."""
    if not rows:
        return None
    rows = [{**r, "run_id": run_id} for r in rows]
    table = pa.Table.from_pylist(rows, schema=schema)
    with fileio.local_scratch() as tmp:
        local = fileio.join(tmp, "part.parquet")
        pq.write_table(table, local, compression="zstd")
        fileio.publish(local, uri)
    log.info("wrote %d rows to %s", len(rows), uri)
    return uri
