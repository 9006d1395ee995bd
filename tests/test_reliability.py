"""Crashes, odd folders and untrusted files: a run loses nothing and runs nothing it should not."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest
from PIL import Image

from helpers import crafted_keras_file, digit_images, run_cli, write_digit_folder
from training.callbacks import BestWeights
from training.checkpoint import CRASH_ENV
from core.errors import UserError


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


def test_a_keep_last_phase_keeps_every_epoch_even_a_worse_one_and_never_stops_early(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / "best.weights.h5")
    best = BestWeights(path, monitor="val_loss", best=0.5, best_epoch=1, patience=1, phase_start=2, keep_last=True)
    best.set_model(model)
    for epoch, value in ((2, 0.9), (3, 1.2), (4, 1.5)):  # worse every epoch: patience 1 would stop at 3
        model.layers[0].kernel.assign(np.full((3, 2), float(epoch)))
        best.on_epoch_end(epoch, {"val_loss": value})
    assert best.stopped_epoch is None and not getattr(model, "stop_training", False)
    assert best.best_epoch == 4
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), np.full((3, 2), 4.0))


# --- Real-world folders ------------------------------------------------------------------------

NAMES = ("Ankle boot", "café", "日本")


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with (almost) no pixel data behind it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))


def odd_folder(root, n_per_class=10):
    """Real digits under awkward class names, plus the files a real photo folder collects."""
    images, labels = digit_images(n_per_class, classes=range(len(NAMES)))
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"img{i}.{('png', 'jpg', 'bmp', 'webp')[i % 4]}")
    extra, _ = digit_images(2, classes=[1])
    cafe = root / "café"
    Image.fromarray(extra[0]).save(cafe / "UPPER.PNG")
    Image.merge("CMYK", [Image.fromarray(extra[1])] * 3 + [Image.new("L", extra[1].shape, 0)]).save(cafe / "scan.tif")
    bad = {cafe / "empty.jpg": "empty file", cafe / "page.jpg": "not an image", cafe / "bomb.png": "too many pixels",
           cafe / "huge.png": "too many pixels", root / "日本" / "cut.png": "truncated"}
    (cafe / "empty.jpg").write_bytes(b"")
    (cafe / "page.jpg").write_text("<html><body>404 Not Found</body></html>")
    (cafe / "bomb.png").write_bytes(png_header(100_000, 100_000))  # PIL's own limit: refused at open
    (cafe / "huge.png").write_bytes(png_header(10_000, 9_000))  # over our limit, under 2x PIL's
    whole = (root / "日本" / f"img{2 * n_per_class}.png").read_bytes()  # n_per_class even: a PNG
    (root / "日本" / "cut.png").write_bytes(whole[:len(whole) // 2])
    litter = [root / ".DS_Store", root / "Ankle boot" / "Thumbs.db", root / "README.txt",
              root / "café" / ".ipynb_checkpoints" / "img1-checkpoint.png"]
    for path in litter:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0\0\0\1Bud1" + bytes(32))
    return {str(p): reason for p, reason in bad.items()}, {str(p) for p in litter}


def test_odd_folder_trains_exports_and_predicts_with_a_manifest(tmp_path):
    """Odd files are skipped or ignored, listed with reasons; non-ASCII class names reach the export."""
    root = tmp_path / "photos"
    bad, litter = odd_folder(root)
    done = run_cli("train.py", "--dataset", f"folder:{root}", "--model", "mlp", "--epochs", "1", "--verbose", "0",
                   "--runs-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "exp"))
    assert done.returncode == 0, done.stderr[-2000:]

    manifest = json.loads((tmp_path / "runs" / "mlp-photos" / "data_manifest.json").read_text(encoding="utf-8"))
    skipped = {item["path"]: item["reason"] for item in manifest["skipped_files"]}
    assert set(skipped) == set(bad)
    for path, reason in bad.items():
        assert skipped[path].startswith(reason), (path, skipped[path])
    assert {item["path"] for item in manifest["ignored_files"]} == litter
    seen = sum(len(files) for _, _, files in os.walk(root))
    assert manifest["files_seen"] == seen == manifest["used"] + manifest["skipped"] + manifest["ignored"]
    assert {name: sum(c.values()) for name, c in manifest["classes"].items()} == {
        "Ankle boot": 10, "café": 12, "日本": 10}  # the upper-case .PNG and the CMYK TIFF were used

    export = tmp_path / "exp" / "mlp-photos" / "1"
    assert (export / "assets" / "class_names.txt").read_text(encoding="utf-8").splitlines() == sorted(NAMES)
    done = run_cli("predict.py", str(export), str(root / "日本"), "--json", "--top-k", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert len(result["predictions"]) == 10
    assert [s["path"] for s in result["skipped"]] == [str(root / "日本" / "cut.png")]
    assert all({t["class"] for t in p["top"]} == set(NAMES) for p in result["predictions"])

    consumer = f"""
import json, numpy as np, tensorflow as tf
m = tf.saved_model.load({str(export)!r})
names = open({str(export / 'assets' / 'class_names.txt')!r}, encoding="utf-8").read().splitlines()
out = m.signatures["serving_default"](images=tf.zeros((1, 28, 28, 1)))
print(json.dumps({{"names": names, "class": out["classes"].numpy()[0].decode("utf-8")}}))
"""
    done = subprocess.run([sys.executable, "-c", consumer], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["names"] == sorted(NAMES) and result["class"] in NAMES


def test_strict_fails_before_training_with_the_list_of_bad_files(tmp_path, capsys):
    import train as train_cli

    root = tmp_path / "photos"
    bad, _ = odd_folder(root, n_per_class=4)
    code = train_cli.main(["--dataset", f"folder:{root}", "--model", "mlp", "--strict", "--verbose", "0",
                           "--runs-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --strict: 5 dataset files"), err
    assert all(path in err[0] for path in sorted(bad))
    assert not (tmp_path / "runs").exists() and not (tmp_path / "exp").exists()


def test_resuming_with_a_changed_class_list_is_refused(tmp_path):
    from training import run as training_run

    write_digit_folder(tmp_path / "data", n_per_class=6, classes=("1", "2", "3"))
    config = {"dataset": f"folder:{tmp_path / 'data'}", "model": "mlp", "epochs": 1, "verbose": 0,
              "runs_dir": str(tmp_path / "runs"), "export": False}
    first = training_run.train(config, log=lambda *_: None)
    os.remove(os.path.join(first["run_dir"], "metrics.json"))  # as if killed before it finished
    os.rename(tmp_path / "data" / "3", tmp_path / "data" / "7")
    with pytest.raises(UserError, match=r"the class list changed \(added '7'; removed '3'\).*--run-name"):
        training_run.train(config, log=lambda *_: None)


# --- Untrusted model files --------------------------------------------------------------------


def test_a_keras_file_with_a_lambda_layer_is_refused_without_running_it(tmp_path):
    from transfer import load_backbone

    marker = tmp_path / "code-ran"
    inputs = keras.Input((4,))
    # The payload touches ``marker``; its path is a constant in the lambda's code, as an attacker's would be.
    payload = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).touch(), t)[1]")
    hidden = keras.layers.Lambda(payload)(inputs)
    keras.Model(inputs, keras.layers.Dense(2)(hidden)).save(tmp_path / "crafted.keras")
    marker.unlink()  # saving traced the lambda once; loading must not run it again
    with pytest.raises(UserError) as error:
        load_backbone(str(tmp_path / "crafted.keras"))
    message = str(error.value)
    assert "crafted.keras" in message and "Lambda" in message and "\n" not in message
    assert not marker.exists()


def test_a_keras_file_naming_an_unknown_class_is_refused(tmp_path):
    from transfer import load_backbone

    inputs = keras.Input((4,))
    crafted_keras_file(keras.Model(inputs, keras.layers.Dense(2)(inputs)), str(tmp_path), module="os",
                       class_name="system")
    with pytest.raises(UserError, match=r"crafted\.keras.*'system', which is neither a Keras nor"):
        load_backbone(str(tmp_path / "crafted.keras"))


def test_legacy_h5_models_are_refused_as_backbones_but_load_as_weights(tmp_path):
    from transfer import load_backbone

    network = load_backbone("mlp", weights=None).features
    network.save(tmp_path / "whole.h5")  # legacy HDF5: architecture and weights
    with pytest.raises(UserError, match="whole.h5' is a legacy HDF5 model file"):
        load_backbone(str(tmp_path / "whole.h5"))
    loaded = load_backbone("mlp", weights=str(tmp_path / "whole.h5")).features
    for mine, theirs in zip(loaded.weights, network.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_cached_imagenet_weights_are_checked_against_the_published_hash(tmp_path, monkeypatch):
    from transfer import load_backbone

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("CNN_CLASSROOM_OFFLINE", "1")
    cached = tmp_path / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"<html>captive portal login</html>")
    with pytest.raises(UserError, match="do not match the published file.*expected 4d473c1dd8becc155b73f8504c6f6626"):
        load_backbone("resnet50", input_shape=(32, 32, 3))


def test_nan_loss_keeps_the_last_good_checkpoint_and_exports_nothing(tmp_path):
    # Two sane epochs, then the step schedule multiplies the rate by 1e12 and the loss blows up.
    done = _train(tmp_path, "--optimizer", "sgd", "--lr", "0.01", "--schedule", "step", "--step-epochs", "2",
                  "--step-gamma", "1e12")
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "at epoch 3, step" in errors[0] and "Traceback" not in done.stderr
    run = tmp_path / "runs" / "mlp-digits"
    metadata = json.loads((run / "backup" / "train" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 2
    import h5py

    # The checkpoint holds epoch 2's finite weights, not the broken ones.
    arrays = []
    with h5py.File(run / "backup" / "train" / metadata["weights"]) as f:
        f.visititems(lambda name, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    floats = [a for a in arrays if np.issubdtype(np.asarray(a).dtype, np.floating)]
    assert floats and all(np.isfinite(a).all() for a in floats)
    assert not (tmp_path / "exp").exists()
    assert not (run / "metrics.json").exists() and not (run / "model.keras").exists()


def test_resume_refuses_another_model_or_input_size(tmp_path):
    from training import rundir

    identity = {"class_names": ["a", "b"], "model": "lenet5", "input_shape": [32, 32, 1]}
    rundir.write_identity(str(tmp_path), identity)
    rundir.check_identity(str(tmp_path), dict(identity))  # the same run resumes
    with pytest.raises(UserError, match=r"the input size changed \(\[32, 32, 1\] -> \[28, 28, 1\]\)"):
        rundir.check_identity(str(tmp_path), {**identity, "input_shape": [28, 28, 1]})
    with pytest.raises(UserError, match=r"the model changed \(lenet5 -> mlp\)"):
        rundir.check_identity(str(tmp_path), {**identity, "model": "mlp"})


def test_a_run_checkpointed_by_keras_backup_and_restore_still_resumes(tmp_path):
    from training.checkpoint import ResumableCheckpoint

    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")

    def model():
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
        m.compile(optimizer="adam", loss="binary_crossentropy")
        return m

    old = model()
    old.fit(x, y, epochs=2, batch_size=16, verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False)])
    new = model()
    history = new.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[ResumableCheckpoint(str(tmp_path))])
    assert history.epoch == [2]  # only the third epoch ran
    assert int(new.optimizer.iterations.numpy()) == 3 * 4  # Adam's state came back with the weights


def test_a_folder_under_the_home_directory_is_found(tmp_path, monkeypatch):
    import imagesets

    monkeypatch.setenv("HOME", str(tmp_path))
    write_digit_folder(tmp_path / "photos", n_per_class=4, classes=("1", "2"))
    data = imagesets.load("folder:~/photos", image_size=(8, 8), channels=1)  # as the README's examples write it
    assert data.class_names == ["1", "2"] and sum(data.counts().values()) == 8
