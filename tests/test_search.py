"""Hyperparameter search (tuning/, ``train.py search``) on real digits with real keras-tuner.

Every search here is small: an MLP, a few settings, one or two epochs a trial.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import keras_tuner
import pytest

from helpers import ROOT, run_cli

from training import run as training_run
from core.errors import UserError
from training.config import complete
from tuning import SearchSettings, TrainingTuner, build_space, declare, parse_spec, results, run_search, to_config
from tuning.search import LOST_RUNS, REPORT, WorkerWatch, make_oracle
from tuning.space import Param

BASE = complete({"model": "mlp", "verbose": 0, "export": False})


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --- Spaces ---------------------------------------------------------------------------------

def test_specs_parse_into_choices_ranges_and_fixed_values():
    assert parse_spec("model", "lenet5,resnet20").values == ["lenet5", "resnet20"]
    assert parse_spec("batch_norm", "true,false,none").values == [True, False, None]
    assert parse_spec("head_hidden", "[],[128]").values == [[], [128]]
    assert parse_spec("freeze", "from:auto,none").values == ["from:auto", None]
    lr = parse_spec("lr", "1e-4..1e-2/log")
    assert (lr.low, lr.high, lr.log) == (1e-4, 1e-2, True)
    steps = parse_spec("dropout", "0..0.5/0.1")
    assert (steps.low, steps.high, steps.step, steps.log) == (0, 0.5, 0.1, False)
    assert parse_spec("dropout", "0.2").values == [0.2]
    assert parse_spec("lr", [0.1, 0.01]).values == [0.1, 0.01]  # from a space file
    for bad, why in [("1..0", "low < high"), ("0..1/log", "above 0"), ("a..b", "numbers"), ("1..2/fast", "step")]:
        with pytest.raises(UserError, match=why):
            parse_spec("lr", bad)


def test_space_drops_fixed_keys_adds_tuned_ones_and_defaults_to_the_runs_settings():
    base = {**BASE, "lr": 0.003, "optimizer": "rmsprop"}
    space = build_space("zoo", base, tune={"l2": parse_spec("l2", "0,1e-4")}, fixed={"model", "augment"})
    assert "model" not in space and "augment" not in space and space["l2"].values == [0, 1e-4]
    assert space["optimizer"].values[0] == "rmsprop"  # the run's own setting is always a candidate
    hp = keras_tuner.HyperParameters()
    declare(hp, space, base)
    config = to_config(hp.values, base)  # hp.values are the defaults: trial 0 is the unsearched run
    assert all(config[key] == base[key] for key in space if key != "l2")
    with pytest.raises(UserError, match="unknown setting learning_rate"):
        build_space("zoo", base, tune={"learning_rate": Param(values=[1])}, fixed=set())


# --- Tuners ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tuner", ["random", "hyperband", "bayesian"])
def test_each_tuner_finishes_and_its_best_is_at_least_the_default(tuner, tmp_path):
    space = {"lr": parse_spec("lr", "3e-4..3e-2/log"), "dropout": parse_spec("dropout", "0.0,0.3")}
    settings = SearchSettings(tuner=tuner, max_trials=3, trial_epochs=2, hyperband_factor=2)
    searched, finished = run_search(BASE, space, settings, folder=str(tmp_path / "search"), log=lambda *_: None)
    rows = results(searched.oracle, settings)
    assert finished and len(rows) == 3 and all(row["status"] == "COMPLETED" for row in rows)
    assert rows[0]["score"] == max(row["score"] for row in rows)
    assert any(row["settings"] == {"lr": BASE["lr"], "dropout": 0.0} for row in rows)  # the default ran

    # The same configuration trained outside the search, for the same epochs, scores no better.
    keras.backend.clear_session()
    default = training_run.train({**BASE, "epochs": 2, "monitor": "val_accuracy"}, log=lambda *_: None,
                                 run_dir=str(tmp_path / "default"), trial=True)
    assert rows[0]["score"] >= default["best_val_accuracy"] - 1 / 179  # one validation image of slack


def test_a_transfer_search_trains_head_then_fine_tunes_in_every_trial(tmp_path):
    # A saved network as the backbone: a named one with --weights none has nothing to transfer and trains whole.
    import zoo
    from core.model import assemble, preprocessing_layer

    path = str(tmp_path / "backbone.keras")
    assemble(zoo.build("lenet5_modern", input_shape=(32, 32, 1), num_classes=3), (32, 32, 1),
             preprocessing=preprocessing_layer("rescale")).save(path)
    base = {**BASE, "backbone": path}
    space = build_space("transfer", base, tune={}, fixed=set())
    assert set(space) == {"freeze", "head_hidden", "head_dropout", "lr", "finetune_lr", "discriminative_lr"}
    settings = SearchSettings(max_trials=2, trial_epochs=2)
    searched, finished = run_search(base, space, settings, folder=str(tmp_path / "search"), log=lambda *_: None)
    rows = results(searched.oracle, settings)
    assert finished and [row["status"] for row in rows] == ["COMPLETED", "COMPLETED"]
    for row in rows:  # the budget of 2 epochs is one for the head and one for fine-tuning
        backup = tmp_path / "search" / f"trial_{row['trial']}" / "backup"
        assert (backup / "head.done").is_file() and (backup / "finetune.done").is_file()
        assert row["epochs_run"] == 2


# --- The command ----------------------------------------------------------------------------

SEARCH = ["search", "--model", "mlp", "--space", "none", "--tune", "lr=0.001,1e6", "--tune", "optimizer=sgd",
          "--max-trials", "2", "--trial-epochs", "1", "--epochs", "2", "--verbose", "0"]


def test_a_failing_trial_is_recorded_and_the_best_is_retrained_and_exported(tmp_path):
    done = run_cli("train.py", *SEARCH, "--runs-dir", str(tmp_path / "runs"),
                   "--export-dir", str(tmp_path / "saved"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "runs" / "search-mlp-digits"
    rows = read_csv(folder / "results.csv")
    assert [row["status"] for row in rows] == ["COMPLETED", "FAILED"]
    assert float(rows[1]["lr"]) == 1e6 and "loss became" in rows[1]["error"]
    assert "FAILED: NanLossError: loss became" in done.stdout  # the live summary says why
    assert json.loads((folder / "results.json").read_text())["trials"][0]["settings"]["lr"] == 0.001
    assert (folder / "trials.png").stat().st_size > 0
    best = json.loads((folder / "best.json").read_text())
    assert best["trial"] == rows[0]["trial"] and 0 < best["test_accuracy"] <= 1
    assert os.path.isfile(os.path.join(best["export_path"], "saved_model.pb"))
    config = json.loads((tmp_path / "runs" / "search-mlp-digits-best" / "config.json").read_text())
    assert config["lr"] == 0.001 and config["optimizer"] == "sgd" and config["epochs"] == 2

    # Another search in the same folder is refused rather than mixed in.
    again = run_cli("train.py", *SEARCH, "--tuner", "bayesian", "--runs-dir", str(tmp_path / "runs"))
    assert again.returncode == 2 and again.stderr.strip().startswith("error:") and "tuner" in again.stderr


def test_the_same_search_again_exports_the_next_version_of_its_export_name(tmp_path, capsys):
    import train as train_cli

    exp = tmp_path / "saved"
    argv = ["search", "--model", "mlp", "--space", "none", "--tune", "lr=0.001", "--max-trials", "1",
            "--trial-epochs", "1", "--epochs", "1", "--verbose", "0", "--runs-dir", str(tmp_path / "runs"),
            "--export-dir", str(exp), "--export-name", "digits-mlp"]
    assert train_cli.main(argv) == 0 and train_cli.main(argv) == 0  # the second retrains the finished search's best
    assert os.listdir(exp) == ["digits-mlp"] and sorted(os.listdir(exp / "digits-mlp")) == ["1", "2"]
    best = json.loads((tmp_path / "runs" / "search-mlp-digits" / "best.json").read_text())
    assert (best["export_name"], best["export_version"]) == ("digits-mlp", 2)
    assert os.path.basename(best["run_dir"]) == "search-mlp-digits-best-2"
    assert f"Exported: {exp / 'digits-mlp' / '2'} (model digits-mlp, version 2; a running `train.py serve {exp}` " \
           "picks it up)" in capsys.readouterr().out.splitlines()


def test_a_bad_export_name_stops_a_search_before_it_starts(tmp_path, capsys):
    import train as train_cli

    assert train_cli.main([*SEARCH, "--runs-dir", str(tmp_path / "runs"), "--search-name", ".hidden"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: The export name '.hidden-best' must be a plain folder name (no '/', not starting with '.'); it is "
        "the run's name unless --export-name NAME gives another")
    assert not (tmp_path / "runs").exists()


def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    argv = [sys.executable, os.path.join(ROOT, "train.py"), "search", "--model", "mlp", "--space", "none",
            "--tune", "lr=1e-3..1e-2/log", "--max-trials", "3", "--trial-epochs", "3", "--final", "none",
            "--verbose", "0", "--runs-dir", str(tmp_path / "runs")]
    env = {**os.environ, "CNN_CLASSROOM_OFFLINE": "1"}
    folder = tmp_path / "runs" / "search-mlp-digits"
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    # Kill it as trial 1 starts, once trial 0 has finished.
    while not (folder / "trial_1").exists() and time.time() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = (folder / "trial_0" / "metrics.json").stat().st_mtime_ns
    assert not (folder / "trial_1" / "metrics.json").exists()

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "trial_0" / "metrics.json").stat().st_mtime_ns == first  # not repeated
    rows = read_csv(folder / "results.csv")
    assert sorted(row["trial"] for row in rows) == ["0", "1", "2"]
    assert all(row["status"] == "COMPLETED" for row in rows)
    assert "trial 0:" not in done.stdout and "trial 1" in done.stdout and "trial 2" in done.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_chief_and_two_workers_finish_one_search_together(tmp_path):
    argv = [sys.executable, os.path.join(ROOT, "train.py"), "search", "--model", "mlp", "--space", "none",
            "--tune", "lr=1e-3..1e-2/log", "--max-trials", "4", "--trial-epochs", "1", "--epochs", "1",
            "--verbose", "0", "--runs-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "saved")]
    shared = {**os.environ, "CNN_CLASSROOM_OFFLINE": "1", "KERASTUNER_ORACLE_IP": "127.0.0.1",
              "KERASTUNER_ORACLE_PORT": str(free_port())}
    processes = {name: subprocess.Popen(argv, env={**shared, "KERASTUNER_TUNER_ID": name}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for name in ("chief", "tuner0", "tuner1")}
    outputs = {name: process.communicate(timeout=300) for name, process in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 0, (name, outputs[name][1][-3000:])
    ran = {name: [line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("trial ")]
           for name, (out, _) in outputs.items() if name != "chief"}
    assert ran["tuner0"] and ran["tuner1"]  # both workers ran trials
    assert sorted(ran["tuner0"] + ran["tuner1"]) == ["0", "1", "2", "3"]  # each trial ran once
    folder = tmp_path / "runs" / "search-mlp-digits"
    assert len(read_csv(folder / "results.csv")) == 4
    best = json.loads((folder / "best.json").read_text())  # only the chief retrains and exports
    assert os.path.isdir(best["export_path"]) and "Worker finished" in outputs["tuner0"][0]


def test_the_chief_drops_a_silent_worker_and_says_where_a_failures_message_is(tmp_path):
    space = {"lr": parse_spec("lr", "0.001,0.01")}
    settings = SearchSettings(max_trials=2, trial_epochs=1)
    hp = keras_tuner.HyperParameters()
    declare(hp, space, BASE)
    tuner = TrainingTuner(make_oracle(settings, hp), base=BASE, settings=settings, directory=str(tmp_path),
                          project_name="search", log=lambda *_: None)
    tuner.oracle.verbose = 0
    now = [0.0]
    watch = WorkerWatch(tuner.oracle, 10, tuner.get_trial_dir, clock=lambda: now[0])
    trial = tuner.oracle.create_trial("tuner1")
    watch.heard(tuner_id="tuner1")
    now[0] = 5
    watch.heard(trial_id=trial.trial_id)  # its heartbeat
    now[0] = 14
    assert watch.drop_silent() == [] and not watch.abandoned()
    now[0] = 16  # 11 s since it was last heard from
    requeued = (f"worker tuner1 stopped answering for 11 s; trial {trial.trial_id} goes back in the queue for the "
                "next worker")
    assert watch.drop_silent() == [requeued]
    assert trial.status == "INVALID" and "stopped answering" in trial.message
    row = results(tuner.oracle, settings)[0]  # waiting to run again: why is in the table
    assert row["status"] == "INVALID" and row["error"].startswith("worker tuner1 stopped answering for 11 s")
    assert not watch.abandoned()  # a new worker may still come
    now[0] = 27
    assert watch.abandoned()  # every worker gone, none came for a whole timeout: the chief stops

    assert tuner.oracle.create_trial("tuner0").trial_id == trial.trial_id  # the next worker takes it
    watch.heard(tuner_id="tuner0")
    assert not watch.abandoned()
    now[0] = 40
    failed = (f"worker tuner0 stopped answering for 13 s; trial {trial.trial_id} has lost its worker {LOST_RUNS} "
              "times and is recorded as failed")
    assert watch.drop_silent() == [failed] and trial.status == "FAILED"

    # A failure's message comes from the report its worker wrote in the trial's folder, when the chief sees it.
    other = tuner.oracle.create_trial("tuner0")
    assert "the workers do not share the search folder with the chief" in watch.failure_message(other.trial_id)
    assert watch.failure_message(other.trial_id).startswith("failed on worker tuner0; the error is in that worker")
    report = os.path.join(tuner.get_trial_dir(other.trial_id), REPORT)
    with open(report, "w", encoding="utf-8") as f:
        json.dump({"trial": other.trial_id, "worker": "tuner0", "status": "FAILED",
                   "message": "Traceback ...\nValueError: no room"}, f)
    assert watch.failure_message(other.trial_id) == "Traceback ...\nValueError: no room"
