"""The search itself: keras-tuner's oracles choose settings, each trial is a training run.

A trial is ``training.run.train(config, run_dir=<trial folder>, trial=True)``:
the same data, model assembly, augmentation, phases, checkpoints and NaN
guard as any run, scored on the validation split only.  So a trial resumes
from its own checkpoint when a killed search is started again, and a trial
that fails (NaN loss, out of memory, a setting its model refuses) is
recorded as failed while the search goes on.

Distributed search is keras-tuner's chief/worker mode: with
``KERASTUNER_ORACLE_IP``/``KERASTUNER_ORACLE_PORT`` set, the process whose
``KERASTUNER_TUNER_ID`` is ``chief`` serves the oracle, and every other
(``tuner0``, ``tuner1``, ...) asks it for trials and runs them.  keras-tuner
assumes workers never die; here a running worker calls in every few seconds
(``Heartbeat``), and the chief drops one it has not heard from for
``worker_timeout`` seconds (``WorkerWatch``): its trial goes back in the
queue for another worker.  A worker writes what became of each trial to the
trial's folder (``REPORT``), where a chief sharing the filesystem reads a
failure's message, which keras-tuner's gRPC messages do not carry.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import threading
import time

import keras_tuner
from keras_tuner.engine.base_tuner import BaseTuner

from core import compat
from training import rundir
from training.config import complete
from training.run import load_backbone, load_data, train
from core.errors import UserError
from tuning.space import declare, decoded, to_config

TUNERS = ("random", "hyperband", "bayesian")
OBJECTIVES = ("val_accuracy", "val_loss")


def defaults_first(oracle) -> dict | None:
    """Makes an oracle's first proposal the run's own settings (every hyperparameter's
    default), so a search can only report something at least as good as not searching."""
    defaults = {hp.name: hp.default for hp in oracle.hyperparameters.space}
    if defaults and not compat.already_tried(oracle, defaults):
        return defaults
    return None  # keras-tuner's own random proposal


# A failed trial prints one line of ours, not keras-tuner's traceback; trial.json keeps the full message.
compat.print_failed_trial_tracebacks(False)

ORACLES = {name: compat.waiting_for_running_trials(compat.proposing_first(oracle_class, defaults_first))
           for name, oracle_class in (("random", keras_tuner.oracles.RandomSearchOracle),
                                      ("hyperband", keras_tuner.oracles.HyperbandOracle),
                                      ("bayesian", keras_tuner.oracles.BayesianOptimizationOracle))}

REPORT = "worker.json"  # in a trial's folder: what the worker that ran it says became of it
LOST_RUNS = 2  # a trial whose worker is lost this many times is failed: it may be what kills them
IDLE_WAIT = 1.0  # seconds a worker waits before asking again when the chief has no trial for it yet


class _TimeUp(Exception):
    """The search's wall-time limit passed before the next trial."""


@dataclasses.dataclass
class SearchSettings:
    """How a search runs (the Search flags of ``train.py search``)."""

    tuner: str = "random"
    objective: str = "val_accuracy"
    max_trials: int = 10
    trial_epochs: int = 10
    max_minutes: float | None = None
    max_failures: int = 5  # consecutive failed trials that stop the search (something is wrong everywhere)
    hyperband_factor: int = 3
    seed: int = 0
    worker_timeout: float = 120.0  # distributed: seconds of silence after which the chief drops a worker


def make_oracle(settings: SearchSettings, hp) -> keras_tuner.Oracle:
    direction = "max" if settings.objective == "val_accuracy" else "min"
    objective = keras_tuner.Objective(settings.objective, direction)
    common = dict(objective=objective, hyperparameters=hp, seed=settings.seed,
                  max_consecutive_failed_trials=settings.max_failures, tune_new_entries=False,
                  allow_new_entries=False)
    if settings.tuner == "hyperband":
        oracle = ORACLES["hyperband"](max_epochs=settings.trial_epochs, factor=settings.hyperband_factor, **common)
        oracle.max_trials = settings.max_trials  # Hyperband itself has no trial limit
        return oracle
    return ORACLES[settings.tuner](max_trials=settings.max_trials, **common)


class TrainingTuner(BaseTuner):
    """Runs each trial as a training run in the trial's own folder."""

    def __init__(self, oracle, *, base: dict, settings: SearchSettings, directory: str, project_name: str,
                 log=print, data=None):
        self.base, self.settings, self.log = base, settings, log
        self.started = time.time()
        self._data = {} if data is None else {self.data_key(base): data}  # ``data``: the base config's, loaded
        self._idle = False  # the last request for a trial got none
        super().__init__(oracle, directory=directory, project_name=project_name)
        self.heartbeat = Heartbeat(self.oracle, settings.worker_timeout) if compat.is_worker() else None

    def trial_config(self, values: dict) -> dict:
        config = to_config(values, self.base)
        budget = int(values.get("tuner/epochs", self.settings.trial_epochs))
        # Early stopping and the kept weights follow the search's objective.
        config.update(monitor=self.settings.objective, export=False, verbose=0)
        if config["backbone"]:
            # A transfer trial's budget is shared: half for the head, half for fine-tuning.
            config["epochs"] = max(1, math.ceil(budget / 2))
            config["finetune_epochs"] = budget - config["epochs"]
        else:
            config["epochs"] = budget
        return config

    @staticmethod
    def data_key(config: dict) -> str:
        return json.dumps([config[k] for k in ("dataset", "data_dir", "image_size", "channels", "val_fraction",
                                               "test_fraction", "seed", "backbone")])

    def data_for(self, config: dict):
        """Loaded once per input (dataset, size, backbone) and shared by the trials."""
        key = self.data_key(config)
        if key not in self._data:
            self._data[key] = load_data(config, load_backbone(config))
        return self._data[key]

    def pre_create_trial(self):
        if self._idle:  # keras-tuner asks again at once; a worker waiting for a trial to come back asks calmly
            time.sleep(IDLE_WAIT)
        self._idle = True  # until a trial begins
        limit = self.settings.max_minutes
        if limit is not None and time.time() - self.started > 60 * limit:
            raise _TimeUp

    def on_trial_begin(self, trial):
        import keras

        self._idle = False
        if self.heartbeat is not None:
            self.heartbeat.trial_id = trial.trial_id
            report = os.path.join(self.get_trial_dir(trial.trial_id), REPORT)
            if os.path.exists(report):
                os.remove(report)  # a previous run's (its worker was lost)
        keras.backend.clear_session()  # each trial's graphs go, so a long search does not grow

    def run_trial(self, trial, *args, **kwargs):
        config = self.trial_config(trial.hyperparameters.values)
        trial_dir = self.get_trial_dir(trial.trial_id)
        started = time.time()
        result = train(config, log=lambda *_: None, run_dir=trial_dir, data=self.data_for(config), trial=True)
        history = result["history"]
        best = result["best_epoch"]
        row = history[best - 1] if best else (history[-1] if history else {})
        if self.settings.objective not in row:
            raise keras_tuner.errors.FailedTrialError(f"no {self.settings.objective} was recorded")
        return {"val_accuracy": float(row.get("val_accuracy", math.nan)),
                "val_loss": float(row.get("val_loss", math.nan)),
                "epochs_run": float(len(history)), "best_epoch": float(best or 0),
                "seconds": round(time.time() - started, 2)}

    def on_trial_end(self, trial):
        if self.heartbeat is not None:
            self.heartbeat.trial_id = None
            self.write_report(trial)  # before the chief hears of the end, so it can read the message
        super().on_trial_end(trial)
        self.log(trial_line(trial, self.oracle, self.settings))

    def on_search_end(self):
        if self.heartbeat is not None:
            self.heartbeat.stop()

    def write_report(self, trial) -> None:
        """``trial_<id>/worker.json``: this worker, the trial's status and its error, for the chief to read."""
        path = os.path.join(self.get_trial_dir(trial.trial_id), REPORT)
        try:
            rundir.write_json(path, {"trial": trial.trial_id, "worker": self.tuner_id, "host": socket.gethostname(),
                                     "pid": os.getpid(), "status": trial.status, "message": trial.message})
        except (OSError, UserError) as error:  # the chief then says where the message is instead
            self.log(f"could not write {path}: {error}")

    def save_model(self, trial_id, model, step=0):
        pass  # each trial's weights are already in its folder (best.weights.h5)

    def load_model(self, trial):
        raise NotImplementedError("retrain the best configuration instead (train.py search does)")


def trial_line(trial, oracle, settings: SearchSettings) -> str:
    """One line of the live summary (``trial`` is this process's copy: it holds a failure's message)."""
    scored = oracle.get_trial(trial.trial_id)  # the oracle scores it (in a distributed search: the chief)
    best = next(iter(oracle.get_best_trials(1)), None)
    trials = getattr(oracle, "trials", None)  # only the oracle itself holds every trial
    done = f" ({sum(t.status in ('COMPLETED', 'FAILED') for t in trials.values())}/{settings.max_trials} done)" \
        if trials is not None else ""
    head = f"trial {trial.trial_id}{done}"
    if trial.status == "COMPLETED" and scored.score is not None:
        seconds = scored.metrics.get_last_value("seconds") if scored.metrics.exists("seconds") else None
        result = f"{settings.objective} {scored.score:.4f}" + (f" in {seconds:.0f} s" if seconds else "")
    else:
        result = f"FAILED: {failure_reason(trial)}"
    best_text = f" | best {best.score:.4f} (trial {best.trial_id})" if best and best.score is not None else ""
    values = " ".join(f"{k}={short(v)}" for k, v in decoded(trial.hyperparameters.values).items())
    return f"{head}: {result}{best_text} | {values}"


def short(value) -> str:
    """A setting as tables show it: None is the model's or optimizer's own default."""
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:.3g}"
    return json.dumps(value) if not isinstance(value, str) else value


def failure_reason(trial) -> str:
    """The last line of a failed trial's traceback: the error itself."""
    lines = [line for line in (trial.message or "").strip().splitlines() if line.strip()]
    if not lines:
        return "failed (the reason is in the log of the process that ran it)"
    kind, colon, text = lines[-1].strip().partition(": ")
    return f"{kind.rsplit('.', 1)[-1]}: {text}" if colon and " " not in kind else lines[-1].strip()


def results(oracle, settings: SearchSettings) -> list[dict]:
    """Every trial, best first; failed ones last with their reason (INVALID: its worker was lost, and it
    waits to run again when the search continues)."""
    rows = []
    for trial in oracle.trials.values():
        metrics = {name: trial.metrics.get_last_value(name) for name in
                   ("val_accuracy", "val_loss", "epochs_run", "best_epoch", "seconds") if trial.metrics.exists(name)}
        rows.append({"trial": trial.trial_id, "status": trial.status,
                     "score": trial.score if trial.status == "COMPLETED" else None,
                     **metrics, "settings": decoded(trial.hyperparameters.values),
                     "epochs_budget": trial.hyperparameters.values.get("tuner/epochs", settings.trial_epochs),
                     "error": failure_reason(trial) if trial.status in ("FAILED", "INVALID") else None})
    sign = -1 if settings.objective == "val_accuracy" else 1
    rows.sort(key=lambda r: (r["score"] is None, sign * (r["score"] or 0), r["trial"]))
    return rows


def write_results(rows: list[dict], folder: str, settings: SearchSettings) -> dict[str, str]:
    """results.csv and results.json (sorted by score) and trials.png; returns their paths."""
    import csv

    paths = {name: os.path.join(folder, name) for name in ("results.csv", "results.json", "trials.png")}
    rundir.write_json(paths["results.json"], {"objective": settings.objective, "tuner": settings.tuner,
                                              "trials": rows})
    keys = sorted({k for row in rows for k in row["settings"]})
    columns = ["rank", "trial", "status", "score", "val_accuracy", "val_loss", "epochs_run", "best_epoch",
               "seconds", "epochs_budget", *keys, "error"]
    tmp = paths["results.csv"] + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for rank, row in enumerate(rows, start=1):
            flat = {k: v for k, v in row.items() if k != "settings"}
            flat.update({k: json.dumps(v) if isinstance(v, (list, type(None), bool)) else v
                         for k, v in row["settings"].items()})
            writer.writerow({"rank": rank if row["score"] is not None else "", **flat})
    os.replace(tmp, paths["results.csv"])
    plot_trials(rows, paths["trials.png"], settings)
    return paths


def plot_trials(rows: list[dict], path: str, settings: SearchSettings) -> None:
    """Each trial's score in the order trials ran, the best so far as a line, failures as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(rows, key=lambda r: r["trial"])
    fig, ax = plt.subplots(figsize=(7, 4))
    done = [(i, r["score"]) for i, r in enumerate(ordered) if r["score"] is not None]
    if done:
        xs, ys = zip(*done)
        ax.scatter(xs, ys, label="trial")
        pick = max if settings.objective == "val_accuracy" else min
        running = [pick(ys[: i + 1]) for i in range(len(ys))]
        ax.step(xs, running, where="post", color="C1", label="best so far")
    failed = [i for i, r in enumerate(ordered) if r["score"] is None]
    if failed:
        low = min((s for _, s in done), default=0.0)
        ax.scatter(failed, [low] * len(failed), marker="x", color="C3", label="failed")
    ax.set_xlabel("trial")
    ax.set_ylabel(settings.objective)
    ax.set_title(f"{settings.tuner} search: {len(done)} trials scored, {len(failed)} failed")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


class Heartbeat:
    """A worker's calls to the chief while it runs a trial, so the chief knows it is alive.

    A background thread asks the chief for the running trial every
    ``timeout / 6`` seconds (30 at most): cheap for the chief, and several
    calls fit in the chief's ``worker_timeout`` even if some are late.
    """

    def __init__(self, oracle, timeout: float):
        self.oracle, self.every = oracle, min(30.0, timeout / 6)
        self.trial_id: str | None = None  # set while a trial runs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="search-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self):
        import grpc

        while not self._stop.wait(self.every):
            trial_id = self.trial_id
            if trial_id is not None:
                try:
                    self.oracle.get_trial(trial_id)
                except grpc.RpcError:  # the chief is gone or restarting; the trial's own calls will say so
                    continue

    def stop(self):
        self._stop.set()


class WorkerWatch:
    """The chief's view of its workers: when each was last heard from, and dropping the silent ones.

    A worker is heard from when it asks for a trial and with every call about
    the trial it runs (its ``Heartbeat`` included).  One silent for longer
    than ``timeout`` seconds is dropped: the chief stops waiting for it, and
    its trial goes back in the queue, or fails once it has lost its worker
    ``LOST_RUNS`` times.
    """

    def __init__(self, oracle, timeout: float, trial_dir, clock=time.monotonic):
        self.oracle, self.timeout, self.trial_dir, self.clock = oracle, timeout, trial_dir, clock
        self.seen: dict[str, float] = {}  # worker -> when last heard from
        self.last_loss: float | None = None
        self.last_call = clock()  # any call, a dropped worker's included

    def heard(self, tuner_id: str | None = None, trial_id: str | None = None) -> None:
        now = self.last_call = self.clock()
        if tuner_id is not None:
            self.seen[tuner_id] = now
            return
        for worker, running in compat.oracle_workers(self.oracle).items():
            if running == trial_id:
                self.seen[worker] = now

    def drop_silent(self) -> list[str]:
        """Drops every worker silent for longer than the timeout; returns a line for each."""
        now, lines = self.clock(), []
        for worker in compat.oracle_workers(self.oracle):
            silent = now - self.seen.setdefault(worker, now)
            if silent <= self.timeout:
                continue
            lost = f"worker {worker} stopped answering for {silent:.0f} s"
            trial_id, status = compat.drop_worker(self.oracle, worker, f"{lost} while running this trial",
                                                  runs=LOST_RUNS)
            self.seen.pop(worker, None)
            self.last_loss = now
            if trial_id is None:
                lines.append(f"{lost}; it is no longer waited for")
            elif status == "FAILED":
                lines.append(f"{lost}; trial {trial_id} has lost its worker {LOST_RUNS} times and is recorded "
                             "as failed")
            else:
                lines.append(f"{lost}; trial {trial_id} goes back in the queue for the next worker")
        return lines

    def abandoned(self) -> bool:
        """True when workers were lost, none is left, and none has called for a whole timeout."""
        if self.last_loss is None or compat.oracle_workers(self.oracle):
            return False
        return self.clock() - max(self.last_loss, self.last_call) > self.timeout

    def failure_message(self, trial_id: str) -> str:
        """A failed trial's message, from the report its worker wrote in the trial's folder when the chief sees
        that folder; otherwise where the message is."""
        path = os.path.join(self.trial_dir(trial_id), REPORT)
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
            if report.get("trial") == trial_id and report.get("message"):
                return report["message"]
        except (OSError, ValueError, AttributeError):
            pass
        workers = [w for w, running in compat.oracle_workers(self.oracle).items() if running == trial_id]
        who = f"worker {workers[0]}" if workers else "a worker"
        return (f"failed on {who}; the error is in that worker's output (it wrote no {REPORT} in "
                f"{self.trial_dir(trial_id)}: the workers do not share the search folder with the chief)")


def serve_oracle(tuner, *, log=print, poll: float = 1.0) -> bool:
    """The chief of a distributed search: serves the oracle to the workers until all have stopped.

    keras-tuner's own loop (``oracle_chief.start_server``) checks every 20 s
    once the first worker is told to stop, and waits for ever for a worker
    that died; this one checks every second, prints each trial's line as
    workers finish it, and drops workers that stopped answering
    (``WorkerWatch``).  Returns False when every worker was lost before the
    search finished (the same command continues it, with new workers).
    """
    tuner.oracle.verbose = 0  # our one line per trial replaces keras-tuner's display
    tuner.save()
    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    watch = WorkerWatch(tuner.oracle, tuner.settings.worker_timeout,
                        lambda trial_id: os.path.join(tuner.project_dir, f"trial_{trial_id}"))
    server, finished = compat.start_oracle_server(tuner.oracle, address, heard=watch.heard,
                                                  failure_message=watch.failure_message)
    shown = {t.trial_id for t in tuner.oracle.trials.values() if t.status in ("COMPLETED", "FAILED")}
    try:
        while True:
            time.sleep(poll)
            for line in watch.drop_silent():
                log(line)
            for trial in list(tuner.oracle.trials.values()):
                if trial.status in ("COMPLETED", "FAILED") and trial.trial_id not in shown:
                    shown.add(trial.trial_id)
                    log(trial_line(trial, tuner.oracle, tuner.settings))
            if finished():
                return True
            if watch.abandoned():
                log(f"Every worker stopped answering; the search stops with {len(shown)} trials done. Start "
                    "workers and run the same command to continue it.")
                return False
    finally:
        server.stop(grace=1)


def run_search(base: dict, space: dict, settings: SearchSettings, *, folder: str, log=print, data=None):
    """Runs (or continues) the search stored in ``folder``; returns (tuner, finished?).

    ``finished`` is False when the time limit ended it early; running the
    same search again continues from where it stopped.  ``data``, when
    given, is ``base``'s data already loaded.
    """
    base = complete(base)  # every setting, the learning rate of its kind of run included, defaults a hyperparameter
    hp = keras_tuner.HyperParameters()
    declare(hp, space, base)
    oracle = make_oracle(settings, hp)
    directory, project = os.path.split(os.path.abspath(folder))
    tuner = TrainingTuner(oracle, base=base, settings=settings, directory=directory, project_name=project, log=log,
                          data=data)
    if settings.tuner == "hyperband":
        tuner.oracle.max_trials = settings.max_trials  # a reloaded oracle forgets what is not in its state
    try:
        if compat.is_chief_oracle():
            if not serve_oracle(tuner, log=log):
                return tuner, False
        else:
            tuner.search(verbose=0)
    except _TimeUp:
        log(f"Time limit of {settings.max_minutes:g} min reached; run the same command to continue the search.")
        return tuner, False
    except RuntimeError as error:
        if compat.is_failure_limit(error):
            raise UserError(f"{settings.max_failures} trials in a row failed, the last with: "
                            f"{str(error).splitlines()[-1] if str(error).splitlines() else error}; "
                            "check the fixed settings, or raise --max-failures") from None
        raise
    return tuner, True
