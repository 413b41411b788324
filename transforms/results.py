"""TileResult: what one tile's mask holds, as statistics and provenance, in one record.

A result is made once, when the mask is assembled, and travels on from there: it is stored in
the mask's tags (so a later run that skips the tile still reports it), in the output's manifest
of done tiles (so that later run need not even open the mask), and it becomes the tile's rows of
the stats table at the end of the run. One record per tile, not one row per class, so that the
run's last step can drop the duplicates a retried bundle may send.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from common.domain import DomainCheck
from model.card import ModelCard
from transforms.tiles import TileSpec


@dataclass(frozen=True)
class TileResult:
    """A published mask: the tile it came from, its per-class valid pixel counts and ground areas
    (m², None without a CRS), and how and when it was made.

    ``settings`` is the skip key (the precision used included), ``fingerprint`` the input file's;
    ``run_id`` the run that made the mask. ``reused``: this run skipped the tile as up to date;
    ``mask_bytes``: the published file's size (a manifest entry is trusted only while it matches).
    Neither of the last two is stored in the mask's own tags.
    """

    tile_id: str
    source_uri: str
    fingerprint: str
    settings: str
    mask_uri: str
    precision: str
    pixels: int
    crs: str | None
    pixel_size_m: float | None
    counts: tuple[int, ...]
    areas: tuple[float, ...] | None
    run_id: str
    processed_at: dt.datetime
    reused: bool = False
    mask_bytes: int | None = None
    radiometry: str = ""
    #: The domain check (common/domain.py): mean over valid pixels of the model's probability of
    #: the class it chose, the input statistics' distance from the training images', the top
    #: third's luminance minus the bottom third's, the verdict (None: unknown) and why not.
    mean_confidence: float | None = None
    input_distance: float | None = None
    oblique_view: float | None = None
    in_domain: bool | None = None
    domain_note: str = ""
    #: The classes whose summed probability the tile's hazard COG holds (layout.hazard_uri), or
    #: None when no hazard COG was made (a run without --landing).
    hazard_classes: tuple[int, ...] | None = None

    @classmethod
    def of_tile(cls, tile: TileSpec, settings: str, mask_uri: str, precision: str, counts: tuple[int, ...],
                areas: tuple[float, ...] | None, run_id: str, processed_at: dt.datetime,
                domain: DomainCheck | None = None, hazard_classes: tuple[int, ...] | None = None) -> TileResult:
        d = domain or DomainCheck(None, None, None, None)
        return cls(tile.tile_id, tile.uri, tile.fingerprint, settings, mask_uri, precision, tile.pixels, tile.crs,
                   tile.pixel_areas.pixel_size_m(), counts, areas, run_id, processed_at, radiometry=tile.radiometry,
                   mean_confidence=d.mean_confidence, input_distance=_rounded(d.input_distance),
                   oblique_view=_rounded(d.oblique_view), in_domain=d.in_domain,
                   domain_note="; ".join(d.reasons), hazard_classes=hazard_classes)

    def to_json(self) -> str:
        """The stored form (mask tag, manifest), without ``reused`` and ``mask_bytes``."""
        data = dataclasses.asdict(self)
        del data["reused"], data["mask_bytes"]
        data["processed_at"] = self.processed_at.isoformat()
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TileResult:
        data = json.loads(text)
        areas = data["areas"]
        return cls(
            tile_id=str(data["tile_id"]), source_uri=str(data["source_uri"]), fingerprint=str(data["fingerprint"]),
            settings=str(data["settings"]), mask_uri=str(data["mask_uri"]), precision=str(data["precision"]),
            pixels=int(data["pixels"]), crs=data["crs"],
            pixel_size_m=None if data["pixel_size_m"] is None else float(data["pixel_size_m"]),
            counts=tuple(int(c) for c in data["counts"]),
            areas=None if areas is None else tuple(float(a) for a in areas),
            run_id=str(data["run_id"]), processed_at=dt.datetime.fromisoformat(data["processed_at"]),
            radiometry=str(data.get("radiometry", "")),
            mean_confidence=_optional_float(data.get("mean_confidence")),
            input_distance=_optional_float(data.get("input_distance")),
            oblique_view=_optional_float(data.get("oblique_view")),
            in_domain=None if data.get("in_domain") is None else bool(data["in_domain"]),
            domain_note=str(data.get("domain_note", "")),
            hazard_classes=None if data.get("hazard_classes") is None else tuple(int(k) for k in data["hazard_classes"]),
        )

    def stats_rows(self, card: ModelCard) -> list[dict[str, Any]]:
        """One row per class of the run's stats table (records.STATS_SCHEMA)."""
        valid = int(sum(self.counts))
        return [
            {
                "tile_id": self.tile_id,
                "source_uri": self.source_uri,
                "mask_uri": self.mask_uri,
                "model_id": card.model_id,
                "precision": self.precision,
                "class_index": c.index,
                "class_name": c.name,
                "pixel_count": self.counts[c.index],
                "valid_pixel_count": valid,
                "total_pixel_count": self.pixels,
                "fraction": (self.counts[c.index] / valid) if valid else None,
                "area_m2": self.areas[c.index] if self.areas is not None else None,
                "crs": self.crs,
                "pixel_size_m": self.pixel_size_m,
                "processed_at": self.processed_at,
                "reused": self.reused,
                "radiometry": self.radiometry,
                "mean_confidence": self.mean_confidence,
                "input_distance": self.input_distance,
                "oblique_view": self.oblique_view,
                "in_domain": self.in_domain,
                "domain_note": self.domain_note,
            }
            for c in card.classes
        ]


def _rounded(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def _optional_float(v: Any) -> float | None:
    return None if v is None else float(v)


#: Tags of a published mask (GeoTIFF metadata): the input's fingerprint, the skip key, the result.
TAG_FINGERPRINT = "TILESEG_FINGERPRINT"
TAG_SETTINGS = "TILESEG_SETTINGS"
TAG_RESULT = "TILESEG_RESULT"  # TileResult.to_json()


@dataclass(frozen=True)
class MaskSettings:
    """Everything that can change a byte of a mask, but the precision (canonical JSON): the skip
    key is ``key(precision)``. The precision is left out here because ``auto`` is resolved where
    the model runs (a Dataflow worker's GPU, not the launcher's CPU), and the key must name the
    precision actually used, so that local and cloud runs recognise each other's masks."""

    fields: str

    @classmethod
    def of(cls, **fields: Any) -> MaskSettings:
        return cls(json.dumps(fields, sort_keys=True))

    def key(self, precision: str) -> str:
        if precision == "auto":
            raise ValueError("the skip key needs the precision actually used, not 'auto'")
        text = json.dumps({"settings": json.loads(self.fields), "precision": precision}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
