"""Failures: every stage's bad element becomes a record keyed by its tile, never a crash.

Each stage's PTransform returns its main output and a ``failed`` PCollection of
``(tile_id, record)`` pairs; the keys let WriteMasks refuse a tile any of whose blocks failed,
and the run's failures table takes the records. The ``FAILED`` tag, the record and the guard that
turns an exception into one live here, so stages do not repeat them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam

log = logging.getLogger(__name__)

FAILED = "failed"  # tag of every stage's failure output

#: ``(tile_id, failure record)``
KeyedFailure = tuple[str, dict[str, Any]]


class StageOutput(NamedTuple):
    """What a stage's PTransform returns: its main output and its failures keyed by tile."""

    main: beam.PCollection
    failed: beam.PCollection


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def failure_record(uri: str, tile_id: str, stage: str, exc: BaseException) -> dict[str, Any]:
    """A failures row (run_id is filled in when the table is written)."""
    message = str(exc) or type(exc).__name__
    if uri not in message:
        message = f"{uri}: {message}"
    log.warning("failed at %s: %s", stage, message)
    return {
        "uri": uri,
        "tile_id": tile_id,
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": message,
        "failed_at": now_utc(),
    }


def keyed_failure(uri: str, tile_id: str, stage: str, exc: BaseException) -> beam.pvalue.TaggedOutput:
    """The ``failed`` output of a stage for one element of tile ``tile_id``."""
    return beam.pvalue.TaggedOutput(FAILED, (tile_id, failure_record(uri, tile_id, stage, exc)))


class GuardFn(beam.DoFn):
    """Run ``fn`` on each element; an exception becomes a keyed failure of the element's tile.

    ``fn`` is a plain function (element → iterable of outputs); ``tile_of`` finds the element's
    TileSpec (anything with ``uri`` and ``tile_id``) for the record.
    """

    def __init__(self, fn: Callable[[Any], Any], tile_of: Callable[[Any], Any], stage: str) -> None:
        self._fn = fn
        self._tile_of = tile_of
        self._stage = stage

    def process(self, element: Any) -> Iterator[Any]:
        try:
            outputs = list(self._fn(element))
        except Exception as exc:  # noqa: BLE001 - one element's failure must not stop the others
            tile = self._tile_of(element)
            yield keyed_failure(tile.uri, tile.tile_id, self._stage, exc)
            return
        yield from outputs


def guarded(label: str, fn: Callable[[Any], Any], tile_of: Callable[[Any], Any], stage: str,
            output_type: Any = None) -> beam.PTransform:
    """``label >> ParDo(GuardFn(...))`` with a ``failed`` output; ``output_type`` types the main one."""
    pardo = beam.ParDo(GuardFn(fn, tile_of, stage))
    if output_type is not None:
        pardo = pardo.with_output_types(output_type)
    return label >> pardo.with_outputs(FAILED, main="main")
