"""Callbacks that make a run safe to interrupt: best weights that survive a
resume, early stopping that remembers its patience, a NaN guard, and the
history log, each stopping with one line when the disk is full; and the one
that re-estimates batch norm's statistics before each validation."""

from __future__ import annotations

import math
import os

import keras
import numpy as np

from core import compat
from core.batchnorm import PopulationStatistics, assign, moving_statistics
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


class AveragedWeights(keras.callbacks.Callback):
    """--ema: the model is validated, judged and kept with the optimizer's moving average of its weights.

    Polyak averaging: an optimizer built with ``use_ema`` (``training.optim.make_optimizer(ema=...)``) keeps
    an exponential moving average of every trained variable, and training goes on from the variables
    themselves.  This callback puts the averages in the model while it is validated and at the end of each
    epoch, so the history, the best-weights file and anything that scores the model then see the averaged
    one; ``back``, which goes just before the checkpoint callback, puts the trained weights back, so a
    checkpoint holds them (and the averages as optimizer state) and a resumed run trains on from where it
    stopped.  Keras' ``SwapEMAWeights`` leaves the averages in the model at checkpoints.

    Batch norm's moving statistics are not averaged: they were gathered with the trained weights.
    """

    def __init__(self):
        super().__init__()
        self.averaged = False  # the averages are in the model
        self.back = _TrainedWeightsBack(self)

    def swap(self) -> None:
        for variable, average in compat.ema_pairs(self.model.optimizer):
            trained = keras.ops.copy(variable.value)
            variable.assign(average.value)
            average.assign(trained)
        self.averaged = not self.averaged

    def on_test_begin(self, logs=None):
        if not self.averaged:
            self.swap()
            self._for_test = True

    def on_test_end(self, logs=None):
        if getattr(self, "_for_test", False):
            self.swap()
            self._for_test = False

    def on_epoch_end(self, epoch, logs=None):
        if not self.averaged:
            self.swap()


class _TrainedWeightsBack(keras.callbacks.Callback):
    """The second half of ``AveragedWeights``: the trained weights back in the model, before the checkpoint."""

    def __init__(self, averaged: AveragedWeights):
        super().__init__()
        self.averaged = averaged

    def on_epoch_end(self, epoch, logs=None):
        if self.averaged.averaged:
            self.averaged.swap()


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


class PreciseBatchNorm(keras.callbacks.Callback):
    """Batch norm's moving statistics re-estimated on clean training batches before every validation
    (Wu & Johnson's PreciseBN, ``core.batchnorm``), and the measurement that shows whether they matter.

    The re-estimation runs in ``on_test_begin``, so the validation scores, the
    best-weights file and the checkpoint written at the end of the epoch, and
    so the export, all carry statistics of the weights they go with.  An epoch
    without validation re-estimates at its end, before ``BestWeights`` (this
    callback goes first).  The next epoch puts the moving averages back and
    Keras goes on updating them, as it would without this callback: they are
    what the measurement compares with.

    At the end of training, on the last epoch's weights, it scores the
    validation split three ways: with the moving averages, with statistics
    re-estimated on clean training batches, and with each batch normalized by
    its own statistics.  ``measurement`` holds the three accuracies and the
    layer whose moving variance is furthest from the re-estimated one
    (``training.diagnose`` reads them); the model keeps the statistics it had.

    Args:
        network: the network as exported (``core.model.inference_model``),
            sharing its layers with the model being fitted.
        clean_batches: un-augmented, shuffled training batches of the training
            batch size (a ``tf.data`` dataset, iterated anew each time).
        val_batches: the validation split's (images, one-hot labels) batches,
            or None: no measurement.
        enabled: re-estimate (--precise-bn); off, only the measurement runs.
    """

    def __init__(self, network, clean_batches, val_batches=None, *, enabled: bool = True):
        super().__init__()
        self.statistics = PopulationStatistics(network)
        self.norms = self.statistics.norms
        self.network, self.clean_batches, self.val_batches = network, clean_batches, val_batches
        self.enabled = enabled
        self.measurement = None
        self._moving = None  # the moving averages the last re-estimation set aside
        self._epoch = -1

    def _reestimate(self) -> None:
        self._moving = moving_statistics(self.norms)
        self.statistics.reestimate(self.clean_batches)

    def on_train_begin(self, logs=None):
        self._moving = None  # a phase starts from the statistics it was given

    def on_epoch_begin(self, epoch, logs=None):
        if self._moving is not None:
            assign(self.norms, self._moving)
            self._moving = None
        self._epoch = epoch

    def on_test_begin(self, logs=None):
        if self.enabled:
            self._reestimate()

    def on_epoch_end(self, epoch, logs=None):
        if self.enabled and self._moving is None:
            self._reestimate()

    def on_train_end(self, logs=None):
        if self.val_batches is None or not self.norms or self._epoch < 0:
            return
        kept = moving_statistics(self.norms)
        try:
            if self.enabled:
                moving, reestimated = self._moving or kept, kept
            else:
                self.statistics.reestimate(self.clean_batches)
                moving, reestimated = kept, moving_statistics(self.norms)
            labels = [np.argmax(np.asarray(y), -1) for _, y in self.val_batches]
            if not labels:
                return
            labels = np.concatenate(labels)
            scores = {}
            for name, statistics in (("moving_average", moving), ("reestimated", reestimated)):
                assign(self.norms, statistics)
                # The fitted model's own evaluation (already traced); it shares the network's layers.
                scores[name] = round(float(self.model.evaluate(self.val_batches, verbose=0, return_dict=True)
                                           ["accuracy"]), 4)
            assign(self.norms, kept)
            scores["batch_statistics"] = _accuracy(self.statistics.predict(self.val_batches), labels)
        finally:
            assign(self.norms, kept)
        self.measurement = {"epoch": self._epoch + 1, "precise_bn": self.enabled, "val_accuracy": scores,
                            "variance_ratio": _furthest(self.norms, moving, reestimated)}


def _accuracy(probabilities, labels) -> float:
    return round(float(np.mean(np.argmax(probabilities, -1) == labels)), 4)


def _furthest(norms, moving, reestimated) -> dict:
    """The layer whose moving variance is furthest from the re-estimated one, as the median over its channels
    of (moving + epsilon) / (re-estimated + epsilon): what divides its outputs, squared, against what should."""
    ratios = [float(np.median((m[1] + layer.epsilon) / (r[1] + layer.epsilon)))
              for layer, m, r in zip(norms, moving, reestimated)]
    worst = max(range(len(ratios)), key=lambda i: abs(np.log(ratios[i])))
    return {"layer": norms[worst].name, "moving_over_reestimated": round(ratios[worst], 3)}
