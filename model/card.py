"""The model card: everything the pipeline knows about a model, stored as JSON beside the weights.

A model directory holds ``card.json`` and the ``.keras`` file it names. The pipeline takes the
classes, colours, band order, normalisation, patch size and halo from here and from nowhere else.
Unknown fields are rejected so that a typo in a card is an error, not a silently ignored setting.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from common.safepath import UnsafePathError, check_segment

CARD_FILE = "card.json"

#: Colour interpretations a card may name, as rasterio's ``ColorInterp`` names them.
BAND_NAMES = ("red", "green", "blue", "gray", "alpha", "undefined")


class ModelCardError(ValueError):
    """A model directory or card is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class ClassInfo:
    index: int
    name: str
    #: The dataset's label colour (RGB label images are decoded with it).
    color: tuple[int, int, int]
    #: The colour masks, reports and catalogs show, when the dataset's own is hard to read
    #: (e.g. Dubai's orange water and yellow vegetation); None: ``color``.
    display_color: tuple[int, int, int] | None = None

    @property
    def shown_color(self) -> tuple[int, int, int]:
        return self.display_color or self.color


@dataclass(frozen=True)
class Normalisation:
    """How raw pixels become model input: ``(raw / divisor[dtype] - mean) / std`` per band.

    ``divisor`` maps a numpy dtype name (``uint8``, ``uint16``, ``float32`` ...) to the value that
    scales that dtype to [0, 1]; ``default_divisor`` covers dtypes not listed (1.0 for float data
    that is already in [0, 1]).
    """

    divisor: dict[str, float] = field(
        default_factory=lambda: {"uint8": 255.0, "uint16": 65535.0, "int16": 32767.0}
    )
    default_divisor: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    def divisor_for(self, dtype: str) -> float:
        return float(self.divisor.get(str(dtype), self.default_divisor))


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    model_file: str
    classes: tuple[ClassInfo, ...]
    input_bands: tuple[str, ...]
    normalisation: Normalisation
    patch_size: int
    halo: int
    size_multiple: int
    output: str = "logits"  # "logits" or "probabilities"
    mask_nodata: int = 255
    description: str = ""
    license: str = ""
    precision_agreement: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The training images' input statistics, per band, in [0, 1] units (raw / divisor): ``p1``,
    #: ``p50``, ``p99``, ``mean``, ``std`` (lists of one value per input band) and ``source``.
    #: Used to map tiles of other bit depths onto what the model has seen (transforms/radiometry.py).
    input_stats: dict[str, Any] = field(default_factory=dict)
    #: True when the model was trained with a share of grey (luminance copied to every band)
    #: crops, so panchromatic tiles, whose one band the pipeline replicates, are in its domain.
    grey_ok: bool = False
    #: Thresholds of the per-tile domain check (common/domain.py): ``min_confidence``,
    #: ``max_input_distance``, ``max_oblique_view``, and how they were calibrated.
    domain: dict[str, Any] = field(default_factory=dict)
    #: Landing-zone mapping (model/landing.py): ``roles`` {class name: safe | caution | hazard}, the
    #: default role of every class, and ``why``: the reasons for that choice; optionally
    #: ``hazard_buffer_m`` {class name: metres} (the least buffer a class needs with this model) and
    #: ``max_hazard_probability`` (the P chosen for this model's hazard recall: a ceiling on the profile's).
    landing: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_bands(self) -> int:
        return len(self.input_bands)

    def validate(self) -> None:
        if not self.classes:
            raise ModelCardError(f"card {self.model_id} lists no classes")
        if [c.index for c in self.classes] != list(range(len(self.classes))):
            raise ModelCardError(f"card {self.model_id}: class indices must be 0..n-1 in order")
        if len(self.classes) >= self.mask_nodata:
            raise ModelCardError(f"card {self.model_id}: mask_nodata must exceed every class index")
        bad = [b for b in self.input_bands if b not in BAND_NAMES]
        if bad:
            raise ModelCardError(f"card {self.model_id}: unknown input bands {bad}; use {BAND_NAMES}")
        n = self.num_bands
        if len(self.normalisation.mean) != n or len(self.normalisation.std) != n:
            raise ModelCardError(f"card {self.model_id}: normalisation mean/std need {n} values")
        m = self.size_multiple
        if m < 1 or self.patch_size % m:
            raise ModelCardError(f"card {self.model_id}: patch_size must be a multiple of {m}")
        if not 0 <= self.halo or 2 * self.halo >= self.patch_size:
            raise ModelCardError(f"card {self.model_id}: halo must be >= 0 and < patch_size / 2")
        if self.output not in ("logits", "probabilities"):
            raise ModelCardError(f"card {self.model_id}: output must be logits or probabilities")
        self._validate_landing()
        for key in ("p1", "p50", "p99", "mean", "std"):
            if self.input_stats and len(self.input_stats.get(key) or ()) != n:
                raise ModelCardError(f"card {self.model_id}: input_stats.{key} needs {n} values (one per input band)")

    def _validate_landing(self) -> None:
        names = {c.name for c in self.classes}
        buffers = self.landing.get("hazard_buffer_m") or {}
        if not isinstance(buffers, dict) or any(
                k not in names or isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e4
                for k, v in buffers.items()):
            raise ModelCardError(f"card {self.model_id}: landing.hazard_buffer_m maps this model's class names to "
                                 f"metres >= 0 (classes: {', '.join(sorted(names))}), got {buffers!r}")
        p = self.landing.get("max_hazard_probability")
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1):
            raise ModelCardError(f"card {self.model_id}: landing.max_hazard_probability must be in (0, 1], got {p!r}")

    def palette(self) -> dict[int, tuple[int, int, int, int]]:
        """Colour table for masks: class colours, and transparent black for the nodata value."""
        table = {c.index: (*c.shown_color, 255) for c in self.classes}
        table[self.mask_nodata] = (0, 0, 0, 0)
        return table

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # A card without display colours keeps the JSON (and so the masks' skip key) it had.
        for c in data["classes"]:
            if c["display_color"] is None:
                del c["display_color"]
        return data


_ALLOWED = {f for f in ModelCard.__dataclass_fields__}


def card_from_json(data: dict[str, Any], where: str = "card") -> ModelCard:
    unknown = sorted(set(data) - _ALLOWED)
    if unknown:
        raise ModelCardError(f"{where}: unknown fields {', '.join(map(str, unknown))}; a card has only "
                             f"{', '.join(ModelCard.__dataclass_fields__)} - fix the spelling or remove them")
    try:
        norm = dict(data.get("normalisation") or {})
        norm_unknown = sorted(set(norm) - set(Normalisation.__dataclass_fields__))
        if norm_unknown:
            raise ModelCardError(f"{where}: unknown normalisation fields {', '.join(map(str, norm_unknown))}; "
                                 f"normalisation has only {', '.join(Normalisation.__dataclass_fields__)}")
        for key in ("mean", "std"):
            if key in norm:
                norm[key] = tuple(float(v) for v in norm[key])
        card = ModelCard(
            name=str(data["name"]),
            version=str(data["version"]),
            model_file=str(data["model_file"]),
            classes=tuple(
                ClassInfo(int(c["index"]), str(c["name"]), parse_rgb(c["color"]),
                          None if c.get("display_color") is None else parse_rgb(c["display_color"]))
                for c in data["classes"]
            ),
            input_bands=tuple(str(b) for b in data["input_bands"]),
            normalisation=Normalisation(**norm),
            patch_size=int(data["patch_size"]),
            halo=int(data["halo"]),
            size_multiple=int(data["size_multiple"]),
            **{k: data[k] for k in _ALLOWED - _REQUIRED - {"normalisation"} if k in data},
        )
    except KeyError as exc:
        raise ModelCardError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ModelCardError):
            raise
        raise ModelCardError(f"{where}: malformed card ({exc})") from None
    try:
        check_segment(card.model_file, "model_file")
    except UnsafePathError as exc:
        raise ModelCardError(f"{where}: {exc}; name a file inside the model folder") from None
    card.validate()
    return card


def parse_rgb(value: Any) -> tuple[int, int, int]:
    """A colour as given in a card or run summary ([r, g, b], 0-255 each); ValueError otherwise."""
    r, g, b = (int(v) for v in value)
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour {list(value)} is not three values 0-255")
    return r, g, b


_REQUIRED = {
    "name", "version", "model_file", "classes", "input_bands", "normalisation",
    "patch_size", "halo", "size_multiple",
}


def load_card(model_dir: str) -> ModelCard:
    """Read and validate ``model_dir/card.json``; the model file it names must exist.

    ``model_dir`` may be a ``gs://`` (or other fsspec) URI: a model can live beside the data.
    """
    if "://" in model_dir:
        return _load_remote_card(model_dir)
    path = os.path.join(model_dir, CARD_FILE)
    if not os.path.isdir(model_dir):
        raise ModelCardError(f"model directory {model_dir} does not exist; pass --model DIR")
    if not os.path.isfile(path):
        raise ModelCardError(
            f"model directory {model_dir} has no {CARD_FILE}; a model dir needs the .keras file "
            "and its model card (see model/card.py)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{path}: cannot read model card ({exc})") from None
    card = card_from_json(data, where=path)
    if not os.path.isfile(os.path.join(model_dir, card.model_file)):
        raise ModelCardError(f"{path} names {card.model_file}, which is not in {model_dir}")
    return card


def _load_remote_card(model_dir: str) -> ModelCard:
    # fsspec only where a model lives in an object store: the accelerator check's image has none.
    from common import fileio

    path = fileio.join(model_dir, CARD_FILE)
    try:
        with fileio.open_file(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise ModelCardError(f"model directory {model_dir} has no {CARD_FILE}; a model dir needs the .keras file "
                             "and its model card (see model/card.py)") from None
    except (OSError, ValueError) as exc:
        raise ModelCardError(f"{path}: cannot read model card ({exc})") from None
    card = card_from_json(data, where=path)
    if not fileio.exists(fileio.join(model_dir, card.model_file)):
        raise ModelCardError(f"{path} names {card.model_file}, which is not in {model_dir}")
    return card


def save_card(card: ModelCard, model_dir: str) -> str:
    card.validate()
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, CARD_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(card.to_json(), f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path
