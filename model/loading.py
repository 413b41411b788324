"""Load a model directory (card + ``.keras`` file) at a chosen precision.

Precision is chosen at load time, not baked into the weights: a ``.keras`` file saved in float32
keeps float32 layer policies, so setting the global policy changes nothing. To run in bfloat16 or
float16 the functional model is rebuilt from its config with every layer's dtype policy set to the
mixed policy, and the weights are copied over. Files are always loaded in Keras safe mode: a model
file that would run arbitrary code (a Lambda layer, a custom object) is refused.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from model.architectures import FLOAT32_LAYERS
from model.card import ModelCard, ModelCardError, load_card

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
AGREEMENT_FLOOR = 0.995


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # Several SDK processes on one GPU worker each load their own model: without memory growth the
    # first TensorFlow process would reserve the whole GPU and the others fail to allocate.
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    use_compile_cache()


@functools.lru_cache(maxsize=1)
def has_gpu() -> bool:
    """True when the Keras backend sees a GPU. Cached: every stage that records the precision
    asks, and the answer cannot change within a process."""
    _quiet_tf()
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    return False


def cpu_has_bf16() -> bool:
    """True where the CPU runs bfloat16 natively (AVX512-BF16 or AMX), so oneDNN gains from it."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compile_with_xla(precision: str) -> bool:
    """Whether the inference graph (normalisation, model, softmax, argmax, confidence) is compiled
    with XLA. Measured on a 2-core AVX2 CPU, float32, batches of 4 x 768²: the default U-Net
    1.30 → 1.45 MPix/s, the 1x1-convolution model 9.9 → 18.2 MPix/s (XLA fuses the elementwise
    steps around the convolutions), labels identical. Not where it was not measured: reduced
    precision on a CPU (oneDNN's bf16 kernels are what make it fast there) and GPUs."""
    return precision == "float32" and not has_gpu()


#: Where compiled XLA programs are kept between runs (``TILESEG_XLA_CACHE``; empty: no cache).
XLA_CACHE_ENV = "TILESEG_XLA_CACHE"


def xla_cache_dir() -> str | None:
    """The persistent XLA cache folder: ``$TILESEG_XLA_CACHE``, else ``$XDG_CACHE_HOME/tileseg/xla``
    (``~/.cache/tileseg/xla``); None when ``TILESEG_XLA_CACHE`` is set empty."""
    chosen = os.environ.get(XLA_CACHE_ENV)
    if chosen is not None:
        return chosen or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tileseg", "xla")


def use_compile_cache() -> None:
    """Let TensorFlow keep compiled XLA programs on disk, so a nightly run does not compile the
    same graph again (the default U-Net at 1280²: ~2-3 s per process on a 2-core CPU, ~1 s of it
    left with the cache warm: tracing is not cached). TensorFlow reads ``TF_XLA_FLAGS`` once, as
    it sets up its devices, so this runs before TensorFlow is used (``_quiet_tf``); a user's own
    ``--tf_xla_persistent_cache_directory`` wins. The cache holds compiled machine code: it lives
    in the user's own cache folder, like their Python packages. Its key covers the graph, its
    shapes and the device, so a changed model or TensorFlow compiles anew."""
    flags = os.environ.get("TF_XLA_FLAGS", "")
    folder = xla_cache_dir()
    if folder is None or "tf_xla_persistent_cache_directory" in flags:
        return
    if any(ch.isspace() for ch in folder):  # TF splits its flags on whitespace and aborts on a stray word
        log.debug("no XLA compile cache: its folder %r has whitespace in it", folder)
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:  # a read-only home: compile every time, as before
        log.debug("no XLA compile cache in %s (%s)", folder, exc)
        return
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={folder}".strip()


def resolve_precision(requested: str, card: ModelCard) -> str:
    """Turn ``auto`` into a concrete precision.

    ``auto`` takes the fastest precision for this hardware (float16 then bfloat16 on a GPU,
    bfloat16 on a CPU with native bf16, else float32) whose label agreement with float32, as
    measured when the model was exported and recorded in the card, is at least 99.5 %.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {requested!r}")
    if requested != "auto":
        return requested
    if has_gpu():
        candidates = ["float16", "bfloat16"]
    elif cpu_has_bf16():
        candidates = ["bfloat16"]
    else:
        candidates = []
    for cand in candidates:
        agreement = card.precision_agreement.get(cand)
        if agreement is not None and agreement >= AGREEMENT_FLOOR:
            return cand
    return "float32"


def set_precision(model: Any, precision: str) -> Any:
    """Return ``model`` rebuilt with every layer computing in ``precision`` (weights copied)."""
    import keras

    if precision == "float32":
        return model
    policy = _POLICY[precision]
    config = model.get_config()
    for layer_cfg in config["layers"]:
        cfg = layer_cfg["config"]
        if layer_cfg["class_name"] == "InputLayer":
            continue
        # The final cast-to-float32 layers (model.architectures.FLOAT32_LAYERS) keep their float32 policy.
        if isinstance(cfg.get("dtype"), dict) and cfg["dtype"].get("config", {}).get("name") == "float32" \
                and cfg.get("name") in FLOAT32_LAYERS:
            continue
        cfg["dtype"] = policy
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _load_keras(local: str, shown: str) -> Any:
    import zipfile

    import keras

    # A .keras file is a zip archive; a cut-off or damaged one makes Keras say "file not found",
    # which sends people looking in the wrong place.
    try:
        with zipfile.ZipFile(local) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile):
        damaged = local
    if damaged is not None:
        raise ModelCardError(f"{shown}: not a complete .keras file (damaged or cut off); copy or export "
                             "the model again")

    try:
        return keras.saving.load_model(local, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many types for bad or unsafe files
        # Keras's messages run to paragraphs (and tracebacks); the first sentence says what is wrong.
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ModelCardError(f"{shown}: cannot load the model in Keras safe mode ({reason}); a model file that "
                             "runs code (Lambda layers, custom objects) is refused - re-export it without") from None


def check_model(model_dir: str, card: ModelCard) -> None:
    """Load the model once (safe mode) and check it against its card: input bands and classes.
    Raises ModelCardError saying what is wrong, so a bad model is a bad option, not a failed job."""
    loaded = load_model(model_dir, "float32", card)
    _checked.clear()
    _checked.append((_local_key(model_dir, card), loaded.model))
    shape = tuple(loaded.model.input_shape)
    if shape[-1] != card.num_bands:
        raise ModelCardError(f"{model_dir}: the model takes {shape[-1]} input band(s) but its card lists "
                             f"{card.num_bands} ({', '.join(card.input_bands)}); fix input_bands in card.json")
    out = tuple(loaded.model.output_shape)
    if out[-1] != card.num_classes:
        raise ModelCardError(f"{model_dir}: the model outputs {out[-1]} classes but its card lists {card.num_classes}")


#: The model ``check_model`` loaded, for the next ``load_model`` of the same local file in this
#: process (the pipeline checks the model before the job starts, then its first worker loads it:
#: on the DirectRunner, the same process, and the second load cost ~1 s). Handed over once, never
#: shared: whoever loads it next owns it.
_checked: list[tuple[tuple[str, int, int, str], Any]] = []


def _local_key(model_dir: str, card: ModelCard) -> tuple[str, int, int, str]:
    if "://" in model_dir:
        return ("", 0, 0, "")
    path = os.path.abspath(os.path.join(model_dir, card.model_file))
    stat = os.stat(path)
    return (path, stat.st_mtime_ns, stat.st_size, json.dumps(card.to_json(), sort_keys=True))


def _take_checked(model_dir: str, card: ModelCard) -> Any:
    if not _checked:
        return None
    key, model = _checked.pop()
    return model if key[0] and key == _local_key(model_dir, card) else None


@dataclass
class LoadedModel:
    card: ModelCard
    model: Any
    precision: str


def load_model(model_dir: str, precision: str = "auto", card: ModelCard | None = None) -> LoadedModel:
    """Load ``model_dir`` (card + .keras, safe mode) at ``precision`` ('auto' resolved here).

    ``card``: the card already read and validated (workers get it with the job, so they do not
    read ``card.json`` again); read from ``model_dir`` when not given.
    """
    _quiet_tf()
    if card is None:
        card = load_card(model_dir)
    if "://" in model_dir:
        from common import fileio  # fsspec only for remote model dirs (see model/card.py)

        path = fileio.join(model_dir, card.model_file)
        with fileio.local_scratch() as tmp:
            local = os.path.join(tmp, card.model_file)
            with fileio.open_file(path, "rb") as src, open(local, "wb") as dst:
                dst.write(src.read())
            model = _load_keras(local, path)
    else:
        path = os.path.join(model_dir, card.model_file)
        model = _take_checked(model_dir, card) or _load_keras(path, path)
    chosen = resolve_precision(precision, card)
    model = set_precision(model, chosen)
    log.info("loaded %s from %s at %s", card.model_id, path, chosen)
    return LoadedModel(card=card, model=model, precision=chosen)
