"""``tileseg bench-rerun --tiles N``: what a nightly rerun over already-done tiles costs.

Writes N small tiles (windows of the generated scene, so the masks are real work), runs the job
once over them, then again with a new run id, as the next night would: every tile must be skipped
as up to date (decided from the output's manifest and one listing of ``masks/``, no tile or mask
opened) and its statistics reported again. Prints both wall times, their ratio and, as the last
line, one JSON object. Target (issue 12): the rerun takes under 10 % of the first run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time

import rasterio
from rasterio.transform import from_origin

from common.cli import exit_now, setup_logging
from common.synthetic import render_window
from model.shipped import DEFAULT_MODEL
from pipelines.segment import run

log = logging.getLogger("tileseg.bench")


def write_tiles(folder: str, n: int, size: int, seed: int = 3) -> None:
    os.makedirs(folder, exist_ok=True)
    per_row = 64
    for i in range(n):
        row, col = divmod(i, per_row)
        img, _ = render_window(seed, row * size, col * size, size, size)
        with rasterio.open(os.path.join(folder, f"tile_{i:05d}.tif"), "w", driver="GTiff", width=size, height=size,
                           count=3, dtype="uint8", crs="EPSG:32640", photometric="RGB",
                           transform=from_origin(300000 + col * size * 0.5, 2800000 - row * size * 0.5, 0.5, 0.5)) as dst:
            dst.write(img.transpose(2, 0, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tileseg bench-rerun", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64, help="edge of each tile, pixels")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workdir", default="bench-output/rerun")
    args = parser.parse_args(argv)
    setup_logging()
    inp, out = os.path.join(args.workdir, "in"), os.path.join(args.workdir, "out")
    shutil.rmtree(out, ignore_errors=True)
    if len(os.listdir(inp) if os.path.isdir(inp) else []) != args.tiles:
        shutil.rmtree(inp, ignore_errors=True)
        write_tiles(inp, args.tiles, args.size)
    common = ["--input", inp, "--output", out, "--model", args.model, "--precision", args.precision]
    t0 = time.monotonic()
    first = run([*common, "--run_id", "first"])
    first_s = time.monotonic() - t0
    t0 = time.monotonic()
    second = run([*common, "--run_id", "rerun"])
    rerun_s = time.monotonic() - t0
    result = {
        "tiles": args.tiles, "size": args.size, "first_written": first.tiles_written, "first_failed": first.failures,
        "rerun_skipped": second.tiles_skipped, "rerun_written": second.tiles_written, "rerun_failed": second.failures,
        "first_s": round(first_s, 2), "rerun_s": round(rerun_s, 2), "ratio": round(rerun_s / first_s, 4),
    }
    print(f"first run: {first.tiles_written} of {args.tiles} tiles in {first_s:.1f} s; rerun: "
          f"{second.tiles_skipped} skipped, {second.tiles_written} written in {rerun_s:.1f} s "
          f"({100 * rerun_s / first_s:.1f} % of the first run; target < 10 %)")
    print(json.dumps(result))
    ok = second.tiles_skipped == args.tiles and first.tiles_written == args.tiles
    return 0 if ok else 1


if __name__ == "__main__":
    exit_now(main())
