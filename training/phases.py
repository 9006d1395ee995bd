"""Training in phases, each resumable: one phase for a zoo model, two for fine-tuning.

A phase sets which weights train, compiles a fresh optimizer with its own
schedule, and fits for its epochs, continuing the run's epoch count, history
and best-weights file.  Each phase has its own checkpoint folder
(``training.checkpoint``, written atomically) and a ``<phase>.done`` marker,
so a killed run resumes inside the phase it was in, and a finished phase is
never rerun.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from typing import Callable

import numpy as np

from training import rundir
from training.callbacks import AveragedWeights, BestWeights, HistoryLog, NanGuard
from training.checkpoint import ResumableCheckpoint, committed_epoch


@dataclasses.dataclass
class Phase:
    """One stretch of training.

    Attributes:
        name: "train", "head" or "finetune"; names the backup folder.
        epochs: maximum epochs of this phase.
        lr: its (peak) learning rate.
        prepare: sets ``trainable`` flags on the model before compiling.
        fit_model: the model to fit when it is not the full model (the head
            alone, on cached features); its datasets come from ``datasets``.
        datasets: (train, val) for ``fit_model``; None uses the run's.
        passes: passes over the training data in one epoch (more than one
            only for a small training split; see ``passes_for``).
        warmup_epochs: linear warm-up of the learning rate, in epochs.
        keep_last: the phase's last epoch is what it keeps, not its best on
            validation, and it does not stop early.  For a phase whose
            validation split is too small to rank epochs (``SMALL_VALIDATION``):
            its schedule decays to zero, so its last weights are its result.
    """

    name: str
    epochs: int
    lr: float
    prepare: Callable = lambda model: None
    fit_model: object = None
    datasets: tuple | None = None
    passes: int = 1
    warmup_epochs: float = 0.0
    keep_last: bool = False
    schedule_epochs: int | None = None  # the schedule's length when it is not ``epochs`` (--time-budget)


def _marker(backup_root, phase):
    return os.path.join(backup_root, f"{phase.name}.done")


def read_marker(path: str) -> int | None:
    """The epoch a finished phase ended at, from its ``<phase>.done`` file (None: not finished)."""
    try:
        with open(path) as f:
            return int(json.load(f)["end_epoch"])
    except (OSError, ValueError, KeyError):
        return None


def _read_marker(backup_root, phase):
    return read_marker(_marker(backup_root, phase))


def completed_epochs(backup_root: str, phases: list[Phase]) -> int:
    """Epochs already done: all of each finished phase, then what the first unfinished one checkpointed."""
    done = 0
    for phase in phases:
        end = _read_marker(backup_root, phase)
        if end is None:
            return max(done, committed_epoch(os.path.join(backup_root, phase.name)))
        done = end
    return done


def load_best(model, path: str) -> None:
    if os.path.isfile(path):
        with warnings.catch_warnings():
            # The best-weights file also holds the optimizer of the phase that wrote it; only layers matter here.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(path)


def _best_so_far(history, monitor, mode):
    """The best ``monitor`` value and its epoch in a resumed run's history rows; (None, None) before any."""
    scored = [row for row in history if monitor in row]
    if not scored:
        return None, None
    row = (min if mode == "min" else max)(scored, key=lambda r: r[monitor])
    return row[monitor], row["epoch"]


def _describe(phase, start):
    """The line a phase announces itself with: its epochs, its learning rate and how it differs from a plain fit."""
    passes = f", {phase.passes} passes over the training data an epoch" if phase.passes > 1 else ""
    keeps = ", keeps its last epoch" if phase.keep_last else ""
    return (f"Phase {phase.name!r}: epochs {start + 1}-{start + phase.epochs}, learning rate {phase.lr:g}"
            f"{passes}{keeps}")


def run_phases(model, phases, *, compile_phase, train_ds, val_ds, run_dir, monitor, patience, history,
               class_weight, verbose, log, extra_callbacks=(), statistics=None, averaged=False):
    """Fits ``model`` phase by phase; returns the last phase's BestWeights callback.  ``extra_callbacks`` run
    after the run's own and before the backup (``training.budget.Deadline``); ``statistics``
    (``training.callbacks.PreciseBatchNorm``) before the best weights are kept, so they keep its statistics.
    ``averaged`` (--ema): validation, the history and the kept weights use the weights' moving average
    (``training.callbacks.AveragedWeights``), and the backup the trained weights."""
    import keras

    backup_root = os.path.join(run_dir, "backup")
    csv_path = os.path.join(run_dir, "history.csv")
    best_path = os.path.join(run_dir, "best.weights.h5")
    mode = "min" if monitor == "val_loss" else "max"
    best_value, best_epoch = _best_so_far(history, monitor, mode)
    start, best = 0, None
    for index, phase in enumerate(phases):
        end = _read_marker(backup_root, phase)
        if end is not None:
            start = end
            continue
        if index > 0:
            load_best(model, best_path)  # a new phase starts from the best weights so far
        if len(phases) > 1 or phase.passes > 1:
            log(_describe(phase, start))
        phase.prepare(model)
        target = phase.fit_model or model
        compile_phase(target, phase)
        best = BestWeights(best_path, monitor=monitor, mode=mode, patience=patience, best=best_value,
                           best_epoch=best_epoch, phase_start=start, save_model=model, keep_last=phase.keep_last)
        # The backup goes last: an epoch's history row and best weights are on disk before the
        # checkpoint that marks the epoch done, so a kill in between only repeats that epoch.
        average = [AveragedWeights()] if averaged else []  # one per phase: each compiles its own optimizer
        callbacks = [
            *average,
            NanGuard(),
            *([statistics] if statistics is not None else []),
            HistoryLog(csv_path, append=True),
            best,
            keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
            *extra_callbacks,
            *(a.back for a in average),
            ResumableCheckpoint(os.path.join(backup_root, phase.name)),
        ]
        fit_train, fit_val = phase.datasets or (train_ds, val_ds)
        if phase.passes > 1 and hasattr(fit_train, "repeat"):  # not a multi-worker DistributedDataset
            fit_train = fit_train.repeat(phase.passes)  # each repetition reshuffles
        target.fit(fit_train, validation_data=fit_val, initial_epoch=start, epochs=start + phase.epochs,
                   callbacks=callbacks, class_weight=class_weight, verbose=verbose,
                   shuffle=False)  # the pipeline shuffles; Keras would only warn
        end = best.stopped_epoch + 1 if best.stopped_epoch is not None else start + phase.epochs
        rundir.write_json(_marker(backup_root, phase), {"end_epoch": end})
        best_value, best_epoch, start = best.best, best.best_epoch, end
    load_best(model, best_path)
    return best


# Below this many validation images, picking the best epoch by validation loss picks noise: one image is
# two points of accuracy or more, and late epochs of a decaying schedule differ by less than that.  On
# bench/bench_transfer.py --tiny (10 validation images) the fine-tuning phase's best epoch was its first
# or second, so fine-tuning was thrown away; keeping its last epoch raised test accuracy at every size.
SMALL_VALIDATION = 50


def validation_ranks(labels) -> bool:
    """Whether a validation split with these labels is large enough to rank epochs, or two models, by its scores."""
    return len(labels) >= SMALL_VALIDATION


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return int(np.ceil(samples / batch_size))


def passes_for(epochs: int, steps: int, min_steps: int) -> int:
    """Passes over the data per epoch that give a phase of ``epochs`` at least ``min_steps`` optimizer steps.

    A folder of a few dozen images makes one or two steps an epoch: too few for
    a schedule to do anything before it is over.  Repeating the data inside
    each epoch keeps the epoch count (and the curves) the user asked for.
    """
    return max(1, int(np.ceil(min_steps / max(1, epochs * steps))))
