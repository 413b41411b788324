"""``tileseg run``'s options, validated once into a frozen SegmentConfig before anything starts.

Transforms never see PipelineOptions: ``build_config`` turns them into a ``SegmentConfig`` (or a
ConfigError that says what to fix, exit status 2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from common import fileio
from common.plan import default_batch_size, default_patches_per_block
from common.safepath import UnsafePathError, check_segment
from model.card import ModelCard, ModelCardError, load_card
from model.landing import LandingError, load_profile
from model.loading import PRECISIONS, check_model
from model.shipped import DEFAULT_MODEL
from transforms import radiometry
from transforms.landing import LandingSettings
from transforms.listing import list_inputs, normalise_pattern
from transforms.masks import MASK_FORMAT_VERSION, OutputLayout
from transforms.plan import PlanArgs
from transforms.results import MaskSettings
from transforms.tiles import MAX_TILE_PIXELS, parse_bands

log = logging.getLogger(__name__)

#: The folders a run writes under its output (see transforms/masks.py OutputLayout, manifest.py).
OUTPUT_FOLDERS = ("masks", "stats", "failures", "manifest", "_staging", "hazard", "quicklooks", "zones", "report",
                  "stac")


class ConfigError(ValueError):
    """A bad option: the message says what to fix. Raised before any pipeline starts."""


class SegmentOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        # Not required=True: that would break PipelineOptions([]) for any code in the same process;
        # build_config says what is missing instead.
        parser.add_argument("--input", default=None, help="glob, file or directory of rasters (local or gs://)")
        parser.add_argument("--output", default=None, help="output directory (local or gs://)")
        parser.add_argument("--model", default=DEFAULT_MODEL, help="model directory: card.json + .keras file")
        parser.add_argument("--precision", default="auto", choices=PRECISIONS)
        parser.add_argument("--batch_size", type=int, default=None,
                            help="patches per model call (default: ~2.4 MPix of patches, 4 of 768², 1 of 1280²; "
                                 "on a GPU use more, e.g. 16)")
        parser.add_argument("--stitch", default="overlap", choices=("overlap", "blend"),
                            help="overlap: keep each patch's centre (exact); blend: weight class scores")
        parser.add_argument("--bands", default=None, help="1-based source bands in model band order, e.g. 3,2,1")
        parser.add_argument("--patch_size", type=int, default=None, help="largest patch (default: the model card's)")
        parser.add_argument("--halo", type=int, default=None, help="context kept around each patch core (default: card)")
        parser.add_argument("--patches_per_block", type=int, default=None,
                            help="patches per block edge, one read per block (default: blocks of ~2560² core pixels)")
        parser.add_argument("--overwrite", nargs="?", const=True, default=False, type=_flag,
                            help="redo tiles whose masks are already up to date (also --overwrite=true|false)")
        parser.add_argument("--max_tile_pixels", type=int, default=MAX_TILE_PIXELS,
                            help=f"a tile with more pixels fails at once (default {MAX_TILE_PIXELS:,})")
        parser.add_argument("--run_id", default=None, help="names this run's stats/failures files (default: time + random)")
        parser.add_argument("--radiometry", default="card", choices=radiometry.MODES,
                            help="integer data wider than 8 bits without NBITS: card (default: infer the bit depth, "
                                 "map far darker images onto the training images), stretch (p1-p99 to 0-1), none")
        parser.add_argument("--landing", default=None,
                            help="also map landing zones with this profile: a shipped name (small-drone) or a JSON "
                                 "file (model/landing.py); writes zones/<run_id>.parquet (GeoParquet)")
        parser.add_argument("--gsd", type=float, default=None,
                            help="metres per pixel of rasters without a CRS (e.g. drone frames): their areas (m²) "
                                 "in the stats and their landing zones; never overrides a CRS")
        parser.add_argument("--model_copies", type=int, default=0,
                            help="0: each worker process loads the model (default); N: N copies per machine, "
                                 "shared by its processes (for models too big to load once per process)")


def _flag(text: str) -> bool:
    """``--flag=true`` / ``false`` (the form Flex Templates pass), besides a bare ``--flag``."""
    value = text.strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def unknown_options(argv: list[str] | None) -> list[str]:
    """Arguments that neither tileseg nor any Beam options class knows (Beam itself only warns
    and drops them, so ``--overwite`` would run without overwriting)."""
    # Beam's own parser class: some options classes add value-provider arguments through it.
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    seen: dict[str, type[PipelineOptions]] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(argv or [])
    return list(unknown)


@dataclass(frozen=True)
class SegmentConfig:
    input: str
    output: str
    model_dir: str
    card: ModelCard
    precision: str
    batch_size: int
    stitch: str
    bands: tuple[int, ...] | None
    patch_size: int
    halo: int
    patches_per_block: int
    overwrite: bool
    max_tile_pixels: int
    run_id: str
    root: str
    #: Local inputs, as listed at launch (to refuse a pattern that matches nothing and to show
    #: progress); empty for remote inputs, which the pipeline lists on a worker (transforms/listing.py).
    uris: tuple[str, ...]
    #: One process runs every step (the DirectRunner with one worker): tiles are taken smallest
    #: first, each tile's blocks straight through; otherwise blocks are spread over workers.
    in_process: bool = True
    model_copies: int = 0
    radiometry: str = "card"
    landing: LandingSettings | None = None  # --landing: zones are mapped from each tile's mask
    gsd_m: float | None = None  # --gsd: metres per pixel of rasters without a CRS (areas, zones)

    @property
    def plan_args(self) -> PlanArgs:
        return PlanArgs(self.patch_size, self.halo, self.card.size_multiple, self.patches_per_block)

    @property
    def settings(self) -> MaskSettings:
        """Everything that can change a byte of a mask: a tile is redone only when this (with the
        precision used, see MaskSettings) or the file changes. The whole card counts (classes,
        colours, normalisation, not just name@version); patches per block only where it changes
        labels (blending inside a block); the writer's version where the mask's layout or tags change."""
        return MaskSettings.of(
            model=self.card.model_id, card=self.card.to_json(), stitch=self.stitch, bands=self.bands,
            patch=self.patch_size, halo=self.halo,
            patches_per_block=self.patches_per_block if self.stitch == "blend" else None,
            writer=MASK_FORMAT_VERSION, radiometry=self.radiometry,
            # --gsd changes the areas stored with a mask of a raster without a CRS; named only when
            # given, so that runs without it keep the key they had.
            **({"gsd": self.gsd_m} if self.gsd_m is not None else {}),
        )

    def described(self) -> dict[str, Any]:
        """How the run was asked for, as its summary and report show it (JSON)."""
        return {"input": self.input, "output": self.output, "model": self.card.model_id, "model_dir": self.model_dir,
                "precision": self.precision, "patch_size": self.patch_size, "halo": self.halo, "stitch": self.stitch,
                "batch_size": self.batch_size, "patches_per_block": self.patches_per_block,
                "radiometry": self.radiometry, "bands": None if self.bands is None else list(self.bands),
                "gsd_m": self.gsd_m,
                "landing": None if self.landing is None else {"profile": self.landing.profile.name}}

    @property
    def layout(self) -> OutputLayout:
        return OutputLayout(self.output.rstrip("/"), self.run_id)


def build_config(opts: PipelineOptions, runner: str | None = None) -> SegmentConfig:
    """Validate options once, before any pipeline starts; raise ConfigError saying what to fix."""
    o = opts.view_as(SegmentOptions)
    missing = [f"--{name}" for name in ("input", "output") if not getattr(o, name)]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                          "(tileseg run --input GLOB --output DIR)")
    if o.run_id is not None:
        try:
            check_segment(o.run_id, "--run_id")
        except UnsafePathError as exc:
            raise ConfigError(str(exc)) from None
    try:
        card = load_card(o.model)
    except ModelCardError as exc:
        raise ConfigError(str(exc)) from None
    if o.max_tile_pixels < 1:
        raise ConfigError(f"--max_tile_pixels must be at least 1, not {o.max_tile_pixels}")
    if o.batch_size is not None and o.batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, not {o.batch_size}")
    if o.patches_per_block is not None and o.patches_per_block < 1:
        raise ConfigError(f"--patches_per_block must be at least 1, not {o.patches_per_block}")
    if o.model_copies < 0:
        raise ConfigError(f"--model_copies must be 0 (one model per process) or more, not {o.model_copies}")
    patch = o.patch_size or card.patch_size
    halo = card.halo if o.halo is None else o.halo
    if patch % card.size_multiple or patch < card.size_multiple:
        raise ConfigError(f"--patch_size {patch} must be a positive multiple of {card.size_multiple} for model {card.model_id}")
    if halo < 0 or 2 * halo >= patch:
        raise ConfigError(f"--halo {halo} must be >= 0 and less than half of the patch size {patch}")
    try:
        bands = parse_bands(o.bands)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if bands is not None and len(bands) != card.num_bands:
        raise ConfigError(f"--bands gives {len(bands)} bands; model {card.model_id} takes {card.num_bands} "
                          f"({', '.join(card.input_bands)})")
    pattern = normalise_pattern(o.input)
    output = o.output.rstrip("/") if fileio.is_remote(o.output) else os.path.abspath(o.output)
    try:
        if fileio.is_remote(pattern):
            # A bucket may hold 10^5 tiles: the job lists them on a worker; here only the root.
            uris: list[str] = []
            root = fileio.glob_root(pattern)
            if not fileio.exists(root):
                raise FileNotFoundError(root)
        else:
            uris, root = list_inputs(pattern, output)
    except Exception as exc:  # noqa: BLE001 - a listing error is a bad --input
        raise ConfigError(f"--input {o.input}: cannot list ({exc})") from None
    if not uris and not fileio.is_remote(pattern):
        raise ConfigError(f"--input {o.input}: no files match; check the path or glob (quote it so the shell does not expand it)")
    try:
        check_model(o.model, card)  # before anything is written
    except ModelCardError as exc:
        raise ConfigError(f"--model: {exc}") from None
    try:
        fileio.check_writable(output)
        if not fileio.is_remote(output):
            # A stats (or masks, ...) folder an earlier run left read-only, or a file of that name,
            # would only fail at the end of the job: every tile done, no table written.
            for sub in OUTPUT_FOLDERS:
                if os.path.lexists(os.path.join(output, sub)):
                    fileio.check_writable(os.path.join(output, sub))
    except OSError as exc:
        raise ConfigError(f"--output: {exc}") from None
    landing = _landing(o, card)
    direct = runner in (None, "DirectRunner", "direct")
    in_process = direct and opts.view_as(DirectOptions).direct_num_workers == 1
    run_id = o.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    return SegmentConfig(
        input=pattern, output=output, model_dir=o.model, card=card, precision=o.precision,
        batch_size=o.batch_size or default_batch_size(patch), stitch=o.stitch, bands=bands, patch_size=patch,
        halo=halo, patches_per_block=o.patches_per_block or default_patches_per_block(patch, halo),
        overwrite=o.overwrite, max_tile_pixels=o.max_tile_pixels, run_id=run_id,
        root=root, uris=tuple(uris), in_process=in_process, model_copies=o.model_copies, radiometry=o.radiometry,
        landing=landing, gsd_m=o.gsd,
    )


def _landing(o: SegmentOptions, card: ModelCard) -> LandingSettings | None:
    """--landing and --gsd, validated against the model (ConfigError, exit 2, saying what to fix)."""
    if o.gsd is not None and not (o.gsd > 0 and o.gsd < 1e4):
        raise ConfigError(f"--gsd must be a positive number of metres per pixel, not {o.gsd}")
    if o.landing is None:
        return None
    try:
        return LandingSettings.of(card, load_profile(o.landing), o.gsd)
    except LandingError as exc:
        raise ConfigError(str(exc)) from None
