"""Small helpers every command-line entry point shares (``tileseg run``, ``train``, ``evaluate`` ...)."""

from __future__ import annotations

import logging
import os
import sys

#: Libraries whose INFO logging drowns the progress a person wants to read.
NOISY_LOGGERS = ("apache_beam", "absl", "rasterio")


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped log lines on stderr; the noisy libraries only from WARNING up."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def exit_now(code: int) -> None:
    """Flush and leave without running C++ static destructors: TensorFlow's thread pools can abort
    the process at interpreter exit ("terminate called without an active exception") after all
    work is done, which would turn a finished run into exit status -6."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
