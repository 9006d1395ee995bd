"""Insight on real digits runs: each diagnosis regime reached and named, the LR finder's
suggestion, the mistakes grid, compare and ensembles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT

import train as train_cli
from insight import diagnose
from training import run as training_run

QUIET = {"verbose": 0, "patience": 0, "export": False}

# Each regime engineered on digits (1,797 8x8 images; 1,259 train / 179 val by default).
REGIMES = {
    # A learning rate 30x too small for 3 epochs: the loss is still on its way down.
    "underfitting": {"model": "mlp", "lr": 3e-5, "epochs": 3},
    # LeNet-5 at twice its width on 108 training images, no label smoothing, no regularization:
    # validation loss turns up while the training loss keeps falling.
    "overfitting": {"model": "lenet5_modern", "width": 2, "lr": 1e-3, "epochs": 25, "label_smoothing": 0.0,
                    "test_fraction": 0.89, "val_fraction": 0.05, "schedule": "constant", "batch_size": 8},
    # The MLP on 180 training images learns them all; validation loss flattens out well above.
    "needs_more_data": {"model": "mlp", "epochs": 20, "label_smoothing": 0.0, "test_fraction": 0.8,
                        "schedule": "constant", "batch_size": 16},
    # Adam at learning rate 10.
    "diverging": {"model": "mlp", "lr": 10.0, "epochs": 4, "schedule": "constant"},
    # The defaults (Adam 1e-3, cosine, label smoothing 0.1) for 6 epochs on the full split.
    "good_fit": {"model": "mlp", "epochs": 6},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("insight")
    done = {}
    for verdict, options in REGIMES.items():
        config = {**QUIET, **options, "run_name": verdict, "runs_dir": str(base / "runs"),
                  "export_dir": str(base / "saved_models"), "export": verdict in ("good_fit", "needs_more_data")}
        done[verdict] = training_run.train(config, log=lambda *_: None)
    return base, done


@pytest.mark.parametrize("verdict", list(REGIMES))
def test_each_regime_is_reached_by_a_real_run_and_named(runs, verdict):
    _, done = runs
    metrics = done[verdict]
    saved = json.load(open(os.path.join(metrics["run_dir"], "metrics.json")))
    diagnosis = saved["diagnosis"]
    assert diagnosis["verdict"] == verdict, diagnosis
    assert diagnosis["evidence"] and any(ch.isdigit() for ch in " ".join(diagnosis["evidence"]))
    flags = {word.strip("`,:;()") for line in diagnosis["advice"] for word in line.split() if word.startswith("--")}
    known = {action for action in train_cli.build_parser()._option_string_actions}
    assert flags and flags <= known, flags - known
    lines = training_run.summary_lines(metrics)
    assert any(line.startswith("Diagnosis: ") for line in lines)


def test_too_few_epochs_and_a_nan_loss_are_named():
    assert diagnose([{"epoch": 0, "loss": 2.0, "val_loss": 2.0}])["verdict"] == "too_short"
    rows = [{"epoch": i, "loss": v, "val_loss": v} for i, v in enumerate([2.0, 1.5, float("nan")])]
    assert diagnose(rows)["verdict"] == "diverging"


def test_mistakes_grid_holds_only_misclassified_test_images(runs):
    from insight import mistakes

    base, done = runs
    metrics = done["needs_more_data"]
    assert os.path.getsize(os.path.join(metrics["run_dir"], "mistakes.png")) > 0
    import imagesets

    data = imagesets.load("digits", test_fraction=0.8, val_fraction=0.1, seed=0)
    images, labels = data.arrays["test"]
    from serving.load import load_export

    probabilities = load_export(metrics["export_path"]).predict(images)
    chosen = mistakes.plot_mistakes(images, labels, probabilities, data.class_names, str(base / "m.png"))
    predicted = probabilities.argmax(1)
    assert chosen and all(predicted[i] != labels[i] for i in chosen)
    confidence = [probabilities[i, predicted[i]] for i in chosen]
    assert confidence == sorted(confidence, reverse=True)
    # The run's confused pairs are the confusion matrix's largest off-diagonal cells.
    matrix = np.array(metrics["confusion_matrix"])
    np.fill_diagonal(matrix, 0)
    top = metrics["confused_pairs"][0]
    assert top["count"] == matrix.max() > 0
    assert matrix[data.class_names.index(top["true"]), data.class_names.index(top["predicted"])] == top["count"]


def test_lr_finder_suggests_a_rate_where_the_loss_falls(tmp_path, capsys):
    from insight.lr_finder import smooth

    runs_dir = tmp_path / "runs"
    code = train_cli.main(["find-lr", "--model", "mlp", "--steps", "100", "--batch-size", "16",
                           "--runs-dir", str(runs_dir), "--export-dir", str(tmp_path / "exp")])
    assert code == 0
    out = capsys.readouterr().out
    folder = runs_dir / "lr_finder" / "mlp-digits"
    assert sorted(os.listdir(runs_dir)) == ["lr_finder"] and not (tmp_path / "exp").exists()
    assert os.path.getsize(folder / "lr_finder.png") > 0
    result = json.load(open(folder / "lr_finder.json"))
    rows = np.loadtxt(folder / "lr_finder.csv", delimiter=",", skiprows=1)
    lrs, losses = rows[:, 1], rows[:, 2]
    np.testing.assert_allclose(rows[:, 3], smooth(losses, 0.9))
    i = result["suggestion_index"]
    assert lrs[i] == pytest.approx(result["suggestion"]) and result["suggestion"] < result["min_loss_lr"]
    # Around the suggestion the loss is falling: the raw losses of the next steps are lower than the previous ones.
    window = 5
    assert losses[i + 1:i + 1 + window].mean() < losses[i - window:i].mean()
    assert losses[i:].min() < losses[:i].min()
    command = [line for line in out.splitlines() if line.startswith("next: python train.py")][0]
    assert command.split()[-2:] == ["--lr", f"{result['suggestion']:.2g}"] and "--steps" not in command
