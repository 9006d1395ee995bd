"""Distributed training: two workers on localhost train one model together and the chief exports it.

The cluster reads a ``tfds:`` source (a small TFDS dataset the tests prepare, since nothing can be
downloaded here): each worker streams the splits into the image cache and reads only its own shard
of the training images (``training.data.worker_pipeline``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT

from training import distribute
from training import run as training_run
from core.errors import UserError

RUN = ["--model", "lenet5", "--dataset", "tfds:imagesets_tiny_digits", "--epochs", "2", "--patience", "0",
       "--verbose", "0"]
RUN_NAME = "lenet5-imagesets_tiny_digits"


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """Two worker processes, each with its own TF_CONFIG, running the same train.py command."""
    from test_imagesets import ImagesetsTinyDigits

    base = tmp_path_factory.mktemp("cluster")
    ImagesetsTinyDigits(data_dir=str(base / "tfds")).download_and_prepare()
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    args = [*RUN, "--data-dir", str(base / "tfds"), "--strategy", "multi_worker", "--runs-dir", str(base / "runs"), "--export-dir", str(base / "exp")]
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CNN_CLASSROOM_OFFLINE": "1"}
        workers.append(subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], env=env, cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=240))
    finally:
        for worker in workers:  # a worker whose peer died waits forever on its collectives
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    return base, [out for out, _ in outputs]


def test_two_workers_train_together_and_only_the_chief_exports(cluster_run):
    base, outputs = cluster_run
    assert "2 replicas on 2 workers; this is worker 0" in outputs[0]
    assert "this is worker 1" in outputs[1]
    # Each worker streamed the TFDS splits and reads its own half of the 270 training images, not all of them
    # (which half: test_imagesets' test of worker_pipeline for these InputContexts shows the halves disjoint).
    for output in outputs:
        assert "Data: tfds:imagesets_tiny_digits, 10 classes" in output
        assert "this worker reads its own 135 of the 270 training images an epoch" in output
    chief_dir = base / "runs" / RUN_NAME
    worker_dir = base / "runs" / ".worker1" / RUN_NAME
    assert (chief_dir / "metrics.json").is_file() and (worker_dir / "metrics.json").is_file()
    assert os.listdir(base / "exp") == [RUN_NAME]
    assert os.listdir(base / "exp" / RUN_NAME) == ["1"]
    # Synchronous training: both workers saw the same averaged losses and ended with the same model.
    assert (chief_dir / "history.csv").read_text() == (worker_dir / "history.csv").read_text()
    chief = json.loads((chief_dir / "metrics.json").read_text())
    worker = json.loads((worker_dir / "metrics.json").read_text())
    assert chief["test_accuracy"] == worker["test_accuracy"] > 0.5
    assert chief["export_path"] and worker["export_path"] is None


def test_the_chiefs_export_classifies_like_its_run(cluster_run, tmp_path):
    base, _ = cluster_run
    chief = json.loads((base / "runs" / RUN_NAME / "metrics.json").read_text())
    import imagesets

    images, labels = imagesets.load("tfds:imagesets_tiny_digits", data_dir=str(base / "tfds")).arrays["test"]
    np.save(tmp_path / "images.npy", np.asarray(images, np.float32))
    consumer = f"""
import json
import numpy as np, tensorflow as tf
m = tf.saved_model.load({chief['export_path']!r})
out = m.signatures["serving_default"](images=tf.constant(np.load({str(tmp_path / 'images.npy')!r})))
print(json.dumps(out["class_ids"].numpy().tolist()))
"""
    done = subprocess.run([sys.executable, "-c", consumer], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    predicted = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    assert np.mean(predicted == labels) == pytest.approx(chief["test_accuracy"])


def test_single_machine_strategies_export_the_same_signature(cluster_run, tmp_path):
    import tensorflow as tf

    base, _ = cluster_run
    config = {"epochs": 1, "verbose": 0, "patience": 0, "strategy": "mirrored", "runs_dir": str(tmp_path / "runs"),
              "export_dir": str(tmp_path / "exp")}
    metrics = training_run.train(config, log=lambda *_: None)
    chief = json.loads((base / "runs" / RUN_NAME / "metrics.json").read_text())

    def signature(path):
        function = tf.saved_model.load(path).signatures["serving_default"]
        return function.structured_input_signature, {k: (v.shape.as_list(), v.dtype)
                                                     for k, v in function.structured_outputs.items()}

    assert signature(metrics["export_path"]) == signature(chief["export_path"])


def test_multi_worker_without_tf_config_says_what_to_set(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(UserError, match="index 3"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(UserError, match="not usable"):
        distribute.make_strategy("multi_worker")


def test_unknown_strategy_is_refused():
    with pytest.raises(UserError, match="Unknown strategy 'tpu'"):
        distribute.make_strategy("tpu")


def test_strategy_flag_reaches_the_configuration():
    import train as train_cli

    config, _ = train_cli.resolve_config(["--strategy", "one_device"])
    assert config["strategy"] == "one_device"
    assert train_cli.resolve_config([])[0]["strategy"] == "auto"


def test_a_worker_ahead_of_the_others_steps_back_to_its_previous_checkpoint(tmp_path):
    def write(path, data):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data) if isinstance(data, dict) else data)

    import keras

    from training.checkpoint import ResumableCheckpoint

    root = tmp_path / "backup"
    write(root / "head.done", {"end_epoch": 2})
    write(root / "finetune.done", {"end_epoch": 4})
    # A real checkpoint of epochs 3 and 4 (the fine-tuning phase after two head epochs).
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    model.fit(x, y, initial_epoch=2, epochs=4, verbose=0, callbacks=[ResumableCheckpoint(str(root / "finetune"))])
    distribute.roll_back(str(root), 3)
    assert sorted(os.listdir(root)) == ["finetune", "head.done"]
    metadata = json.loads((root / "finetune" / "training_metadata.json").read_text())
    assert metadata == {**metadata, "epoch": 3, "weights": "epoch-3.weights.h5"}
    assert (root / "finetune" / "epoch-3.weights.h5").is_file()
    with pytest.raises(UserError, match="back to epoch 1"):
        distribute.roll_back(str(root), 1)  # no checkpoint of epoch 1 is kept
    distribute.roll_back(str(root), 0)
    assert not root.exists()


def test_a_run_resumes_under_another_strategy():
    from training import rundir

    config = {**training_run.DEFAULTS, "strategy": "mirrored"}
    assert rundir.fingerprint(config) == rundir.fingerprint({**config, "strategy": "auto"})
