"""Run tables (per-class statistics, failures): their Parquet schemas and the writer.

Both tables are small (a row per tile and class, a row per failure), so each run writes one
Parquet file per table, named by run id, through a local temporary file and one publish.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from common import fileio

log = logging.getLogger(__name__)

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
    ("processed_at", pa.timestamp("us", tz="UTC")),  # when the mask was made
    ("reused", pa.bool_()),  # true: the mask is an earlier run's, skipped as up to date; rows from its tags
    ("radiometry", pa.string()),  # how raw values were mapped to the model's input (transforms/radiometry.py)
    ("mean_confidence", pa.float64()),  # the tile's mean probability of the chosen class, over valid pixels
    # The domain check (common/domain.py): distance of the inputs from the training images', how
    # much the tile looks like an oblique view, the verdict (null: the card has no thresholds), why.
    ("input_distance", pa.float64()),
    ("oblique_view", pa.float64()),
    ("in_domain", pa.bool_()),
    ("domain_note", pa.string()),
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
