"""Smoke test of the worker image: the default model segments one patch on the GPU.

    docker run --rm --gpus all --entrypoint python IMAGE /opt/tileseg/deploy/gpu_check.py
    python deploy/gpu_check.py --allow-cpu      # no GPU here: check the rest on the CPU

Loads the model the pipeline would load (``model.shipped.DEFAULT_MODEL`` unless ``--model``), with
TensorFlow's GPU memory growth on, as each of a worker's SDK processes runs it, segments one patch
of the card's patch size from the project's scene generator, and prints one JSON line: device,
precision, seconds (first call, with tracing, and a second call), the label histogram. Exit 1 when
no GPU is visible (unless ``--allow-cpu``) or the labels are not the card's classes; exit 2 when
the model cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _gpu_names(backend: str) -> list[str]:
    """Visible GPUs (names where the backend says them); memory growth on under TensorFlow, so the
    several SDK processes of one worker can share its GPU."""
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = []
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
            details = tf.config.experimental.get_device_details(gpu)
            names.append(str(details.get("device_name", gpu.name)))
        return names
    if backend == "jax":
        import jax

        return [str(d.device_kind) for d in jax.devices() if d.platform == "gpu"]
    return []


def main(argv: list[str] | None = None) -> int:
    from model.shipped import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="deploy/gpu_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder (default: the shipped default model)")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no GPU is visible instead of failing")
    p.add_argument("--seed", type=int, default=5, help="scene seed of the test patch")
    a = p.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    from common.synthetic import render_window
    from model.card import ModelCardError
    from model.predictor import Predictor

    backend = keras.backend.backend()
    gpus = _gpu_names(backend)
    if not gpus and not a.allow_cpu:
        print("gpu_check: no GPU visible to TensorFlow (is the NVIDIA driver installed, the container started "
              "with --gpus all, and are the CUDA libraries in the loader path? see deploy/cuda_libs.py); "
              "--allow-cpu runs the check on the CPU", file=sys.stderr)
        return 1
    try:
        predictor = Predictor.from_dir(a.model, a.precision)
    except ModelCardError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    card = predictor.card
    size = card.patch_size
    rgb, _ = render_window(a.seed, 0, 0, size, size)
    if card.num_bands == 3:
        patch = rgb
    elif card.num_bands == 1:
        patch = rgb.mean(axis=-1, keepdims=True).astype(np.uint8)
    else:
        patch = np.random.default_rng(a.seed).integers(0, 256, (size, size, card.num_bands), dtype=np.uint8)
    batch = patch[None]
    divisor = card.normalisation.divisor_for("uint8")

    t0 = time.perf_counter()
    predictor.predict_labels(batch, 1, divisor)  # traces the graph
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = predictor.predict_labels(batch, 1, divisor)[0]
    seconds = time.perf_counter() - t0

    counts = np.bincount(labels.ravel(), minlength=card.num_classes)
    result = {
        "ok": bool(labels.shape == (size, size) and labels.max() < card.num_classes),
        "device": gpus[0] if gpus else "cpu",
        "gpu": bool(gpus),
        "backend": backend,
        "model": card.model_id,
        "precision": predictor.precision,
        "patch": [int(labels.shape[0]), int(labels.shape[1])],
        "first_call_seconds": round(first, 3),
        "seconds": round(seconds, 3),
        "mpix_s": round(size * size / seconds / 1e6, 2),
        "histogram": {str(i): int(n) for i, n in enumerate(counts)},
        "class_names": [c.name for c in card.classes],
    }
    print(json.dumps(result))
    if not result["ok"]:
        print(f"gpu_check: labels of shape {labels.shape} up to {labels.max()} are not {size}x{size} patches "
              f"of the card's {card.num_classes} classes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Leave without TensorFlow's static destructors (they can abort a finished process, common/cli.py).
    from common.cli import exit_now

    exit_now(main())
