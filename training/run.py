"""One training run from a configuration dict: data, model, fit, evaluate, report, export.

``train.py`` parses flags into the configuration; this module does the work,
so tests and other tools (search, comparisons) can run the same thing.
"""

from __future__ import annotations

import os
import time

import numpy as np

from training import rundir
from training.errors import UserError

DEFAULTS = {
    # Data
    "dataset": "digits", "data_dir": None, "image_size": None, "channels": None,
    "val_fraction": 0.1, "test_fraction": 0.2, "strict": False,
    # Model
    "model": "lenet5", "batch_norm": None, "dropout": None, "activation": None, "kernel_initializer": None,
    "l1": None, "l2": None, "width": None, "preprocessing": "rescale",
    # Augmentation
    "augment": "none", "flips": None, "tta": "none",
    # Transfer learning (a --backbone replaces --model)
    "backbone": None, "weights": "imagenet", "freeze": "from:auto", "finetune_epochs": 0, "finetune_lr": None,
    "discriminative_lr": None,
    "head_dropout": 0.2, "head_hidden": [], "baseline": False, "feature_cache": True, "min_phase_steps": 100,
    # Optimization
    "epochs": 30, "batch_size": 32, "optimizer": "adam", "lr": 1e-3, "momentum": 0.9, "nesterov": False,
    "schedule": "cosine", "warmup_epochs": 0.0, "step_epochs": 30, "step_gamma": 0.1, "weight_decay": None,
    "label_smoothing": 0.1, "patience": 10, "monitor": "val_loss", "class_weight": "none", "seed": 0,
    "fit_on_val": False,
    # Distribution (training.distribute): --batch-size stays the global batch
    "strategy": "auto",
    # Output
    "run_name": None, "runs_dir": "runs", "export_dir": "saved_models", "export": True, "verbose": 1,
}

MODEL_OPTIONS = ("batch_norm", "dropout", "activation", "kernel_initializer", "l1", "l2", "width")


def load_data(config: dict, backbone=None):
    import imagesets
    import zoo

    image_size = config["image_size"]
    channels = config["channels"]
    if backbone is not None:
        # A backbone fixes the input: every source is resized and converted to it.
        image_size, channels = backbone.input_shape[:2], backbone.input_shape[2]
    elif config["dataset"].startswith("folder:"):
        # Folder images take the model's default input size and channel count unless told otherwise.
        default = zoo.get(config["model"]).input_shape
        image_size = image_size or default[:2]
        channels = channels or default[2]
    return imagesets.load(config["dataset"], data_dir=config["data_dir"], image_size=image_size, channels=channels,
                          val_fraction=config["val_fraction"], test_fraction=config["test_fraction"],
                          seed=config["seed"])


def flips_for(config: dict) -> bool:
    """Mirroring is on unless turned off, or the data are digits or characters."""
    import augment

    return augment.default_flips(config["dataset"]) if config["flips"] is None else bool(config["flips"])


def augmentation_for(config: dict, data):
    """The in-graph augmentation stage and the batch-level mixer (either may be None)."""
    import augment

    spec = config["augment"]
    try:
        parts, _ = augment.parse(spec)
        colour = data.input_shape[-1] == 3
        # AlexNet's lighting noise uses the principal components of this dataset's own pixels.
        pca = augment.fit_pca(data.arrays["train"][0]) if "pca" in parts and colour else None
        layer = augment.policy(spec, input_shape=data.input_shape, flips=flips_for(config), seed=config["seed"],
                               pca=pca)
        mix = augment.mixer(spec, num_classes=data.num_classes, seed=config["seed"])
    except ValueError as error:
        raise UserError(f"--augment {spec!r}: {error}") from None
    return layer, mix


def load_backbone(config: dict):
    """The transfer backbone named by --backbone (None for a zoo run)."""
    if not config["backbone"]:
        return None
    import transfer

    weights = None if str(config["weights"]).lower() == "none" else config["weights"]
    shape = (*config["image_size"], config["channels"] or 3) if config["image_size"] else None
    try:
        return transfer.load_backbone(config["backbone"], input_shape=shape, weights=weights)
    except ValueError as error:
        raise UserError(str(error)) from None


def build_model(config: dict, data, augmentation=None, backbone=None):
    import zoo
    from training.model import assemble, preprocessing_layer

    if backbone is not None:
        import transfer

        network = transfer.classifier_network(backbone, data.num_classes, dropout=config["head_dropout"],
                                              hidden=tuple(config["head_hidden"] or ()))
        return assemble(network, data.input_shape, preprocessing=backbone.preprocessing, augmentation=augmentation)
    options = {k: config[k] for k in MODEL_OPTIONS}
    try:
        network = zoo.build(config["model"], input_shape=data.input_shape, num_classes=data.num_classes, **options)
        preprocessing = preprocessing_layer(config["preprocessing"], data.arrays["train"][0])
    except ValueError as error:
        raise UserError(str(error)) from None
    return assemble(network, data.input_shape, preprocessing=preprocessing, augmentation=augmentation)


def compile_model(model, config: dict, steps_per_epoch: int, *, lr=None, epochs=None, lr_multipliers=None,
                  warmup_epochs=None):
    import keras

    from training.optim import make_optimizer, make_schedule

    warmup = config["warmup_epochs"] or warmup_epochs or 0.0
    try:
        schedule = make_schedule(config["schedule"], lr or config["lr"], steps_per_epoch=steps_per_epoch,
                                 epochs=epochs or config["epochs"], warmup_epochs=warmup,
                                 step_epochs=config["step_epochs"], step_gamma=config["step_gamma"])
        optimizer = make_optimizer(config["optimizer"], schedule, momentum=config["momentum"],
                                   nesterov=config["nesterov"], weight_decay=config["weight_decay"],
                                   lr_multipliers=lr_multipliers)
    except ValueError as error:
        raise UserError(str(error)) from None
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config["label_smoothing"])
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])


def class_weights(config: dict, labels: np.ndarray, num_classes: int):
    if config["class_weight"] == "none":
        return None
    if config["class_weight"] != "balanced":
        raise UserError(f"Unknown class weighting {config['class_weight']!r} (valid: none, balanced)")
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = {int(c): 1.0 for c in range(num_classes)}
    result.update({int(c): float(w) for c, w in zip(present, weights)})
    return result


def model_label(config: dict) -> str:
    backbone = config["backbone"]
    return os.path.basename(os.path.normpath(backbone)).removesuffix(".keras") if backbone else config["model"]


def default_run_name(config: dict) -> str:
    dataset = config["dataset"]
    if ":" in dataset:
        kind, _, arg = dataset.partition(":")
        dataset = os.path.basename(os.path.normpath(arg)) or kind
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{model_label(config)}-{dataset}")
    return safe.strip("._") or "run"


def check_config(config: dict) -> None:
    """Catches numeric mistakes before any work is done."""
    for key in ("epochs", "batch_size"):
        if int(config[key]) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {config[key]}")
    if int(config["min_phase_steps"]) < 0:
        raise UserError(f"--min-phase-steps must be 0 or more, got {config['min_phase_steps']}")
    if not config["lr"] > 0:
        raise UserError(f"--lr must be > 0, got {config['lr']}")
    if config["tta"] not in ("none", "flip", "ten_crop"):
        raise UserError(f"--tta must be none, flip or ten_crop, got {config['tta']!r}")
    if not 0 <= config["label_smoothing"] < 1:
        raise UserError(f"--label-smoothing must be in [0, 1), got {config['label_smoothing']}")
    lowest = config["discriminative_lr"]
    if lowest is not None and not 0 < lowest <= 1:
        raise UserError(f"--discriminative-lr must be in (0, 1], got {lowest}")
    if config["monitor"] not in ("val_loss", "val_accuracy"):
        raise UserError(f"--monitor must be val_loss or val_accuracy, got {config['monitor']!r}")


# Fine-tuning warms its rate up over this share of its steps: a fresh optimizer's first moments are noisy,
# and the first steps are the ones that reach the pretrained weights.
FINETUNE_WARMUP = 0.1


def plan_phases(config: dict, model, data, backbone, augmentation, mix, start=None, steps: int = 1) -> list:
    """One phase for a zoo model; for a backbone, the head first, then optional fine-tuning.

    ``start`` is the run's ``transfer.ProbeStart`` (its features feed the fast
    path); ``steps`` the optimizer steps in one pass over the training data.
    A transfer phase gets at least ``min_phase_steps`` steps however small the folder.
    """
    from training.model import network_of
    from training.phases import Phase, passes_for

    if backbone is None:
        return [Phase("train", config["epochs"], config["lr"])]
    import transfer

    features = backbone.features

    def freeze_all(_):
        transfer.freeze(features, "all")

    def unfreeze_top(_):
        policy = config["freeze"]
        if policy == "from:auto":
            policy = f"from:{backbone.fine_tune_from}" if backbone.fine_tune_from else "fraction:0.3"
        try:
            transfer.freeze(features, policy)
        except ValueError as error:
            raise UserError(f"--freeze {config['freeze']!r}: {error}") from None
        if not features.trainable_weights:
            raise UserError(f"--freeze {config['freeze']!r} ({policy}) leaves no weight of backbone "
                            f"{backbone.name!r} to fine-tune (batch norm always stays frozen); choose layers with "
                            "kernels, e.g. --freeze last:2 or --freeze from:LAYER, or drop --finetune-epochs")

    head = Phase("head", config["epochs"], config["lr"], prepare=freeze_all)
    if config["feature_cache"] and augmentation is None and mix is None:
        # Fast path: a frozen backbone without augmentation sees the same images every epoch,
        # so its features are computed once and only the head is fitted on them.
        from training.pipeline import make_pipeline

        cached = start.features if start is not None else {
            split: transfer.extract_features(backbone, data.arrays[split][0]) for split in ("train", "val")}
        head.fit_model = network_of(model).get_layer("head")
        head.datasets = (
            make_pipeline(cached["train"], data.arrays["train"][1], data.num_classes,
                          batch_size=config["batch_size"], shuffle=True, seed=config["seed"], cast=False),
            make_pipeline(cached["val"], data.arrays["val"][1], data.num_classes, batch_size=256, shuffle=False,
                          seed=0, cast=False))
    phases = [head]
    if config["finetune_epochs"]:
        lr = config["finetune_lr"] or config["lr"] / 10
        phases.append(Phase("finetune", config["finetune_epochs"], lr, prepare=unfreeze_top,
                            warmup_epochs=FINETUNE_WARMUP * config["finetune_epochs"]))
    for phase in phases:
        phase.passes = passes_for(phase.epochs, steps, config["min_phase_steps"])
    return phases


def start_from_probe(config: dict, model, data, backbone, log, *, score_test: bool = True):
    """LP-FT's first half: the linear probe, fitted on the frozen features, becomes the head's start."""
    import transfer
    from training.model import network_of

    start = transfer.start_from_probe(backbone, network_of(model).get_layer("head"), data.arrays, data.num_classes,
                                      fit_on_val=config["fit_on_val"], score_test=score_test,
                                      class_weight="balanced" if config["class_weight"] == "balanced" else None)
    log(f"Linear probe (logistic regression on the frozen features): validation accuracy "
        f"{start.accuracy('val'):.4f}; the head starts from it")
    return start


def keep_the_better(model, inference, start, probe_weights, data, log) -> dict:
    """LP-FT's floor: the network is kept only if it is not below the probe on validation.

    Returns what ``metrics.json`` records under "probe": both validation scores,
    the probe's test accuracy, the network's own test accuracy and which was kept.
    """
    import transfer

    x_val, y_val = data.arrays["val"]
    predicted = inference.predict(x_val.astype(np.float32), batch_size=256, verbose=0).argmax(-1)
    network_val = float(np.mean(predicted == y_val))
    x_test, y_test = data.arrays["test"]
    network_test = float(np.mean(inference.predict(x_test.astype(np.float32), batch_size=256, verbose=0)
                                 .argmax(-1) == y_test)) if len(y_test) else None
    kept = transfer.choose(network_val, start.accuracy("val"))
    log(f"Validation accuracy: network {network_val:.4f}, linear probe {start.accuracy('val'):.4f}")
    if kept == "probe":
        log("The trained network ends below the linear probe on validation: keeping the probe instead "
            "(the pretrained backbone with the probe as its head)")
        model.set_weights(probe_weights)
    return {**start.summary(), "network_val_accuracy": network_val, "network_test_accuracy": network_test,
            "kept": kept, "head_start": start.how}


def train(config: dict, log=print, *, run_dir: str | None = None, data=None, evaluate: bool = True) -> dict:
    """Runs (or resumes) one training run; returns its metrics dict.

    A search trial passes its own ``run_dir`` (resumed when it holds a
    backup), ``data`` already loaded, and ``evaluate=False``: it then stops
    after training, with the validation scores, and never looks at the test
    split or exports.
    """
    import keras

    from augment import predict_tta
    from insight import diagnose, mistakes
    from serving.export import export_savedmodel
    from training.distribute import agree_on_epochs, describe, is_chief, make_strategy, worker_runs_dir
    from training.model import inference_model
    from training.phases import completed_epochs, run_phases, steps_per_epoch
    from training.pipeline import make_pipeline
    from training.reports import evaluate_predictions, plot_confusion_matrix, plot_learning_curves

    config = {**DEFAULTS, **config}
    check_config(config)
    if not config["backbone"]:
        import zoo

        try:
            zoo.get(config["model"])  # an unknown name fails before any data is read
        except ValueError as error:
            raise UserError(str(error)) from None
    # First, before other TensorFlow work: a multi-worker strategy must be made before the runtime starts.
    strategy = make_strategy(config["strategy"])
    chief = is_chief(strategy)
    if strategy.num_replicas_in_sync > 1 or config["strategy"] != "auto":
        log(describe(strategy))
    keras.utils.set_random_seed(config["seed"])
    with strategy.scope():
        backbone = load_backbone(config)
    if backbone is not None:
        log(f"Backbone {backbone.name}: input {'x'.join(map(str, backbone.input_shape))}")
    if data is None:
        data = load_data(config, backbone)
    counts = data.counts()
    if data.skipped:
        log(f"Skipped {len(data.skipped)} files that are not readable images:")
        for path, reason in data.skipped[:20]:
            log(f"  {path}: {reason}")
        if len(data.skipped) > 20:
            log(f"  ... and {len(data.skipped) - 20} more (see data_manifest.json in the run directory)")
        if config["strict"]:
            listed = "; ".join(f"{path} ({reason})" for path, reason in data.skipped[:5])
            more = f"; and {len(data.skipped) - 5} more" if len(data.skipped) > 5 else ""
            raise UserError(f"--strict: {len(data.skipped)} dataset files are not usable images: {listed}{more}; "
                            "fix or remove them, or drop --strict to skip them")
    if counts["val"] == 0:
        raise UserError("The validation split is empty; add images or raise --val-fraction")
    augmentation, mix = augmentation_for(config, data)
    with strategy.scope():
        model = build_model(config, data, augmentation, backbone)

    if run_dir is None:
        base = config["run_name"] or default_run_name(config)
        run_dir, resuming, notes = rundir.choose(worker_runs_dir(config["runs_dir"], strategy), base, config)
        for note in notes:
            log(note)
    else:
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

    x_train, y_train = data.arrays["train"]
    if config["fit_on_val"]:
        # The final fit of a search: the validation images train too (the epoch count comes from the search).
        x_train, y_train = (np.concatenate([a, b]) for a, b in zip(data.arrays["train"], data.arrays["val"]))
    train_ds = make_pipeline(x_train, y_train, data.num_classes, batch_size=config["batch_size"], shuffle=True,
                             seed=config["seed"])
    if mix is not None:
        train_ds = train_ds.map(mix)
    val_ds = make_pipeline(*data.arrays["val"], data.num_classes, batch_size=256, shuffle=False, seed=0)
    started = time.time()  # includes computing cached features, so the fast path is timed fairly
    start = start_from_probe(config, model, data, backbone, log, score_test=evaluate) if backbone else None
    probe_weights = model.get_weights() if start is not None else None
    steps = steps_per_epoch(len(y_train), config["batch_size"])
    phases = plan_phases(config, model, data, backbone, augmentation, mix, start, steps)

    csv_path = os.path.join(run_dir, "history.csv")
    done = completed_epochs(os.path.join(run_dir, "backup"), phases) if resuming else 0
    done = agree_on_epochs(strategy, done, os.path.join(run_dir, "backup"), log)
    history = rundir.trim_history(csv_path, done)
    log(f"Resuming run {run_dir} after epoch {done}" if resuming else f"Run directory: {run_dir}")

    def compile_phase(target, phase):
        multipliers = None
        if backbone is not None:
            import transfer

            log(f"Phase {phase.name!r}: {transfer.describe_freeze(model)}")
            if phase.name == "finetune" and config["discriminative_lr"]:
                multipliers = transfer.discriminative_multipliers(backbone, config["discriminative_lr"])
                factors = sorted(set(multipliers.values()))
                if factors:
                    log(f"  discriminative rates: {len(factors)} backbone groups at {factors[0]:.3g}-"
                        f"{factors[-1]:.3g} x {phase.lr:g}, head at {phase.lr:g}")
        with strategy.scope():
            compile_model(target, config, steps * phase.passes, lr=phase.lr, epochs=phase.epochs,
                          lr_multipliers=multipliers, warmup_epochs=phase.warmup_epochs)

    best = run_phases(model, phases, compile_phase=compile_phase, train_ds=train_ds, val_ds=val_ds,
                      run_dir=run_dir, monitor=config["monitor"], patience=config["patience"], history=history,
                      class_weight=class_weights(config, y_train, data.num_classes), verbose=config["verbose"],
                      log=log)
    train_seconds = time.time() - started

    history = rundir.read_history(csv_path)
    best_epoch = best.best_epoch if best is not None else None
    fitted = {  # what training alone tells: a search trial's whole result
        "best_epoch": best_epoch + 1 if best_epoch is not None else None,
        f"best_{config['monitor']}": best.best if best is not None else None,
        "epochs_run": len(history),
        "stopped_early": best is not None and best.stopped_epoch is not None,
        "train_seconds_this_session": round(train_seconds, 2),
    }
    if history:
        fitted["final_epoch"] = {k: v for k, v in history[-1].items() if k != "epoch"}
    if not evaluate:
        rundir.write_json(os.path.join(run_dir, "metrics.json"), fitted)
        return {**fitted, "history": history, "run_dir": run_dir}
    title = f"{model_label(config)} on {config['dataset']}"
    plot_learning_curves(history, os.path.join(run_dir, "learning_curves.png"), title=title)
    inference = inference_model(model)
    probe = keep_the_better(model, inference, start, probe_weights, data, log) if start else None
    x_test, y_test = data.arrays["test"]
    probabilities = predict_tta(inference, x_test.astype(np.float32), config["tta"], flips=flips_for(config))
    accuracy, matrix, report, report_text = evaluate_predictions(y_test, probabilities, data.class_names)
    plot_confusion_matrix(matrix, data.class_names, os.path.join(run_dir, "confusion_matrix.png"),
                          title=f"{title}: test accuracy {accuracy:.4f}")
    with open(os.path.join(run_dir, "classification_report.txt"), "w", encoding="utf-8") as f:
        f.write(report_text)
    confused = mistakes.report(x_test, y_test, probabilities, data.class_names, os.path.join(run_dir, "mistakes.png"),
                               title=f"{title}: most confident mistakes")
    model.save(os.path.join(run_dir, "model.keras"))
    baseline = None
    if config["baseline"] and probe is not None:
        baseline = {key: probe[key] for key in ("train_accuracy", "val_accuracy", "test_accuracy", "feature_dim",
                                                "classifier")}
        log(f"Baseline (backbone features + logistic regression): test accuracy {baseline['test_accuracy']:.4f}")

    export_path = None
    if config["export"] and chief:  # one export per cluster, the same as a single-device run's
        export_path = export_savedmodel(
            inference, config["export_dir"], os.path.basename(run_dir), class_names=data.class_names,
            metadata={"model": model_label(config), "dataset": config["dataset"], "test_accuracy": accuracy,
                      "flips": flips_for(config), "run_dir": os.path.abspath(run_dir)})
    metrics = {
        "test_accuracy": accuracy,
        "test_samples": int(len(y_test)),
        "tta": config["tta"],
        **fitted,
        "parameters": int(inference.count_params()),
        "counts": counts,
        "class_names": data.class_names,
        "confusion_matrix": matrix.tolist(),
        "per_class": report,
        "skipped_files": len(data.skipped),
        "baseline": baseline,
        "probe": probe,
        "export_path": export_path,
        "config": config,
        "diagnosis": diagnose(history, num_classes=data.num_classes),
        "confused_pairs": confused,
    }
    rundir.write_json(os.path.join(run_dir, "metrics.json"), metrics)
    metrics["run_dir"] = run_dir
    return metrics


def summary_lines(metrics: dict) -> list[str]:
    lines = [f"Test accuracy: {metrics['test_accuracy']:.4f} on {metrics['test_samples']} images "
             f"(best epoch {metrics['best_epoch']} of {metrics['epochs_run']})",
             f"Run directory: {metrics['run_dir']}"]
    probe = metrics.get("probe")
    if probe:
        kept = "the network" if probe["kept"] == "network" else "the linear probe, which beat the network"
        lines.append(f"Linear probe: test accuracy {probe['test_accuracy']:.4f}, validation "
                     f"{probe['val_accuracy']:.4f} (network: validation {probe['network_val_accuracy']:.4f}); "
                     f"kept {kept}")
    if metrics["export_path"]:
        lines.append(f"Exported: {metrics['export_path']}")
    from insight.diagnose import summary as diagnosis_lines
    from insight.mistakes import summary as confusion_lines

    lines += confusion_lines(metrics.get("confused_pairs") or [])
    if metrics.get("diagnosis"):
        lines += diagnosis_lines(metrics["diagnosis"])
    return lines


def preview(config: dict, path: str) -> str:
    """Writes a grid of augmented training images for ``config``'s policy and dataset."""
    import augment

    config = {**DEFAULTS, **config}
    data = load_data(config, load_backbone(config))
    layer, _ = augmentation_for(config, data)
    images, labels = data.arrays["train"]
    title = f"--augment {config['augment']} on {config['dataset']}" + ("" if flips_for(config) else " (no flips)")
    return augment.save_grid(images, layer, path, seed=config["seed"], class_names=data.class_names, labels=labels,
                             title=title)
