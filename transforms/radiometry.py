"""Radiometry: how a tile's raw values become the [0, 1] values the model was trained on.

Most drone and satellite sensors write 11-, 12- or 14-bit data into uint16 without declaring it
(no NBITS tag). Divided by 65535, as the card says for uint16, such an image is almost black and
the model calls it all one class. So for integer data wider than 8 bits whose file does not
declare its bit depth, the tile's values are measured from a cheap sample (the smallest overview
or a few windows, see tiles.sample_values: never a whole read) and mapped (``--radiometry``):

- ``card`` (default): the effective bit depth ``k``, the fewest bits that hold the sample's
  99.99th percentile (at least 8), gives the divisor ``2^k - 1``, as if the file had declared
  NBITS=k: 12-bit data is read as 12-bit data. If the image is still far darker than the
  training images (its 99th percentile below a quarter of the card's ``input_stats`` p99), its
  1st and 99th percentiles are mapped linearly onto the training images' (pooled over bands, so
  colours keep their ratios).
- ``stretch``: the sample's 1st-99th percentiles are mapped onto [0, 1].
- ``none``: the card's divisor for the dtype (or 2^NBITS - 1), as before.

8-bit and float data, and files that declare NBITS, are always read as the card says. One
mapping per tile, from a sample fixed by the file's size, so two runs over one file agree; the
mapping is recorded in the mask's tags and the stats (``radiometry``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.card import ModelCard

MODES = ("card", "stretch", "none")
#: An image whose 99th percentile is below this share of the training images' is "far darker".
DARK = 0.25


@dataclass(frozen=True)
class Radiometry:
    """``(raw - offset) / divisor`` maps the tile to [0, 1]; ``how`` says why, for people.
    ``fitted``: the mapping was measured from the tile's values (inferred bit depth, matched or
    stretched), not taken from the card or the file's NBITS, so those values fit it by design."""

    divisor: float
    offset: float
    how: str
    fitted: bool = False


def choose(dtype: str, nbits: int | None, values: np.ndarray | None, card: ModelCard, mode: str = "card") -> Radiometry:
    """The mapping of one tile (see the module docstring); ``values`` is its sample, pooled over bands."""
    if mode not in MODES:
        raise ValueError(f"--radiometry must be one of {', '.join(MODES)}, not {mode!r}")
    kind = np.dtype(dtype)
    declared = card.normalisation.divisor_for(dtype)
    if nbits and np.issubdtype(kind, np.integer) and nbits < kind.itemsize * 8:
        return Radiometry(float(2**nbits - 1), 0.0, f"declared {nbits}-bit (NBITS)")
    plain = Radiometry(declared, 0.0, f"card: {dtype} / {declared:g}")
    if mode == "none" or not np.issubdtype(kind, np.integer) or kind.itemsize == 1:
        return plain
    if values is None or not values.size or float(values.min()) < 0:
        return plain
    p1, p99, top = (float(v) for v in np.percentile(values, [1, 99, 99.99]))
    if float(values.max()) > declared:
        return plain  # beyond the declared range: not imagery the card knows (tiles.range_warning says so)
    if mode == "stretch":
        if p99 <= p1:
            return plain
        return Radiometry(p99 - p1, p1, f"stretch: raw {p1:g}..{p99:g} (p1..p99) to 0..1", fitted=True)
    bits = min(max(8, int(top).bit_length()), kind.itemsize * 8)
    found = plain
    if bits < kind.itemsize * 8:
        found = Radiometry(float(2**bits - 1), 0.0, f"inferred {bits}-bit: {dtype} / {2**bits - 1}", fitted=True)
    stats = card.input_stats
    if stats and p99 > p1:
        c1, c99 = float(np.mean(stats["p1"])), float(np.mean(stats["p99"]))
        if p99 / found.divisor < DARK * c99 and c99 > c1:
            divisor = (p99 - p1) / (c99 - c1)
            return Radiometry(divisor, p1 - c1 * divisor,
                              f"matched to the training images: raw p1..p99 {p1:g}..{p99:g} to {c1:.3f}..{c99:.3f}",
                              fitted=True)
    return found
