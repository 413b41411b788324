"""Landing profiles (issue 14, first part): what a vehicle needs to touch down, and which classes
are safe, caution or hazard for it.

A profile gives ``touchdown_radius_m`` R, ``hazard_buffer_m`` b (a number, or per class name
with a ``default``), ``min_area_m2``, ``max_hazard_probability`` P in (0, 1] and optionally
``roles`` {class name: safe | caution | hazard} overriding the model card's ``landing.roles``.
It is a JSON file or a shipped name (``SHIPPED``). Its hash (SHA-256 of its canonical JSON)
goes with every zone, so a zone says exactly which rules made it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from common.zones import ZoneRules
from model.card import ModelCard

ROLES = ("safe", "caution", "hazard")
_FIELDS = ("touchdown_radius_m", "hazard_buffer_m", "min_area_m2", "max_hazard_probability", "roles")

#: Shipped profiles, by name. ``small-drone``: a sub-2 kg multirotor (about 0.5 m across) that
#: needs a 1.5 m radius of clear ground, 2 m from hazards (5 m from buildings and water, where
#: downdraft and GNSS multipath near walls, and drowning, are the risks), 20 m² to aim at, and
#: calls ground hazard once the model gives hazard classes 25 % there. P = 0.25 is where the
#: default model's zones on Dubai val keep the false-safe rate <= 1 % with the most recall
#: (0.90 %, recall 0.846; P 0.3 gives 1.12 %; README "Landing zones").
SHIPPED: dict[str, dict[str, Any]] = {
    "small-drone": {"touchdown_radius_m": 1.5, "hazard_buffer_m": {"default": 2.0, "Building": 5.0, "Water": 5.0},
                    "min_area_m2": 20.0, "max_hazard_probability": 0.25},
}


class LandingError(ValueError):
    """A landing profile or a model's landing roles are missing or malformed."""


@dataclass(frozen=True)
class Profile:
    name: str
    touchdown_radius_m: float
    hazard_buffer_m: dict[str, float]  # per class name, and "default"
    min_area_m2: float
    max_hazard_probability: float
    roles: dict[str, str]
    sha256: str

    def buffer_m(self, class_name: str) -> float:
        return float(self.hazard_buffer_m.get(class_name, self.hazard_buffer_m["default"]))

    def clearance_m(self, class_name: str) -> float:
        """R + b_k: how far an admissible centre must be from a hazard pixel of this class."""
        return self.touchdown_radius_m + self.buffer_m(class_name)


def _number(data: dict[str, Any], key: str, where: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LandingError(f"{where}: {key} must be a number, not {value!r}")
    return float(value)


def parse_profile(data: Any, name: str, where: str) -> Profile:
    """A profile from its JSON object; LandingError naming ``where`` and every problem otherwise."""
    if not isinstance(data, dict):
        raise LandingError(f"{where}: a landing profile is a JSON object with {', '.join(_FIELDS)}")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise LandingError(f"{where}: unknown fields {', '.join(map(str, unknown))}; a profile has {', '.join(_FIELDS)}")
    missing = [k for k in _FIELDS[:4] if k not in data]
    if missing:
        raise LandingError(f"{where}: missing {', '.join(missing)}")
    radius = _number(data, "touchdown_radius_m", where)
    area = _number(data, "min_area_m2", where)
    p = _number(data, "max_hazard_probability", where)
    raw = data["hazard_buffer_m"]
    if isinstance(raw, dict):
        if "default" not in raw:
            raise LandingError(f"{where}: hazard_buffer_m per class needs a \"default\" for the classes it does not name")
        buffers = {str(k): _number(raw, k, f"{where} hazard_buffer_m") for k in raw}
    else:
        buffers = {"default": _number(data, "hazard_buffer_m", where)}
    problems = []
    if radius <= 0:
        problems.append("touchdown_radius_m must be > 0")
    if area < 0:
        problems.append("min_area_m2 must be >= 0")
    if not 0 < p <= 1:
        problems.append("max_hazard_probability must be in (0, 1] (1: the class mask alone decides)")
    if any(b < 0 for b in buffers.values()):
        problems.append("hazard_buffer_m must be >= 0")
    roles = data.get("roles") or {}
    if not isinstance(roles, dict) or any(r not in ROLES for r in roles.values()):
        problems.append(f"roles must map class names to one of {', '.join(ROLES)}")
    if problems:
        raise LandingError(f"{where}: " + "; ".join(problems))
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return Profile(name, radius, buffers, area, p, {str(k): str(v) for k, v in roles.items()},
                   hashlib.sha256(canonical.encode("utf-8")).hexdigest())


def load_profile(spec: str) -> Profile:
    """``spec``: a shipped profile's name or a JSON file's path."""
    if spec in SHIPPED:
        return parse_profile(SHIPPED[spec], spec, f"shipped profile {spec}")
    if "://" in spec:  # a profile in a bucket (Dataflow launches): fsspec only for remote profiles
        from common import fileio

        try:
            with fileio.open_file(spec, "r") as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise LandingError(f"{spec}: cannot read the landing profile ({exc}); it must be a JSON object") from None
        return parse_profile(data, os.path.splitext(spec.rstrip("/").rsplit("/", 1)[-1])[0], spec)
    if not os.path.isfile(spec):
        raise LandingError(f"--landing {spec}: neither a shipped profile ({', '.join(sorted(SHIPPED))}) nor a file; "
                           "give one of those names or a JSON profile (model/landing.py describes its fields)")
    try:
        with open(spec, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise LandingError(f"{spec}: cannot read the landing profile ({exc}); it must be a JSON object") from None
    return parse_profile(data, os.path.splitext(os.path.basename(spec))[0], spec)


def class_roles(card: ModelCard, profile: Profile) -> tuple[str, ...]:
    """The role of every class of ``card`` (by index): the profile's override, else the card's
    ``landing.roles``. A class with neither refuses landing mapping, with a message saying how."""
    names = [c.name for c in card.classes]
    card_roles = dict((card.landing or {}).get("roles") or {})
    unknown = sorted(set(profile.roles) - set(names))
    if unknown:
        raise LandingError(f"landing profile {profile.name} gives roles to {', '.join(unknown)}, which model "
                           f"{card.model_id} does not have (its classes: {', '.join(names)})")
    roles = [profile.roles.get(n, card_roles.get(n)) for n in names]
    lacking = [n for n, r in zip(names, roles) if r is None]
    if lacking:
        raise LandingError(f"model {card.model_id} says nothing about landing on {', '.join(lacking)}: its card has no "
                           "landing roles for them; add them to the card's \"landing\": {\"roles\": ...} or to the "
                           "profile's \"roles\" (safe, caution or hazard)")
    bad = [f"{n}: {r}" for n, r in zip(names, roles) if r not in ROLES]
    if bad:
        raise LandingError(f"model {card.model_id}: landing roles must be one of {', '.join(ROLES)} ({'; '.join(bad)})")
    return tuple(str(r) for r in roles)


def card_buffers(card: ModelCard) -> dict[str, float]:
    """The card's own per-class hazard buffers (``landing.hazard_buffer_m``): the least a class
    needs with this model, e.g. wider for people and vehicles, which move."""
    raw = (card.landing or {}).get("hazard_buffer_m") or {}
    return {str(k): float(v) for k, v in raw.items()}


def hazard_threshold(card: ModelCard, profile: Profile) -> float:
    """P used with this model: the profile's, never above the card's ``landing.max_hazard_probability``
    (the threshold chosen for this model's hazard recall): the stricter of the two."""
    card_p = (card.landing or {}).get("max_hazard_probability")
    return min(profile.max_hazard_probability, float(card_p)) if card_p is not None else profile.max_hazard_probability


def class_buffer_m(card: ModelCard, profile: Profile, class_name: str) -> float:
    """A class's buffer: the profile's value when the profile names the class, else the larger of
    the profile's default and the card's buffer for it."""
    if class_name in profile.hazard_buffer_m:
        return profile.buffer_m(class_name)
    return max(profile.hazard_buffer_m["default"], card_buffers(card).get(class_name, 0.0))


def zone_rules(card: ModelCard, profile: Profile, extra_buffer_m: float = 0.0) -> ZoneRules:
    """The zone mapper's rules (common/zones.py) for ``card``'s classes under ``profile``: an
    admissible centre is R + b_k from every hazard of class k (``class_buffer_m``), with the
    stricter of the profile's and the card's P. ``extra_buffer_m`` (evaluation's
    what-if only: how recall and false-safe area move if every hazard-class buffer were larger)
    is added to the class buffers, not to nodata or the edge."""
    roles = class_roles(card, profile)
    radius = profile.touchdown_radius_m
    return ZoneRules(roles=roles,
                     clearance_m=tuple(radius + class_buffer_m(card, profile, c.name) + extra_buffer_m
                                       for c in card.classes),
                     default_clearance_m=radius + profile.hazard_buffer_m["default"],
                     radius_m=radius, min_area_m2=profile.min_area_m2,
                     max_hazard_probability=hazard_threshold(card, profile), nodata=card.mask_nodata)
