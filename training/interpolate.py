"""Weight-space interpolation of a fine-tuned model with the weights it started from (WiSE-FT,
Wortsman et al. 2022: a fine-tuned model and its starting point are usually joined by a path
of low loss, and points on it can keep the start's accuracy while gaining some of the
fine-tuning's).

    python -m training.interpolate --tuned DIR --alpha A --out DIR

writes ``(1 - A) x start + A x tuned`` for every weight, the batch-norm statistics included,
where ``start`` is the model the tuned run was initialised from (its card's
``training.config.init``). An experiment, not a training run: the new card is the tuned card with
its version marked, an ``interpolation`` record, and its metrics **emptied** (the tuned run's
figures do not describe the mix): measure it with ``tileseg evaluate``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

import numpy as np

from common.cli import exit_now
from model.card import load_card, save_card
from model.loading import load_model
from training import datasets
from training.fit import init_dir


def mix(start: list[np.ndarray], tuned: list[np.ndarray], alpha: float) -> list[np.ndarray]:
    """``(1 - alpha) * start + alpha * tuned``, weight by weight; shapes must match."""
    if [w.shape for w in start] != [w.shape for w in tuned]:
        raise datasets.DatasetError("the tuned model and its starting weights differ in architecture or classes "
                                    "(interpolation needs the same weights on both sides)")
    return [((1.0 - alpha) * a + alpha * b).astype(b.dtype) for a, b in zip(start, tuned)]


def interpolate(tuned_dir: str, alpha: float, out: str) -> str:
    """Write the interpolated model to ``out`` (a new folder); return its card's model id."""
    if not 0.0 <= alpha <= 1.0:
        raise datasets.DatasetError(f"--alpha must be in [0, 1] (0: the starting weights, 1: the tuned ones), not {alpha}")
    card = load_card(tuned_dir)
    init = (card.training.get("config") or {}).get("init")
    if not init:
        raise datasets.DatasetError(f"{tuned_dir}: its card names no starting weights (training.config.init); "
                                    f"only a fine-tuned run (tileseg train --init ...) can be interpolated")
    start_dir = init_dir(init)
    if os.path.abspath(out) in (os.path.abspath(tuned_dir), os.path.abspath(start_dir)):
        raise datasets.DatasetError(f"--out {out} would overwrite one of the two models; give a new folder")
    start = load_model(start_dir, "float32")
    model = load_model(tuned_dir, "float32", card).model
    model.set_weights(mix(start.model.get_weights(), model.get_weights(), alpha))
    os.makedirs(out, exist_ok=True)
    model.save(os.path.join(out, card.model_file))
    mixed = replace(card, version=f"{card.version}+wise{alpha:g}", metrics={
        "note": "not measured: the tuned run's figures do not describe this mix; run tileseg evaluate"},
        training={**card.training, "interpolation": {
            "alpha": alpha, "start": start.card.model_id, "tuned": card.model_id,
            "rule": "(1 - alpha) x start + alpha x tuned, every weight and batch-norm statistic"}})
    save_card(mixed, out)
    return mixed.model_id


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.interpolate", description=__doc__.split("\n\n")[0])
    p.add_argument("--tuned", required=True, help="a model folder written by tileseg train --init ...")
    p.add_argument("--alpha", type=float, required=True, help="share of the tuned weights (0..1)")
    p.add_argument("--out", required=True, help="new model folder")
    a = p.parse_args(argv)
    try:
        model_id = interpolate(a.tuned, a.alpha, a.out)
    except (datasets.DatasetError, OSError, ValueError) as exc:
        print(f"training.interpolate: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {a.out} ({model_id}); measure it with tileseg evaluate --model {a.out}")
    return 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
