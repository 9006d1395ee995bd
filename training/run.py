"""One training run, in the order it happens: prepare, fit, evaluate, export.

    run = prepare(config)            # data, recipe (zoo or transfer), model, pipelines, phases, run directory
    fitted = fit(run)                # phases, checkpoints, resume
    report = evaluate(run, fitted)   # test split, plots, mistakes, diagnosis
    export(run, report)              # SavedModel and formats
    record(run, report)              # metrics.json: the run is finished

``train`` does all of it; search trials, ``compare``, ``find-lr`` and the
benchmarks call the same steps.  What differs between a zoo model and a
transfer run lives in ``training.recipes``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable

import keras
import numpy as np

from augment import predict_tta, save_grid
from core.batchnorm import batch_norm_layers
from core.errors import UserError
from core.model import dtype_policy, inference_model, network_of
from exports.export import export_savedmodel
from exports.formats import export_formats
from training import budget
from training import diagnose as diagnosis
from training import lock, mistakes, rundir
from training.config import DEFAULTS, check_config, complete, default_run_name, defaults_for, export_name, \
    model_label
from training.callbacks import PreciseBatchNorm
from training.data import augmentation_for, check_data, class_weights, clean_batches, flips_for, load_data, \
    pipelines, training_arrays
from training.distribute import agree_on_epochs, describe, is_chief, is_multi_worker, make_strategy, \
    worker_count, worker_runs_dir
from training.optim import Stretched, make_optimizer, make_schedule
from training.phases import completed_epochs, run_phases, steps_per_epoch
from training.recipes import load_backbone, make_recipe
from training.reports import evaluate_predictions, plot_confusion_matrix, plot_learning_curves, plot_what_it_learned

__all__ = ["DEFAULTS", "Run", "compile_model", "evaluate", "export", "exported_line", "fit", "load_backbone",
           "load_data", "prepare", "preview", "record", "summary_lines", "train"]


@dataclasses.dataclass
class Run:
    """Everything a prepared run holds; the steps after ``prepare`` read and add to it."""

    config: dict
    log: Callable
    recipe: object
    strategy: object
    data: object
    model: object
    run_dir: str
    resuming: bool
    train_ds: object
    val_ds: object
    steps: int  # optimizer steps in one pass over the training data
    labels: np.ndarray  # the training labels (class weights)
    trial: bool = False  # a search trial never looks at the test split
    phases: list = dataclasses.field(default_factory=list)
    started: float = 0.0
    budget: dict | None = None  # --time-budget's plan (training.budget)
    budget_scale: object = None  # and the variable its schedule's clock is scaled by
    precise_bn: bool = False  # --precise-bn resolved (``precise_bn``)

    @property
    def title(self) -> str:
        return f"{model_label(self.config)} on {self.config['dataset']}"

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)


def train(config: dict, log=print, *, run_dir: str | None = None, data=None, trial: bool = False) -> dict:
    """Runs (or resumes) one training run; returns its metrics dict.

    A search trial passes its own ``run_dir`` (resumed when it holds a
    backup), ``data`` already loaded, and ``trial=True``: it then stops
    after training, with the validation scores, and never looks at the test
    split or exports.
    """
    run = prepare(config, log, run_dir=run_dir, data=data, trial=trial)
    fitted = fit(run)
    if trial:
        return record(run, fitted)
    report = evaluate(run, fitted)
    export(run, report)
    return record(run, report)


def prepare(config: dict, log=print, *, run_dir: str | None = None, data=None, trial: bool = False) -> Run:
    """Everything before the first step, told as one summary block."""
    config = complete(config)
    check_config(config)
    strategy = make_strategy(config["strategy"])  # first: a multi-worker strategy must precede other TF work
    keras.utils.set_random_seed(config["seed"])
    with strategy.scope():
        recipe = make_recipe(config, log)
    data = data if data is not None else load_data(config, recipe.backbone)
    skipped = check_data(config, data)
    augmentation, mix = augmentation_for(config, data)
    with strategy.scope(), dtype_policy(config["precision"]):
        model = recipe.build(config, data, augmentation)
    # Resolved beside the configuration, not into it: config.json keeps what was asked (None: the default), so a
    # rerun of the same command finds its run, and compare and search their finished variants.
    reestimate = precise_bn(config, model, strategy, log)
    run_dir, resuming = open_run_dir(config, data, strategy, run_dir, log)
    train_ds, val_ds = pipelines(config, data, mix, strategy)
    labels = training_arrays(config, data)[1]
    run = Run(config, log, recipe, strategy, data, model, run_dir, resuming, train_ds, val_ds,
              steps_per_epoch(len(labels), config["batch_size"]), labels, trial, precise_bn=reestimate)
    for line in [*summary_block(run), *skipped]:
        log(line)
    run.started = time.time()  # includes the probe and the cached features, so the fast path is timed fairly
    recipe.start(run)
    run.phases = recipe.phases(run, augmented=augmentation is not None or mix is not None)
    if config["time_budget"] and not trial:
        size_to_budget(run)
    return run


def precise_bn(config: dict, model, strategy, log) -> bool:
    """--precise-bn resolved: on by default wherever a batch-norm layer normalizes with batch statistics in
    training (``core.batchnorm.batch_norm_layers``; none in a transfer backbone, kept in inference mode)."""
    asked = config["precise_bn"]
    if not batch_norm_layers(network_of(model)):
        if asked:
            log("Note: --precise-bn has nothing to re-estimate: no batch-norm layer of this network normalizes "
                "with batch statistics (a transfer backbone's stays in inference mode)")
        return False
    if strategy.num_replicas_in_sync > 1 or is_multi_worker(strategy):
        if asked:
            raise UserError(f"--precise-bn re-estimates batch norm's statistics on one device; this run spreads "
                            f"over {strategy.num_replicas_in_sync} replicas: drop --precise-bn")
        if asked is None:
            log("Note: batch norm keeps its moving averages (--precise-bn runs on one device only)")
        return False
    return True if asked is None else bool(asked)


def size_to_budget(run: Run) -> None:
    """--time-budget: the one phase's epochs are as many as fit the minutes (``training.budget``)."""
    config, (phase,) = run.config, run.phases
    if is_multi_worker(run.strategy):
        raise UserError("--time-budget times one machine's steps; with --strategy multi_worker give --epochs")
    with run.strategy.scope():
        run.budget = budget.plan_epochs(run, phase, config["time_budget"], lambda target: compile_model(
            target, config, run.steps * phase.passes, lr=phase.lr, epochs=phase.epochs,
            warmup_epochs=phase.warmup_epochs))
        run.budget_scale = keras.Variable(budget.scale(run.budget), trainable=False, dtype="float32",
                                          name="budget_scale")
    if config["epochs"] != defaults_for(config["dataset"])["epochs"]:
        run.log(f"Note: --time-budget decides the epochs; --epochs {config['epochs']} does not apply")
    phase.schedule_epochs = run.budget["epochs"]
    phase.epochs = budget.most_epochs(run.budget["epochs"])
    run.log(f"Time budget {config['time_budget']:g} min: a training step takes "
            f"{1000 * run.budget['train_step_seconds']:.1f} ms, an epoch about {run.budget['epoch_seconds']:.2f} s, "
            f"so about {run.budget['epochs']} epochs; the {config['schedule']} schedule is resized to the epochs "
            "measured as they come, to end when the time does")


def open_run_dir(config: dict, data, strategy, run_dir: str | None, log) -> tuple[str, bool]:
    """A new run directory (or the one to resume), with the configuration and what resuming must match."""
    if run_dir is None:
        base = config["run_name"] or default_run_name(config)
        run_dir, resuming, notes = rundir.choose(worker_runs_dir(config["runs_dir"], strategy), base, config,
                                                 claim=True, named=bool(config["run_name"]))  # locked till record
        for note in notes:
            log(note)
    else:
        lock.acquire(run_dir)  # held until record; a second process on this directory is refused
        resuming = os.path.isdir(os.path.join(run_dir, "backup"))
    identity = {"class_names": data.class_names, "model": model_label(config), "input_shape": list(data.input_shape)}
    if resuming:
        rundir.check_identity(run_dir, identity)
    os.makedirs(run_dir, exist_ok=True)
    rundir.write_json(os.path.join(run_dir, "config.json"), config)
    rundir.write_identity(run_dir, identity)
    if data.ignored is not None:
        rundir.write_json(os.path.join(run_dir, "data_manifest.json"), data.manifest())
    if data.skipped:
        with open(os.path.join(run_dir, "skipped_files.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"{path}\t{reason}\n" for path, reason in data.skipped)
    return run_dir, resuming


def summary_block(run: Run) -> list[str]:
    """What the run is about to do, once, before it does it."""
    config, data = run.config, run.data
    counts = data.counts()
    names = ", ".join(map(str, data.class_names[:8])) + (", ..." if len(data.class_names) > 8 else "")
    trainable = sum(int(np.prod(w.shape)) for w in run.model.trainable_weights)
    total = trainable + sum(int(np.prod(w.shape)) for w in run.model.non_trainable_weights)
    return [f"Data: {config['dataset']}, {data.num_classes} classes ({names})",
            f"  split: {counts['train']} train / {counts['val']} validation / {counts['test']} test images of "
            f"{'x'.join(map(str, data.input_shape))}",
            f"Model: {run.recipe.describe()}, {total:,} parameters ({trainable:,} trainable)",
            f"Device: {device_line(run)}",
            f"Run directory: {run.run_dir}" + (" (resuming)" if run.resuming else "")]


def device_line(run: Run) -> str:
    import tensorflow as tf

    gpus = len(tf.config.list_logical_devices("GPU"))
    where = f"{gpus} GPU{'s' if gpus > 1 else ''}" if gpus else f"CPU ({os.cpu_count()} cores)"
    spread = run.strategy.num_replicas_in_sync > 1 or run.config["strategy"] != "auto"
    line = f"{where}; {describe(run.strategy)}" if spread else where
    if is_multi_worker(run.strategy):
        share = len(run.labels) // worker_count(run.strategy)  # training.data.pipelines shards the images
        line += f"; this worker reads its own {share:,} of the {len(run.labels):,} training images an epoch"
    return line


def compile_model(model, config: dict, steps_per_epoch: int, *, lr=None, epochs=None, lr_multipliers=None,
                  warmup_epochs=None, stretch=None):
    """The run's optimizer, schedule and loss (label smoothing), on ``model``.  ``stretch``: a variable the
    schedule's clock is scaled by (``training.optim.Stretched``; --time-budget)."""
    warmup = config["warmup_epochs"] or warmup_epochs or 0.0
    try:
        schedule = make_schedule(config["schedule"], lr or config["lr"], steps_per_epoch=steps_per_epoch,
                                 epochs=epochs or config["epochs"], warmup_epochs=warmup,
                                 step_epochs=config["step_epochs"], step_gamma=config["step_gamma"])
        if stretch is not None and not isinstance(schedule, float):
            schedule = Stretched(schedule, stretch)
        optimizer = make_optimizer(config["optimizer"], schedule, momentum=config["momentum"],
                                   nesterov=config["nesterov"], weight_decay=config["weight_decay"],
                                   lr_multipliers=lr_multipliers, ema=config["ema"])
    except ValueError as error:
        raise UserError(str(error)) from None
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config["label_smoothing"])
    jit = "auto" if config["jit_compile"] is None else bool(config["jit_compile"])
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit)


def compile_phase(run: Run, target, phase) -> None:
    multipliers = run.recipe.before_phase(run, phase)
    with run.strategy.scope():
        compile_model(target, run.config, run.steps * phase.passes, lr=phase.lr,
                      epochs=phase.schedule_epochs or phase.epochs, lr_multipliers=multipliers,
                      warmup_epochs=phase.warmup_epochs, stretch=run.budget_scale)


def fit(run: Run) -> dict:
    """Trains phase by phase, resuming a killed run where it stopped; returns what training alone tells."""
    config, backup = run.config, run.path("backup")
    done = completed_epochs(backup, run.phases) if run.resuming else 0
    done = agree_on_epochs(run.strategy, done, backup, run.log)
    history = rundir.trim_history(run.path("history.csv"), done)
    if run.resuming:
        run.log(f"Resuming run {run.run_dir} after epoch {done}")
    deadline = [budget.Deadline(run.run_dir, run.budget, run.budget_scale, run.started, most=run.phases[0].epochs)
                ] if run.budget else []
    statistics = batch_norm_statistics(run)
    best = run_phases(run.model, run.phases, compile_phase=functools.partial(compile_phase, run),
                      train_ds=run.train_ds, val_ds=run.val_ds, run_dir=run.run_dir, monitor=config["monitor"],
                      patience=config["patience"], history=history,
                      class_weight=class_weights(config, run.labels, run.data.num_classes),
                      verbose=config["verbose"], log=run.log, extra_callbacks=deadline, statistics=statistics,
                      averaged=config["ema"] is not None)
    history = rundir.read_history(run.path("history.csv"))
    best_epoch, best_value = best_of(history, config["monitor"])
    if run.phases[-1].keep_last and history:  # what the weights file holds: the last epoch, not the best
        best_epoch, best_value = len(history), history[-1].get(config["monitor"])
    fitted = {
        "best_epoch": best_epoch,
        f"best_{config['monitor']}": best_value,
        "epochs_run": len(history),
        "stopped_early": best is not None and best.stopped_epoch is not None,
        "train_seconds_this_session": round(time.time() - run.started, 2),
        "history": history,
    }
    if history:
        fitted["final_epoch"] = {k: v for k, v in history[-1].items() if k != "epoch"}
    if statistics is not None and statistics.measurement:
        fitted["batch_norm"] = statistics.measurement
        run.log(batch_norm_line(statistics.measurement))
    if run.budget:
        plan = budget.read_plan(run.run_dir) or run.budget
        fitted["time_budget"] = {"minutes": config["time_budget"], "planned_epochs": run.budget["epochs"],
                                 "seconds_per_epoch_planned": run.budget["epoch_seconds"],
                                 "epochs": plan.get("total_epochs"), "spent_seconds": plan.get("spent_seconds")}
    return fitted


def batch_norm_statistics(run: Run) -> PreciseBatchNorm | None:
    """The callback that re-estimates batch norm's statistics (--precise-bn) and measures what they do on
    validation; None for a network without batch norm in training mode, or spread over replicas."""
    network = inference_model(run.model)
    spread = run.strategy.num_replicas_in_sync > 1 or is_multi_worker(run.strategy)
    if spread or not batch_norm_layers(network):
        return None
    return PreciseBatchNorm(network, clean_batches(run.config, run.data), run.val_ds,
                            enabled=run.precise_bn)


def batch_norm_line(measurement: dict) -> str:
    scores = measurement["val_accuracy"]
    kept = "re-estimated statistics (--precise-bn)" if measurement["precise_bn"] else "moving averages"
    return (f"Batch norm, validation accuracy at epoch {measurement['epoch']}: {scores['moving_average']:.4f} with "
            f"the moving averages, {scores['reestimated']:.4f} with statistics re-estimated on clean training "
            f"batches, {scores['batch_statistics']:.4f} with batch statistics; the model keeps the {kept}")


def best_of(history: list[dict], monitor: str) -> tuple[int | None, float | None]:
    """(1-based epoch, value) of the best ``monitor`` in the history: what the best-weights file holds, also
    when a rerun finds every phase already done."""
    scored = [row for row in history if monitor in row]
    if not scored:
        return None, None
    best = (min if monitor == "val_loss" else max)(scored, key=lambda row: row[monitor])
    return int(best["epoch"]) + 1, best[monitor]


def evaluate(run: Run, fitted: dict) -> dict:
    """The kept model on the test split: accuracy, confusion matrix, per-class report, mistakes, diagnosis."""
    config, data = run.config, run.data
    plot_learning_curves(fitted["history"], run.path("learning_curves.png"), title=run.title)
    inference = inference_model(run.model)
    x_test, y_test = data.arrays["test"]

    def test_probabilities():
        # A chunk at a time, in batches of --batch-size: at 224x224 a batch of 256 holds about 1 GB of a small
        # network's activations, the peak of the whole run.
        return predict_tta(inference, x_test, config["tta"], flips=flips_for(config),
                           batch_size=config["batch_size"])

    # The trained network's test predictions serve both the floor's record and, when it is kept, the report.
    probabilities = test_probabilities()
    probe = run.recipe.finish(run, inference, probabilities if config["tta"] == "none" else None)
    if probe is not None and probe["kept"] == "probe":  # the linear probe was swapped in: predict again
        probabilities = test_probabilities()
    accuracy, matrix, report, report_text = evaluate_predictions(y_test, probabilities, data.class_names)
    plot_confusion_matrix(matrix, data.class_names, run.path("confusion_matrix.png"),
                          title=f"{run.title}: test accuracy {accuracy:.4f}")
    with open(run.path("classification_report.txt"), "w", encoding="utf-8") as f:
        f.write(report_text)
    confused = mistakes.report(x_test, y_test, probabilities, data.class_names, run.path("mistakes.png"),
                               title=f"{run.title}: most confident mistakes", model=inference)
    plot_what_it_learned(inference, x_test[0], run.path("filters.png"), run.path("feature_maps.png"), title=run.title)
    run.model.save(run.path("model.keras"))
    baseline = None
    if config["baseline"] and probe is not None:
        baseline = {key: probe[key] for key in ("train_accuracy", "val_accuracy", "test_accuracy", "feature_dim",
                                                "classifier")}
        run.log(f"Baseline (backbone features + logistic regression): test accuracy {baseline['test_accuracy']:.4f}")
    return {"test_accuracy": accuracy, "test_samples": int(len(y_test)), "tta": config["tta"], **fitted,
            "parameters": int(inference.count_params()), "counts": data.counts(), "class_names": data.class_names,
            "confusion_matrix": matrix.tolist(), "per_class": report, "skipped_files": len(data.skipped),
            "copies": data.checks, "excluded_files": [path for path, _ in data.excluded],
            "baseline": baseline, "probe": probe, "export_path": None, "export_name": None, "export_version": None,
            "config": config,
            "diagnosis": diagnosis.diagnose(fitted["history"], num_classes=data.num_classes,
                                            batch_norm=fitted.get("batch_norm")),
            "confused_pairs": confused}


def export(run: Run, report: dict) -> None:
    """The SavedModel (and any --export-formats), written by the chief only: one export per cluster.

    It is the next version of the model ``training.config.export_name`` names: the same command run again adds
    a version that a running server swaps in, though the rerun trains in a run directory of its own (``NAME-2``)."""
    config = run.config
    if not config["export"] or not is_chief(run.strategy):
        return
    name = export_name(config)
    report["export_path"] = export_savedmodel(
        inference_model(run.model), config["export_dir"], name,
        class_names=run.data.class_names,
        metadata={"model": model_label(config), "dataset": config["dataset"], "test_accuracy": report["test_accuracy"],
                  "flips": flips_for(config), "run_dir": os.path.abspath(run.run_dir)})
    report["export_name"], report["export_version"] = name, int(os.path.basename(report["export_path"]))
    if config["export_formats"]:  # TFLite/ONNX files in VERSION/formats/, scored on this test split
        export_formats(report["export_path"], config["export_formats"], test=run.data.arrays["test"],
                       calibration=run.data.arrays["train"][0], log=run.log)


def record(run: Run, report: dict) -> dict:
    """Writes metrics.json, whose presence means the run finished; returns the report with its history."""
    rundir.write_json(run.path("metrics.json"), {k: v for k, v in report.items() if k != "history"})
    lock.release(run.run_dir)
    return {**report, "run_dir": run.run_dir}


def summary_lines(metrics: dict) -> list[str]:
    """The run's last words on the terminal."""
    lines = [f"Test accuracy: {metrics['test_accuracy']:.4f} on {metrics['test_samples']} images "
             f"(best epoch {metrics['best_epoch']} of {metrics['epochs_run']})"]
    probe = metrics.get("probe")
    if probe:
        kept = "the network" if probe["kept"] == "network" else "the linear probe, which beat the network"
        lines.append(f"Linear probe: test accuracy {probe['test_accuracy']:.4f}, validation "
                     f"{probe['val_accuracy']:.4f} (network: validation {probe['network_val_accuracy']:.4f}); "
                     f"kept {kept}")
    if metrics["export_path"]:
        lines.append(exported_line(metrics["export_path"]))
    lines += mistakes.summary(metrics.get("confused_pairs") or [])
    if metrics.get("diagnosis"):
        lines += diagnosis.summary(metrics["diagnosis"])
    return lines


def exported_line(path: str, what: str = "") -> str:
    """"Exported: saved_models/NAME/2 (model NAME, version 2; ...)": which model and version a command wrote, and
    the server command that serves it (a running server looks for new versions and new models as it goes)."""
    model_dir, version = os.path.split(path)
    base, name = os.path.split(model_dir)
    default_base = os.path.normpath(base) == os.path.normpath(DEFAULTS["export_dir"])
    serve = "train.py serve" if default_base else f"train.py serve {base}"
    detail = f"model {name}, version {version}" + (f", {what}" if what else "")
    return f"Exported: {path} ({detail}; a running `{serve}` picks it up)"


def preview(config: dict, path: str) -> str:
    """Writes a grid of augmented training images for ``config``'s policy and dataset."""
    config = complete(config)
    data = load_data(config, load_backbone(config))
    layer, _ = augmentation_for(config, data)
    images, labels = data.arrays["train"]
    title = f"--augment {config['augment']} on {config['dataset']}" + ("" if flips_for(config) else " (no flips)")
    return save_grid(images, layer, path, seed=config["seed"], class_names=data.class_names, labels=labels,
                             title=title)
