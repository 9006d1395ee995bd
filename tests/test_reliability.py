"""Crashes, odd folders and untrusted files: a run loses nothing and runs nothing it should not."""

from __future__ import annotations

import json
import os
import signal

import keras
import numpy as np
import pytest

from helpers import run_cli
from training.callbacks import BestWeights
from training.checkpoint import CRASH_ENV
from training.errors import UserError


def _train(tmp_path, *extra, crash=None):
    env = {CRASH_ENV: crash} if crash else None
    return run_cli("train.py", "--model", "mlp", "--epochs", "4", "--patience", "0", "--verbose", "0",
                   "--runs-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "exp"), *extra, env=env)


def test_sigkill_anywhere_then_the_same_command_finishes_the_run(tmp_path):
    run = tmp_path / "runs" / "mlp-digits"
    backup = run / "backup" / "train"

    # Killed after epoch 2's state file is complete but before the commit: epoch 1 is what counts.
    done = _train(tmp_path, crash="weights-written:2")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 1
    assert (backup / "epoch-1.weights.h5").is_file()

    # Killed in the middle of epoch 3.
    done = _train(tmp_path, crash="mid-epoch:3")
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert f"Resuming run {run} after epoch 1" in done.stdout
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 2
    assert not (run / "metrics.json").exists() and not (tmp_path / "exp").exists()

    done = _train(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"Resuming run {run} after epoch 2" in done.stdout
    history = (run / "history.csv").read_text().strip().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == [0, 1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4
    # The optimizer's step count (the learning-rate schedule's position) came back with the weights:
    # a resume that restarted the optimizer would count only the steps since the last start.
    steps = int(np.ceil(metrics["counts"]["train"] / 32))
    assert json.loads((backup / "training_metadata.json").read_text())["optimizer_steps"] == 4 * steps
    # The best epoch's score survived both resumes.
    val_losses = [float(line.split(",")[history[0].split(",").index("val_loss")]) for line in history[1:]]
    assert metrics["best_val_loss"] == pytest.approx(min(val_losses))
    assert os.path.isdir(tmp_path / "exp" / "mlp-digits" / "1")


def test_a_worse_epoch_never_replaces_the_best_weights_after_a_resume(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / "best.weights.h5")
    model.save_weights(path)
    saved = open(path, "rb").read()
    # A resumed run: its history says the best val_loss so far was 0.5, at epoch 1.
    best = BestWeights(path, monitor="val_loss", best=0.5, best_epoch=1)
    best.set_model(model)
    model.layers[0].kernel.assign(np.ones((3, 2)))
    best.on_epoch_end(4, {"val_loss": 0.9})
    assert open(path, "rb").read() == saved and (best.best, best.best_epoch) == (0.5, 1)
    best.on_epoch_end(5, {"val_loss": 0.4})
    assert (best.best, best.best_epoch) == (0.4, 5)
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), np.ones((3, 2)))
