"""The training images' input statistics, recorded in the model card (``input_stats``).

Per band, in [0, 1] units (raw / 255 for these 8-bit datasets): the 1st, 50th and 99th
percentiles, mean and standard deviation over every pixel of the training split. The pipeline maps
tiles of other bit depths that are far darker than this onto it (transforms/radiometry.py).
Exact, from per-band 256-bin histograms, so it needs one pass and no pixel is kept.

    python -m training.input_stats --dataset dubai-aerial --model model/weights/aerial-dubai6
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from common.cli import exit_now
from model.card import load_card, save_card
from training import datasets


def input_stats(images: Iterable[np.ndarray], source: str) -> dict[str, Any]:
    """Statistics of (H, W, C) uint8 images, per band, in [0, 1] units."""
    hist: np.ndarray | None = None
    for image in images:
        if image.dtype != np.uint8:
            raise ValueError(f"input statistics need uint8 images, not {image.dtype}")
        flat = image.reshape(-1, image.shape[-1])
        h = np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])]).astype(np.int64)
        hist = h if hist is None else hist + h
    if hist is None:
        raise ValueError("no images to measure")
    levels = np.arange(256) / 255.0
    out: dict[str, Any] = {"source": source}
    cdf = np.cumsum(hist, axis=1) / hist.sum(axis=1, keepdims=True)
    for name, q in (("p1", 0.01), ("p50", 0.5), ("p99", 0.99)):
        out[name] = [round(float(levels[np.searchsorted(cdf[c], q)]), 4) for c in range(len(hist))]
    total = hist.sum(axis=1)
    mean = (hist * levels).sum(axis=1) / total
    var = (hist * levels**2).sum(axis=1) / total - mean**2
    out["mean"] = [round(float(m), 4) for m in mean]
    out["std"] = [round(float(np.sqrt(max(v, 0.0))), 4) for v in var]
    return out


def dataset_stats(name: str, split: str = "train", fold: int | None = 0) -> dict[str, Any]:
    spec = datasets.spec(name)
    samples = datasets.split(name, split, fold)
    folds = "" if fold == 0 else (" (every fold)" if fold is None else f" (fold {fold})")
    return input_stats((datasets.load_image(s, spec) for s in samples),
                       f"{name} {split} split{folds}, {len(samples)} images")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.input_stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True, help="model folder whose card.json gets the statistics")
    args = parser.parse_args(argv)
    card = load_card(args.model)
    # The model's own training images: a cross-validated dataset's shipped model trained on every fold.
    stats = dataset_stats(args.dataset, fold=(card.training.get("config") or {}).get("fold", 0))
    save_card(dataclasses.replace(card, input_stats=stats), args.model)
    print(stats)
    return 0


if __name__ == "__main__":
    exit_now(main())
