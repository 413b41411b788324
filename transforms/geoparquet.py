"""GeoParquet 1.1 tables of landing zones: WKB geometry columns, a ``bbox`` covering column and
the ``geo`` file metadata (version, primary column, encoding, geometry types, CRS).

Georeferenced zones are in OGC:CRS84 (longitude, latitude), so tiles of different CRSs share one
file; zones of rasters without a CRS are in pixel coordinates with ``crs: null``, which the spec
allows for "undefined" coordinate systems, and go to a file of their own when a run mixes both.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from common import fileio

log = logging.getLogger(__name__)

GEOPARQUET_VERSION = "1.1.0"
BBOX = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()), ("ymax", pa.float64())])


def crs84_projjson() -> dict[str, Any]:
    import pyproj

    return dict(pyproj.CRS("OGC:CRS84").to_json_dict())


def geo_metadata(table: pa.Table, columns: dict[str, list[str]], primary: str, crs: dict[str, Any] | None,
                 covering: str | None) -> dict[str, Any]:
    """The ``geo`` metadata for WKB ``columns`` {name: geometry types}; ``crs`` PROJJSON or None."""
    from shapely import bounds, from_wkb

    meta: dict[str, Any] = {"version": GEOPARQUET_VERSION, "primary_column": primary, "columns": {}}
    for name, types in columns.items():
        col: dict[str, Any] = {"encoding": "WKB", "geometry_types": types, "crs": crs}
        values = [v for v in table.column(name).to_pylist() if v is not None]
        if values:
            b = bounds(from_wkb(values))
            col["bbox"] = [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())]
        if name == primary and covering:
            col["covering"] = {"bbox": {k: [covering, k] for k in ("xmin", "ymin", "xmax", "ymax")}}
        meta["columns"][name] = col
    return meta


def bbox_of(wkb: bytes) -> dict[str, float]:
    from shapely import bounds, from_wkb

    b = bounds(from_wkb(wkb))
    return {"xmin": float(b[0]), "ymin": float(b[1]), "xmax": float(b[2]), "ymax": float(b[3])}


def write_geoparquet(rows: list[dict[str, Any]], schema: pa.Schema, uri: str, columns: dict[str, list[str]],
                     primary: str, georeferenced: bool, covering: str | None = "bbox",
                     extra: dict[str, str] | None = None) -> str:
    """Write ``rows`` as one GeoParquet file at ``uri`` (atomically, even with no rows: an empty
    zones table says "no zone", which is an answer)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    geo = geo_metadata(table, columns, primary, crs84_projjson() if georeferenced else None, covering)
    metadata = {b"geo": json.dumps(geo).encode(), **{k.encode(): v.encode() for k, v in (extra or {}).items()}}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with fileio.local_scratch() as tmp:
        local = fileio.join(tmp, "part.parquet")
        pq.write_table(table, local, compression="zstd")
        fileio.publish(local, uri)
    log.info("wrote %d rows to %s", len(rows), uri)
    return uri
