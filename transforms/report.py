"""The run report: one self-contained HTML page per run, ``report/<run_id>/index.html``.

Made from the run's files alone (its summary JSON, stats, failures and zone tables, the masks),
so ``tileseg report`` rebuilds it for any earlier run without the model, and the pipeline's last
step writes it like any other output. It works offline: no scripts, fonts or styles from
elsewhere; charts are inline SVG; quicklooks are picture files beside the page (JPEG inputs, PNG masks), read from the masks'
overviews (and the inputs' overviews where they have them), so a run of 10^4 tiles costs
``MAX_QUICKLOOKS`` small reads, not 10^4 whole rasters. Tiles are listed ``TILES_PER_PAGE`` to a
page; past ``MAX_QUICKLOOKS`` tiles the table goes on without pictures, and the page says so.

Numbers on the page come straight from the tables (each tile row carries its per-class areas in
``data-`` attributes), so a test can check the page against the Parquet files.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import html
import io
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common import fileio
from common.quicklook import Quicklook, QuicklookError, input_quicklook, mask_quicklook, to_pixels
from model.card import parse_rgb
from transforms.masks import OutputLayout

log = logging.getLogger(__name__)

TILES_PER_PAGE = 100
MAX_QUICKLOOKS = 300  # tiles, in table order, that get pictures
MAX_ZONES_DRAWN = 200  # per tile, the best-scoring first
TOUCHDOWNS_DRAWN = 20  # per tile: the touchdown points of the best zones
REPORT_FORMAT = 1
PICTURE_THREADS = 4


class ReportError(ValueError):
    """The run's files cannot make a report (no summary for that run id, unreadable tables)."""


@dataclass
class ClassEntry:
    index: int
    name: str
    color: tuple[int, int, int]

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.color)


@dataclass
class TileEntry:
    """One tile of the run, from its stats rows (and zone summary)."""

    tile_id: str
    source_uri: str
    mask_uri: str
    reused: bool
    valid: int
    total: int
    counts: list[int]
    areas: list[float] | None
    crs: str | None
    pixel_size_m: float | None
    mean_confidence: float | None
    in_domain: bool | None
    domain_note: str
    radiometry: str
    processed_at: dt.datetime | None
    zones: dict[str, Any] | None = None
    zone_shapes: list[dict[str, Any]] = field(default_factory=list)
    georeferenced_zones: bool = True
    precision: str = ""


@dataclass
class RunData:
    summary: dict[str, Any]
    classes: list[ClassEntry]
    nodata: int | None
    tiles: list[TileEntry]
    failures: list[dict[str, Any]]

    @functools.cached_property
    def failed_tiles(self) -> list[str]:
        """Tiles that ended without a mask."""
        return sorted({str(f.get("tile_id")) for f in self.failures} - {t.tile_id for t in self.tiles})

    @functools.cached_property
    def without_zones(self) -> list[str]:
        """Tiles whose mask was written but whose landing zones failed (failure stage "landing")."""
        landing = {str(f.get("tile_id")) for f in self.failures if f.get("stage") == "landing"}
        return sorted(landing & {t.tile_id for t in self.tiles})


# ---------------------------------------------------------------------------------------------
# Reading the run's files


def latest_run_id(root: str) -> str:
    """The run id of the newest summary under ``root/stats`` (by its finished_at)."""
    folder = fileio.join(root, "stats")
    try:
        names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fileio.listdir(folder)]
        names = [n for n in names if n.endswith(".json")]
    except (FileNotFoundError, ValueError):
        names = []
    best: tuple[str, str] | None = None
    for name in names:
        try:
            with fileio.open_file(fileio.join(folder, name), "r") as f:
                finished = str(json.load(f).get("finished_at", ""))
        except (OSError, ValueError):
            continue
        if best is None or (finished, name) > best:
            best = (finished, name)
    if best is None:
        raise ReportError(f"{root} has no run summary (stats/<run_id>.json); run `tileseg run` with --output {root} first")
    return best[1][: -len(".json")]


def _table(uri: str | None) -> pa.Table | None:
    if not uri or not fileio.exists(uri):
        return None
    with fileio.open_file(uri, "rb") as f:
        return pq.read_table(pa.BufferReader(f.read()))


def load_run(layout: OutputLayout, summary: dict[str, Any] | None = None) -> RunData:
    """The run's summary, tables and zone summary, as the report shows them."""
    if summary is None:
        uri = layout.summary_uri()
        if not fileio.exists(uri):
            raise ReportError(f"no run {layout.run_id!r} under {layout.root} (no {uri}); "
                              f"`ls {fileio.join(layout.root, 'stats')}` lists the runs")
        with fileio.open_file(uri, "r") as f:
            summary = json.load(f)
    assert summary is not None
    summary = _rebased(summary, layout)
    stats = _table(summary.get("stats_uri"))
    model = summary.get("model") or {}
    classes = [ClassEntry(int(c["index"]), str(c["name"]), parse_rgb(c["color"])) for c in model.get("classes", [])]
    if not classes and stats is not None:  # a summary from before the report: names without colours
        names = sorted({(r["class_index"], r["class_name"]) for r in stats.select(["class_index", "class_name"]).to_pylist()})
        classes = [ClassEntry(i, n, _fallback_color(i)) for i, n in names]
    tiles = _tiles(stats, len(classes))
    for t in tiles:
        t.mask_uri = _moved(t.mask_uri, summary["written_to"], layout.root) or t.mask_uri
    failures = _table(summary.get("failures_uri"))
    _attach_zones(tiles, summary)
    return RunData(summary, classes, model.get("mask_nodata"), tiles,
                   [] if failures is None else failures.to_pylist())


#: The summary's file URIs, read again where the output folder is now.
_URI_KEYS = ("stats_uri", "failures_uri", "zones_uri", "zones_pixels_uri", "zones_summary_uri", "stac_uri")


def _moved(uri: str | None, old: str, new: str) -> str | None:
    """``uri`` under the output folder ``old`` → the same file under ``new``; other URIs as they are."""
    old, new = old.rstrip("/"), new.rstrip("/")
    if not uri or not old or old == new:
        return uri
    return new + uri[len(old):] if uri == old or uri.startswith(old + "/") else uri


def _rebased(summary: dict[str, Any], layout: OutputLayout) -> dict[str, Any]:
    """The summary with its files under ``layout.root``: an output folder moved, copied or synced
    down from a bucket is read where it is now (never from where it was written), and the page's
    links to it stay relative. ``written_to`` keeps the folder the run wrote."""
    old = str(summary.get("output") or layout.root)
    out = {**summary, "written_to": old, "output": layout.root}
    for key in _URI_KEYS:
        out[key] = _moved(summary.get(key), old, layout.root)
    return out


def _fallback_color(i: int) -> tuple[int, int, int]:
    # Okabe-Ito, then greys: readable by most colour-blind readers.
    table = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
             (204, 121, 167), (0, 0, 0)]
    grey = 128 + (i * 37) % 100
    return table[i] if i < len(table) else (grey, grey, grey)


def _tiles(stats: pa.Table | None, num_classes: int) -> list[TileEntry]:
    if stats is None:
        return []
    by_tile: dict[str, TileEntry] = {}
    for r in stats.to_pylist():
        t = by_tile.get(r["tile_id"])
        if t is None:
            t = by_tile[r["tile_id"]] = TileEntry(
                r["tile_id"], r["source_uri"], r["mask_uri"], bool(r["reused"]), int(r["valid_pixel_count"]),
                int(r["total_pixel_count"]), [0] * num_classes, [0.0] * num_classes, r["crs"], r["pixel_size_m"],
                r["mean_confidence"], r["in_domain"], r["domain_note"] or "", r["radiometry"] or "",
                r["processed_at"], precision=r["precision"] or "")
        k = int(r["class_index"])
        if k < num_classes:
            t.counts[k] = int(r["pixel_count"])
            if r["area_m2"] is None:
                t.areas = None
            elif t.areas is not None:
                t.areas[k] = float(r["area_m2"])
    return [by_tile[k] for k in sorted(by_tile)]


def _attach_zones(tiles: list[TileEntry], summary: dict[str, Any]) -> None:
    """Each tile's zone summary row, and its zones (best first) to draw."""
    if not summary.get("zones_summary_uri"):
        return
    by_id = {t.tile_id: t for t in tiles}
    zsum = _table(summary.get("zones_summary_uri"))
    for r in [] if zsum is None else zsum.to_pylist():
        if r["tile_id"] in by_id:
            by_id[r["tile_id"]].zones = r
            by_id[r["tile_id"]].georeferenced_zones = bool(r["georeferenced"])
    for key in ("zones_uri", "zones_pixels_uri"):
        table = _table(summary.get(key))
        if table is None:
            continue
        cols = ["tile_id", "zone_id", "geometry", "touchdown", "score", "clearance_m", "area_m2"]
        for r in table.select(cols).to_pylist():
            t = by_id.get(r["tile_id"])
            if t is not None and len(t.zone_shapes) < MAX_ZONES_DRAWN:
                t.zone_shapes.append(r)  # the table is sorted best first within a tile


# ---------------------------------------------------------------------------------------------
# Pictures


def _picture_name(tile_id: str, kind: str) -> str:
    # Tile ids are paths ("a/b"): pictures are named by a digest, never by the id itself.
    ext = "jpg" if kind == "input" else "png"
    return f"img/{hashlib.sha256(tile_id.encode()).hexdigest()[:16]}.{kind}.{ext}"


def _zone_overlay(tile: TileEntry, ql: Quicklook) -> str:
    """The tile's zones as SVG paths over its mask quicklook (quicklook pixels), touchdowns as dots."""
    if not tile.zone_shapes:
        return ""
    import shapely

    sx, sy = ql.width / ql.raster_width, ql.height / ql.raster_height
    to_pixels = _to_raster_pixels(ql) if tile.georeferenced_zones else None
    if tile.georeferenced_zones and to_pixels is None:
        return ""

    def scaled(geom: Any) -> Any:
        def f(xy: Any) -> Any:
            cols, rows = (xy[:, 0], xy[:, 1]) if to_pixels is None else to_pixels(xy[:, 0], xy[:, 1])
            return np.column_stack([np.asarray(cols) * sx, np.asarray(rows) * sy])
        return shapely.transform(geom, f)

    parts = []
    for rank, z in enumerate(tile.zone_shapes):
        poly = scaled(shapely.from_wkb(z["geometry"])).simplify(0.4)
        d = _svg_path(poly)
        title = html.escape(f"zone {z['zone_id']}: {_area_text(z['area_m2'])}, clearance {z['clearance_m']:.1f} m, "
                            f"score {z['score']:.2f}")
        if d:
            parts.append(f'<path d="{d}"><title>{title}</title></path>')
        if rank < TOUCHDOWNS_DRAWN:  # the best zones' points; more would hide the mask
            p = scaled(shapely.from_wkb(z["touchdown"]))
            parts.append(f'<circle cx="{p.x:.1f}" cy="{p.y:.1f}" r="2.5"><title>{title}</title></circle>')
    return (f'<svg class="zones" viewBox="0 0 {ql.width} {ql.height}" width="{ql.width}" height="{ql.height}" '
            f'aria-label="landing zones">{"".join(parts)}</svg>')


def _to_raster_pixels(ql: Quicklook) -> Any:
    """lon/lat (OGC:CRS84) → the mask's (column, row); None for a mask without a CRS."""
    if not ql.crs_wkt:
        return None
    import pyproj

    transformer = pyproj.Transformer.from_crs("OGC:CRS84", pyproj.CRS.from_wkt(ql.crs_wkt), always_xy=True)

    def f(lon: Any, lat: Any) -> tuple[Any, Any]:
        x, y = transformer.transform(np.asarray(lon), np.asarray(lat))
        return to_pixels(ql.transform, x, y)
    return f


def _svg_path(geom: Any) -> str:
    polys = getattr(geom, "geoms", [geom])
    out = []
    for p in polys:
        if p.is_empty or p.geom_type != "Polygon":
            continue
        for ring in [p.exterior, *p.interiors]:
            xy = list(ring.coords)
            if len(xy) >= 3:
                out.append("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in xy) + " Z")
    return " ".join(out)


# ---------------------------------------------------------------------------------------------
# Rendering (pure functions of RunData)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#1b1b1b;max-width:1400px}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85rem}td,th{border-bottom:1px solid #e3e3e3;padding:.3rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.kv th{width:14rem;background:none;font-weight:600}.legend span{display:inline-block;margin:0 1rem .3rem 0}
.sw{display:inline-block;width:.9rem;height:.9rem;border:1px solid #555;vertical-align:middle;margin-right:.3rem}
.ql{position:relative;display:inline-block;margin-right:.3rem;
background:repeating-conic-gradient(#eee 0 25%,#fff 0 50%) 0 0/12px 12px}
.ql img{display:block}td.qls{white-space:nowrap}td.wide{min-width:6.5rem}td.tilecell{min-width:10rem}
td.num{white-space:nowrap}#tiles{width:100%}
.path{overflow-wrap:anywhere}.ql svg.zones{position:absolute;left:0;top:0}
svg.zones path{fill:rgba(255,255,255,.25);stroke:#000;stroke-width:1.2;fill-rule:evenodd}
svg.zones circle{fill:#fff;stroke:#000;stroke-width:1.2}
.flag{background:#fde2c8;color:#7a2e00;padding:.05rem .35rem;border-radius:.2rem;font-weight:600}
.ok{color:#1a6b3c}.warn{background:#fff4e0;border-left:4px solid #d55e00;padding:.5rem .8rem;margin:.8rem 0}
.note{color:#555;font-size:.85rem}nav a{margin-right:.6rem}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _num(v: float | None, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:,.{digits}f}"


def _area_text(m2: float) -> str:
    if m2 >= 1e6:
        return f"{m2 / 1e6:,.2f} km²"
    return f"{m2 / 1e4:,.2f} ha" if m2 >= 1e5 else f"{m2:,.0f} m²"


def _when(iso: str | None) -> str:
    """An ISO time as '2026-12-07 16:33:12 UTC'."""
    try:
        t = dt.datetime.fromisoformat(str(iso)).astimezone(dt.UTC)
    except ValueError:
        return _e(iso or "–")
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _legend(classes: Sequence[ClassEntry]) -> str:
    items = "".join(f'<span><i class="sw" style="background:{c.hex}"></i>{_e(c.name)}</span>' for c in classes)
    return f'<div class="legend" aria-label="legend">{items}</div>'


def _stack_bar(counts: Sequence[float], classes: Sequence[ClassEntry], width: int = 180, height: int = 14) -> str:
    total = float(sum(counts))
    if total <= 0:
        return '<span class="note">no valid pixels</span>'
    x, rects = 0.0, []
    for c, v in zip(classes, counts):
        w = width * v / total
        if w > 0:
            rects.append(f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" fill="{c.hex}">'
                         f'<title>{_e(c.name)}: {100 * v / total:.1f} %</title></rect>')
            x += w
    return f'<svg width="{width}" height="{height}" role="img" aria-label="class shares">{"".join(rects)}</svg>'


def _run_chart(run: RunData) -> str:
    """Horizontal bars: each class's area over the run (m² where every tile has a CRS, else pixels)."""
    in_m2 = bool(run.tiles) and all(t.areas is not None for t in run.tiles)
    values = [sum((t.areas or [0.0] * len(run.classes))[c.index] if in_m2 else t.counts[c.index] for t in run.tiles)
              for c in run.classes]
    total = float(sum(values))
    top = max(values, default=0) or 1
    row_h, label_w, bar_w = 22, 190, 420
    rows = []
    for i, (c, v) in enumerate(zip(run.classes, values)):
        y = i * row_h
        share = v / total if total else 0.0  # of the quantity plotted: area, or pixels
        text = _area_text(v) if in_m2 else f"{v:,.0f} px"
        rows.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(c.name)}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * v / top:.1f}" height="{row_h - 6}" '
                    f'fill="{c.hex}" stroke="#555" stroke-width=".5"/>'
                    f'<text x="{label_w + bar_w * v / top + 6:.1f}" y="{y + 15}" data-class="{_e(c.name)}" '
                    f'data-value="{v!r}">{text} ({100 * share:.1f} %)</text>')
    h = row_h * len(run.classes)
    unit = "ground area" if in_m2 else "pixels (some tiles have no CRS)"
    return (f'<svg width="{label_w + bar_w + 190}" height="{h}" font-size="12" role="img" '
            f'aria-label="area per class over the run, {unit}" id="run-chart" data-unit="{"m2" if in_m2 else "px"}">'
            f'{"".join(rows)}</svg>')


def _summary_table(run: RunData) -> str:
    s = run.summary
    settings = s.get("settings") or {}
    wall = s.get("wall_s")
    mpix = s.get("pixels_segmented", 0) / 1e6
    rows: list[tuple[str, str]] = [
        ("input", _e(settings.get("input", "–"))),
        ("output", _e(s.get("output", "–")) + (f' <span class="note">(written to {_e(s["written_to"])})</span>'
                                               if s.get("written_to") not in (None, s.get("output")) else "")),
        ("tiles", f'{s.get("tiles_total", 0)} listed: <b>{s.get("tiles_written", 0)}</b> segmented, '
                  f'{s.get("tiles_skipped", 0)} already up to date (skipped), <b>{len(run.failed_tiles)}</b> failed'
                  + (f", {len(run.without_zones)} with a mask but no landing zones" if run.without_zones else "")),
        ("out of domain", f'{len(s.get("tiles_out_of_domain", []))} tile(s)'),
        ("megapixels segmented", f"{mpix:,.1f}"),
        ("wall time", f"{_num(wall, 1)} s ({_when(s.get('started_at'))} to {_when(s.get('finished_at'))})"),
        ("throughput", f"{mpix / wall:,.2f} MPix/s" if wall and mpix else
                       "– (nothing segmented: every tile was up to date or failed)"),
        ("model", f"{_e((s.get('model') or {}).get('id', settings.get('model', '–')))}, precision "
                  f"{_e(', '.join(sorted({t.precision for t in run.tiles if t.precision})) or settings.get('precision', '–'))}"),
        ("settings", _e(", ".join(f"{k} {v}" for k, v in settings.items()
                                  if k not in ("input", "output", "model", "landing") and v is not None))),
    ]
    landing = settings.get("landing")
    if landing:
        rows.append(("landing", f'profile {_e(landing.get("profile"))}: {s.get("zones_total", 0)} zone(s), '
                                f'{_area_text(float(s.get("landable_area_m2", 0.0)))} landable'))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv" id="run-summary">{body}</table>'


def _links(run: RunData, layout: OutputLayout) -> str:
    """Relative links from report/<run_id>/ to the run's files."""
    s = run.summary
    items = [("stats (Parquet)", s.get("stats_uri")), ("failures (Parquet)", s.get("failures_uri")),
             ("landing zones (GeoParquet)", s.get("zones_uri")), ("zones of tiles without a CRS", s.get("zones_pixels_uri")),
             ("zone summary per tile", s.get("zones_summary_uri")), ("run summary (JSON)", layout.summary_uri()),
             ("STAC catalog", s.get("stac_uri"))]
    out = [f'<li><a href="{_e(_relative(layout, uri))}">{_e(label)}</a></li>' for label, uri in items if uri]
    out.append('<li><a href="../../masks/">masks</a> (one COG per tile)</li>')
    return f'<ul id="links">{"".join(out)}</ul>'


def _relative(layout: OutputLayout, uri: str) -> str:
    """``uri`` relative to the report folder (report/<run_id>/) when it lies under the output root."""
    rel = fileio.relative_to(uri, layout.root)
    return uri if rel is None else "../../" + rel


_CELL_CLASS = {0: ' class="qls"', 1: ' class="tilecell"', 3: ' class="num"', 4: ' class="num"', 5: ' class="wide"',
               6: ' class="wide"'}


def _tile_rows(run: RunData, tiles: Sequence[tuple[int, TileEntry]], layout: OutputLayout,
               pictures: dict[str, tuple[str | None, str | None, str]]) -> str:
    landing = bool((run.summary.get("settings") or {}).get("landing"))
    head = ("<tr><th>quicklook (input, mask)</th><th>tile</th><th>class shares</th><th>area</th>"
            "<th>confidence</th><th>domain</th>" + ("<th>landing</th>" if landing else "") + "</tr>")
    rows = []
    for _, t in tiles:
        inp, msk, note = pictures.get(t.tile_id, (None, None, ""))
        ql = (inp or "") + (msk or "")
        if not ql:
            ql = f'<span class="note">{_e(note)}</span>'
        shares = ", ".join(f"{_e(c.name)} {100 * t.counts[c.index] / t.valid:.1f} %" for c in run.classes
                           if t.valid and t.counts[c.index] / t.valid >= 0.005)
        area_attrs = (" ".join(f'data-area-{c.index}="{t.areas[c.index]!r}"' for c in run.classes)
                      if t.areas is not None else "")
        count_attrs = " ".join(f'data-count-{c.index}="{t.counts[c.index]}"' for c in run.classes)
        area = _area_text(sum(t.areas)) if t.areas is not None else '<span class="note">no CRS</span>'
        if t.in_domain is False:
            domain = f'<span class="flag">out of domain</span><br><span class="note">{_e(t.domain_note)}</span>'
        else:
            domain = '<span class="ok">in domain</span>' if t.in_domain else '<span class="note">not checked</span>'
        cells = [
            ql,
            f'<b>{_e(t.tile_id)}</b><br><a href="{_e(_relative(layout, t.mask_uri))}">mask</a> · '
            f'<span class="note path">{_e(t.source_uri)}</span><br><span class="note">'
            f'{t.total:,} px, {100 * t.valid / t.total if t.total else 0:.1f} % valid'
            f'{", up to date (earlier run)" if t.reused else ""}</span>',
            _stack_bar(t.counts, run.classes) + f"<br><span class=\"note\">{shares}</span>",
            area,
            _num(t.mean_confidence, 3),
            domain,
        ]
        if landing:
            z = t.zones
            cells.append('<span class="note">no zones: see failures</span>' if z is None else
                         f'{z["zone_count"]} zone(s), {_area_text(float(z["landable_area_m2"] or 0.0))}'
                         + (f', best clearance {z["largest_clearance_m"]:.1f} m' if z["largest_clearance_m"] is not None else ""))
        rows.append(f'<tr class="tile" data-tile="{_e(t.tile_id)}" data-valid="{t.valid}" {count_attrs} {area_attrs}>'
                    + "".join(f"<td{_CELL_CLASS.get(i, '')}>{c}</td>" for i, c in enumerate(cells)) + "</tr>")
    return f'<table id="tiles">{head}{"".join(rows)}</table>'


def _failures_table(run: RunData) -> str:
    if not run.failures:
        return '<p id="failures">No failures.</p>'
    rows = "".join(f'<tr class="failure"><td>{_e(f.get("tile_id"))}</td><td>{_e(f.get("stage"))}</td>'
                   f'<td>{_e(f.get("error_type"))}</td><td>{_e(f.get("message"))}</td></tr>' for f in run.failures)
    return (f'<table id="failures"><tr><th>tile</th><th>stage</th><th>error</th><th>reason and fix</th></tr>'
            f"{rows}</table>")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><meta name="generator" content="tileseg report '
            f'{REPORT_FORMAT}"><title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n')


def _pages_nav(pages: int, current: int) -> str:
    if pages <= 1:
        return ""
    links = []
    for p in range(pages):
        name = _page_name(p)
        links.append(f"<b>{p + 1}</b>" if p == current else f'<a href="{name}">{p + 1}</a>')
    return f'<nav aria-label="tile pages">Tile pages: {" ".join(links)}</nav>'


def _page_name(p: int) -> str:
    return "index.html" if p == 0 else f"tiles-{p + 1}.html"


def render(run: RunData, layout: OutputLayout, pictures: dict[str, tuple[str | None, str | None, str]]) -> dict[str, str]:
    """The report's HTML files by name (index.html first, then one per further page of tiles)."""
    numbered = list(enumerate(run.tiles))
    pages = max(1, math.ceil(len(numbered) / TILES_PER_PAGE))
    flagged = [t for t in run.tiles if t.in_domain is False]
    warn = ""
    if flagged:
        shown = ", ".join(_e(t.tile_id) for t in flagged[:10]) + (", …" if len(flagged) > 10 else "")
        warn = (f'<div class="warn" id="domain-warning"><b>{len(flagged)} tile(s) look unlike what the model was '
                f"trained on</b> ({shown}): their masks are written, but check them before relying on them; "
                "their landing zones are marked and never scored as safe as in-domain ones.</div>")
    if run.failed_tiles:
        warn += (f'<div class="warn"><b>{len(run.failed_tiles)} tile(s) failed</b> (no mask): see '
                 '<a href="index.html#failures">failures</a> for the reasons and what to do.</div>')
    if run.without_zones:
        warn += (f'<div class="warn"><b>{len(run.without_zones)} tile(s) have a mask but no landing zones</b>: '
                 'see <a href="index.html#failures">failures</a> (stage "landing") for why and what to do.</div>')
    pictures_note = ""
    if len(run.tiles) > MAX_QUICKLOOKS:
        pictures_note = (f'<p class="note" id="quicklook-note">Quicklooks are shown for the first {MAX_QUICKLOOKS} '
                         f"of {len(run.tiles)} tiles; the table lists every tile.</p>")
    files: dict[str, str] = {}
    for p in range(pages):
        chunk = numbered[p * TILES_PER_PAGE:(p + 1) * TILES_PER_PAGE]
        tiles_part = (f"<h2>Tiles {chunk[0][0] + 1}–{chunk[-1][0] + 1} of {len(numbered)}</h2>"
                      if chunk else "<h2>Tiles</h2><p>No tile has a mask in this run.</p>")
        tiles_part += _pages_nav(pages, p) + pictures_note + (_tile_rows(run, chunk, layout, pictures) if chunk else "")
        if p == 0:
            body = (f"<h1>tileseg run {_e(layout.run_id)}</h1>{warn}{_summary_table(run)}"
                    f"<h2>Classes</h2>{_legend(run.classes)}"
                    f"<h2>Area per class over the run</h2>{_run_chart(run) if run.tiles else '<p>No tiles.</p>'}"
                    f"{tiles_part}<h2>Failures</h2>{_failures_table(run)}"
                    f"<h2>Files</h2>{_links(run, layout)}")
        else:
            body = (f'<h1>tileseg run {_e(layout.run_id)}: tiles, page {p + 1}</h1><p><a href="index.html">'
                    f"run summary</a></p>{_legend(run.classes)}{tiles_part}")
        files[_page_name(p)] = _page(f"tileseg run {layout.run_id}", body)
    return files


# ---------------------------------------------------------------------------------------------
# Writing


def _input_picture(layout: OutputLayout, tile: TileEntry, bands: Sequence[int] | None) -> Quicklook:
    """The input picture the run that made the tile's mask made from the blocks it read
    (``quicklooks/``), else one read from the input itself (masks from before there were any)."""
    try:
        with fileio.open_file(layout.quicklook_uri(tile.tile_id), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return input_quicklook(tile.source_uri, bands)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as picture:
        width, height = picture.size
    return Quicklook(data, width, height, 0, 0, (), None)


def _pictures(run: RunData, layout: OutputLayout) -> tuple[dict[str, tuple[str | None, str | None, str]],
                                                           dict[str, bytes]]:
    """Quicklook HTML per tile (first MAX_QUICKLOOKS tiles) and the picture files they use, made
    on a few threads (GDAL's reads and the encoders release the GIL; on gs:// each read waits)."""
    colors = {c.index: c.color for c in run.classes}
    bands = (run.summary.get("settings") or {}).get("bands")  # --bands: the input bands the model saw

    def one(t: TileEntry) -> tuple[str, tuple[str | None, str | None, str], dict[str, bytes]]:
        notes, files = [], {}
        inp = msk = None
        try:
            ql = _input_picture(layout, t, bands)
            name = _picture_name(t.tile_id, "input")
            files[name] = ql.data
            inp = (f'<span class="ql"><img src="{name}" width="{ql.width}" height="{ql.height}" '
                   f'alt="input {_e(t.tile_id)}"></span>')
        except QuicklookError as exc:
            notes.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - an input moved or deleted since the run
            notes.append(f"input not readable now ({type(exc).__name__})")
        try:
            ql = mask_quicklook(t.mask_uri, colors, run.nodata)
            name = _picture_name(t.tile_id, "mask")
            files[name] = ql.data
            msk = (f'<span class="ql"><img src="{name}" width="{ql.width}" height="{ql.height}" '
                   f'alt="mask {_e(t.tile_id)}">{_zone_overlay(t, ql)}</span>')
        except Exception as exc:  # noqa: BLE001 - a mask removed since the run
            notes.append(f"mask not readable now ({type(exc).__name__})")
        return t.tile_id, (inp, msk, "; ".join(notes)), files

    html_by_tile: dict[str, tuple[str | None, str | None, str]] = {}
    images: dict[str, bytes] = {}
    with ThreadPoolExecutor(max_workers=PICTURE_THREADS) as pool:
        for tile_id, parts, files in pool.map(one, run.tiles[:MAX_QUICKLOOKS]):
            html_by_tile[tile_id] = parts
            images.update(files)
    return html_by_tile, images


def write_report(layout: OutputLayout, summary: dict[str, Any] | None = None) -> str:
    """Build and write ``report/<run_id>/``; returns the index page's URI. Rewriting the same run's
    report gives the same files (nothing on the page depends on when it was made)."""
    run = load_run(layout, summary)
    pictures, images = _pictures(run, layout)
    pages = render(run, layout, pictures)
    folder = layout.report_dir()
    fileio.makedirs(fileio.join(folder, "img"))
    for name, data in sorted(images.items()):
        with fileio.open_file(fileio.join(folder, name), "wb") as f:
            f.write(data)
    # The index last: a page that exists has every picture it shows.
    for name in sorted(pages, key=lambda n: n == "index.html"):
        with fileio.open_file(fileio.join(folder, name), "w") as f:
            f.write(pages[name])
    index = fileio.join(folder, "index.html")
    log.info("report of run %s: %s (%d tiles, %d failures)", layout.run_id, index, len(run.tiles), len(run.failures))
    return index
