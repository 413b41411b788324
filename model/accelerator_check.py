"""Check a model directory on an accelerator: safe-mode load, throughput and label agreement per precision.

    KERAS_BACKEND=jax python -m model.accelerator_check --model model/weights/aerial-dubai6

Runs on any Keras 3 backend (the GPU check machine has JAX, not TensorFlow) and needs only numpy
and keras: patches come from the project's scene generator, predictions from the same Predictor
the pipeline uses. Prints one JSON object: device, the precision ``auto`` resolves to, MPix/s of
patch pixels and agreement with float32 labels for float32, bfloat16 and float16.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.accelerator_check")
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args(argv)

    import keras

    from common.synthetic import render_window
    from model.loading import has_gpu, load_model
    from model.predictor import Predictor

    base = load_model(a.model, "float32")
    card = base.card
    size = card.patch_size
    patches = np.stack([render_window(5, i * size, 0, size, size)[0] for i in range(a.batch)])
    result: dict = {"backend": keras.backend.backend(), "gpu": has_gpu(), "model": card.model_id,
                    "patch": size, "batch": a.batch, "auto": load_model(a.model, "auto").precision}
    reference = None
    for precision in ("float32", "bfloat16", "float16"):
        predictor = Predictor(load_model(a.model, precision))
        labels = predictor.predict_labels(patches, a.batch, 255.0)  # compile + warm up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            predictor.predict_labels(patches, a.batch, 255.0)
            n += 1
        mpix = n * patches.shape[0] * size * size / (time.perf_counter() - t0) / 1e6
        if reference is None:
            reference = labels
        result[precision] = {"mpix_s": round(mpix, 1), "agreement": round(float(np.mean(labels == reference)), 5)}
        print(precision, result[precision], flush=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
