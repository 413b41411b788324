"""Landing profiles and class roles (model/landing.py): shipped and file profiles parse with a
stable hash, bad ones fail naming every problem, and a model without landing roles is refused
with the fix."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from model.card import load_card
from model.landing import SHIPPED, LandingError, class_roles, load_profile, parse_profile
from model.shipped import DEFAULT_MODEL


def test_the_shipped_profile_and_the_aerial_cards_roles() -> None:
    profile = load_profile("small-drone")
    assert profile.clearance_m("Building") == 1.5 + 5.0 and profile.clearance_m("Road") == 1.5 + 2.0
    assert profile.sha256 == load_profile("small-drone").sha256 and len(profile.sha256) == 64
    card = load_card(DEFAULT_MODEL)
    assert class_roles(card, profile) == ("hazard", "safe", "caution", "caution", "hazard")


def test_a_profile_file_overrides_roles_and_its_hash_follows_its_content(tmp_path: Path) -> None:
    data = {**SHIPPED["small-drone"], "hazard_buffer_m": 1.0, "roles": {"Road": "hazard"}}
    path = tmp_path / "van.json"
    path.write_text(json.dumps(data))
    profile = load_profile(str(path))
    assert profile.name == "van" and profile.buffer_m("Water") == 1.0
    assert class_roles(load_card(DEFAULT_MODEL), profile)[2] == "hazard"
    path.write_text(json.dumps({**data, "min_area_m2": 21.0}))
    assert load_profile(str(path)).sha256 != profile.sha256


@pytest.mark.parametrize("change,message", [
    ({"touchdown_radius_m": 0}, "touchdown_radius_m must be > 0"),
    ({"max_hazard_probability": 1.5}, "max_hazard_probability must be in (0, 1]"),
    ({"hazard_buffer_m": {"Building": 3}}, 'needs a "default"'),
    ({"roles": {"Road": "maybe"}}, "roles must map class names"),
    ({"radius": 2}, "unknown fields radius"),
    ({"min_area_m2": "big"}, "min_area_m2 must be a number"),
])
def test_bad_profiles_name_the_problem(change: dict[str, object], message: str) -> None:
    with pytest.raises(LandingError, match="my.json") as err:
        parse_profile({**SHIPPED["small-drone"], **change}, "my", "my.json")
    assert message in str(err.value)


def test_a_model_without_roles_and_a_profile_naming_unknown_classes_are_refused(tmp_path: Path) -> None:
    card = dataclasses.replace(load_card(DEFAULT_MODEL), landing={})
    with pytest.raises(LandingError, match="says nothing about landing on Building.*add them"):
        class_roles(card, load_profile("small-drone"))
    wrong = parse_profile({**SHIPPED["small-drone"], "roles": {"Runway": "safe"}}, "p", "p.json")
    with pytest.raises(LandingError, match="Runway, which model"):
        class_roles(load_card(DEFAULT_MODEL), wrong)
    with pytest.raises(LandingError, match="neither a shipped profile"):
        load_profile(str(tmp_path / "nope.json"))


def test_a_cards_buffers_and_threshold_are_floors_of_safety_under_any_profile() -> None:
    from model.card import ModelCardError
    from model.landing import zone_rules

    base = load_card(DEFAULT_MODEL)
    card = dataclasses.replace(base, landing={**base.landing, "hazard_buffer_m": {"Water": 8.0, "Building": 1.0},
                                              "max_hazard_probability": 0.1})
    rules = zone_rules(card, load_profile("small-drone"))  # names Building and Water itself: its values win
    assert rules.clearance_m[0] == 1.5 + 5.0 and rules.clearance_m[4] == 1.5 + 5.0
    assert rules.max_hazard_probability == 0.1  # the stricter of 0.25 (profile) and 0.1 (card)
    plain = parse_profile({**SHIPPED["small-drone"], "hazard_buffer_m": 2.0, "max_hazard_probability": 0.05}, "p", "p")
    rules = zone_rules(card, plain)
    # Classes the profile does not name: the larger of its default and the card's buffer.
    assert rules.clearance_m[4] == 1.5 + 8.0 and rules.clearance_m[0] == 1.5 + 2.0
    assert rules.max_hazard_probability == 0.05
    assert zone_rules(base, plain).max_hazard_probability == 0.05  # no card threshold: the profile's
    for bad in ({"hazard_buffer_m": {"Runway": 3.0}}, {"hazard_buffer_m": {"Water": -1}},
                {"max_hazard_probability": 0.0}, {"max_hazard_probability": "low"}):
        with pytest.raises(ModelCardError, match="landing"):
            dataclasses.replace(base, landing={**base.landing, **bad}).validate()
