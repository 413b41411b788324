"""``make demo`` / ``tileseg demo``: the bundled default, end to end.

Generates a georeferenced, aerial-looking 4096x4096 scene (UTM 40N, 0.5 m) with its ground truth
using the project's own generator, segments it with the default model through the real pipeline
(DirectRunner), scores the mask against the ground truth, writes a side-by-side preview PNG, and
prints where everything is.

``tileseg demo --drone``: a real Aeroscapes drone frame from the shared data (``$TILESEG_DATA``;
nothing is copied: the input folder holds a link to it) through the drone model with landing
zones for the shipped ``small-drone`` profile, scored against its labels; the preview shows the
frame, the mask and the zones (outlined) with their touchdown points.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


def palette_lut(palette: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    """(256, 3) uint8 RGB by label value: a mask's colours as one lookup."""
    lut = np.zeros((256, 3), np.uint8)
    for index, colour in palette.items():
        lut[index] = colour[:3]
    return lut


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
    lut = palette_lut(palette)
    side = np.concatenate([rgb.astype(np.uint8), np.full((shape[0], 8, 3), 255, np.uint8), lut[labels]], axis=1)
    Image.fromarray(side).save(out_png)


#: The drone demo's frame: flight 200002 (a street crossing) with pedestrians and a car.
DRONE_FRAME = ("seq7", "200002_028")
#: Its ground size of a pixel, measured on the frame's flight, not guessed: the cars of flight
#: 200002 are 97-119 px across and 214-275 px long in its labels, a 1.8 x 4.5 m car at 1.6-1.9 cm/px.
DRONE_GSD_M = 0.018


def _zones_picture(mask_rgb: np.ndarray, zones_uri: str, tile_id: str, scale: float) -> np.ndarray:
    """The mask with the tile's zones outlined in white and their touchdown points (zones without a
    CRS are in pixel coordinates)."""
    import pyarrow.parquet as pq
    import shapely
    from PIL import Image, ImageDraw

    picture = Image.fromarray(mask_rgb)
    draw = ImageDraw.Draw(picture)
    table = pq.read_table(zones_uri, columns=["tile_id", "geometry", "touchdown"]).to_pylist()
    for z in (r for r in table if r["tile_id"] == tile_id):
        geom = shapely.from_wkb(z["geometry"])
        for poly in getattr(geom, "geoms", [geom]):
            draw.line([(x * scale, y * scale) for x, y in poly.exterior.coords], fill=(255, 255, 255), width=2)
        point = shapely.from_wkb(z["touchdown"])
        x, y = point.x * scale, point.y * scale
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(255, 255, 255), outline=(0, 0, 0))
    return np.asarray(picture)


def drone_demo(work: str, beam_args: list[str],
               load_frame: Callable[[str, str], tuple[Path, np.ndarray]]) -> int:
    """``load_frame(folder, name)``: the frame's path and its labels as the model's class indexes
    (training/datasets.py, handed in by the ``tileseg`` dispatcher: pipelines do not build on training)."""
    import rasterio
    from PIL import Image

    from model.shipped import DRONE_MODEL

    folder, name = DRONE_FRAME
    try:
        frame, truth = load_frame(folder, name)
    except ValueError as exc:
        print(f"tileseg demo --drone: {exc}", file=sys.stderr)
        return 2
    inputs, results = os.path.join(work, "input"), os.path.join(work, "results")
    os.makedirs(inputs, exist_ok=True)
    link = os.path.join(inputs, frame.name)
    if os.path.realpath(link) != str(frame.resolve()):
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(frame.resolve(), link)  # the shared data stays where it is
    card = load_card(DRONE_MODEL)
    try:
        summary = run(["--input", inputs, "--output", results, "--model", DRONE_MODEL, "--gsd", str(DRONE_GSD_M),
                       "--landing", "small-drone", "--overwrite", *beam_args])
    except ConfigError as exc:
        print(f"tileseg demo: {exc}", file=sys.stderr)
        return 2
    mask = os.path.join(results, "masks", f"{name}.tif")
    with rasterio.open(mask) as m:
        labels = m.read(1)
    cm = confusion(truth, labels, card.num_classes)
    iou = iou_from_confusion(cm)
    person = [c.name for c in card.classes].index("person")
    recall = cm[person, person] / max(cm[person].sum(), 1)
    rgb = np.asarray(Image.open(frame).convert("RGB"))
    lut = palette_lut(card.palette())
    scale = PREVIEW_EDGE / max(rgb.shape[:2])
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    small = [np.asarray(Image.fromarray(a).resize(size, resample)) for a, resample in
             ((rgb, Image.Resampling.BILINEAR), (lut[labels], Image.Resampling.NEAREST))]
    zones = _zones_picture(small[1], summary.zones_uri, name, scale) if summary.zones_uri else small[1]
    gap = np.full((size[1], 8, 3), 255, np.uint8)
    preview = os.path.join(work, "preview.png")
    Image.fromarray(np.concatenate([small[0], gap, zones], axis=1)).save(preview)
    print(summary.line())
    if not summary.zones_total:
        print(f"no landing zone: the frame covers {labels.shape[1] * DRONE_GSD_M:.0f} x {labels.shape[0] * DRONE_GSD_M:.0f} m, "
              "and small-drone needs 20 m² whose every point is 1.5 m + 5 m from a person (4 m from a vehicle) "
              "and 3.5 m inside the frame's edge (unknown ground beyond it is never safe)")
    print(f"mask vs the frame's labels: pixel accuracy {np.trace(cm) / cm.sum():.3f}, mIoU over the classes present "
          f"{np.nanmean(iou):.3f}; person IoU {iou[person]:.2f}, recall {recall:.2f} "
          f"(this frame is one of the model's training frames: its held-out figures are in its card)")
    print(f"input:    {link} -> {frame}\nmask:     {mask}\nzones:    {summary.zones_uri}\n"
          f"preview:  {preview} (frame | mask with zones outlined, touchdown points as dots)\n"
          f"report:   {summary.report_uri}")
    return 1 if summary.failures else 0


def main(argv: list[str] | None = None,
         load_frame: Callable[[str, str], tuple[Path, np.ndarray]] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tileseg demo")
    parser.add_argument("--workdir", default=None, help="default demo-output (demo-output/drone with --drone)")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--drone", action="store_true",
                        help="a real drone frame (shared data) through the drone model, with landing zones")
    a, beam_args = parser.parse_known_args(argv)
    setup_logging()
    if a.drone:
        if load_frame is None:
            print("tileseg demo --drone: run it as `tileseg demo --drone` (the dispatcher hands in the data loader)",
                  file=sys.stderr)
            return 2
        return drone_demo(os.path.abspath(a.workdir or os.path.join("demo-output", "drone")), beam_args, load_frame)
    a.workdir = a.workdir or "demo-output"

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
