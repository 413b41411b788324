"""SkipDone: leave out input files whose published mask is up to date, and report them anyway.

A mask is up to date when it was made from this very file (same fingerprint: size and
modification time or object generation) with the same settings (the skip key, with the
precision actually used). The check opens no input file and, for tiles the manifest knows, no
mask either: one listing of ``masks/`` and the manifest (transforms/manifest.py) decide, and only
a mask the manifest does not know (or whose size changed) is opened for its tags. A skipped tile
still contributes its stored TileResult, marked ``reused``, so every run's stats table covers
all its tiles, even after an earlier run was killed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam

from common import fileio
from model.card import ModelCard
from model.loading import resolve_precision
from transforms.failures import StageOutput
from transforms.manifest import DoneEntry, read_manifest
from transforms.masks import OutputLayout
from transforms.results import TAG_FINGERPRINT, TAG_RESULT, TAG_SETTINGS, MaskSettings, TileResult
from transforms.tiles import InputFile

log = logging.getLogger(__name__)

REUSED = "reused"  # SkipDone's output of TileResults for the tiles it skipped


@dataclass(frozen=True)
class DoneIndex:
    """What the output already holds: the manifest, and every published mask with its size."""

    manifest: dict[str, DoneEntry]
    mask_bytes: dict[str, int]
    hazards: frozenset[str] = frozenset()  # published hazard COGs (listed only when the run needs them)

    @classmethod
    def load(cls, layout: OutputLayout, with_hazards: bool = False) -> DoneIndex:
        masks = {uri: int(entry.get("size") or 0) for uri, entry in fileio.match_detail(layout.masks_dir())}
        manifest = read_manifest(layout.root) if masks else {}
        hazards = frozenset(uri for uri, _ in fileio.match_detail(layout.hazard_dir())) if with_hazards and masks \
            else frozenset()
        return cls(manifest, masks, hazards)


def stored_result(mask_uri: str, fingerprint: str, key: str, num_classes: int) -> TileResult | None:
    """The TileResult in a published mask's tags when it was made from this file (fingerprint)
    with these settings (key); None when it was not, or its tags are unreadable (then the tile is
    simply redone)."""
    try:
        with fileio.open_raster(mask_uri) as src:
            tags = src.tags()
        if tags.get(TAG_FINGERPRINT) != fingerprint or tags.get(TAG_SETTINGS) != key:
            return None
        result = TileResult.from_json(tags[TAG_RESULT])
    except Exception:  # noqa: BLE001 - see the docstring
        return None
    return result if len(result.counts) == num_classes else None


class SkipDoneFn(beam.DoFn):
    """InputFile → itself when its mask must be made; else its stored TileResult on ``reused``."""

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: MaskSettings, precision: str,
                 hazard_classes: tuple[int, ...] | None = None) -> None:
        self._card = card
        self._layout = layout
        self._settings = settings
        self._requested = precision
        self._hazard = hazard_classes  # --landing: a tile is done only with its hazard COG for these classes

    def setup(self) -> None:
        # The precision the model will run at in this process: the skip key names it.
        self._key = self._settings.key(resolve_precision(self._requested, self._card))

    def process(self, item: InputFile, index: DoneIndex) -> Iterator[object]:
        try:
            mask_uri = self._layout.mask_uri(item.tile_id)
        except ValueError:
            yield item  # a tile id that cannot name a mask: describing the tile reports it
            return
        size = index.mask_bytes.get(mask_uri)
        if size is None:
            yield item
            return
        entry = index.manifest.get(item.tile_id)
        if entry is not None and (entry.fingerprint, entry.settings, entry.mask_bytes) == (item.fingerprint, self._key, size):
            result: TileResult | None = TileResult.from_json(entry.result)
        else:
            result = stored_result(mask_uri, item.fingerprint, self._key, self._card.num_classes)
        if result is not None and self._hazard is not None and (
                result.hazard_classes != self._hazard or self._layout.hazard_uri(item.tile_id) not in index.hazards):
            result = None  # up to date, but without the hazard probabilities this run's landing zones need
        if result is None:
            yield item
            return
        log.info("skipping %s: mask is up to date (%s)", item.tile_id, mask_uri)
        yield beam.pvalue.TaggedOutput(REUSED, dataclasses.replace(result, reused=True, mask_bytes=size,
                                                                   mask_uri=mask_uri))


class SkipDone(beam.PTransform):
    """InputFiles → those whose mask must be made (main) and the TileResults of the others (``reused``)."""

    def __init__(self, card: ModelCard, layout: OutputLayout, settings: MaskSettings, precision: str,
                 hazard_classes: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self._fn = SkipDoneFn(card, layout, settings, precision, hazard_classes)
        self._layout = layout
        self._hazards = hazard_classes is not None

    def expand(self, files: beam.PCollection) -> StageOutput:
        index = (files.pipeline | "Start" >> beam.Create([None])
                 | "ReadDoneIndex" >> beam.Map(lambda _, layout, hz: DoneIndex.load(layout, hz), layout=self._layout,
                                               hz=self._hazards))
        out = (files | "CheckMasks" >> beam.ParDo(self._fn, beam.pvalue.AsSingleton(index))
               .with_outputs(REUSED, main="main"))
        return StageOutput(out.main, out[REUSED])
