"""Failures: every stage's bad element becomes a record keyed by its tile, never a crash.

Each stage's PTransform returns its main output and a ``failed`` PCollection: ``(tile_id,
record)`` pairs for whole tiles, and ``BlockFailure``s for the block stages (read, inference,
stitch), which carry their tile and block so that WriteMasks counts them towards the tile's
blocks and refuses the tile; the run's failures table takes the records. The ``FAILED`` tag, the record and the guard that
turns an exception into one live here, so stages do not repeat them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from common.plan import BlockSpec

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


def printable(text: str) -> str:
    """``text`` with control characters (newlines, terminal escape codes in a file name) written
    as escapes, so a message is one line that cannot recolour or rewrite a terminal or a log."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def failure_record(uri: str, tile_id: str, stage: str, exc: BaseException) -> dict[str, Any]:
    """A failures row (run_id is filled in when the table is written). The ``uri`` column keeps
    the name as it is; the message, for people, shows it with printable escapes."""
    message = str(exc) or type(exc).__name__
    if uri not in message and printable(uri) not in message:
        message = f"{uri}: {message}"
    message = printable(message)
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


@dataclass(frozen=True)
class BlockFailure:
    """A block that failed, with its tile (a TileSpec) and block, and the failure record."""

    tile: Any
    block: BlockSpec
    record: dict[str, Any]


def block_failure(tile: Any, block: BlockSpec, stage: str, exc: BaseException) -> beam.pvalue.TaggedOutput:
    """The ``failed`` output of a block stage for one block of ``tile``."""
    return beam.pvalue.TaggedOutput(FAILED, BlockFailure(tile, block, failure_record(tile.uri, tile.tile_id, stage, exc)))


def windowed(out: Any, window: Any, timestamp: Any) -> Any:
    """``out`` (a value or a TaggedOutput) in the window and at the time of the element it came
    from: what a DoFn must yield from ``finish_bundle`` for outputs it held back (read-ahead,
    mask writer threads)."""
    if isinstance(out, beam.pvalue.TaggedOutput):
        # Beam documents windows as any iterable; its hint says tuple.
        return beam.pvalue.TaggedOutput(out.tag, WindowedValue(out.value, timestamp, [window]))  # type: ignore[arg-type]
    return WindowedValue(out, timestamp, [window])  # type: ignore[arg-type]  # as above


class GuardFn(beam.DoFn):
    """Run ``fn`` on each element; an exception becomes the failure output ``on_error`` makes.

    ``fn`` is a plain function (element → iterable of outputs); ``on_error(element, stage, exc)``
    returns the tagged failure (keyed_failure or block_failure) for the element.
    """

    def __init__(self, fn: Callable[[Any], Any], on_error: Callable[[Any, str, BaseException], Any], stage: str) -> None:
        self._fn = fn
        self._on_error = on_error
        self._stage = stage

    def process(self, element: Any) -> Iterator[Any]:
        try:
            outputs = list(self._fn(element))
        except Exception as exc:  # noqa: BLE001 - one element's failure must not stop the others
            yield self._on_error(element, self._stage, exc)
            return
        yield from outputs


def guarded(label: str, fn: Callable[[Any], Any], on_error: Callable[[Any, str, BaseException], Any], stage: str,
            output_type: Any = None) -> beam.PTransform:
    """``label >> ParDo(GuardFn(...))`` with a ``failed`` output; ``output_type`` types the main one."""
    pardo = beam.ParDo(GuardFn(fn, on_error, stage))
    if output_type is not None:
        pardo = pardo.with_output_types(output_type)
    return label >> pardo.with_outputs(FAILED, main="main")
