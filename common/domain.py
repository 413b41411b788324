"""Is a tile inside what the model knows? The per-tile domain check (issue 13.3).

Three signals, each cheap, each catching what the others miss:

- ``mean_confidence``: the model's mean probability of the class it chose, over valid pixels.
  Textures it has never seen (electron micrographs, sensor noise) leave it unsure everywhere.
- ``input_distance``: how far the tile's input statistics (per band, in model input units, after
  the radiometry mapping) lie from the training images' (the card's ``input_stats``): the largest,
  over bands, of ``|mean - m| / s`` and ``|ln(std / s)|``, where m and s are the card's mean and
  std. A constant image (std near 0) or a saturated one is far; most photographs are not, which
  is why this is not the only signal.
- ``oblique_view``: how much the tile looks like an oblique or street view. Nadir imagery has no
  "up"; a street frame has a sky at the top (brighter than the ground) and the far scene there
  (finer detail than the near ground at the bottom, which is seen large and smooth). The signal is
  (top third's mean luminance - bottom third's, if > 0) x (ln of the top third's mean step between
  horizontal neighbours / the bottom third's, if > 0). Colour and texture statistics cannot tell a
  street frame from an aerial tile (they share roads, roofs and trees); its geometry can. Either
  part alone flags nadir tiles (a beach above the sea is bright on top; a town above a field is
  detailed on top); the product needs both.

A tile is ``in_domain`` when every signal is within the thresholds in the card's ``domain``
section, calibrated on the validation images (training/domain_calibration.py). A card without
that section leaves ``in_domain`` unknown (None), never "yes".

The input statistics are accumulated per block from every ``STRIDE``-th row of the tile (a 1/8
sample: statistics of millions of pixels do not need every pixel; whole rows, for the detail
measure) as plain sums, so the blocks of a tile can be added in any order, on any worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Every STRIDE-th row of the tile (all its columns) enters the input statistics.
STRIDE = 8
#: Luminance weights (ITU-R 601) of an RGB input; other band counts use the plain mean.
LUMA = np.array([0.299, 0.587, 0.114], np.float64)
_MIN_STD = 1e-4  # a constant band's std, floored so its log distance is large but finite
_MIN_TEXTURE = 1e-4


@dataclass(frozen=True)
class InputSums:
    """Additive sums of one or more blocks' sampled valid input pixels, in model input units:
    count, per-band sum and sum of squares, and, for the tile's top and bottom thirds, the
    luminance sum and count and the sum and count of absolute luminance steps between
    horizontal neighbours (fine detail)."""

    n: int
    band_sum: tuple[float, ...]
    band_sumsq: tuple[float, ...]
    top: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)     # luma sum, n, step sum, n
    bottom: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def __add__(self, other: InputSums) -> InputSums:
        def add(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
            return tuple(x + y for x, y in zip(a, b))

        return InputSums(self.n + other.n, add(self.band_sum, other.band_sum), add(self.band_sumsq, other.band_sumsq),
                         add(self.top, other.top), add(self.bottom, other.bottom))  # type: ignore[arg-type]

    def to_array(self) -> np.ndarray:
        """Flat float64 form for a staged block (``from_array`` reads it back)."""
        return np.array([len(self.band_sum), self.n, *self.band_sum, *self.band_sumsq, *self.top, *self.bottom],
                        np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> InputSums:
        c = int(a[0])
        v = [float(x) for x in a]
        return cls(int(a[1]), tuple(v[2:2 + c]), tuple(v[2 + c:2 + 2 * c]),
                   tuple(v[2 + 2 * c:6 + 2 * c]), tuple(v[6 + 2 * c:10 + 2 * c]))  # type: ignore[arg-type]

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(s / self.n for s in self.band_sum) if self.n else ()

    @property
    def std(self) -> tuple[float, ...]:
        if not self.n:
            return ()
        return tuple(math.sqrt(max(q / self.n - (s / self.n) ** 2, 0.0)) for s, q in zip(self.band_sum, self.band_sumsq))

    @property
    def top_minus_bottom(self) -> float | None:
        """The top third's mean luminance minus the bottom third's."""
        if not self.top[1] or not self.bottom[1]:
            return None
        return self.top[0] / self.top[1] - self.bottom[0] / self.bottom[1]

    @property
    def detail_ratio(self) -> float | None:
        """ln(fine detail in the top third / in the bottom third)."""
        if not self.top[3] or not self.bottom[3]:
            return None
        return math.log(max(self.top[2] / self.top[3], _MIN_TEXTURE) / max(self.bottom[2] / self.bottom[3], _MIN_TEXTURE))

    @property
    def oblique_view(self) -> float | None:
        """How much the tile looks like an oblique or street view: a top that is brighter (sky)
        *and* more detailed (far scene) than the bottom (the near ground, seen large and smooth):
        max(top_minus_bottom, 0) x max(detail_ratio, 0). Nadir tiles have no up: a bright top
        over a textured bottom, or a detailed top over a bright bottom, scores 0."""
        tilt, detail = self.top_minus_bottom, self.detail_ratio
        if tilt is None or detail is None:
            return None
        return max(tilt, 0.0) * max(detail, 0.0)


def block_input_sums(raw: np.ndarray, valid: np.ndarray, first_row: int, tile_height: int,
                     divisor: float, offset: float = 0.0) -> InputSums:
    """Sums over a block core's sampled rows (tile rows that are multiples of STRIDE, so every
    block samples the same rows however the tile is cut). ``raw`` (h, w, C) and ``valid`` (h, w)
    cover the core, whose first row is tile row ``first_row``; model input units are
    ``(raw - offset) / divisor`` (the radiometry mapping, transforms/radiometry.py).

    This runs on every block of every tile, so it avoids float copies of the block: integer
    bands are summed exactly from their histograms, and the luminance (a float) is computed only
    for rows in the tile's top and bottom thirds, the only ones its sums use."""
    start = (-first_row) % STRIDE
    sampled, ok = raw[start::STRIDE], valid[start::STRIDE]
    channels = raw.shape[-1]
    everywhere = bool(ok.all())
    if not everywhere and not ok.any():
        return InputSums(0, (0.0,) * channels, (0.0,) * channels)
    n, band_sum, band_sumsq = _band_sums(sampled, None if everywhere else ok, divisor, offset)
    rows = first_row + start + STRIDE * np.arange(sampled.shape[0])
    top, bottom = rows < tile_height / 3, rows >= 2 * tile_height / 3
    return InputSums(n, band_sum, band_sumsq,
                     _luma_sums(sampled[top], None if everywhere else ok[top], divisor, offset),
                     _luma_sums(sampled[bottom], None if everywhere else ok[bottom], divisor, offset))


def _band_sums(x: np.ndarray, ok: np.ndarray | None, divisor: float,
               offset: float) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Count, per-band sum and sum of squares of the valid pixels of (r, w, C) ``x`` (``ok``
    None: all valid), in model input units."""
    channels = x.shape[-1]
    if x.dtype.kind in "ui" and x.dtype.itemsize <= 2:
        sums, sumsqs = [], []
        n = 0
        low = int(np.iinfo(x.dtype).min)  # bincount wants non-negative values: counted from here
        for c in range(channels):
            band = x[..., c]
            values = (band.ravel() if ok is None else band[ok]).astype(np.intp)
            if low:
                values -= low
            hist = np.bincount(values)
            level = np.arange(len(hist), dtype=np.float64) + low
            n = int(hist.sum())
            # Exact in float64 as long as the totals stay below 2**53 (a block's sample of 16-bit
            # values: at most ~1e6 pixels x 4.3e9).
            s, q = float(hist @ level), float(hist @ (level * level))
            sums.append((s - n * offset) / divisor)
            sumsqs.append((q - 2 * offset * s + n * offset * offset) / (divisor * divisor))
        return n, tuple(sums), tuple(sumsqs)
    v = (x.reshape(-1, channels) if ok is None else x[ok]).astype(np.float64)
    v -= offset
    v /= divisor
    return len(v), tuple(float(s) for s in v.sum(axis=0)), tuple(float(s) for s in np.einsum("ij,ij->j", v, v))


def _luma_sums(x: np.ndarray, ok: np.ndarray | None, divisor: float,
               offset: float) -> tuple[float, float, float, float]:
    """Luminance sum and count, and the sum and count of absolute luminance steps between
    horizontal neighbours, over the valid pixels of (r, w, C) ``x`` (model input units)."""
    if x.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    pixels = x.astype(np.float32)
    weights = LUMA.astype(np.float32) if x.shape[-1] == 3 else np.full(x.shape[-1], 1.0 / x.shape[-1], np.float32)
    luma = pixels @ weights  # (r, w); the weights sum to 1, so the mapping can follow
    luma -= offset
    luma /= divisor
    steps = np.abs(np.diff(luma, axis=1))
    if ok is None:
        return (float(luma.sum(dtype=np.float64)), float(luma.size), float(steps.sum(dtype=np.float64)),
                float(steps.size))
    step_ok = ok[:, 1:] & ok[:, :-1]
    return (float(luma[ok].sum(dtype=np.float64)), float(ok.sum()), float(steps[step_ok].sum(dtype=np.float64)),
            float(step_ok.sum()))


def input_distance(sums: InputSums, input_stats: dict[str, Any]) -> float | None:
    """The tile's distance from the training inputs (see the module docstring); None without
    statistics on either side."""
    if not sums.n or not input_stats or "mean" not in input_stats or "std" not in input_stats:
        return None
    ref_mean, ref_std = input_stats["mean"], input_stats["std"]
    if len(ref_mean) != len(sums.band_sum):
        return None
    worst = 0.0
    for mu, sd, m, s in zip(sums.mean, sums.std, ref_mean, ref_std):
        s = max(float(s), _MIN_STD)
        worst = max(worst, abs(mu - float(m)) / s, abs(math.log(max(sd, _MIN_STD) / s)))
    return worst


@dataclass(frozen=True)
class DomainCheck:
    """A tile's domain signals, the verdict (None: the card has no thresholds, or a signal is
    missing) and, when out of domain, why (one phrase per failed signal)."""

    mean_confidence: float | None
    input_distance: float | None
    oblique_view: float | None
    in_domain: bool | None
    reasons: tuple[str, ...] = ()


def check_domain(sums: InputSums | None, mean_confidence: float | None, input_stats: dict[str, Any],
                 thresholds: dict[str, Any]) -> DomainCheck:
    """The verdict for one tile against the card's ``domain`` thresholds: ``min_confidence``,
    ``max_input_distance`` and ``max_oblique_view``."""
    distance = None if sums is None else input_distance(sums, input_stats)
    oblique = None if sums is None else sums.oblique_view
    return judge(mean_confidence, distance, oblique, thresholds)


def judge(mean_confidence: float | None, distance: float | None, oblique: float | None,
          thresholds: dict[str, Any]) -> DomainCheck:
    """The verdict on a tile's three signals (see ``check_domain``)."""
    signals = ((mean_confidence, "min_confidence", "the model is unsure (mean confidence {v:.2f} < {t:.2f})"),
               (distance, "max_input_distance",
                "its input statistics are far from the training images' (distance {v:.2f} > {t:.2f})"),
               (oblique, "max_oblique_view",
                "its top is brighter and more detailed than its bottom, as in an oblique or street view with sky "
                "(oblique view {v:.2f} > {t:.2f})"))
    if not thresholds:
        return DomainCheck(mean_confidence, distance, oblique, None)
    reasons, unknown = [], False
    for value, key, text in signals:
        if key not in thresholds:
            continue
        if value is None:
            unknown = True
            continue
        t = float(thresholds[key])
        bad = value < t if key.startswith("min_") else value > t
        if bad:
            reasons.append(text.format(v=value, t=t))
    verdict = False if reasons else (None if unknown else True)
    return DomainCheck(mean_confidence, distance, oblique, verdict, tuple(reasons))
