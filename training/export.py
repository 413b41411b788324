"""Export a trained model: the float32 ``.keras`` file, its metrics measured on the exported file
through the pipeline's patch-and-stitch code, the bfloat16/float16 label agreement, and the card."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import numpy as np

from common.metrics import summary
from model.architectures import macs_per_pixel
from model.card import ModelCard, load_card, save_card
from training import kampala
from training.config import TrainConfig, config_record
from training.evaluation import evaluate_images, segmenter, to_grey
from training.fit import MODEL_FILE, TrainResult, init_dir, provisional_card
from training.input_stats import input_stats
from training.splits import TrainingData
from training.train_data import LabelledImages

#: Pixels (the first images of the val split, or of the training images when nothing is held out)
#: on which each precision's labels are compared with float32's. bfloat16 is emulated, slowly, on
#: CPUs without AVX512-BF16: ~11 drone frames or 4 Dubai images say enough.
AGREEMENT_PIXELS = {"bfloat16": 1e7, "float16": 4e6}


def _first_pixels(images: LabelledImages, max_pixels: float) -> LabelledImages:
    """The first images whose pixels fit in ``max_pixels`` (always at least one)."""
    n, total = 0, 0
    while n < len(images.labels) and (n == 0 or total + images.labels[n].size <= max_pixels):
        total += images.labels[n].size
        n += 1
    return LabelledImages(images.images[:n], images.labels[:n], images.names[:n])


def _agreement(loaded: Any, card: ModelCard, val: LabelledImages, reference: list[np.ndarray],
               precision: str, max_pixels: float) -> tuple[float, int]:
    from model.loading import LoadedModel, set_precision
    from model.predictor import Predictor

    predictor = Predictor(LoadedModel(card, set_precision(loaded, precision), precision))
    subset = _first_pixels(val, max_pixels)
    _, preds = evaluate_images(predictor, subset, card)
    same = sum(int(np.sum(pred == ref)) for pred, ref in zip(preds, reference))
    return round(same / subset.pixels, 5), subset.pixels


def _extra_metrics(cfg: TrainConfig, data: TrainingData, predictor: Any, card: ModelCard,
                   rgb_miou: float) -> dict[str, Any]:
    """What a broadened training run claims, measured on the exported file: the validation mIoU on
    grey-converted images (models trained with grey crops) and the Building IoU on the partial-label
    set's val chips (models trained on it)."""
    extra: dict[str, Any] = {}
    names = [c.name for c in card.classes]
    if cfg.grey > 0:
        grey = LabelledImages([to_grey(i) for i in data.val.images], data.val.labels, data.val.names)
        cm, _ = evaluate_images(predictor, grey, card)
        s = summary(cm, names)
        extra["grey"] = {"miou": round(s["miou"], 4), "ratio_to_rgb": round(s["miou"] / rgb_miou, 4),
                         "per_class_iou": s["per_class_iou"],
                         "how": "val images as ITU-R 601 luminance in every band"}
        print(f"grey val mIoU {s['miou']:.4f} ({extra['grey']['ratio_to_rgb']:.3f} x RGB)", flush=True)
    # Kampala's val chips score models whose partial labels came from Kampala; other partial
    # labels (a test's generated scene) say nothing about them, and need no shared data.
    if data.partial is not None and data.split.get("partial", {}).get("dataset") == kampala.FOLDER:
        index = names.index(kampala.LABELLED_CLASS)
        extra[kampala.FOLDER] = {**kampala.evaluate_partial(segmenter(predictor), index),
                                 "split": "val chips", "class": kampala.LABELLED_CLASS}
        print(f"{kampala.FOLDER} val {kampala.LABELLED_CLASS} IoU {extra[kampala.FOLDER]['iou']}", flush=True)
    return extra


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
    predictor = Predictor(LoadedModel(card, loaded, "float32"))
    names = [c.name for c in card.classes]
    if data.val.images:
        cm, reference = evaluate_images(predictor, data.val, card)
        metrics: dict[str, Any] = {k: (round(v, 4) if isinstance(v, float) else v)
                                   for k, v in summary(cm, names).items()}
        metrics.update({
            "pixel_error": round(1.0 - metrics["pixel_accuracy"], 4),
            "split": "val", "fold": data.split.get("fold"), "images": len(data.val.images),
            "pixels": int(cm.sum()), "confusion": cm.tolist(), "precision": "float32",
            "evaluated_with": f"pipeline patch-and-stitch (common.segment_array), patch {cfg.patch_size}, halo {cfg.halo}",
            "selection": ("best validation mIoU epoch (early stopping on this split)" if cfg.select == "best"
                          else "last epoch (validation split never used for selection)"),
        })
        metrics.update(_extra_metrics(cfg, data, predictor, card, metrics["miou"]))
        agreed_on = data.val
    else:
        # Nothing held out (the shipped model of a cross-validated dataset): its figures are the
        # folds' (``tileseg train --fold all`` fills them in). Precision agreement needs no
        # held-out labels: it compares labels with labels, measured on training frames.
        metrics = {"split": "none (every image trained); see the cross-validation figures"}
        agreed_on = data.train
        _, reference = evaluate_images(predictor, _first_pixels(agreed_on, max(AGREEMENT_PIXELS.values())), card)
    eval_s = time.monotonic() - t0
    agreement, checked = {}, {}
    for precision, limit in AGREEMENT_PIXELS.items():
        agreement[precision], checked[precision] = _agreement(loaded, card, agreed_on, reference, precision, limit)
    scores = (f"val mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}" if "miou" in metrics
              else "no val split")
    print(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB): {scores} ({eval_s:.0f}s); "
          f"agreement with float32 {agreement}", flush=True)
    spec = data.spec
    sources = data.sources or [{"name": spec.name, "use": "full labels", "license": spec.license}]
    if cfg.init:  # the starting weights carry their own data's terms
        started = load_card(init_dir(cfg.init))
        sources = [*sources, {"name": f"{started.model_id} (starting weights)", "use": "fine-tuned from",
                              "license": started.training.get("data_license") or started.license}]
    if cfg.synthetic_fraction:
        sources = [*sources, {"name": "generated aerial scenes (common/synthetic.py)",
                              "use": f"{cfg.synthetic_fraction:.0%} of crops", "license": "made by this project"}]
    card = replace(
        card,
        description=cfg.description or f"{cfg.arch.upper()} for {spec.name}: {', '.join(spec.class_names)}.",
        license=("trained on " + "; ".join(f"{src['name']}, {src['license']}" for src in sources)
                 + ("; NON-COMMERCIAL USE ONLY" if any("NC" in src["license"] for src in sources) else "")),
        grey_ok=cfg.grey > 0 and card.num_bands == 3,
        # What radiometry and the domain check compare tiles with: this run's own training images.
        input_stats=input_stats(data.train.images, f"{spec.name} training images of this run "
                                                   f"({len(data.train.images)}; {data.split.get('rule', '')})"),
        precision_agreement=agreement,
        training={
            "dataset": spec.name, "data_license": spec.license, "split": data.split, "sources": sources,
            "architecture": {"arch": cfg.arch, **cfg.architecture(card.num_classes, spec.in_channels)},
            "parameters": result.params, "kmac_per_pixel": round(macs_per_pixel(loaded) / 1e3, 2),
            "config": config_record(cfg),
            "class_weights": [round(float(w), 4) for w in result.class_weights],
            "steps": result.steps, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "best_val_miou_during_training": round(result.best_miou, 4) if cfg.select == "best" else None,
            "stop": result.stop_reason,
            "wall_time_s": round(result.wall_s, 1), "history": result.history,
            "precision_agreement_pixels": checked,
            "command": command,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
        },
        metrics=metrics,
    )
    save_card(card, out)
    return card
