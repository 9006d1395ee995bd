"""End to end: train.py on real data -> run directory -> export -> a TensorFlow-only consumer."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from helpers import ROOT, run_cli, write_digit_folder

import train as train_cli
from training import run as training_run

FAST = {"epochs": 3, "verbose": 0, "patience": 0}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One short digits run shared by the tests that only read its outputs."""
    base = tmp_path_factory.mktemp("run")
    config = {**FAST, "runs_dir": str(base / "runs"), "export_dir": str(base / "saved_models")}
    metrics = training_run.train(config, log=lambda *_: None)
    return config, metrics


def test_run_directory_holds_every_report(finished_run):
    config, metrics = finished_run
    run_dir = metrics["run_dir"]
    for name in ("config.json", "history.csv", "learning_curves.png", "confusion_matrix.png",
                 "classification_report.txt", "metrics.json", "model.keras", "best.weights.h5"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    saved = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert saved["config"]["model"] == "lenet5" and saved["config"]["dataset"] == "digits"
    assert saved["epochs_run"] == 3
    assert set(saved["per_class"]) >= {"0", "9", "macro avg"}
    assert np.array(saved["confusion_matrix"]).sum() == saved["test_samples"] == 359
    # The test accuracy is computed from the confusion matrix's diagonal, not copied from Keras.
    matrix = np.array(saved["confusion_matrix"])
    assert saved["test_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    lines = open(os.path.join(run_dir, "history.csv")).read().strip().splitlines()
    assert lines[0].startswith("epoch") and "val_loss" in lines[0] and len(lines) == 4


def test_export_layout_and_tensorflow_only_consumer(finished_run, tmp_path):
    config, metrics = finished_run
    export = metrics["export_path"]
    assert export == os.path.join(config["export_dir"], "lenet5-digits", "1")
    assert os.path.isfile(os.path.join(export, "saved_model.pb"))
    assert open(os.path.join(export, "assets", "class_names.txt")).read().split() == [str(i) for i in range(10)]

    import imagesets
    import keras
    from core.model import inference_model

    images = imagesets.load("digits").arrays["test"][0][:32].astype(np.float32)
    model = keras.models.load_model(os.path.join(metrics["run_dir"], "model.keras"))
    expected = inference_model(model).predict(images, verbose=0)
    np.save(tmp_path / "images.npy", images)
    consumer = f"""
import json, sys
import numpy as np, tensorflow as tf
m = tf.saved_model.load({export!r})
meta = json.load(open({export!r} + "/assets/metadata.json"))
out = m.signatures["serving_default"](images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
project = {{"zoo", "training", "exports", "imagesets", "augment", "transfer"}}
assert not project & {{name.split(".")[0] for name in sys.modules}}
print(json.dumps({{"p": out["probabilities"].numpy().tolist(), "classes": [c.decode() for c in out["classes"].numpy()],
                  "names": meta["class_names"], "shape": meta["input_shape"]}}))
"""
    done = subprocess.run([sys.executable, "-c", consumer], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(result["p"]), expected, atol=1e-5)
    assert result["classes"] == [result["names"][i] for i in expected.argmax(1)]
    assert result["shape"] == [8, 8, 1]


def test_second_run_keeps_the_first_and_exports_a_new_version(finished_run):
    config, first = finished_run
    before = open(os.path.join(first["run_dir"], "metrics.json")).read()
    second = training_run.train({**config, "epochs": 1}, log=lambda *_: None)
    assert second["run_dir"] != first["run_dir"]
    # A different configuration must not resume the finished run: it gets its own directory...
    assert os.path.basename(second["run_dir"]) == "lenet5-digits-2"
    # ...and exports the next version of the same model, which a server watching that model swaps in.
    assert second["export_path"] == os.path.join(config["export_dir"], "lenet5-digits", "2")
    assert open(os.path.join(first["run_dir"], "metrics.json")).read() == before


def test_repeating_a_finished_command_exports_the_next_version_of_its_model(tmp_path, capsys):
    runs, exp = tmp_path / "runs", tmp_path / "exp"
    argv = ["--model", "mlp", "--epochs", "1", "--verbose", "0", "--runs-dir", str(runs), "--export-dir", str(exp)]
    assert train_cli.main(argv) == 0 and train_cli.main(argv) == 0
    assert sorted(os.listdir(runs)) == ["mlp-digits", "mlp-digits-2"]
    assert os.listdir(exp) == ["mlp-digits"] and sorted(os.listdir(exp / "mlp-digits")) == ["1", "2"]
    saved = json.loads((runs / "mlp-digits-2" / "metrics.json").read_text())
    assert (saved["export_path"], saved["export_name"], saved["export_version"]) == (
        str(exp / "mlp-digits" / "2"), "mlp-digits", 2)
    assert f"Exported: {exp / 'mlp-digits' / '2'} (model mlp-digits, version 2; a running `train.py serve {exp}` " \
           "picks it up)" in capsys.readouterr().out.splitlines()


def test_export_name_chooses_the_model_and_leaves_the_run_directory(tmp_path):
    config = {**FAST, "model": "mlp", "epochs": 1, "runs_dir": str(tmp_path / "runs"),
              "export_dir": str(tmp_path / "exp"), "export_name": "custom"}
    metrics = training_run.train(config, log=lambda *_: None)
    assert os.path.basename(metrics["run_dir"]) == "mlp-digits"
    assert metrics["export_path"] == str(tmp_path / "exp" / "custom" / "1")
    assert (metrics["export_name"], metrics["export_version"]) == ("custom", 1)
    assert os.listdir(tmp_path / "exp") == ["custom"]


@pytest.mark.parametrize("name", ["a/b", ".x"])
def test_a_bad_export_name_is_refused_before_training(name, tmp_path, capsys):
    argv = ["--export-name", name, "--runs-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "exp")]
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --export-name {name!r} must be a plain folder name (no '/', not starting with '.')"]
    assert os.listdir(tmp_path) == []  # no run directory, no export folder


def test_interrupted_run_resumes_from_its_last_epoch(tmp_path):
    args = [os.path.join(ROOT, "train.py"), "--epochs", "6", "--patience", "0", "--verbose", "0",
            "--runs-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "exp"), "--model", "lenet5_modern"]
    metadata = tmp_path / "runs" / "lenet5_modern-digits" / "backup" / "train" / "training_metadata.json"
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            try:
                if json.loads(metadata.read_text())["epoch"] >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert process.poll() is None, process.communicate()[1][-2000:]
            time.sleep(0.05)
        else:
            pytest.fail("training never checkpointed")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_after = json.loads(metadata.read_text())["epoch"]
    assert killed_after < 6
    assert not (tmp_path / "runs" / "lenet5_modern-digits" / "metrics.json").exists()

    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"Resuming run {tmp_path / 'runs' / 'lenet5_modern-digits'} after epoch {killed_after}" in done.stdout
    history = (tmp_path / "runs" / "lenet5_modern-digits" / "history.csv").read_text().strip().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == list(range(6))
    metrics = json.loads((tmp_path / "runs" / "lenet5_modern-digits" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 6
    assert os.path.isdir(tmp_path / "exp" / "lenet5_modern-digits" / "1")


def test_nan_loss_stops_with_a_clear_message_and_exports_nothing(tmp_path):
    done = run_cli("train.py", "--model", "lenet5_modern", "--optimizer", "sgd", "--lr", "1e8", "--schedule",
                   "constant", "--epochs", "2", "--verbose", "0", "--runs-dir", str(tmp_path / "runs"),
                   "--export-dir", str(tmp_path / "exp"))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss became nan" in errors[0] and "--lr" in errors[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--model", "lenet6"], "did you mean lenet5"),
    (["--dataset", "digit"], "did you mean digits"),
    (["--dataset", "folder:/nonexistent/photos"], "does not exist"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--backbone", "resnet20", "--discriminative-lr", "2"], "--discriminative-lr must be in (0, 1]"),
    (["--model", "mlp", "--width", "-1"], "width must be > 0"),
    (["--model", "resnet20", "--filters", "16", "48", "360", "252"], "does not take option 'filters'"),
    (["--model", "lenet5_modern", "--filters", "16", "48"], "filters must be 4 positive counts"),
    (["--model", "lenet5", "--depth", "10"], "does not take option 'depth'"),
    (["--model", "wrn16_4", "--depth", "11"], "must be 6n+4"),
    (["--model", "mlp", "--whiten"], "--whiten starts a network's first convolution; mlp has none"),
    (["--backbone", "resnet20", "--whiten"], "a --backbone brings its own: drop --whiten"),
    (["--config", "/nonexistent.json"], "Cannot read config file"),
])
def test_user_mistakes_get_one_line_and_exit_2(argv, expected, tmp_path, capsys):
    code = train_cli.main([*argv, "--runs-dir", str(tmp_path), "--verbose", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], err
    assert not (tmp_path / "saved_models").exists()


def test_depth_and_widen_factor_reach_the_network():
    import zoo
    from training.config import MODEL_OPTIONS

    config, _ = train_cli.resolve_config(["--model", "wrn16_4", "--depth", "10", "--widen-factor", "2"])
    options = {key: config[key] for key in MODEL_OPTIONS}
    network = zoo.build(config["model"], input_shape=(28, 28, 1), **options)
    convolutions = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
    # WRN-10-2: a stem and one two-convolution block per group (three), the groups 32, 64 and 128 wide.
    assert max(c.filters for c in convolutions) == 128
    assert len([c for c in convolutions if c.kernel_size == (3, 3)]) == 1 + 3 * 2
    default = zoo.build("wrn16_4", input_shape=(28, 28, 1))
    assert network.count_params() < default.count_params()


def test_folder_dataset_errors_from_the_command_line(tmp_path, capsys):
    # train.py's main in this process (a child would only add TensorFlow's start-up): a user's mistake comes back
    # as exit status 2 and one line, and any other exception would fail the test as a traceback would.
    write_digit_folder(tmp_path / "one", classes=("1",))
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"not a folder")
    for path, expected in ((tmp_path / "one", "only one class"), (a_file, "is a file"),
                           (tmp_path / "missing", "does not exist")):
        code = train_cli.main(["--dataset", f"folder:{path}", "--runs-dir", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert code == 2, err[-1000:]
        assert expected in err.strip().splitlines()[-1] and err.strip().splitlines()[-1].startswith("error: ")


def test_config_file_sets_defaults_and_flags_override_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": "mlp", "epochs": 7, "lr": 0.01}))
    config, _ = train_cli.resolve_config(["--config", str(path), "--epochs", "2"])
    assert (config["model"], config["epochs"], config["lr"]) == ("mlp", 2, 0.01)
    path.write_text(json.dumps({"modle": "mlp"}))
    with pytest.raises(Exception, match="Unknown keys.*modle"):
        train_cli.resolve_config(["--config", str(path)])


def test_dataset_defaults_sit_under_the_config_file_and_the_flags(tmp_path):
    from training.config import DATASET_DEFAULTS, DEFAULTS

    digits = DATASET_DEFAULTS["digits"]
    assert digits["augment"] != DEFAULTS["augment"] and digits["epochs"] != DEFAULTS["epochs"]
    config, _ = train_cli.resolve_config([])  # the default run is on digits: its own defaults apply
    assert (config["augment"], config["epochs"]) == (digits["augment"], digits["epochs"])
    config, _ = train_cli.resolve_config(["--dataset", "fashion_mnist"])  # another dataset keeps the general ones
    assert (config["augment"], config["epochs"]) == (DEFAULTS["augment"], DEFAULTS["epochs"])
    config, _ = train_cli.resolve_config(["--epochs", "5"])  # a flag wins over the dataset's default
    assert (config["augment"], config["epochs"]) == (digits["augment"], 5)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"augment": "none"}))  # and so does a config file
    config, _ = train_cli.resolve_config(["--config", str(path)])
    assert (config["augment"], config["epochs"]) == ("none", digits["epochs"])
    path.write_text(json.dumps({"dataset": "digits", "epochs": 3}))
    config, _ = train_cli.resolve_config(["--config", str(path), "--augment", "crop"])
    assert (config["augment"], config["epochs"]) == ("crop", 3)


def test_folder_run_reports_skipped_files_and_predict_reads_the_export(tmp_path):
    data = write_digit_folder(tmp_path / "digits", n_per_class=10, classes=("3", "7"))
    (data / "3" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (data / "7" / "notes.txt").write_text("not an image")
    (data / ".DS_Store").write_bytes(b"\0\0")
    done = run_cli("train.py", "--dataset", f"folder:{data}", "--model", "lenet5_modern", "--epochs", "2",
                   "--verbose", "0", "--runs-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "exp"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Skipped 2 files" in done.stdout and "broken.jpg" in done.stdout and ".DS_Store" not in done.stdout
    skipped = (tmp_path / "runs" / "lenet5_modern-digits" / "skipped_files.txt").read_text().splitlines()
    assert len(skipped) == 2
    export = tmp_path / "exp" / "lenet5_modern-digits"
    assert json.loads((export / "1" / "assets" / "metadata.json").read_text())["input_shape"] == [32, 32, 1]

    done = run_cli("predict.py", str(export), str(data / "3"), "--json", "--top-k", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["export"].endswith("1")
    assert len(result["predictions"]) == 10 and len(result["skipped"]) == 1
    for prediction in result["predictions"]:
        probs = [t["probability"] for t in prediction["top"]]
        assert [t["class"] for t in prediction["top"]] and sorted(probs, reverse=True) == probs
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)


def test_augmentation_trains_but_never_reaches_the_export(tmp_path):
    import tensorflow as tf

    config = {**FAST, "epochs": 1, "augment": "strong+mixup", "tta": "flip", "runs_dir": str(tmp_path / "runs"),
              "export_dir": str(tmp_path / "exp"), "dataset": "digits"}
    metrics = training_run.train(config, log=lambda *_: None)
    assert metrics["tta"] == "flip" and 0 <= metrics["test_accuracy"] <= 1
    loaded = tf.saved_model.load(metrics["export_path"])
    graph = loaded.signatures["serving_default"].graph.as_graph_def()
    ops = {node.op for node in graph.node} | {node.op for f in graph.library.function for node in f.node_def}
    assert not {op for op in ops if "Random" in op}, "augmentation ops leaked into the export"
    assert json.load(open(os.path.join(metrics["export_path"], "assets", "metadata.json")))["flips"] is False


def test_preview_writes_a_grid_of_augmented_samples(tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "grid.png"
    assert train_cli.main(["--augment", "standard", "--preview", str(path)]) == 0
    assert Image.open(path).size[0] > 300
    assert train_cli.main(["--augment", "flip+crop+nonsense", "--preview", str(path)]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_standardize_learns_the_training_pixels_and_travels_with_the_export(tmp_path):
    import imagesets
    from exports import load_export

    config = {**FAST, "epochs": 1, "preprocessing": "standardize", "runs_dir": str(tmp_path / "runs"),
              "export_dir": str(tmp_path / "exp")}
    metrics = training_run.train(config, log=lambda *_: None)
    import keras

    model = keras.models.load_model(os.path.join(metrics["run_dir"], "model.keras"))
    layer = model.get_layer("preprocessing")
    train_pixels = imagesets.load("digits").arrays["train"][0].astype(np.float64)
    assert float(np.ravel(layer.mean)[0]) == pytest.approx(train_pixels.mean(), rel=1e-4)
    assert float(np.ravel(layer.variance)[0]) == pytest.approx(train_pixels.var(), rel=1e-3)
    images = imagesets.load("digits").arrays["test"][0][:16].astype(np.float32)
    from core.model import inference_model

    np.testing.assert_allclose(load_export(metrics["export_path"]).predict(images),
                               inference_model(model).predict(images, verbose=0), atol=1e-5)


def test_pipelines_cast_images_to_float_unless_told_not_to():
    import tensorflow as tf

    from training.pipeline import make_pipeline

    images, labels = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1), np.array([0, 1])
    cast, y = next(iter(make_pipeline(images, labels, 2, batch_size=2, shuffle=False, seed=0)))
    kept, _ = next(iter(make_pipeline(images, labels, 2, batch_size=2, shuffle=False, seed=0, cast=False)))
    assert cast.dtype == tf.float32 and kept.dtype == tf.uint8  # the cached features of the fast path stay as given
    np.testing.assert_array_equal(kept.numpy(), images)
    np.testing.assert_array_equal(y.numpy(), np.eye(2))


def test_workers_shards_are_disjoint_equal_and_reshuffled_every_epoch():
    from training.pipeline import make_pipeline

    labels = np.arange(23) % 3
    images = np.arange(23, dtype=np.uint8).reshape(23, 1, 1, 1)  # each image is its own index

    def epochs(index, count=2):
        ds = make_pipeline(images, labels, 3, batch_size=4, shuffle=True, seed=5, shard=(count, index))
        return [[int(v) for x, _ in ds for v in x.numpy().ravel()] for _ in range(2)]

    first, second = epochs(0), epochs(1)
    for epoch in range(2):
        # Each worker reads its own 11 images: no image on both, the same number of steps on both.
        assert len(first[epoch]) == len(second[epoch]) == 23 // 2
        assert not set(first[epoch]) & set(second[epoch])
    assert first[0] != first[1]  # a new shuffle, hence a new share, each epoch
    # Every worker shuffles alike: the two shares of an epoch are the alternate images of one order.
    whole = make_pipeline(images, labels, 3, batch_size=23, shuffle=True, seed=5)
    order = [int(v) for v in next(iter(whole))[0].numpy().ravel()]
    assert first[0] == order[0::2][:11] and second[0] == order[1::2][:11]


RECIPE_FILES = sorted(glob.glob(os.path.join(ROOT, "recipes", "*", "*.json")))


@pytest.mark.parametrize("path", RECIPE_FILES, ids=os.path.basename)
def test_every_recipe_file_is_a_config_the_run_accepts(path):
    import zoo
    from training.config import check_config, complete

    config, _ = train_cli.resolve_config(["--config", path])
    check_config(complete(config))  # every key known, every value in range
    dataset = os.path.basename(os.path.dirname(path))
    # <model>.json, or <model>-<what>.json for another recipe of the same model
    assert config["dataset"] == dataset
    assert config["model"] == _bench_fashion().family_of(os.path.basename(path).removesuffix(".json"))
    zoo.get(config["model"])  # a model of the zoo
    assert train_cli.resolve_config(["--config", path, "--epochs", "3"])[0]["epochs"] == 3


def _bench_fashion():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import bench_fashion

    return bench_fashion


def test_the_fashion_benchmark_runs_a_recipe_file_for_each_family_and_each_file():
    fashion = {os.path.basename(path).removesuffix(".json") for path in RECIPE_FILES
               if os.path.basename(os.path.dirname(path)) == "fashion_mnist"}
    assert fashion == set(_bench_fashion().FAMILIES)
    families = {name for name in fashion if _bench_fashion().family_of(name) == name}
    assert len(families) == 6 and all(_bench_fashion().family_of(name) in families for name in fashion)
    assert set(_bench_fashion().PUBLISHED) == families  # a family's published rows serve each of its recipes


def test_the_fashion_benchmark_changes_one_setting_of_a_recipe_by_name():
    import argparse

    bench_fashion = _bench_fashion()
    parser = argparse.ArgumentParser()
    assert bench_fashion.parse_changes(["label_smoothing=0", "augment=none", "nesterov=false"], parser) == \
        {"label_smoothing": 0, "augment": "none", "nesterov": False}
    for bad in ("label_smoothing", "smoothing=0"):
        with pytest.raises(SystemExit):
            bench_fashion.parse_changes([bad], parser)


def test_a_fashion_benchmark_row_names_the_network_only_when_set_swapped_it():
    bench_fashion = _bench_fashion()
    quiet = dict(epochs=1, train_limit=512, test_limit=256, batch_size=128, log=lambda *_: None)
    own = bench_fashion.run_family("lenet5_modern-5min", changes={"precision": "float32"}, **quiet)
    swapped = bench_fashion.run_family("lenet5_modern-5min", changes={"model": "lenet5", "filters": None,
                                                                      "precision": "float32"}, **quiet)
    assert "model" not in own["recipe"] and swapped["recipe"]["model"] == "lenet5"
    assert swapped["parameters"] != own["parameters"]  # the swapped network is the one that ran


def test_the_recipe_speed_benchmark_times_the_recipe_and_each_variant_it_is_given():
    import argparse

    _bench_fashion()  # bench/ on the path
    import bench_recipe_speed

    rows = bench_recipe_speed.measure("lenet5_modern-5min", ["precision=float32", "filters=[16,32,480,336] batch_size=64"],
                                      rounds=2, steps=2, train_limit=512, parser=argparse.ArgumentParser(),
                                      log=lambda *_: None)
    recipe, float32, narrower = rows
    assert [row["variant"] for row in rows] == ["the recipe", "precision=float32", "filters=[16,32,480,336] batch_size=64"]
    assert recipe["ratio_to_recipe"] == 1.0 and recipe["changed"] == {}
    assert float32["changed"] == {"precision": "float32"} and float32["parameters"] == recipe["parameters"]
    assert narrower["parameters"] < recipe["parameters"] and narrower["batch_size"] == 64  # the variant is what ran
    assert all(len(row["rounds"]) == 2 and row["images_per_second"] > 0 for row in rows)
    assert {row["train_images"] for row in rows} == {512}  # an epoch's length is the subset's, not the full split's
    with pytest.raises(SystemExit):  # a key train.py does not have: argparse's one-line error
        bench_recipe_speed.measure("lenet5_modern-5min", ["smoothing=0"], rounds=1, steps=1, train_limit=512,
                                   parser=argparse.ArgumentParser())


def test_a_benchmark_records_which_cpu_it_ran_on_beyond_its_marketing_name(tmp_path, monkeypatch):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import machine

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\ncpu family\t: 6\nmodel\t\t: 143\n"
                       "stepping\t: 8\nflags\t\t: fpu avx2 avx512f amx_tile\n\nprocessor\t: 1\nmodel\t\t: 99\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo"
                                                                         else path, *a, **k))
    assert machine.cpu_model() == "Intel(R) Xeon(R) Processor"
    # The first processor's fields only, and the features in CPU_FEATURES' order.
    assert machine.cpu_id() == {"family": "6", "model": "143", "stepping": "8",
                                "features": ["avx2", "avx512f", "amx_tile"]}


def test_training_batches_stay_uint8_and_the_network_casts_them_unless_a_mixer_blends_pixels():
    # The pipeline hands raw uint8 pixels to the network, whose graph casts them (a quarter of the bytes of a
    # float32 batch to write and move); mixup and cutmix blend pixels, so they get float32 batches.
    import keras

    from training.data import augmentation_for, pipelines
    from training.run import DEFAULTS, load_data

    config = {**DEFAULTS, "dataset": "digits", "batch_size": 16}
    data = load_data(config)
    train_ds, val_ds = pipelines(config, data)
    (x, y), (vx, _) = next(iter(train_ds)), next(iter(val_ds))
    assert x.dtype.name == vx.dtype.name == "uint8" and y.dtype.name == "float32"
    inputs = keras.Input(data.input_shape)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    np.testing.assert_allclose(model(x).numpy(), model(np.asarray(x, np.float32)).numpy(), rtol=1e-6)
    _, mix = augmentation_for({**config, "augment": "mixup"}, data)
    mixed, _ = pipelines(config, data, mix)
    assert next(iter(mixed))[0].dtype.name == "float32"


HELP_CHECK = """
import contextlib, io, sys
import train
for argv in ([], *%s):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            train.main([*argv, "--help"])
        except SystemExit as leaving:
            assert leaving.code == 0, (argv, leaving.code)
    assert "usage:" in out.getvalue(), argv
    if not argv:
        print(out.getvalue())
heavy = sorted(m for m in ("tensorflow", "keras", "keras_tuner", "tensorflow_datasets") if m in sys.modules)
print("HEAVY", heavy)
"""


def test_help_of_every_command_answers_without_starting_tensorflow():
    commands = [[name] for name in ("search", "find-lr", "compare", "ensemble", "export", "audit", "serve")]
    result = subprocess.run([sys.executable, "-c", HELP_CHECK % commands], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY []" in result.stdout, result.stdout[-500:]
    top = result.stdout
    for name in ("search", "find-lr", "compare", "ensemble", "export", "audit", "serve"):
        assert name in top.split("options:")[0], name  # the top-level help names every subcommand


def test_the_flags_choices_named_for_a_quick_help_are_their_owners():
    import augment.tta
    import core.model
    import training.distribute
    import training.optim
    import transfer.finetune
    import tuning.command
    import tuning.search
    import tuning.space
    from training import config

    assert config.TTA_MODES == augment.tta.MODES and config.PREPROCESSING == core.model.PREPROCESSING
    assert config.STRATEGIES == training.distribute.STRATEGIES and config.HEAD_LR == transfer.finetune.HEAD_LR
    assert config.OPTIMIZERS == training.optim.OPTIMIZERS and config.SCHEDULES == training.optim.SCHEDULES
    assert tuning.command.TUNERS == tuning.search.TUNERS and tuning.command.OBJECTIVES == tuning.search.OBJECTIVES
    assert tuning.command.SPACE_NAMES == tuple(tuning.space.SPACES)
    import audit.command
    import audit.confident
    import audit.duplicates
    import audit.probabilities

    assert audit.command.SELF_EPOCHS == audit.probabilities.SELF_EPOCHS
    assert audit.command.THRESHOLD == audit.confident.THRESHOLD
    assert (audit.command.HASH_DISTANCE, audit.command.SIMILARITY) == (audit.duplicates.HASH_DISTANCE,
                                                                       audit.duplicates.SIMILARITY)
