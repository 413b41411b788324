"""``tileseg bench --size N``: model vs pipeline throughput, peak memory and seam agreement.

Prints, in one run:
  (1) bare-model throughput: the pipeline's own patches (cut from the benchmark tile) through the
      same Predictor, precision and batch size in a plain loop, MPix/s of patch pixels;
  (2) the pipeline's end-to-end DirectRunner throughput, MPix/s of tile pixels, model load
      included (run in a child process so its peak RSS is its own);
  (3) their ratio; (4) the pipeline's peak RSS;
  (5) seam agreement: the stitched labels of a crop at least 3 patches across against one
      whole-image forward pass over the same crop, same patch size and halo;
and the same bare throughput and label agreement for float32 vs the chosen precision.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

from common import fileio
from common.cli import exit_now, setup_logging
from common.patching import patchify
from common.plan import default_batch_size, default_patches_per_block, plan_blocks
from common.synthetic import write_scene
from model.card import ModelCard, load_card
from model.free import write_free_model
from model.loading import resolve_precision
from model.predictor import Predictor
from model.shipped import DEFAULT_MODEL
from pipelines.segment import run
from transforms.read import read_window
from transforms.tiles import describe_tile

log = logging.getLogger("tileseg.bench")

AGREEMENT_CROP = 2048


def _scene(path: str, size: int, seed: int) -> None:
    if os.path.exists(path):
        return
    t = time.monotonic()
    tmp = path + ".part.tif"
    write_scene(tmp, size, seed=seed)
    os.replace(tmp, path)
    log.info("generated %dx%d scene in %.1f s: %s", size, size, time.monotonic() - t, path)


def _patches(path: str, predictor: Any, patch: int, halo: int, ppb: int, limit: int) -> np.ndarray:
    """The first ``limit`` patches the pipeline would cut from the tile (interior blocks first)."""
    tile = describe_tile(path, os.path.dirname(path), predictor.card)
    blocks = plan_blocks(tile.height, tile.width, patch, halo, predictor.card.size_multiple, ppb)
    shape = blocks[0].patch_shape
    out = []
    with fileio.open_raster(path) as src:
        for block in blocks:
            if block.patch_shape != shape:
                continue
            raw, _ = read_window(src, tile, block.window)
            out.append(patchify(raw, block.patches))
            if sum(len(p) for p in out) >= limit:
                break
    return np.concatenate(out)[:limit]


def bare_throughput(predictor: Any, patches: np.ndarray, batch_size: int, seconds: float, divisor: float) -> float:
    """MPix/s of patch pixels for ``predictor.predict_labels_confidence`` (what the pipeline's
    handler runs) in a plain loop (after warm-up)."""
    predictor.predict_labels_confidence(patches[:batch_size], batch_size, divisor)
    done = 0
    start = time.perf_counter()
    while True:
        for i in range(0, len(patches) - batch_size + 1, batch_size):
            predictor.predict_labels_confidence(patches[i:i + batch_size], batch_size, divisor)
            done += batch_size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    return done * patches.shape[1] * patches.shape[2] / elapsed / 1e6


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux keeps that
    across exec, so a child started by a parent holding two models would report the parent's peak."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _child(args: list[str]) -> int:
    """Run the pipeline once in this (fresh) process and print its wall time and peak RSS."""
    setup_logging()

    # The runtime's libraries are imported before the clock starts, as the interpreter itself is
    # started before it: what is timed is the job (pipeline construction, model load from the
    # .keras file, reads, inference, stitching, COG and Parquet writes), not `import tensorflow`.
    import keras  # noqa: F401

    start = time.perf_counter()
    summary = run(args)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "written": summary.tiles_written,
                      "failures": summary.failures}))
    return 0 if summary.tiles_written >= 1 and not summary.failures else 1


def _zones_child(args: list[str]) -> int:
    """Map one output's zones again in this fresh process (no cache): seconds and peak RSS of the
    zone mapper alone, after its imports (what --landing adds to a worker's memory)."""
    from model.card import load_card as card_of
    from model.landing import load_profile
    from transforms.landing import LandingSettings, compute_tile_zones
    from transforms.manifest import read_manifest
    from transforms.masks import OutputLayout
    from transforms.results import TileResult

    output, model_dir, profile = args
    card = card_of(model_dir)
    settings = LandingSettings.of(card, load_profile(profile))
    entry = next(iter(read_manifest(output).values()))
    result = TileResult.from_json(entry.result)
    import scipy.ndimage  # noqa: F401  (the mapper's libraries: the pipeline loads them once per worker)
    import shapely  # noqa: F401

    base = rss_mb()
    start = time.perf_counter()
    record = compute_tile_zones(result, OutputLayout(output, "bench"), card, settings)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base,
                      "zones": len(record.zones), "pixels": result.pixels}))
    return 0


def _zones_labels_child(args: list[str]) -> int:
    """The zone mapper alone on a label raster (the generated scene's truth as the mask), in this
    fresh process: seconds and memory growth over the imports, for any tile size without a model."""
    import rasterio

    from common.ground import GroundMetric
    from common.zones import map_zones
    from model.card import load_card as card_of
    from model.landing import load_profile, zone_rules
    from transforms.landing import LANDING_BLOCK, window_reader

    labels_path, model_dir, profile = args
    card = card_of(model_dir)
    prof = load_profile(profile)
    rules = dataclasses.replace(zone_rules(card, prof), max_hazard_probability=1.0)  # no probabilities here
    import scipy.ndimage  # noqa: F401  (the mapper's libraries: the pipeline loads them once per worker)
    import shapely  # noqa: F401

    base = rss_mb()
    start = time.perf_counter()
    with rasterio.open(labels_path) as src:
        metric = GroundMetric.of(src.crs.to_wkt(), tuple(src.transform)[:6], src.height, src.width)
        zones = map_zones(src.height, src.width, window_reader(src, None, rules.nodata), metric, rules, LANDING_BLOCK)
        pixels = src.height * src.width
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base,
                      "zones": len(zones.zones), "pixels": pixels, "horizon_m": zones.horizon_m}))
    return 0


def _pipeline_child(cmd: list[str]) -> dict[str, Any] | None:
    """Run ``python -m pipelines.bench _pipeline ...`` and return its JSON line (None: it failed, said why)."""
    log.info("pipeline: %s", " ".join(cmd))
    child = subprocess.run(cmd, capture_output=True, text=True)
    if child.returncode != 0:
        sys.stderr.write(child.stderr[-4000:])
        print(json.dumps({"error": "pipeline run failed", "returncode": child.returncode}))
        return None
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


#: The free model's classes as landing roles: two hazards, two safe, one caution.
FREE_MODEL_ROLES = {"class0": "hazard", "class1": "safe", "class2": "caution", "class3": "safe", "class4": "hazard"}


def _pipeline_cmd(a: argparse.Namespace, tile: str, out: str, model_dir: str, precision: str,
                  *extra: str) -> list[str]:
    """The command that runs the pipeline once in a fresh process (``_child``)."""
    return [sys.executable, "-m", "pipelines.bench", "_pipeline", "--input", tile, "--output", out,
            "--model", model_dir, "--precision", precision, "--batch_size", str(a.batch_size),
            "--patches_per_block", str(a.patches_per_block), *extra]


def _resolve_blocks(a: argparse.Namespace, patch: int, halo: int) -> None:
    """Batch size and patches per block as the pipeline chooses them when not given, so that the
    bare loop and the pipeline run alike."""
    a.batch_size = a.batch_size or default_batch_size(patch)
    a.patches_per_block = a.patches_per_block or default_patches_per_block(patch, halo)


def _free_model_scene(a: argparse.Namespace, patch_size: int | None = None,
                      halo: int | None = None) -> tuple[str, str, ModelCard]:
    """The generated scene and model/free.py's model, at the default model's patch and halo
    unless given: (tile, model folder, card)."""
    os.makedirs(a.workdir, exist_ok=True)
    tile = os.path.join(a.workdir, f"scene-{a.size}-s{a.seed}.tif")
    _scene(tile, a.size, a.seed)
    model_dir = os.path.join(a.workdir, "free-model")
    default = load_card(DEFAULT_MODEL)
    card = write_free_model(model_dir, patch_size=patch_size or default.patch_size,
                            halo=default.halo if halo is None else halo, size_multiple=default.size_multiple,
                            name="free", landing_roles=FREE_MODEL_ROLES)
    return tile, model_dir, card


def _landing_memory(a: argparse.Namespace) -> int:
    """``--landing_memory``: what ``--landing`` adds to the pipeline's peak RSS. The same pipeline
    run twice on the generated scene, without and with ``--landing``, with model/free.py's model
    (a 1x1 convolution: the model costs nothing, its mask is a noisy binning of the scene) at the
    default model's patch and halo, in float32."""
    tile, model_dir, card = _free_model_scene(a)
    _resolve_blocks(a, card.patch_size, card.halo)
    out = os.path.join(a.workdir, f"run-{a.size}-free")
    peaks = {}
    for landing in (None, a.landing):
        subprocess.run(["rm", "-rf", out], check=True)
        result = _pipeline_child(_pipeline_cmd(a, tile, out, model_dir, "float32",
                                               *(["--landing", landing] if landing else [])))
        if result is None:
            return 1
        peaks["with" if landing else "without"] = (result["peak_rss_mb"], result["seconds"])
    (base, base_s), (land, land_s) = peaks["without"], peaks["with"]
    print(f"{a.size}x{a.size} scene, free model: pipeline peak RSS {base:.0f} MB ({base_s:.1f} s) without --landing, "
          f"{land:.0f} MB ({land_s:.1f} s) with --landing {a.landing}: {land - base:+.0f} MB")
    print(json.dumps({"landing_memory": True, "size": a.size, "profile": a.landing,
                      "peak_rss_mb_without": round(base, 1), "peak_rss_mb_with": round(land, 1),
                      "landing_adds_mb": round(land - base, 1), "seconds_without": round(base_s, 2),
                      "seconds_with": round(land_s, 2)}))
    return 0


def _free_model(a: argparse.Namespace) -> int:
    """``--free_model``: the whole pipeline with model/free.py's model (the model costs nothing)
    against the I/O floor (pipelines/io_floor.py) on the same tile, measured before and after the
    pipeline run and averaged; the two masks are compared pixel by pixel."""
    import rasterio

    from pipelines.io_floor import io_floor

    tile, model_dir, card = _free_model_scene(a, a.patch_size, a.halo)
    _resolve_blocks(a, card.patch_size, card.halo)
    floor_mask = os.path.join(a.workdir, f"floor-{a.size}.tif")
    floors = [io_floor(tile, floor_mask, card.num_classes)]
    out = os.path.join(a.workdir, f"run-{a.size}-free")
    subprocess.run(["rm", "-rf", out], check=True)
    result = _pipeline_child(_pipeline_cmd(a, tile, out, model_dir, "float32"))
    if result is None:
        return 1
    floors.append(io_floor(tile, floor_mask, card.num_classes))
    floor_s = sum(f["seconds"] for f in floors) / 2
    mask = os.path.join(out, "masks", os.path.basename(tile))
    with rasterio.open(mask) as m, rasterio.open(floor_mask) as f:
        agreement = float(np.mean([(m.read(1, window=w) == f.read(1, window=w)).mean() for _, w in m.block_windows(1)]))
    mask_bytes = os.path.getsize(mask)
    ratio = floor_s / result["seconds"]
    print(f"{a.size}x{a.size} scene, free model (1x1 convolution), patch {card.patch_size}, halo {card.halo}, "
          f"batch {a.batch_size}")
    print(f"I/O floor (read in windows, label, plain GDAL COG with MODE overviews): {floor_s:.1f} s "
          f"({floors[0]['seconds']:.1f} before, {floors[1]['seconds']:.1f} after; of the last "
          f"{floors[1]['read_and_label_s']:.1f} s reading and labelling, {floors[1]['cog_s']:.1f} s the COG), "
          f"mask {floors[1]['mask_bytes'] / 1e6:.1f} MB")
    print(f"pipeline end to end: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
          f"mask {mask_bytes / 1e6:.1f} MB; the masks agree on {agreement:.5f} of the pixels")
    print(f"ratio floor/pipeline: {ratio:.3f} (1.0: the pipeline is as fast as the plain conversion)")
    print(json.dumps({"free_model": True, "size": a.size, "floor_s": round(floor_s, 2),
                      "floor_s_before_after": [round(f["seconds"], 2) for f in floors],
                      "floor_cog_s": round(floors[1]["cog_s"], 2), "pipeline_s": round(result["seconds"], 2),
                      "ratio": round(ratio, 4), "peak_rss_mb": round(result["peak_rss_mb"], 1),
                      "mask_bytes": mask_bytes, "floor_mask_bytes": floors[1]["mask_bytes"],
                      "mask_agreement": round(agreement, 6), "patch": card.patch_size, "halo": card.halo,
                      "batch_size": a.batch_size}))
    return 0


def _many_tiles(a: argparse.Namespace) -> int:
    """``--free_model --tiles N``: N tiles of ``--size``² (links to one generated scene) through the
    pipeline with model/free.py's model: in one process, then with ``--workers W`` processes
    (Beam's multi-process DirectRunner), and, when N is a square, one tile of the same pixels
    (``sqrt(N) * size`` a side): the difference is what each tile costs beyond its pixels."""
    tile, model_dir, card = _free_model_scene(a, a.patch_size, a.halo)
    _resolve_blocks(a, card.patch_size, card.halo)
    folder = os.path.join(a.workdir, f"tiles-{a.tiles}x{a.size}")
    os.makedirs(folder, exist_ok=True)
    for i in range(a.tiles):
        name = os.path.join(folder, f"t{i:05d}.tif")
        if not os.path.exists(name):
            os.link(tile, name)
    out = os.path.join(a.workdir, f"run-{a.tiles}x{a.size}")
    runs: dict[str, float] = {}
    modes: list[tuple[str, list[str]]] = [("one process", [])]
    if a.workers > 1:
        modes.append((f"{a.workers} processes", ["--direct_num_workers", str(a.workers),
                                                 "--direct_running_mode", "multi_processing"]))
    peak = {}
    for label, extra in modes:
        subprocess.run(["rm", "-rf", out], check=True)
        result = _pipeline_child(_pipeline_cmd(a, folder, out, model_dir, "float32", *extra))
        if result is None:
            return 1
        runs[label], peak[label] = result["seconds"], result["peak_rss_mb"]
    side = math.isqrt(a.tiles)
    one_tile_s = None
    if side * side == a.tiles and side > 1:
        a_big = argparse.Namespace(**{**vars(a), "size": a.size * side})
        big, _, _ = _free_model_scene(a_big, a.patch_size, a.halo)
        subprocess.run(["rm", "-rf", out], check=True)
        result = _pipeline_child(_pipeline_cmd(a, big, out, model_dir, "float32"))
        if result is None:
            return 1
        one_tile_s = result["seconds"]
    single = runs["one process"]
    pixels = a.tiles * a.size * a.size
    print(f"{a.tiles} tiles of {a.size}x{a.size}, free model (1x1 convolution), patch {card.patch_size}, "
          f"halo {card.halo}, batch {a.batch_size}")
    for label, seconds in runs.items():
        print(f"{label}: {seconds:.1f} s, {a.tiles / seconds:.2f} tiles/s, {pixels / seconds / 1e6:.1f} MPix/s, "
              f"peak RSS {peak[label]:.0f} MB (of the launching process)")
    summary: dict[str, Any] = {"tiles": a.tiles, "size": a.size, "seconds": {k: round(v, 2) for k, v in runs.items()},
                               "tiles_per_s": round(a.tiles / single, 3), "batch_size": a.batch_size,
                               "patch": card.patch_size, "halo": card.halo}
    if len(runs) > 1:
        speedup = single / runs[modes[1][0]]
        print(f"{modes[1][0]} against one: {speedup:.2f}x")
        summary["multi_process_speedup"] = round(speedup, 3)
    if one_tile_s is not None:
        overhead = (single - one_tile_s) / a.tiles
        print(f"one {a.size * side}x{a.size * side} tile of the same pixels: {one_tile_s:.1f} s; each of the "
              f"{a.tiles} tiles costs {overhead:.3f} s beyond its pixels")
        summary.update(one_tile_s=round(one_tile_s, 2), per_tile_overhead_s=round(overhead, 4))
    print(json.dumps(summary))
    return 0


def _landing_only(a: argparse.Namespace) -> int:
    """``--landing_only``: the landing stage's cost and memory on the scene's truth labels."""
    os.makedirs(a.workdir, exist_ok=True)
    labels = os.path.join(a.workdir, f"labels-{a.size}-s{a.seed}.tif")
    if not os.path.exists(labels):
        write_scene(os.path.join(a.workdir, f"scene-{a.size}-s{a.seed}-for-labels.tif"), a.size, seed=a.seed,
                    labels_path=labels)
    child = subprocess.run([sys.executable, "-m", "pipelines.bench", "_zones_labels", labels, a.model, a.landing],
                           capture_output=True, text=True)
    if child.returncode != 0:
        sys.stderr.write(child.stderr[-4000:])
        return 1
    z = json.loads(child.stdout.strip().splitlines()[-1])
    growth = z["peak_rss_mb"] - z["base_rss_mb"]
    print(f"landing zones ({a.landing}, P taken as 1) on the {a.size}x{a.size} scene's truth labels: "
          f"{z['seconds']:.1f} s, {z['pixels'] / z['seconds'] / 1e6:.2f} MPix/s, {z['zones']} zones; "
          f"memory grows by {growth:.0f} MB over the imports (peak {z['peak_rss_mb']:.0f} MB); "
          f"clearance horizon {z['horizon_m']} m")
    print(json.dumps({"landing_only": True, "size": a.size, "profile": a.landing, "seconds": round(z["seconds"], 3),
                      "mpix_s": round(z["pixels"] / z["seconds"] / 1e6, 3), "rss_growth_mb": round(growth, 1),
                      "peak_rss_mb": round(z["peak_rss_mb"], 1), "zones": z["zones"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_zones_labels":
        return _zones_labels_child(argv[1:])
    if argv and argv[0] == "_pipeline":
        return _child(argv[1:])
    if argv and argv[0] == "_zones":
        return _zones_child(argv[1:])
    parser = argparse.ArgumentParser(prog="tileseg bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, required=True, help="edge of the generated square tile, pixels")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch_size", type=int, default=None, help="default: the pipeline's for the patch size")
    parser.add_argument("--patch_size", type=int, default=None)
    parser.add_argument("--halo", type=int, default=None)
    parser.add_argument("--patches_per_block", type=int, default=None, help="default: the pipeline's")
    parser.add_argument("--seconds", type=float, default=20.0, help="time spent on the bare-model loop (split before/after)")
    parser.add_argument("--workdir", default="bench-output")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--landing", default=None,
                        help="also map landing zones with this profile, and report the landing stage's cost")
    parser.add_argument("--landing_only", action="store_true",
                        help="with --landing: time only the zone mapper, on the generated scene's truth labels")
    parser.add_argument("--free_model", action="store_true",
                        help="the pipeline with a model that costs nothing (model/free.py) against the I/O floor")
    parser.add_argument("--tiles", type=int, default=1,
                        help="with --free_model: this many tiles of --size (see --workers); a square number also "
                             "runs one tile of the same pixels, for the per-tile overhead")
    parser.add_argument("--workers", type=int, default=1,
                        help="with --tiles: also run Beam's multi-process DirectRunner with this many processes")
    parser.add_argument("--landing_memory", action="store_true",
                        help="with --landing: peak RSS of the pipeline without and with --landing (model/free.py's model)")
    a = parser.parse_args(argv)
    setup_logging()
    if a.landing_only:
        if not a.landing:
            parser.error("--landing_only needs --landing PROFILE")
        return _landing_only(a)
    if a.free_model and a.tiles > 1:
        return _many_tiles(a)
    if a.free_model:
        return _free_model(a)
    if a.landing_memory:
        if not a.landing:
            parser.error("--landing_memory needs --landing PROFILE")
        return _landing_memory(a)

    card = load_card(a.model)
    patch = a.patch_size or card.patch_size
    halo = card.halo if a.halo is None else a.halo
    _resolve_blocks(a, patch, halo)
    precision = resolve_precision(a.precision, card)
    os.makedirs(a.workdir, exist_ok=True)
    tile = os.path.join(a.workdir, f"scene-{a.size}-s{a.seed}.tif")
    _scene(tile, a.size, a.seed)

    # (1) before: the bare loop runs before and after the pipeline and the two are averaged, so
    # that drift in this shared machine's speed during the run does not bias the ratio.
    predictors = {precision: Predictor.from_dir(a.model, precision)}
    if precision != "float32":
        predictors["float32"] = Predictor.from_dir(a.model, "float32")
    patches = _patches(tile, predictors[precision], patch, halo, a.patches_per_block, limit=8 * a.batch_size)
    bare_before = bare_throughput(predictors[precision], patches, a.batch_size, a.seconds / 2, 255.0)

    # (2)-(4): the pipeline, alone in a child process.
    out = os.path.join(a.workdir, f"run-{a.size}")
    subprocess.run(["rm", "-rf", out], check=True)
    result = _pipeline_child(_pipeline_cmd(a, tile, out, a.model, precision, "--patch_size", str(patch),
                                           "--halo", str(halo), *(["--landing", a.landing] if a.landing else [])))
    if result is None:
        return 1
    pipeline_mpix_s = a.size * a.size / result["seconds"] / 1e6

    # (1): the same patches, same model, precision and batch size, in a plain loop.
    bare_after = bare_throughput(predictors[precision], patches, a.batch_size, a.seconds / 2, 255.0)
    bare = {precision: (bare_before + bare_after) / 2}
    if precision != "float32":
        bare["float32"] = bare_throughput(predictors["float32"], patches, a.batch_size, a.seconds / 2, 255.0)

    # (5): seam agreement on a crop >= 3 patches across, and precision agreement with float32.
    import rasterio
    from rasterio.windows import Window

    # At least 3 patch cores across, so seams cross the crop both ways (larger patches, larger crop).
    crop = min(max(AGREEMENT_CROP, 3 * (patch - 2 * halo)), a.size)
    with rasterio.open(tile) as src:
        image = np.moveaxis(src.read(window=Window(0, 0, crop, crop)), 0, -1)
    agreement = None
    if crop >= 3 * (patch - 2 * halo):
        pred = predictors[precision]
        stitched = pred.segment(image, 255.0, patch, halo, a.patches_per_block, "overlap", a.batch_size)
        reference = pred.whole_image_labels(image, 255.0)
        agreement = float((stitched == reference).mean())
    precision_agreement = None
    if precision != "float32":
        ref32 = predictors["float32"].whole_image_labels(image, 255.0)
        precision_agreement = float((predictors[precision].whole_image_labels(image, 255.0) == ref32).mean())

    # (6): the landing stage alone, in a fresh process, on the mask and hazard COG just written.
    zones = None
    if a.landing:
        child = subprocess.run([sys.executable, "-m", "pipelines.bench", "_zones", out, a.model, a.landing],
                               capture_output=True, text=True)
        if child.returncode != 0:
            sys.stderr.write(child.stderr[-4000:])
            print(json.dumps({"error": "zone mapping failed", "returncode": child.returncode}))
            return 1
        zones = json.loads(child.stdout.strip().splitlines()[-1])

    ratio = pipeline_mpix_s / bare[precision]
    print(f"tile {a.size}x{a.size}, model {card.model_id}, patch {patch}, halo {halo}, "
          f"precision {precision}, batch {a.batch_size}")
    print(f"(1) bare model ({precision}): {bare[precision]:.2f} MPix/s of patch pixels "
          f"(mean of {bare_before:.2f} before and {bare_after:.2f} after the pipeline run)")
    for p, v in bare.items():
        if p != precision:
            print(f"    bare model ({p}): {v:.2f} MPix/s of patch pixels")
    print(f"(2) pipeline end to end: {pipeline_mpix_s:.2f} MPix/s of tile pixels "
          f"({result['seconds']:.1f} s, model load included)")
    print(f"(3) ratio pipeline/bare: {ratio:.3f}")
    print(f"(4) pipeline peak RSS: {result['peak_rss_mb']:.0f} MB")
    print(f"(5) seam agreement vs whole-image pass on a {crop}x{crop} crop: "
          f"{agreement if agreement is None else f'{agreement:.5f}'}")
    if precision_agreement is not None:
        print(f"    {precision} vs float32 label agreement on that crop: {precision_agreement:.5f}")
    landing = None
    if zones is not None:
        segmentation_s = result["seconds"] - zones["seconds"]
        landing = {"profile": a.landing, "seconds": round(zones["seconds"], 3),
                   "mpix_s": round(zones["pixels"] / zones["seconds"] / 1e6, 3),
                   "cost_vs_segmentation": round(zones["seconds"] / segmentation_s, 4),
                   "zone_mapper_peak_rss_mb": round(zones["peak_rss_mb"], 1),
                   "zone_mapper_rss_growth_mb": round(zones["peak_rss_mb"] - zones["base_rss_mb"], 1),
                   "zones": zones["zones"]}
        print(f"(6) landing zones ({a.landing}): {landing['seconds']:.1f} s for the tile, {landing['mpix_s']:.2f} "
              f"MPix/s, {landing['cost_vs_segmentation']:.3f} x the rest of the pipeline's time "
              f"({segmentation_s:.1f} s); the zone mapper's memory grows by {landing['zone_mapper_rss_growth_mb']:.0f} MB "
              f"over its imports; {landing['zones']} zones")
    print(json.dumps({
        "landing": landing,
        "bare_mpix_s": round(bare[precision], 3), "pipeline_mpix_s": round(pipeline_mpix_s, 3),
        "ratio": round(ratio, 4), "peak_rss_mb": round(result["peak_rss_mb"], 1), "agreement": agreement,
        "patch": patch, "halo": halo, "precision": precision, "size": a.size, "batch_size": a.batch_size,
        "bare_mpix_s_by_precision": {p: round(v, 3) for p, v in bare.items()},
        "bare_mpix_s_before_after": [round(bare_before, 3), round(bare_after, 3)],
        "precision_agreement_vs_float32": precision_agreement, "model": card.model_id,
    }))
    return 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
