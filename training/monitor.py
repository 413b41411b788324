"""The training monitor: validation mIoU after every epoch (through the pipeline's own
patch-and-stitch code), best-weights checkpoint, early stopping and the time budget."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from common.metrics import summary
from model.card import ModelCard
from training.batchnorm import recalibrate
from training.config import TrainConfig
from training.evaluation import evaluate_images
from training.train_data import LabelledImages


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


def monitor_callback(cfg: TrainConfig, card: ModelCard, val: LabelledImages, calibration: Iterator[Any],
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
