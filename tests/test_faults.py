"""Faults a run survives: two commands on one run directory, a lock left by a killed process, a full disk,
a distributed search's worker killed for good.

The full disk is injected in this process, at the write itself: ``os.replace``
onto the file fails, or ``open`` hands out a file that takes a few writes and
then tears the next one, as the kernel's ENOSPC does.  Training is real.
"""

from __future__ import annotations

import builtins
import csv
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import h5py
import pytest

import train as train_cli
from core.errors import DiskFull
from helpers import ROOT
from training import lock, rundir
from tuning.search import REPORT

EPOCHS = 3


def argv(tmp_path, *extra):
    return ["--model", "mlp", "--epochs", str(EPOCHS), "--patience", "0", "--verbose", "0",
            "--runs-dir", str(tmp_path / "runs"), "--export-dir", str(tmp_path / "exp"), *extra]


def epochs_logged(run) -> list[int]:
    return [row["epoch"] for row in rundir.read_history(str(run / "history.csv"))]


def committed(run) -> int:
    return json.loads((run / "backup" / "train" / "training_metadata.json").read_text())["epoch"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# --- One process per run directory ------------------------------------------------------------


def test_two_identical_commands_at_once_get_two_run_directories(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "train.py"), *argv(tmp_path, "--no-export")]
    env = {**os.environ, "CNN_CLASSROOM_OFFLINE": "1"}
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-2000:]
    runs = tmp_path / "runs"
    assert sorted(os.listdir(runs)) == ["mlp-digits", "mlp-digits-2"]
    for name in ("mlp-digits", "mlp-digits-2"):
        assert epochs_logged(runs / name) == list(range(EPOCHS))  # each epoch once: nobody wrote twice
        assert json.loads((runs / name / "metrics.json").read_text())["epochs_run"] == EPOCHS


def hold(folder):
    """A process (without TensorFlow) that takes ``folder``'s lock and keeps it until killed."""
    code = "import sys, time; from training import lock; lock.acquire(sys.argv[1]); print('held', flush=True); " \
           "time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_directory_in_use_is_passed_over_or_refused_and_its_lock_dies_with_its_process(tmp_path):
    config = {"model": "mlp", "dataset": "digits"}
    folder = tmp_path / "r"
    holder = hold(folder)
    try:
        refusal = rf"{re.escape(str(folder))} is in use by process {holder.pid} \(python\S* -c .*, started .*\); wait"
        with pytest.raises(lock.Busy, match=refusal):
            lock.acquire(str(folder))
        # Chosen automatically: the next name, as for a finished run.
        path, resuming, notes = rundir.choose(str(tmp_path), "r", config, claim=True)
        assert (path, resuming) == (str(tmp_path / "r-2"), False)
        assert notes == [f"run 'r' is in use by process {holder.pid}; leaving it to it"]
        lock.release(path)
        # Named by the user: refused, with what to do.
        with pytest.raises(lock.Busy, match=rf"process {holder.pid} .*; wait for it to finish, or pass another "
                                            r"--run-name"):
            rundir.choose(str(tmp_path), "r", config, claim=True, named=True)
    finally:
        holder.kill()
        holder.wait()
    # The killed holder's file is still there, naming it; its lock is not.
    assert lock.holder(str(folder / lock.NAME))["pid"] == holder.pid
    path, resuming, _ = rundir.choose(str(tmp_path), "r", config, claim=True, named=True)
    assert (path, resuming) == (str(folder), False)  # only a lock file inside: a new run
    assert lock.holder(str(folder / lock.NAME))["pid"] == os.getpid()
    lock.release(path)


def test_a_lock_file_left_by_a_dead_process_does_not_block(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / lock.NAME).write_text(json.dumps({"pid": dead.pid, "command": ["python", "train.py"]}))
    with lock.acquire(str(tmp_path)) as held:
        assert lock.holder(held.path)["pid"] == os.getpid()
    with lock.acquire(str(tmp_path)):  # released, so it can be taken again
        pass


def test_a_second_command_with_the_same_run_name_is_refused_then_resumes_the_killed_first(tmp_path, capsys):
    args = argv(tmp_path, "--no-export", "--run-name", "shared", "--batch-size", "8")
    run = tmp_path / "runs" / "shared"
    first = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT,
                             env={**os.environ, "CNN_CLASSROOM_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (run / "backup" / "train" / "training_metadata.json").is_file():
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # alive and holding the lock, for as long as this test needs
        assert not (run / "metrics.json").exists()

        assert train_cli.main(args) == 2
        line = error_line(capsys)
        assert f"{run} is in use by process {first.pid} (" in line and "train.py" in line, line
        assert line.endswith("wait for it to finish, or pass another --run-name"), line
        assert sorted(os.listdir(tmp_path / "runs")) == ["shared"]
    finally:
        first.kill()  # as kill -9 would: its lock file stays, its lock goes with it
        first.wait()
    done = committed(run)
    assert done >= 1 and lock.holder(str(run / lock.NAME))["pid"] == first.pid

    assert train_cli.main(args) == 0
    assert f"Resuming run {run} after epoch {done}" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "runs")) == ["shared"]
    assert epochs_logged(run) == list(range(EPOCHS))


# --- A full disk ------------------------------------------------------------------------------


class _Filling:
    """A file open for writing on a disk with room for ``room`` more writes; the next one is torn."""

    def __init__(self, file, room: list[int]):
        self._file, self._room = file, room

    def write(self, text):
        if self._room[0] <= 0:
            self._file.write(text[: len(text) // 2])
            self._file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._file.name)
        self._room[0] -= 1
        return self._file.write(text)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def full_disk(monkeypatch, name: str, room: int = 0) -> list[int]:
    """Makes the disk full for files called ``name`` after ``room`` writes to them: a write through ``open``
    is torn, and ``os.replace``/``os.rename`` onto one fails.  Returns the room left (a one-item list)."""
    left = [room]
    real_open, real_replace, real_rename = builtins.open, os.replace, os.rename

    def opened(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        writing = isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+")
        return _Filling(handle, left) if writing and os.path.basename(file) == name else handle

    def renamer(real):
        def rename(src, dst, *args, **kwargs):
            if os.path.basename(dst) == name:
                if left[0] <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)
                left[0] -= 1
            return real(src, dst, *args, **kwargs)
        return rename

    monkeypatch.setattr(builtins, "open", opened)
    monkeypatch.setattr(os, "replace", renamer(real_replace))
    monkeypatch.setattr(os, "rename", renamer(real_rename))
    return left


# site: (file that fills the disk, writes to it that still fit, the path the error names, export?)
SITES = {
    "checkpoint": ("epoch-2.weights.h5", 0, "runs/mlp-digits/backup/train/epoch-2.weights.h5", False),
    "history row": ("history.csv", 2, "runs/mlp-digits/history.csv", False),  # header, epoch 1, then torn
    "best weights": ("best.weights.h5", 1, "runs/mlp-digits/best.weights.h5", False),  # epoch 1's fits
    "metrics.json": ("metrics.json", 0, "runs/mlp-digits/metrics.json", False),
    "export": ("metadata.json", 0, "exp/mlp-digits", True),
}


@pytest.mark.parametrize("site", SITES)
def test_a_full_disk_stops_with_one_line_loses_no_epoch_and_the_same_command_finishes(tmp_path, capsys,
                                                                                    monkeypatch, site):
    name, room, named, export = SITES[site]
    args = argv(tmp_path, *([] if export else ["--no-export"]))
    run = tmp_path / "runs" / "mlp-digits"
    with monkeypatch.context() as patch:
        left = full_disk(patch, name, room)
        code = train_cli.main(args)
    assert left == [0]  # the disk did fill where it was meant to
    line = error_line(capsys)
    assert code == 2 and line.startswith(f"error: the disk is full: could not write {tmp_path / named} ("), line
    assert line.endswith("free some space and run the same command again to continue where it stopped"), line
    # Nothing half-written stays behind, and what was committed before still loads.
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files if ".tmp" in f]
    assert not leftovers and not (run / "metrics.json").exists()
    done = committed(run)
    assert done == (EPOCHS if site in ("metrics.json", "export") else 1)
    with h5py.File(run / "backup" / "train" / f"epoch-{done}.weights.h5") as f:
        assert len(f.keys()) > 0
    with h5py.File(run / "best.weights.h5") as f:
        assert len(f.keys()) > 0
    if export:
        assert os.listdir(tmp_path / "exp" / "mlp-digits") == []  # neither a version nor its staging folder

    assert train_cli.main(args) == 0  # the same command, with room again
    assert f"Resuming run {run} after epoch {done}" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "runs")) == ["mlp-digits"]
    assert epochs_logged(run) == list(range(EPOCHS))
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == EPOCHS
    if export:
        assert os.listdir(tmp_path / "exp" / "mlp-digits") == ["1"]


def test_a_full_disk_keeps_the_json_it_would_have_replaced(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    rundir.write_json(str(path), {"epochs": 1})
    full_disk(monkeypatch, "config.json")
    expected = rf"could not write {re.escape(str(path))} \(.* free there now; about 1[0-9] B needed\)"
    with pytest.raises(DiskFull, match=expected):
        rundir.write_json(str(path), {"epochs": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"epochs": 1} and os.listdir(tmp_path) == ["config.json"]


def test_processes_writing_one_json_at_once_all_succeed_and_leave_a_whole_file(tmp_path):
    # The workers of a distributed search all write search.json as they start; with one temporary name shared by
    # every process, a worker's rename could find its file already renamed by another, and it died.
    path = tmp_path / "search.json"
    code = ("import sys; from training import rundir\n"
            "for i in range(300): rundir.write_json(sys.argv[1], {'writer': sys.argv[2], 'i': i})")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)], cwd=ROOT, stderr=subprocess.PIPE,
                                text=True) for n in range(3)]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    assert json.loads(path.read_text())["i"] == 299 and os.listdir(tmp_path) == ["search.json"]


# --- A distributed search's worker lost for good ---------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def running(folder) -> dict[str, str]:
    """{worker: trial} as the chief last saved it in oracle.json ({} while it is being written)."""
    try:
        return json.loads((folder / "oracle.json").read_text())["ongoing_trials"]
    except (OSError, ValueError, KeyError):
        return {}


def kill_a_worker_mid_trial(folder, workers: dict, deadline: float) -> tuple[str, str]:
    """Kills (-9) the first worker seen training a trial, and returns (that worker, its trial).

    Paused first, and killed only if the chief still counts the trial as running once it is paused: the trial
    cannot have ended in between.
    """
    while time.time() < deadline:
        for name, trial in running(folder).items():
            if name in workers and (folder / f"trial_{trial}" / "config.json").is_file():
                workers[name].send_signal(signal.SIGSTOP)
                time.sleep(0.5)
                if running(folder).get(name) == trial:
                    workers[name].kill()
                    workers[name].wait()
                    return name, trial
                workers[name].send_signal(signal.SIGCONT)
        assert all(process.poll() is None for process in workers.values()), "a worker ended before any was killed"
        time.sleep(0.05)
    raise AssertionError("no worker was seen running a trial")


def test_a_search_worker_killed_mid_trial_is_dropped_and_another_runs_its_trial(tmp_path):
    # Three settings, one of which really fails (lr 1e6 diverges): its error must reach the chief's table.
    argv = [sys.executable, os.path.join(ROOT, "train.py"), "search", "--model", "mlp", "--space", "none",
            "--tune", "lr=0.001,0.01,1e6", "--tune", "optimizer=sgd", "--max-trials", "3", "--trial-epochs", "1",
            "--final", "none", "--worker-timeout", "4", "--verbose", "0", "--runs-dir", str(tmp_path / "runs")]
    shared = {**os.environ, "CNN_CLASSROOM_OFFLINE": "1", "KERASTUNER_ORACLE_IP": "127.0.0.1",
              "KERASTUNER_ORACLE_PORT": str(free_port())}
    logs = {name: (tmp_path / f"{name}.out", tmp_path / f"{name}.err") for name in ("chief", "tuner0", "tuner1")}
    processes = {}
    for name, (out, err) in logs.items():  # files, not pipes: nobody reads them while the search runs
        with open(out, "w") as stdout, open(err, "w") as stderr:
            processes[name] = subprocess.Popen(argv, cwd=ROOT, env={**shared, "KERASTUNER_TUNER_ID": name},
                                               stdout=stdout, stderr=stderr, text=True)
    folder = tmp_path / "runs" / "search-mlp-digits"
    try:
        workers = {name: processes[name] for name in ("tuner0", "tuner1")}
        lost, trial = kill_a_worker_mid_trial(folder, workers, deadline=time.time() + 120)
        survivor = next(name for name in workers if name != lost)
        for name in ("chief", survivor):
            processes[name].wait(timeout=120)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    output = {name: (out.read_text(), err.read_text()) for name, (out, err) in logs.items()}
    for name in ("chief", survivor):
        assert processes[name].returncode == 0, (name, output[name][0][-2000:], output[name][1][-3000:])
    chief_out = output["chief"][0]
    assert f"worker {lost} stopped answering for " in chief_out, chief_out
    assert f"trial {trial} goes back in the queue for the next worker" in chief_out, chief_out
    ran = [line.split()[1].rstrip(":") for line in output[survivor][0].splitlines() if line.startswith("trial ")]
    assert trial in ran, output[survivor][0]  # the survivor ran the lost worker's trial

    rows = {row["trial"]: row for row in read_csv(folder / "results.csv")}
    assert len(rows) == 3 and sorted(float(row["lr"]) for row in rows.values()) == [0.001, 0.01, 1e6]
    for row in rows.values():  # the lost trial included: run again to its end, and counted once
        if float(row["lr"]) == 1e6:
            assert row["status"] == "FAILED" and row["error"].startswith("NanLossError: loss became"), row
        else:
            assert row["status"] == "COMPLETED" and float(row["score"]) > 0 and not row["error"], row
    # The error came from the report its worker left in the trial's folder (keras-tuner's gRPC does not carry it).
    failed = next(key for key, row in rows.items() if row["status"] == "FAILED")
    report = json.loads((folder / f"trial_{failed}" / REPORT).read_text())
    assert "NanLossError: loss became" in report["message"]
    if failed == trial:
        assert report["worker"] == survivor, report


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
