"""``tileseg report``: rebuild the HTML report of an earlier run from its files.

    tileseg report --output OUT [--run_id ID]

The report is made from the run's summary, tables and masks alone (transforms/report.py), so it
needs neither the model nor the inputs (an input that is gone just has no quicklook). Without
``--run_id`` the newest run under OUT is reported.
"""

from __future__ import annotations

import argparse
import sys

from common.cli import exit_now, setup_logging
from common.safepath import UnsafePathError, check_segment
from transforms.masks import OutputLayout
from transforms.report import ReportError, latest_run_id, write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tileseg report", description="Rebuild the HTML report of a run "
                                "(OUT/report/<run_id>/index.html) from its summary, tables and masks.")
    p.add_argument("--output", required=True, help="the run's output folder (local or gs://)")
    p.add_argument("--run_id", default=None, help="the run to report (default: the newest under --output)")
    a = p.parse_args(argv)
    setup_logging()
    output = a.output.rstrip("/")
    try:
        run_id = check_segment(a.run_id, "--run_id") if a.run_id is not None else latest_run_id(output)
        index = write_report(OutputLayout(output, run_id))
    except (ReportError, UnsafePathError) as exc:
        print(f"tileseg report: {exc}", file=sys.stderr)
        return 2
    print(f"report of run {run_id}: {index}")
    return 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
