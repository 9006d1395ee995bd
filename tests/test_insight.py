"""Insight on real digits runs: each diagnosis regime reached and named, the LR finder's
suggestion, the mistakes grid, compare and ensembles."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import train as train_cli
from training.diagnose import diagnose
from training import run as training_run
from core.errors import UserError

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
    # LeNet-5 with batch norm on 108 training images, keeping Keras' moving averages: after 42 steps at momentum
    # 0.99 they still hold most of their starting values, and validation scores far below batch statistics.
    "batchnorm_statistics": {"model": "lenet5_modern", "batch_norm": True, "precise_bn": False, "epochs": 3,
                             "test_fraction": 0.89, "val_fraction": 0.05, "batch_size": 8},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("insight")
    done = {}
    for verdict, options in REGIMES.items():
        config = {**QUIET, **options, "run_name": verdict, "runs_dir": str(base / "runs"),
                  "export_dir": str(base / "saved_models"), "export": verdict in ("good_fit", "overfitting")}
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


def test_batch_norm_statistics_are_named_only_when_the_run_kept_the_moving_averages():
    # The curves of an over-fitted run: validation loss up from epoch 2 while training loss falls.
    rows = [{"epoch": i, "loss": l, "accuracy": a, "val_loss": v, "val_accuracy": 0.1}
            for i, (l, a, v) in enumerate([(2.2, 0.2, 2.3), (1.5, 0.6, 2.6), (0.9, 0.9, 3.5), (0.7, 1.0, 4.4)])]
    measured = {"epoch": 4, "precise_bn": False, "variance_ratio": {"layer": "c1_bn", "moving_over_reestimated": 8.2},
                "val_accuracy": {"moving_average": 0.1, "reestimated": 0.83, "batch_statistics": 0.9}}
    found = diagnose(rows, num_classes=10, batch_norm=measured)
    assert found["verdict"] == "batchnorm_statistics" and "--precise-bn" in found["headline"]
    assert any("0.100" in line and "chance" in line for line in found["evidence"])
    assert any("c1_bn" in line for line in found["evidence"])
    assert diagnose(rows, num_classes=10)["verdict"] == "overfitting"  # without the measurement
    assert diagnose(rows, num_classes=10, batch_norm={**measured, "precise_bn": True})["verdict"] == "overfitting"
    close = {**measured, "val_accuracy": {"moving_average": 0.8, "reestimated": 0.85, "batch_statistics": 0.9}}
    assert diagnose(rows, num_classes=10, batch_norm=close)["verdict"] == "overfitting"


def test_too_few_epochs_and_a_nan_loss_are_named():
    assert diagnose([{"epoch": 0, "loss": 2.0, "val_loss": 2.0}])["verdict"] == "too_short"
    rows = [{"epoch": i, "loss": v, "val_loss": v} for i, v in enumerate([2.0, 1.5, float("nan")])]
    assert diagnose(rows)["verdict"] == "diverging"


def test_low_training_accuracy_from_mixup_is_not_called_underfitting():
    # Mixup scores training accuracy against blended labels; validation images are plain.
    rows = [{"epoch": i, "loss": l, "accuracy": 0.62, "val_loss": v, "val_accuracy": 0.97}
            for i, (l, v) in enumerate([(1.9, 0.5), (1.4, 0.3), (1.35, 0.29), (1.34, 0.29)])]
    assert diagnose(rows)["verdict"] == "good_fit"
    low = [{**row, "val_accuracy": 0.6} for row in rows]
    assert diagnose(low)["verdict"] == "underfitting"


def test_mistakes_grid_holds_only_misclassified_test_images(runs):
    from training import mistakes

    base, done = runs
    metrics = done["needs_more_data"]
    assert os.path.getsize(os.path.join(metrics["run_dir"], "mistakes.png")) > 0
    import imagesets

    data = imagesets.load("digits", test_fraction=0.8, val_fraction=0.1, seed=0)
    images, labels = data.arrays["test"]
    import keras

    from core.model import inference_model

    model = inference_model(keras.models.load_model(os.path.join(metrics["run_dir"], "model.keras")))
    probabilities = model.predict(images.astype(np.float32), verbose=0)
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


def test_compare_trains_each_variant_on_the_same_split_and_tabulates_them(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    argv = ["compare", "--models", "mlp", "lenet5", "--epochs", "2", "--verbose", "0", "--patience", "0",
            "--runs-dir", str(runs_dir), "--export-dir", str(tmp_path / "exp")]
    assert train_cli.main(argv) == 0
    out = capsys.readouterr().out
    folder = runs_dir / "compare-digits"
    rows = json.load(open(folder / "compare.json"))["rows"]
    assert [row["variant"] for row in rows] == ["mlp", "lenet5"]
    for row in rows:
        saved = json.load(open(os.path.join(row["run_dir"], "metrics.json")))
        assert saved["config"]["model"] == row["variant"] and saved["config"]["seed"] == 0
        assert saved["counts"] == {"train": 1259, "val": 179, "test": 359}
        assert row["test_accuracy"] == saved["test_accuracy"] and row["parameters"] == saved["parameters"]
        assert any(line.split()[:2] == [row["variant"], f"{row['test_accuracy']:.4f}"] for line in out.splitlines())
    assert rows[0]["parameters"] != rows[1]["parameters"]
    assert os.path.getsize(folder / "compare.png") > 0 and len(open(folder / "compare.csv").readlines()) == 3
    assert not (tmp_path / "exp").exists()  # variants are not exported unless asked
    # An interrupted comparison (no compare.json yet) reuses the variants that finished.
    os.remove(folder / "compare.json")
    assert train_cli.main(argv) == 0
    assert "finished before, reused" in capsys.readouterr().out
    assert sorted(os.listdir(runs_dir)) == ["compare-digits"]
    assert sorted(d for d in os.listdir(folder) if os.path.isdir(folder / d)) == ["lenet5", "mlp"]


def test_compare_refuses_an_unknown_option(capsys):
    assert train_cli.main(["compare", "--models", "mlp", "lenet5", "--set", "dropuot=0.3"]) == 2
    assert "unknown option 'dropuot'" in capsys.readouterr().err


def test_ensemble_export_serves_with_tensorflow_only_and_averages_its_members(runs, tmp_path, capsys):
    from exports.load import load_export

    base, done = runs
    members = [done["good_fit"]["export_path"], done["overfitting"]["export_path"]]  # an MLP and a LeNet-5
    export_dir = tmp_path / "exp"
    assert train_cli.main(["ensemble", *members, "--name", "digits-ensemble", "--export-dir", str(export_dir)]) == 0
    out = capsys.readouterr().out
    assert "Not scored: the members were trained on different splits" in out  # --test-fraction differs
    path = export_dir / "digits-ensemble" / "1"

    import imagesets

    images = imagesets.load("digits").arrays["test"][0][:40].astype(np.float32)
    expected = np.mean([load_export(m).predict(images) for m in members], axis=0)
    np.save(tmp_path / "images.npy", images)
    consumer = f"""
import json, sys
import numpy as np, tensorflow as tf
m = tf.saved_model.load({str(path)!r})
out = m.signatures["serving_default"](images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
project = {{"zoo", "training", "exports", "imagesets", "augment", "transfer", "insight"}}
assert not project & {{name.split(".")[0] for name in sys.modules}}
classes = [c.decode() for c in out["classes"].numpy()]
print(json.dumps({{"p": out["probabilities"].numpy().tolist(), "classes": classes}}))
"""
    done_ = subprocess.run([sys.executable, "-c", consumer], capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert done_.returncode == 0, done_.stderr[-2000:]
    result = json.loads(done_.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(result["p"]), expected, atol=1e-5)
    assert result["classes"] == [str(i) for i in expected.argmax(1)]
    meta = json.load(open(path / "assets" / "metadata.json"))
    assert meta["class_names"] == [str(i) for i in range(10)] and len(meta["members"]) == 2

    # The same --name again is the next version of that model, which a running server swaps in.
    assert train_cli.main(["ensemble", *members, "--name", "digits-ensemble", "--export-dir", str(export_dir),
                           "--no-evaluate"]) == 0
    assert sorted(os.listdir(export_dir / "digits-ensemble")) == ["1", "2"]
    assert f"Exported: {export_dir / 'digits-ensemble' / '2'} (model digits-ensemble, version 2, the mean of 2 " \
           f"members' probabilities; a running `train.py serve {export_dir}` picks it up)" in \
           capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("argv, expected", [
    (["ensemble", "missing/a", "missing/b", "--name", "a/b"], "--name 'a/b' must be a plain folder name"),
    (["compare", "--models", "mlp", "lenet5", "--export-name", "digits"], "--export-name names one model"),
])
def test_ensemble_and_compare_refuse_a_model_name_before_any_work(argv, expected, tmp_path, capsys):
    assert train_cli.main([*argv, *(["--runs-dir", str(tmp_path)] if argv[0] == "compare" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert os.listdir(tmp_path) == []


def test_ensemble_refuses_members_that_do_not_fit_together(runs, capsys):
    from insight.ensemble import check_compatible, read_member

    _, done = runs
    a, b = (read_member(done[v]["export_path"]) for v in ("good_fit", "overfitting"))
    with pytest.raises(UserError, match="share one input shape"):
        check_compatible([a, (b[0], {**b[1], "input_shape": [28, 28, 1]})])
    with pytest.raises(UserError, match="different classes"):
        check_compatible([a, (b[0], {**b[1], "class_names": list("abcdefghij")})])
    assert train_cli.main(["ensemble", done["good_fit"]["export_path"]]) == 2
    assert "at least two exports" in capsys.readouterr().err
