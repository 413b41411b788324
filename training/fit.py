"""Fit a configured architecture on the training images: the loss, AdamW with warm-up and cosine
decay, optional EMA of the weights, and a float32 copy of the selected weights for export."""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.synthetic import CLASSES as SYNTHETIC_CLASSES
from model.architectures import FLOAT32_HEAD, architecture, macs_per_pixel
from model.card import ClassInfo, ModelCard, Normalisation
from model.loading import load_model
from model.shipped import WEIGHTS_DIR
from training import datasets
from training.batchnorm import recalibrate
from training.config import TrainConfig
from training.losses import pack_targets, segmentation_loss
from training.monitor import monitor_callback
from training.splits import TrainingData
from training.train_data import Augment, class_weights, make_dataset

MODEL_FILE = "model.keras"
CHECKPOINTS = "checkpoints"
# Training pixels that re-measure the exported weights' batch-norm statistics: about 26 aerial
# batches. With 10, a 15-epoch aerial run exported at 0.5969 val mIoU weights the monitor (other
# batches, bf16) had measured at 0.6032; the export is worth a few more forward passes.
EXPORT_BN_PIXELS = 3e7


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int, policy: str) -> Any:
    """The configured architecture with every layer under ``policy`` (logits stay float32)."""
    import keras

    builder = architecture(cfg.arch).build
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        return builder(**cfg.architecture(num_classes, in_channels), name=cfg.arch)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def init_dir(init: str) -> str:
    """``--init``: a model folder, or the name of a shipped model (``model/weights/<name>``)."""
    shipped = os.path.join(WEIGHTS_DIR, init)
    return shipped if not os.path.isdir(init) and os.path.isfile(os.path.join(shipped, "card.json")) else init


def start_from(model: Any, model_dir: str) -> None:
    """Fine-tuning: copy the weights of ``model_dir``'s model (loaded in safe mode) into ``model``,
    layer by layer (matched by name).

    Only the class head may differ (another dataset's classes: ``logits_conv`` and the fixed
    bilinear upsampler keep this model's fresh weights); any other mismatch names the layer and
    both shapes, not a Keras trace.
    """
    source = load_model(init_dir(model_dir), precision="float32").model
    theirs = {layer.name: layer for layer in source.layers}
    head = {"logits_conv", *FLOAT32_HEAD}
    copied, fresh, problems = 0, [], []
    for layer in model.layers:
        ours = layer.get_weights()
        if not ours:
            continue
        other = theirs.get(layer.name)
        weights = other.get_weights() if other is not None else []
        if [w.shape for w in weights] == [w.shape for w in ours]:
            layer.set_weights(weights)
            copied += 1
        elif layer.name in head:
            fresh.append(layer.name)
        else:
            problems.append(f"{layer.name}: {[w.shape for w in ours]} here, "
                            f"{[w.shape for w in weights] if other is not None else 'absent'} there")
    if problems:
        raise datasets.DatasetError(f"--init {model_dir}: its architecture differs from this run's ({'; '.join(problems[:3])}"
                                    f"{' ...' if len(problems) > 3 else ''}); give the same --depth/--base_filters/"
                                    f"--input_stride as its card")
    print(f"starting from the weights of {model_dir} ({copied} layers"
          f"{'; new class head: ' + ', '.join(fresh) if fresh else ''})", flush=True)


def provisional_card(cfg: TrainConfig, spec: datasets.DatasetSpec) -> ModelCard:
    """The card the pipeline needs to segment with this model (metrics are filled in at export)."""
    bands = ("gray",) if spec.in_channels == 1 else ("red", "green", "blue")
    return ModelCard(
        name=cfg.name, version=cfg.version, model_file=MODEL_FILE,
        classes=tuple(ClassInfo(i, n, tuple(c)) for i, (n, c) in enumerate(zip(spec.class_names, spec.class_colors))),  # type: ignore[arg-type]
        input_bands=bands,
        normalisation=Normalisation(mean=(0.0,) * len(bands), std=(1.0,) * len(bands)),
        patch_size=cfg.patch_size, halo=cfg.halo, size_multiple=cfg.size_multiple,
        output="logits", mask_nodata=255, landing=dict(spec.landing),
    )


@dataclass
class TrainResult:
    model: Any                 # float32 copy of the selected weights
    history: list[dict[str, float]]
    best_epoch: int
    best_miou: float
    stop_reason: str
    wall_s: float
    steps: int
    params: int
    class_weights: np.ndarray


def train(cfg: TrainConfig, data: TrainingData, out: str, verbose: int | None = None) -> TrainResult:
    """Fit the configured model on ``data.train``, monitoring ``data.val``; float32 model back."""
    import keras

    card = provisional_card(cfg, data.spec)
    keras.utils.set_random_seed(cfg.seed)
    counts = data.train.class_counts(card.num_classes)
    weights = class_weights(counts, cfg.class_weighting)
    if cfg.synthetic_fraction and [c.name for c in card.classes] != [n for n, _ in SYNTHETIC_CLASSES]:
        raise datasets.DatasetError(f"--synthetic_fraction needs the generated scenes' classes "
                                    f"{[n for n, _ in SYNTHETIC_CLASSES]}; {data.spec.name} has others")
    augment = Augment(cfg.d4, cfg.jitter, (1 / cfg.zoom, cfg.zoom), cfg.elastic, gamma=cfg.gamma, hue=cfg.hue,
                      blur=cfg.blur, noise=cfg.noise, grey=cfg.grey)
    dataset = make_dataset(data.train, cfg.crop, cfg.batch, cfg.seed, augment, weights,
                           cfg.synthetic_fraction, data.partial, cfg.partial_fraction).map(pack_targets)
    model = build_model(cfg, card.num_classes, data.spec.in_channels, cfg.policy)
    if cfg.init:
        start_from(model, cfg.init)
    total = cfg.epochs * cfg.steps_per_epoch
    warm = min(cfg.warmup_steps, max(total // 10, 1))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.lr * 0.05, decay_steps=max(total - warm, 1), alpha=0.02,
        warmup_target=cfg.lr, warmup_steps=warm)
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay, use_ema=cfg.ema > 0,
                                       ema_momentum=cfg.ema or 0.99)
    model.compile(optimizer=optimizer,
                  loss=segmentation_loss(card.num_classes, cfg.iou_loss))
    print(f"{cfg.arch} {cfg.architecture(card.num_classes, data.spec.in_channels)}: "
          f"{model.count_params():,} parameters, {macs_per_pixel(model) / 1e3:.1f} kMAC/pixel, policy {cfg.policy}; "
          f"{len(data.train.images)} train images ({data.train.pixels / 1e6:.1f} MPix), "
          f"{len(data.val.images)} val; class weights {[round(float(w), 3) for w in weights]}", flush=True)
    ckpt_dir = os.path.join(out, CHECKPOINTS)
    os.makedirs(ckpt_dir, exist_ok=True)
    start = time.monotonic()
    steps = [0]
    # Batches for re-measuring batch-norm statistics: the training distribution, another seed.
    calibration = iter(make_dataset(data.train, cfg.crop, cfg.batch, cfg.seed + 1, augment, weights,
                                    cfg.synthetic_fraction, data.partial, cfg.partial_fraction))
    monitor = monitor_callback(cfg, card, data.val, calibration, ckpt_dir, start + cfg.max_minutes * 60, steps)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    model.fit(dataset, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch, callbacks=[monitor], verbose=verbose,
              shuffle=False)
    wall = time.monotonic() - start
    chosen = monitor.best_weights if cfg.select == "best" and monitor.best_weights is not None else model.get_weights()
    export = build_model(cfg, card.num_classes, data.spec.in_channels, "float32")
    export.set_weights(chosen)
    # The exported float32 weights get their own, more precise statistics.
    recalibrate(export, itertools.islice(calibration,
                                         max(cfg.bn_batches, math.ceil(EXPORT_BN_PIXELS / (cfg.batch * cfg.crop**2)))))
    best_epoch = monitor.best_epoch if cfg.select == "best" else len(monitor.history)
    print(f"trained {steps[0]} steps in {wall / 60:.1f} min ({monitor.stop_reason}); "
          f"exporting {'best' if cfg.select == 'best' else 'last'} weights (epoch {best_epoch})", flush=True)
    return TrainResult(export, monitor.history, best_epoch, monitor.best, monitor.stop_reason, wall, steps[0],
                       model.count_params(), weights)
