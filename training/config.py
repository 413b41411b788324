"""What a training run is: ``TrainConfig`` (architecture, data, schedule, augmentation, the
pipeline's patch grid) and its validation from the command line's overrides of a preset."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from model.architectures import architecture
from training import datasets
from training.presets import FCN_DEPTH, PRESETS


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
    batch_norm: bool = True
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
    partial_fraction: float = 0.0   # share of crops from hotosm-kampala's partial building labels (training/kampala.py)
    gamma: float = 0.0              # photometric augmentation (training/train_data.Augment)
    hue: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    grey: float = 0.0               # share of crops turned grey: > 0 makes the card say grey_ok
    patch_size: int = 512
    halo: int = 32
    fold: int | None = 0            # None: no fold held out (a cross-validated dataset's shipped model)
    policy: str = "mixed_bfloat16"
    init: str = ""                  # a model directory whose weights start the run (same architecture): fine-tuning
    description: str = ""

    @property
    def size_multiple(self) -> int:
        return architecture(self.arch).size_multiple(asdict(self))

    def architecture(self, num_classes: int, in_channels: int) -> dict[str, Any]:
        """The builder's arguments: the registry's config keys of ``arch``, taken from this config."""
        return dict(num_classes=num_classes, in_channels=in_channels, **architecture(self.arch).config(asdict(self)))


def config_record(cfg: TrainConfig) -> dict[str, Any]:
    """What a card records of its training configuration (name, version and description are the card's own)."""
    return {k: v for k, v in asdict(cfg).items() if k not in ("name", "version", "description")}


def config_from_args(a: argparse.Namespace, fold: int | None) -> TrainConfig:
    """The dataset's preset with the command line's overrides, validated (DatasetError lists every problem)."""
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
    elif fold is None and cfg.select != "last":
        problems.append("--fold none holds nothing out to select on: give --select last")
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
    for name in ("synthetic_fraction", "partial_fraction", "blur", "grey"):
        if not 0 <= getattr(cfg, name) <= 1:
            problems.append(f"--{name} must be in [0, 1]")
    if cfg.synthetic_fraction + cfg.partial_fraction > 1:
        problems.append("--synthetic_fraction + --partial_fraction must be <= 1 (the rest are the dataset's crops)")
    for name in ("gamma", "hue", "noise"):
        if getattr(cfg, name) < 0:
            problems.append(f"--{name} must be >= 0 (0: off)")
    if cfg.hue > 0.5:
        problems.append("--hue must be <= 0.5 (half the colour wheel)")
    if not 0 <= cfg.ema < 1:
        problems.append("--ema must be in [0, 1) (0: off)")
    if cfg.epochs < 1 or cfg.steps_per_epoch < 1 or cfg.batch < 1 or cfg.bn_batches < 1:
        problems.append("--epochs, --steps_per_epoch, --batch and --bn_batches must be >= 1")
    if problems:
        raise datasets.DatasetError("; ".join(problems))
    return cfg
