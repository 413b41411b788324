"""The ``tileseg`` command: ``run`` (the main job), ``zones``, ``report``, ``bench``, ``demo``, ``train``, ``evaluate``."""

from __future__ import annotations

import sys

from common.cli import exit_now

USAGE = """usage: tileseg COMMAND [options]

commands:
  run     segment rasters: tileseg run --input GLOB --output DIR [--model DIR] [--precision auto|float32|bfloat16|float16]
          [--batch_size N] [--stitch overlap|blend] [--bands 3,2,1] [--landing PROFILE [--gsd M]]
          [any Beam option, e.g. --runner DataflowRunner]
  zones   landing zones again from an earlier run's masks, for another vehicle:
          tileseg zones --output OUT --landing PROFILE [--gsd M] [--model DIR]
  report  rebuild the HTML report of a run: tileseg report --output OUT [--run_id ID] (default: the newest run)
  bench   measure throughput, memory and seam agreement: tileseg bench --size N [--model DIR]
  bench-rerun  what a nightly rerun over done tiles costs: tileseg bench-rerun --tiles 2000
  demo    generate the bundled sample scene, segment it and write a preview
  train   train a model and export it with its card: tileseg train --dataset {dubai-aerial,camvid,membrane,folder}
          [--arch unet|fcn] [--out DIR] [--fold K|all] [--epochs N] [--max_minutes M] (tileseg train --help)
  evaluate  score a model: tileseg evaluate --model DIR (--dataset NAME --split S | --images DIR --labels DIR) [--tta]
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "run":
        from pipelines.segment import main as run_main

        return run_main(rest)
    if command == "zones":
        from pipelines.zones import main as zones_main

        return zones_main(rest)
    if command == "report":
        from pipelines.report import main as report_main

        return report_main(rest)
    if command == "bench":
        from pipelines.bench import main as bench_main

        return bench_main(rest)
    if command == "bench-rerun":
        from pipelines.bench_rerun import main as rerun_main

        return rerun_main(rest)
    if command == "demo":
        from pipelines.demo import main as demo_main

        if "--drone" in rest:  # a real frame and its labels, read by training's dataset code
            from training.datasets import aeroscapes_frame

            return demo_main(rest, aeroscapes_frame)
        return demo_main(rest)
    if command == "train":
        from training.train import main as train_main

        return train_main(rest)
    if command == "evaluate":
        from training.evaluate import main as evaluate_main

        return evaluate_main(rest)
    print(f"tileseg: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


def console() -> None:
    """The ``tileseg`` console script."""
    exit_now(main())


if __name__ == "__main__":
    console()
