"""Load the model and compile its graph in the background while a local pipeline starts.

On a CPU the inference graph is compiled by XLA (model/loading.compile_with_xla) once per input
shape: ~2.3 s for the default U-Net at 1 × 1280², on the critical path of a local run, after the
first block is read. A local run knows the shape its first block will need before Beam has even
built the pipeline, so ``start`` loads the model and runs that shape once on zeros in a thread,
while the main thread builds the pipeline, lists and describes the tiles; the RunInference
handler then ``take``s the warm Predictor instead of loading its own. A guess that turns out
wrong (another shape first) costs the background thread's CPU and nothing else: the graph
compiles the shape it is given, as it would have.

Only for runs in this process (the DirectRunner with one worker): a worker in another process
could never take what this one warmed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from model.card import ModelCard
from model.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmShape:
    """What the first model call will look like: output kind, raw pixel dtype, (N, H, W, C), and
    the landing hazard classes whose probability rides along."""

    kind: str
    dtype: str
    shape: tuple[int, int, int, int]
    hazard: tuple[int, ...] = ()


class _Warming:
    def __init__(self, key: tuple[str, str, str]) -> None:
        self.key = key
        self.predictor: Predictor | None = None
        self.thread: threading.Thread | None = None


_slot: list[_Warming] = []
_lock = threading.Lock()


def _key(model_dir: str, precision: str, card: ModelCard) -> tuple[str, str, str]:
    return (model_dir, precision, card.model_id)


def start(model_dir: str, precision: str, card: ModelCard, first: WarmShape) -> None:
    """Begin loading ``model_dir`` at ``precision`` and compiling ``first`` in a daemon thread."""
    warming = _Warming(_key(model_dir, precision, card))

    def work() -> None:
        try:
            predictor = Predictor.from_dir(model_dir, precision, card)
            predictor.warm(first.kind, np.dtype(first.dtype), first.shape, first.hazard)
            warming.predictor = predictor
        except Exception as exc:  # noqa: BLE001 - the handler loads the model itself, and says why it fails
            log.debug("warming the model failed: %s", exc)

    warming.thread = threading.Thread(target=work, name="tileseg-warmup", daemon=True)
    with _lock:
        _slot.clear()
        _slot.append(warming)
    warming.thread.start()


def take(model_dir: str, precision: str, card: ModelCard) -> Predictor | None:
    """The Predictor ``start`` warmed for this model, once (waits for it); None if there is none."""
    with _lock:
        if not _slot or _slot[0].key != _key(model_dir, precision, card):
            return None
        warming = _slot.pop()
    if warming.thread is not None:
        warming.thread.join()
    return warming.predictor
