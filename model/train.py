"""``tileseg train``: train a U-Net (or the FCN-8s baseline) on a labelled dataset and export it.

    tileseg train --dataset {dubai-aerial,camvid,membrane,folder} [--arch unet|fcn] [--out DIR]
                  [--fold K|all] [--epochs N] [--max_minutes M] [--seed S] [architecture/optimiser options]

Each dataset has a preset (``PRESETS``: architecture, crop, batch, schedule, augmentation, patch
size and halo for the pipeline); any option given on the command line overrides it. Training
runs in ``mixed_bfloat16`` (about 2x float32 on CPUs with AVX512-BF16), Adam with warm-up and
cosine decay, pixel-weighted cross-entropy (class weights, ignore index weight 0; optionally plus a
soft-IoU term, ``model/losses.py``). After every
epoch the model segments the validation images through the pipeline's own patch-and-stitch code
(``transforms.segment_array``): the best mIoU is checkpointed, and training stops when it has not
improved for ``--patience`` epochs (counted in the second half of the schedule) or at
``--max_minutes``. The export is a float32 ``.keras``
file (safe-mode loadable, no custom code) plus its model card, with validation metrics measured on
the exported file and bfloat16/float16 label agreement.

Membrane cross-validation (``--fold all``) trains the five folds for a fixed number of epochs and
exports the last weights: the held-out fold never chooses anything, so its figures are unbiased.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator

import numpy as np

from model import datasets
from model.batchnorm import recalibrate
from model.card import ClassInfo, ModelCard, Normalisation, save_card
from model.losses import pack_targets, segmentation_loss
from model.metrics import confusion, summary
from model.synthetic import CLASSES as SYNTHETIC_CLASSES
from model.train_data import Augment, LabelledImages, class_weights, load_samples, make_dataset

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CHECKPOINTS = "checkpoints"
# Training pixels that re-measure the exported weights' batch-norm statistics: about 26 aerial
# batches. With 10, a 15-epoch aerial run exported at 0.5969 val mIoU weights the monitor (other
# batches, bf16) had measured at 0.6032; the export is worth a few more forward passes.
EXPORT_BN_PIXELS = 3e7


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    name: str
    version: str = "1.0.0"
    arch: str = "unet"
    depth: int = 4
    base_filters: int = 16
    input_stride: int = 1
    stem: str = "pool"              # input_stride > 1: "pool" (average) or "conv" (learned strided convolution)
    dropout: float = 0.0
    upsampling: str = "transpose"
    crop: int = 256
    batch: int = 8
    epochs: int = 30
    steps_per_epoch: int = 50
    lr: float = 2e-3
    weight_decay: float = 1e-4
    ema: float = 0.0                # > 0: evaluate and export an exponential moving average of the weights
    warmup_steps: int = 100
    patience: int = 8
    bn_batches: int = 10            # training batches that re-measure batch-norm statistics before each validation
    select: str = "best"           # "best" (validation mIoU) or "last" (cross-validation)
    max_minutes: float = 85.0
    seed: int = 0
    class_weighting: str = "sqrt"
    iou_loss: float = 0.0           # > 0: weight of the soft-IoU term added to the cross-entropy
    d4: bool = True
    jitter: float = 0.1
    zoom: float = 1.0               # > 1: crops zoomed by a log-uniform factor in [1/zoom, zoom]
    elastic: float = 0.0            # > 0: elastic deformation, displacement std (pixels) on a 3x3 grid
    synthetic_fraction: float = 0.0  # share of crops from generated aerial scenes (model/synthetic.py)
    patch_size: int = 512
    halo: int = 32
    fold: int = 0
    policy: str = "mixed_bfloat16"
    description: str = ""

    @property
    def size_multiple(self) -> int:
        return self.input_stride * 2**self.depth

    def architecture(self, num_classes: int, in_channels: int) -> dict[str, Any]:
        arch = dict(num_classes=num_classes, in_channels=in_channels, depth=self.depth,
                    base_filters=self.base_filters, batch_norm=True, dropout=self.dropout,
                    input_stride=self.input_stride, stem=self.stem)
        if self.arch == "unet":
            arch["upsampling"] = self.upsampling
        return arch


# Presets: chosen for accuracy per FLOP on this 2-core CPU within the 90-minute training budget.
# Aerial: the U-Net runs on a 2x average-pooled input (labels are polygons many pixels wide), so
# base 24 costs less than a full-resolution base 16 (4.7 vs 2.6 MPix/s bare, bf16) and sees twice
# the context. ``--stem conv --iou_loss 1`` converges faster (15-epoch paired runs, Dubai val
# mIoU 0.6032 -> 0.6180) but ends where this preset does after the full schedule (exported 0.6544
# vs 0.6535, for 27.5 vs 26.1 kMAC/pixel), so the preset keeps the cheaper pool stem.
# Stride 4 with base 32 (11.6 kMAC/pixel, 2.07x faster bare) exports only 0.6341 after its full
# schedule; depth 5 or stride 4 with base 48 lead at 15 epochs but weigh 70 MB (limit 40).
# Street: thin classes (poles, signs, pedestrians) need full resolution; only
# left-right flips (the sky stays on top). Membrane: full resolution, no class weights (the
# metric is pixel error), the paper's depth 4 and elastic deformations; left-right flips only,
# because the labels sit about 0.6 px above the dark membranes they trace (darkness/label
# cross-correlation peaks at a 0.6 px shift): rotations would scatter that offset in four
# directions, which no model can learn (fold 0 pixel error 0.0941 with D4 -> 0.0912). The aerial
# model also sees generated scenes (15 % of its crops) so that it segments the project's demo
# scene; its figures are on real Dubai val.
PRESETS: dict[str, dict[str, Any]] = {
    "dubai-aerial": dict(name="aerial-dubai6", depth=4, base_filters=24, input_stride=2, dropout=0.1,
                         crop=384, batch=8, epochs=60, steps_per_epoch=60, lr=2e-3, patience=12,
                         class_weighting="sqrt", d4=True, jitter=0.1, zoom=1.4, ema=0.99,
                         synthetic_fraction=0.15, patch_size=768, halo=64),
    "camvid": dict(name="street-camvid11", depth=4, base_filters=16, input_stride=1, dropout=0.1,
                   crop=320, batch=6, epochs=50, steps_per_epoch=55, lr=2e-3, patience=12,
                   class_weighting="sqrt", d4=False, jitter=0.1, zoom=1.25, ema=0.99,
                   patch_size=768, halo=64),
    "membrane": dict(name="membrane", depth=4, base_filters=16, input_stride=1, dropout=0.0,
                     crop=256, batch=4, epochs=14, steps_per_epoch=25, lr=2e-3, patience=0, ema=0.99,
                     select="last", class_weighting="none", d4=False, elastic=10.0, jitter=0.1, patch_size=512,
                     halo=32),
    "folder": dict(name="folder-model", depth=4, base_filters=16, input_stride=1, crop=256, batch=8,
                   epochs=30, steps_per_epoch=50, class_weighting="sqrt", d4=True, patch_size=512, halo=32),
}
FCN_DEPTH = 5  # strides 32/16/8: FCN-8s


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class TrainingData:
    spec: datasets.DatasetSpec
    train: LabelledImages
    val: LabelledImages
    split: dict[str, Any] = field(default_factory=dict)


def _folder_spec(a: argparse.Namespace) -> datasets.DatasetSpec:
    if not a.classes:
        raise datasets.DatasetError("--dataset folder needs --classes FILE.json: a list of "
                                    '{"name": ..., "color": [r, g, b]} in class-index order')
    try:
        with open(a.classes, encoding="utf-8") as f:
            entries = json.load(f)
        names = tuple(str(e["name"]) for e in entries)
        colors = tuple(tuple(int(v) for v in e["color"]) for e in entries)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise datasets.DatasetError(f"{a.classes}: cannot read class list ({exc}); expected a JSON list of "
                                    '{"name": ..., "color": [r, g, b]}') from None
    return datasets.DatasetSpec("folder", names, colors, a.license or "", a.channels)  # type: ignore[arg-type]


def load_training_data(a: argparse.Namespace, fold: int) -> TrainingData:
    if a.dataset != "folder":
        spec = datasets.spec(a.dataset)
        train_s = datasets.split(a.dataset, "train", fold)
        val_s = datasets.split(a.dataset, "val", fold)
        rule = {"dubai-aerial": "val = image_part_008 and image_part_009 of every tile",
                "camvid": "train = the 184 frames present (every other of the 367), val = the 101 val frames",
                "membrane": f"5-fold by image index; fold {fold} holds out images {fold * 6}-{fold * 6 + 5}"}[a.dataset]
        return TrainingData(spec, load_samples(train_s, spec), load_samples(val_s, spec),
                            {"rule": rule, "train_images": len(train_s), "val_images": len(val_s), "fold": fold})
    spec = _folder_spec(a)
    if not (a.images and a.labels):
        raise datasets.DatasetError("--dataset folder needs --images DIR and --labels DIR")
    pairs = datasets.folder_pairs(a.images, a.labels)
    if a.val_images and a.val_labels:
        train_s, val_s = pairs, datasets.folder_pairs(a.val_images, a.val_labels)
        rule = f"train = {a.images}, val = {a.val_images}"
    else:
        if len(pairs) < 2:
            raise datasets.DatasetError(f"{a.images} holds {len(pairs)} image; give at least 2 or --val_images/--val_labels")
        val_s = pairs[::5]
        train_s = [p for p in pairs if p not in val_s]
        rule = f"every 5th image of {a.images} (sorted by name) held out for validation"
    fmt = a.label_format
    return TrainingData(spec, load_samples(train_s, spec, fmt), load_samples(val_s, spec, fmt),
                        {"rule": rule, "train_images": len(train_s), "val_images": len(val_s)})


# --------------------------------------------------------------------------------------------
# Model


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int, policy: str) -> Any:
    """The configured architecture with every layer under ``policy`` (logits stay float32)."""
    import keras

    from model.fcn import build_fcn
    from model.unet import build_unet

    builder = {"unet": build_unet, "fcn": build_fcn}[cfg.arch]
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        return builder(**cfg.architecture(num_classes, in_channels), name=cfg.arch)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def macs_per_pixel(model: Any, size: int = 256) -> float:
    """Multiply-accumulates per input pixel of the convolutions (what dominates the cost)."""
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            shape = list(layer["config"]["batch_shape"])
            shape[1:3] = [size, size]
            layer["config"]["batch_shape"] = tuple(shape)
    static = keras.Model.from_config(config)
    macs = 0
    for layer in static.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            spatial = layer.input.shape   # each input pixel scatters a k x k kernel
        elif isinstance(layer, keras.layers.Conv2D):
            spatial = layer.output.shape
        else:
            continue
        k = int(np.prod(layer.kernel_size))
        macs += int(spatial[1]) * int(spatial[2]) * k * int(layer.input.shape[-1]) * layer.filters
    return macs / (size * size)


def provisional_card(cfg: TrainConfig, spec: datasets.DatasetSpec) -> ModelCard:
    """The card the pipeline needs to segment with this model (metrics are filled in at export)."""
    bands = ("gray",) if spec.in_channels == 1 else ("red", "green", "blue")
    return ModelCard(
        name=cfg.name, version=cfg.version, model_file=MODEL_FILE,
        classes=tuple(ClassInfo(i, n, tuple(c)) for i, (n, c) in enumerate(zip(spec.class_names, spec.class_colors))),  # type: ignore[arg-type]
        input_bands=bands,
        normalisation=Normalisation(mean=(0.0,) * len(bands), std=(1.0,) * len(bands)),
        patch_size=cfg.patch_size, halo=cfg.halo, size_multiple=cfg.size_multiple,
        output="logits", mask_nodata=255,
    )


def evaluate_images(predictor: Any, data: LabelledImages, card: ModelCard) -> tuple[np.ndarray, list[np.ndarray]]:
    """Confusion matrix over ``data`` and the predicted labels, through the pipeline's patch-and-stitch code."""
    from transforms.segment_array import segment_array

    cm = np.zeros((card.num_classes, card.num_classes), np.int64)
    preds = []
    divisor = card.normalisation.divisor_for("uint8")
    for image, label in zip(data.images, data.labels):
        pred = segment_array(image, predictor, divisor)
        cm += confusion(label, pred, card.num_classes)
        preds.append(pred)
    return cm, preds


# --------------------------------------------------------------------------------------------
# Training


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


def _swap_in_ema(model: Any) -> list[np.ndarray] | None:
    """Put the optimiser's moving average into the model's weights and return the raw values
    (None without EMA). Keras keeps the averages in ``_model_variables_moving_average`` and only
    swaps them in when ``fit`` ends; the monitor needs them every epoch."""
    optimizer = model.optimizer
    if not getattr(optimizer, "use_ema", False):
        return None
    raw = [np.array(v) for v in model.trainable_variables]
    optimizer._overwrite_model_variables_with_average_value(model.trainable_variables)
    return raw


def _monitor_callback(cfg: TrainConfig, card: ModelCard, val: LabelledImages, calibration: Iterator[Any],
                      ckpt_dir: str, deadline: float, steps_done: list[int]) -> Any:
    import keras

    from model.loading import LoadedModel
    from model.predictor import Predictor

    class Monitor(keras.callbacks.Callback):
        """Validation mIoU after every epoch, best-weights checkpoint, early stop, time budget."""

        def __init__(self) -> None:
            super().__init__()
            self.history: list[dict[str, float]] = []
            self.best, self.best_epoch, self.stale = -1.0, 0, 0
            self.best_weights: list[np.ndarray] | None = None
            self.stop_reason = "epochs done"
            self.predictor: Any = None

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            steps_done[0] += 1
            if time.monotonic() > deadline:
                self.stop_reason = f"time budget ({cfg.max_minutes:g} min)"
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if self.predictor is None:  # shares the training model's layers: always current weights
                self.predictor = Predictor(LoadedModel(card, self.model, cfg.policy))
            t0 = time.monotonic()
            entry = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", math.nan)),
                     "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
            self.history.append(entry)
            if cfg.select == "last":
                # Nothing is selected on the validation split (cross-validation): export measures it once.
                self.model.save_weights(os.path.join(ckpt_dir, "last.weights.h5"))
                print(f"epoch {epoch + 1:3d}  loss {entry['loss']:.4f}  lr {entry['lr']:.2e}", flush=True)
                return
            raw = _swap_in_ema(self.model)
            # Evaluate (and checkpoint) with statistics measured for the weights being evaluated.
            recalibrate(self.model, itertools.islice(calibration, cfg.bn_batches))
            cm, _ = evaluate_images(self.predictor, val, card)
            miou = summary(cm, [c.name for c in card.classes])["miou"]
            entry["val_miou"] = round(miou, 4)
            self.model.save_weights(os.path.join(ckpt_dir, "last.weights.h5"))
            if miou > self.best + 1e-4:
                self.best, self.best_epoch, self.stale = miou, epoch + 1, 0
                self.best_weights = [np.array(w) for w in self.model.get_weights()]
                self.model.save_weights(os.path.join(ckpt_dir, "best.weights.h5"))
            elif epoch + 1 > cfg.epochs // 2:
                # While the learning rate is high the validation score jumps about: a plateau only
                # counts in the second half.
                self.stale += 1
            if raw is not None:  # back to the raw weights the optimiser is updating
                for var, value in zip(self.model.trainable_variables, raw):
                    var.assign(value)
            print(f"epoch {epoch + 1:3d}  loss {entry['loss']:.4f}  val mIoU {miou:.4f}  best {self.best:.4f} "
                  f"(epoch {self.best_epoch})  lr {entry['lr']:.2e}  [val {time.monotonic() - t0:.0f}s]", flush=True)
            if cfg.select == "best" and cfg.patience and self.stale >= cfg.patience:
                self.stop_reason = f"val mIoU did not improve for {cfg.patience} epochs"
                self.model.stop_training = True

    return Monitor()


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
    augment = Augment(cfg.d4, cfg.jitter, (1 / cfg.zoom, cfg.zoom), cfg.elastic)
    dataset = make_dataset(data.train, cfg.crop, cfg.batch, cfg.seed, augment, weights,
                           cfg.synthetic_fraction).map(pack_targets)
    model = build_model(cfg, card.num_classes, data.spec.in_channels, cfg.policy)
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
                                    cfg.synthetic_fraction))
    monitor = _monitor_callback(cfg, card, data.val, calibration, ckpt_dir, start + cfg.max_minutes * 60, steps)
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    model.fit(dataset, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch, callbacks=[monitor], verbose=verbose,
              shuffle=False)
    wall = time.monotonic() - start
    chosen = monitor.best_weights if cfg.select == "best" and monitor.best_weights is not None else model.get_weights()
    export = build_model(cfg, card.num_classes, data.spec.in_channels, "float32")
    export.set_weights(chosen)
    # The exported float32 weights get their own, more precise statistics.
    recalibrate(export, itertools.islice(calibration, max(cfg.bn_batches, math.ceil(EXPORT_BN_PIXELS / (cfg.batch * cfg.crop**2)))))
    best_epoch = monitor.best_epoch if cfg.select == "best" else len(monitor.history)
    print(f"trained {steps[0]} steps in {wall / 60:.1f} min ({monitor.stop_reason}); "
          f"exporting {'best' if cfg.select == 'best' else 'last'} weights (epoch {best_epoch})", flush=True)
    return TrainResult(export, monitor.history, best_epoch, monitor.best, monitor.stop_reason, wall, steps[0],
                       model.count_params(), weights)


# --------------------------------------------------------------------------------------------
# Export


def _agreement(loaded: Any, card: ModelCard, val: LabelledImages, reference: list[np.ndarray],
               precision: str, max_pixels: float) -> tuple[float, int]:
    from model.loading import LoadedModel, set_precision
    from model.predictor import Predictor

    predictor = Predictor(LoadedModel(card, set_precision(loaded, precision), precision))
    # The first images whose pixels fit in max_pixels (always at least one).
    n, total = 0, 0
    while n < len(reference) and (n == 0 or total + reference[n].size <= max_pixels):
        total += reference[n].size
        n += 1
    _, preds = evaluate_images(predictor, LabelledImages(val.images[:n], val.labels[:n], val.names[:n]), card)
    same = sum(int(np.sum(pred == ref)) for pred, ref in zip(preds, reference))
    return round(same / total, 5), total


def export_model(cfg: TrainConfig, data: TrainingData, result: TrainResult, out: str, command: str) -> ModelCard:
    """Save the float32 ``.keras`` file, measure it on the validation images, write the card."""
    import keras
    import tensorflow as tf

    from model.loading import LoadedModel
    from model.predictor import Predictor

    card = provisional_card(cfg, data.spec)
    path = os.path.join(out, MODEL_FILE)
    result.model.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    t0 = time.monotonic()
    cm, reference = evaluate_images(Predictor(LoadedModel(card, loaded, "float32")), data.val, card)
    eval_s = time.monotonic() - t0
    names = [c.name for c in card.classes]
    metrics: dict[str, Any] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary(cm, names).items()}
    metrics.update({
        "pixel_error": round(1.0 - metrics["pixel_accuracy"], 4),
        "split": "val", "fold": data.split.get("fold"), "images": len(data.val.images),
        "pixels": int(cm.sum()), "confusion": cm.tolist(), "precision": "float32",
        "evaluated_with": f"pipeline patch-and-stitch (transforms.segment_array), patch {cfg.patch_size}, halo {cfg.halo}",
        "selection": ("best validation mIoU epoch (early stopping on this split)" if cfg.select == "best"
                      else "last epoch (validation split never used for selection)"),
    })
    agreement, checked = {}, {}
    for precision, limit in (("bfloat16", math.inf), ("float16", 4e6)):
        agreement[precision], checked[precision] = _agreement(loaded, card, data.val, reference, precision, limit)
    print(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB): val mIoU {metrics['miou']:.4f}, pixel accuracy "
          f"{metrics['pixel_accuracy']:.4f} ({eval_s:.0f}s); agreement with float32 {agreement}", flush=True)
    spec = data.spec
    card = replace(
        card,
        description=cfg.description or f"{cfg.arch.upper()} for {spec.name}: {', '.join(spec.class_names)}.",
        license=(f"trained on {spec.name}, {spec.license}"
                 + ("; NON-COMMERCIAL USE ONLY" if "NC" in spec.license else "")),
        precision_agreement=agreement,
        training={
            "dataset": spec.name, "data_license": spec.license, "split": data.split,
            "architecture": {"arch": cfg.arch, **cfg.architecture(card.num_classes, spec.in_channels)},
            "parameters": result.params, "kmac_per_pixel": round(macs_per_pixel(loaded) / 1e3, 2),
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("name", "version", "description")},
            "class_weights": [round(float(w), 4) for w in result.class_weights],
            "steps": result.steps, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "best_val_miou_during_training": round(result.best_miou, 4) if cfg.select == "best" else None, "stop": result.stop_reason,
            "wall_time_s": round(result.wall_s, 1), "history": result.history,
            "precision_agreement_pixels": checked,
            "command": command,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
        },
        metrics=metrics,
    )
    save_card(card, out)
    return card


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tileseg train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=sorted(PRESETS))
    p.add_argument("--arch", default="unet", choices=("unet", "fcn"))
    p.add_argument("--out", help="model directory to write (default model/weights/<name>)")
    p.add_argument("--fold", default="0", help="membrane fold 0-4, or 'all' for 5-fold cross-validation")
    g = p.add_argument_group("folder dataset")
    g.add_argument("--images"), g.add_argument("--labels")
    g.add_argument("--val_images"), g.add_argument("--val_labels")
    g.add_argument("--label_format", default="index", choices=("index", "rgb"))
    g.add_argument("--classes", help='JSON list of {"name": ..., "color": [r, g, b]} in class order')
    g.add_argument("--channels", type=int, default=3, choices=(1, 3))
    g.add_argument("--license", help="licence of the training data, recorded in the card")
    o = p.add_argument_group("overrides of the dataset preset")
    for name, kind in (("name", str), ("version", str), ("depth", int), ("base_filters", int),
                       ("input_stride", int), ("stem", str), ("dropout", float), ("upsampling", str), ("crop", int),
                       ("batch", int), ("epochs", int), ("steps_per_epoch", int), ("lr", float),
                       ("weight_decay", float), ("ema", float), ("warmup_steps", int), ("patience", int), ("bn_batches", int), ("select", str),
                       ("max_minutes", float), ("seed", int), ("class_weighting", str), ("iou_loss", float), ("jitter", float), ("zoom", float), ("elastic", float), ("synthetic_fraction", float),
                       ("patch_size", int), ("halo", int), ("policy", str)):
        o.add_argument(f"--{name}", type=kind, default=None)
    o.add_argument("--d4", type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                   help="true: D4 flips/rotations; false: left-right flips only")
    return p


def config_from_args(a: argparse.Namespace, fold: int) -> TrainConfig:
    preset = dict(PRESETS[a.dataset])
    if a.arch == "fcn":
        preset.update(depth=FCN_DEPTH, name=preset["name"] + "-fcn")
    overrides = {k: v for k, v in vars(a).items() if v is not None and k in TrainConfig.__dataclass_fields__
                 and k not in ("dataset", "fold", "arch")}
    cfg = TrainConfig(dataset=a.dataset, arch=a.arch, fold=fold, **{**preset, **overrides})
    problems = []
    if cfg.crop % cfg.size_multiple:
        problems.append(f"--crop {cfg.crop} must be a multiple of {cfg.size_multiple} (input_stride x 2^depth)")
    if cfg.patch_size % cfg.size_multiple:
        problems.append(f"--patch_size {cfg.patch_size} must be a multiple of {cfg.size_multiple}")
    if cfg.select not in ("best", "last"):
        problems.append("--select must be best or last")
    if cfg.stem not in ("pool", "conv"):
        problems.append("--stem must be pool or conv")
    if cfg.upsampling not in ("transpose", "resize"):
        problems.append("--upsampling must be transpose or resize")
    if cfg.policy not in ("mixed_bfloat16", "float32", "mixed_float16"):
        problems.append("--policy must be mixed_bfloat16, float32 or mixed_float16")
    if cfg.class_weighting not in ("none", "sqrt"):
        problems.append("--class_weighting must be none or sqrt")
    if cfg.iou_loss < 0:
        problems.append("--iou_loss must be >= 0 (0: cross-entropy only)")
    if cfg.zoom < 1:
        problems.append("--zoom must be >= 1 (1: no zoom)")
    if cfg.elastic < 0:
        problems.append("--elastic must be >= 0 (pixels of displacement; 0: off)")
    if not 0 <= cfg.ema < 1:
        problems.append("--ema must be in [0, 1) (0: off)")
    if cfg.epochs < 1 or cfg.steps_per_epoch < 1 or cfg.batch < 1 or cfg.bn_batches < 1:
        problems.append("--epochs, --steps_per_epoch, --batch and --bn_batches must be >= 1")
    if problems:
        raise datasets.DatasetError("; ".join(problems))
    return cfg


def _setup_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
    except RuntimeError:  # TensorFlow already running in this process (tests): keep its setting
        pass


def run_one(a: argparse.Namespace, fold: int, out: str, command: str) -> ModelCard:
    cfg = config_from_args(a, fold)
    data = load_training_data(a, fold)
    result = train(cfg, data, out)
    return export_model(cfg, data, result, out, command)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    a = _parser().parse_args(args)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    command = "tileseg train " + " ".join(shlex.quote(x) for x in args)
    try:
        folds = list(range(5)) if a.fold == "all" else [int(a.fold)]
        if a.fold == "all" and a.dataset != "membrane":
            raise datasets.DatasetError("--fold all is for membrane cross-validation only")
        first = config_from_args(a, folds[0])
        out = a.out or os.path.join("model", "weights", first.name)
        _setup_tf()
        if len(folds) == 1:
            card = run_one(a, folds[0], out, command)
            print(json.dumps({"model": card.model_id, "out": out, **{k: card.metrics[k] for k in
                              ("miou", "pixel_accuracy", "pixel_error", "per_class_iou")},
                              "wall_time_s": card.training["wall_time_s"]}))
            return 0
        rows = []
        for fold in folds:
            card = run_one(a, fold, os.path.join(out, f"fold{fold}"), command)
            rows.append({"fold": fold, "pixel_error": card.metrics["pixel_error"],
                         "cell_iou": card.metrics["per_class_iou"]["cell"], "miou": card.metrics["miou"],
                         "wall_time_s": card.training["wall_time_s"]})
            print(f"fold {fold}: pixel error {rows[-1]['pixel_error']:.4f}  cell IoU {rows[-1]['cell_iou']:.4f}", flush=True)
        mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("pixel_error", "cell_iou", "miou")}
        report = {"arch": a.arch, "folds": rows, "mean": mean,
                  "train_minutes_total": round(sum(r["wall_time_s"] for r in rows) / 60, 1)}
        with open(os.path.join(out, "cv.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"{a.arch} 5-fold mean: pixel error {mean['pixel_error']:.4f}  cell IoU {mean['cell_iou']:.4f}")
        print(json.dumps(report))
        return 0
    except (datasets.DatasetError, ValueError) as exc:
        print(f"tileseg train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from pipelines.cli import exit_now

    exit_now(main())
