"""``make demo`` / ``tileseg demo``: the bundled default, end to end.

Generates a georeferenced, aerial-looking 4096x4096 scene (UTM 40N, 0.5 m) with its ground truth
using the project's own generator, segments it with the default model through the real pipeline
(DirectRunner), scores the mask against the ground truth, writes a side-by-side preview PNG, and
prints where everything is.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

from common.cli import exit_now, setup_logging
from common.metrics import confusion, iou_from_confusion
from common.synthetic import write_scene
from model.card import load_card
from model.shipped import DEFAULT_MODEL
from pipelines.config import ConfigError
from pipelines.segment import run

log = logging.getLogger("tileseg.demo")

PREVIEW_EDGE = 1024


def score_mask(mask_path: str, truth_path: str, num_classes: int) -> np.ndarray:
    """Confusion matrix of a mask against ground truth, read window by window."""
    import rasterio

    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    with rasterio.open(mask_path) as m, rasterio.open(truth_path) as t:
        for _, window in t.block_windows(1):
            cm += confusion(t.read(1, window=window), m.read(1, window=window), num_classes)
    return cm


def write_preview(image_path: str, mask_path: str, palette: dict[int, tuple[int, int, int, int]], out_png: str) -> None:
    """Input and colourised mask side by side, decimated to PREVIEW_EDGE (reads overviews)."""
    import rasterio
    from PIL import Image
    from rasterio.enums import Resampling

    with rasterio.open(image_path) as src:
        scale = max(src.width, src.height) / PREVIEW_EDGE
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        rgb = np.moveaxis(src.read([1, 2, 3], out_shape=(3, *shape), resampling=Resampling.average), 0, -1)
    with rasterio.open(mask_path) as m:
        labels = m.read(1, out_shape=shape, resampling=Resampling.nearest)
    lut = np.zeros((256, 3), np.uint8)
    for index, colour in palette.items():
        lut[index] = colour[:3]
    side = np.concatenate([rgb.astype(np.uint8), np.full((shape[0], 8, 3), 255, np.uint8), lut[labels]], axis=1)
    Image.fromarray(side).save(out_png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tileseg demo")
    parser.add_argument("--workdir", default="demo-output")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=2026)
    a, beam_args = parser.parse_known_args(argv)
    setup_logging()

    work = os.path.abspath(a.workdir)
    image = os.path.join(work, "input", "scene.tif")
    truth = os.path.join(work, "truth", "scene.tif")
    results = os.path.join(work, "results")
    if not (os.path.exists(image) and os.path.exists(truth)):
        os.makedirs(os.path.dirname(image), exist_ok=True)
        os.makedirs(os.path.dirname(truth), exist_ok=True)
        t = time.monotonic()
        write_scene(image, a.size, seed=a.seed, labels_path=truth)
        log.info("generated the %dx%d demo scene in %.1f s", a.size, a.size, time.monotonic() - t)
    card = load_card(DEFAULT_MODEL)
    try:
        summary = run(["--input", os.path.dirname(image), "--output", results, "--model", DEFAULT_MODEL,
                       "--overwrite", *beam_args])
    except ConfigError as exc:
        print(f"tileseg demo: {exc}", file=sys.stderr)
        return 2
    mask = os.path.join(results, "masks", "scene.tif")
    cm = score_mask(mask, truth, card.num_classes)
    iou = iou_from_confusion(cm)
    preview = os.path.join(work, "preview.png")
    write_preview(image, mask, card.palette(), preview)
    print(summary.line())
    print(f"mask vs ground truth: pixel accuracy {np.trace(cm) / cm.sum():.3f}, mIoU {np.nanmean(iou):.3f} "
          + "(" + ", ".join(f"{c.name} {v:.2f}" for c, v in zip(card.classes, iou)) + ")")
    print(f"input:    {image}\nmask:     {mask}\nstats:    {summary.stats_uri}\npreview:  {preview}\n"
          f"report:   {summary.report_uri}")
    return 1 if summary.failures else 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
