"""Callbacks that make a run safe to interrupt: best weights that survive a
resume, early stopping that remembers its patience, a NaN guard, and the
history log, each stopping with one line when the disk is full."""

from __future__ import annotations

import math
import os

import keras

from core.errors import size_of, writing


class NanLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, epoch: int, step: int, loss: float):
        super().__init__(f"loss became {loss} at epoch {epoch + 1}, step {step + 1}")
        self.epoch, self.step, self.loss = epoch, step, loss


class NanGuard(keras.callbacks.Callback):
    """Stops at the first non-finite loss by raising, so no later callback
    (checkpointing in particular) ever sees the broken weights."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NanLossError(getattr(self, "_epoch", 0), batch, float(loss))


class BestWeights(keras.callbacks.Callback):
    """Keeps the best weights on disk and stops early, across resumes.

    Unlike ``keras.callbacks.EarlyStopping`` its state (best score, best epoch)
    is passed in from the run's history, so a resumed run neither forgets its
    best model nor restarts its patience.  Weights are written to a temporary
    file and renamed, so an interrupted write never replaces a good file.

    Args:
        path: where the best weights go (``*.weights.h5``).
        monitor: a logged metric, e.g. "val_loss".
        mode: "min" or "max".
        patience: epochs without improvement before stopping; 0 disables it.
        best, best_epoch: state from earlier epochs of this run (or None).
        keep_last: every epoch replaces the kept weights and nothing stops
            early: the phase's result is its last epoch (a validation split too
            small to rank epochs; ``training.phases.Phase.keep_last``).
    """

    def __init__(self, path, *, monitor="val_loss", mode="min", patience=0, best=None, best_epoch=None,
                 phase_start=0, save_model=None, keep_last=False):
        super().__init__()
        self.keep_last = keep_last
        patience = 0 if keep_last else patience
        self.path, self.monitor, self.mode, self.patience = path, monitor, mode, int(patience or 0)
        self.best, self.best_epoch = best, best_epoch
        # Patience counts from the start of the current phase: a fine-tuning phase gets its own chance.
        self.phase_start = phase_start
        # The model whose weights are kept (the full classifier when only its head is being fitted).
        self.save_model = save_model
        self.stopped_epoch = None

    def _better(self, value):
        if self.best is None or self.keep_last:
            return True
        value = float(value)
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if not self.keep_last and (value is None or not math.isfinite(float(value))):
            return
        if self._better(value):
            self.best, self.best_epoch = (None if value is None else float(value)), epoch
            tmp = self.path + ".tmp.weights.h5"
            with writing(self.path, needed=size_of(self.path), cleanup=[tmp]):  # a full disk keeps the old file
                (self.save_model or self.model).save_weights(tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())  # on disk before the rename, so a power cut cannot leave an empty file
                os.replace(tmp, self.path)
        elif self.patience and epoch - max(self.best_epoch, self.phase_start - 1) >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True


class HistoryLog(keras.callbacks.CSVLogger):
    """Keras' ``CSVLogger`` (``history.csv``, a row appended per epoch) that reports a full disk as such.

    The file is appended to in place, so a failed write can leave a torn last
    row; that epoch was not checkpointed yet (the checkpoint callback runs
    after this one), and resuming drops the row and reruns the epoch
    (``training.rundir.trim_history``).
    """

    def __init__(self, path: str, **kwargs):
        super().__init__(path, **kwargs)
        self.path = path

    def on_train_begin(self, logs=None):
        with writing(self.path):
            super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        with writing(self.path):
            super().on_epoch_end(epoch, logs)
