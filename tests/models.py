"""Model directories for tests, built by code (no downloaded weights).

``write_binning_model`` is model/free.py's 1x1-convolution model: labels known in closed form
(``binning_labels``); with one band and a divisor of K - 1 it returns its input, the identity
model for stitching tests.
"""

from __future__ import annotations

from model.card import ModelCard
from model.free import free_labels as binning_labels
from model.free import write_free_model as write_binning_model

__all__ = ["LANDING_ROLES", "binning_labels", "write_binning_model", "write_identity_model", "write_landing_model"]

#: Landing roles of the identity model's classes: 0 safe ground, 1 caution (a road), 2 and 3
#: hazards (buildings, water), the rest safe.
LANDING_ROLES = {"class0": "safe", "class1": "caution", "class2": "hazard", "class3": "hazard", "class4": "safe",
                 "class5": "safe", "class6": "safe"}


def write_identity_model(model_dir: str, num_classes: int = 7, patch_size: int = 64, halo: int = 8,
                         size_multiple: int = 16) -> ModelCard:
    """One grey band of class indexes in, the same labels out."""
    return write_binning_model(model_dir, num_classes=num_classes, bands=("gray",), divisor=float(num_classes - 1),
                               patch_size=patch_size, halo=halo, size_multiple=size_multiple, name="identity")


def write_landing_model(model_dir: str) -> ModelCard:
    """The identity model (patch 128, halo 16) with LANDING_ROLES in its card."""
    import dataclasses

    from model.card import save_card

    card = dataclasses.replace(write_identity_model(model_dir, patch_size=128, halo=16),
                               landing={"roles": LANDING_ROLES, "why": "test roles"})
    save_card(card, model_dir)
    return card
