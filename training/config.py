"""A run's configuration: its keys and defaults, the command-line parser, and the checks.

Every flag's default comes from ``DEFAULTS``, then from a JSON ``--config``
file, then from the command line (``resolve_config``); ``complete`` fills
what depends on the kind of run (the learning rate), and the result is saved
as the run's ``config.json``.  The commands (``train.py`` and its
subcommands) extend ``build_parser`` with their own groups.
"""

from __future__ import annotations

import argparse
import json
import os

from core import quick
from core.errors import UserError
from exports.export import check_name
from exports.formats import parse_formats, require_runtimes

# The choices the flags offer, named here rather than imported from the packages that own them, so that
# ``train.py --help`` answers without TensorFlow starting; tests/test_train.py checks each against its owner.
TTA_MODES = ("none", "flip", "ten_crop", "shift")                  # augment.tta.MODES
PREPROCESSING = ("rescale", "standardize")                          # core.model.PREPROCESSING
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")     # training.distribute.STRATEGIES
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")                    # training.optim.OPTIMIZERS
SCHEDULES = ("constant", "step", "cosine", "onecycle")              # training.optim.SCHEDULES
HEAD_LR = 3e-3                                                      # transfer.finetune.HEAD_LR

MONITORS = ("val_loss", "val_accuracy")
CLASS_WEIGHTS = ("none", "balanced")
ZOO_LR = 1e-3  # Adam's usual rate; the transfer head's is transfer.finetune.HEAD_LR

DEFAULTS = {
    # Data
    "dataset": "digits", "data_dir": None, "image_size": None, "channels": None,
    "val_fraction": 0.1, "test_fraction": 0.2, "strict": False, "exclude": None,
    # Model
    "model": "lenet5", "batch_norm": None, "dropout": None, "activation": None, "kernel_initializer": None,
    "l1": None, "l2": None, "width": None, "filters": None, "whiten": False, "preprocessing": "rescale", "precise_bn": None,
    "depth": None, "widen_factor": None,
    # Augmentation
    "augment": "none", "flips": None, "tta": "none",
    # Transfer learning (a --backbone replaces --model)
    "backbone": None, "weights": "imagenet", "freeze": "from:auto", "finetune_epochs": 0, "finetune_lr": None,
    "discriminative_lr": None,
    "head_dropout": 0.2, "head_hidden": [], "baseline": False, "feature_cache": True, "min_phase_steps": 100,
    # Optimization
    "epochs": 30, "batch_size": 32, "optimizer": "adam", "lr": None, "momentum": 0.9, "nesterov": False,
    "schedule": "cosine", "warmup_epochs": 0.0, "step_epochs": 30, "step_gamma": 0.1, "weight_decay": None,
    "time_budget": None, "ema": None,
    "label_smoothing": 0.1, "patience": 10, "monitor": "val_loss", "class_weight": "none", "seed": 0,
    "fit_on_val": False,
    # Distribution (training.distribute): --batch-size stays the global batch
    "strategy": "auto",
    # Numerics: Keras' dtype policy, and XLA (None: Keras' own choice, on a GPU and not on a CPU)
    "precision": "float32", "jit_compile": None,
    # Output
    "run_name": None, "runs_dir": "runs", "export_dir": "saved_models", "export": True, "verbose": 1,
    "export_formats": [], "export_name": None,
}

# Defaults that suit one dataset better than the general ones; a --config file or a flag still overrides them.
# scikit-learn's digits, the default run: in 30 epochs LeNet-5 learned its 1,259 training images by heart
# (training accuracy 1.000, validation 0.983).  Augmentation and twice the epochs, still under a minute on two
# cores, took test accuracy on seeds 0-2 from 0.9833 to 0.9898 with shifts of up to a tenth of the image
# ("translate") and to 0.9916 with Simard et al.'s elastic distortion, the augmentation made for handwritten digits
# (on seeds 3-5, 0.9889 against translate's 0.9898: over six seeds, 21 errors against 22; docs/experiment-log.md).
DATASET_DEFAULTS = {
    "digits": {"augment": "elastic", "epochs": 60},
}


def defaults_for(dataset: str) -> dict:
    """``DEFAULTS`` with ``dataset``'s own defaults over them."""
    return {**DEFAULTS, **DATASET_DEFAULTS.get(dataset, {})}


def _dataset_defaults_text(key: str) -> str:
    """"digits: 60": the datasets with their own default for ``key``, for its flag's help (which shows the
    general default after it)."""
    return ", ".join(f"{dataset}: {values[key]}" for dataset, values in DATASET_DEFAULTS.items() if key in values)


MODEL_OPTIONS = ("batch_norm", "dropout", "activation", "kernel_initializer", "l1", "l2", "width", "filters", "depth", "widen_factor")


def complete(config: dict) -> dict:
    """``config`` over ``DEFAULTS``, with what depends on the kind of run filled in."""
    config = {**DEFAULTS, **config}
    if config["lr"] is None:
        config["lr"] = HEAD_LR if transfers(config) else ZOO_LR
    return config


def transfers(config: dict) -> bool:
    """Whether the run transfers pretrained features.  A named backbone with ``--weights none`` has random
    weights, so nothing to transfer: that architecture trains from scratch like a zoo model."""
    if not config["backbone"]:
        return False
    from transfer.backbones import is_architecture

    return not (str(config["weights"]).lower() == "none" and is_architecture(config["backbone"]))


def check_config(config: dict) -> None:
    """Catches numeric mistakes, and a model name the export would refuse, before any work is done."""
    for key in ("epochs", "batch_size"):
        if int(config[key]) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be at least 1, got {config[key]}")
    if int(config["min_phase_steps"]) < 0:
        raise UserError(f"--min-phase-steps must be 0 or more, got {config['min_phase_steps']}")
    if not config["lr"] > 0:
        raise UserError(f"--lr must be > 0, got {config['lr']}")
    if config["tta"] not in TTA_MODES:
        raise UserError(f"--tta must be one of {', '.join(TTA_MODES)}; got {config['tta']!r}")
    if config["ema"] is not None and not 0 < config["ema"] < 1:
        raise UserError(f"--ema is the moving average's momentum, in (0, 1) (0.999 is usual); got {config['ema']}")
    if not 0 <= config["label_smoothing"] < 1:
        raise UserError(f"--label-smoothing must be in [0, 1), got {config['label_smoothing']}")
    lowest = config["discriminative_lr"]
    if lowest is not None and not 0 < lowest <= 1:
        raise UserError(f"--discriminative-lr must be in (0, 1], got {lowest}")
    if config["monitor"] not in MONITORS:
        raise UserError(f"--monitor must be val_loss or val_accuracy, got {config['monitor']!r}")
    if config["precision"] not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {config['precision']!r}")
    if config["time_budget"] is not None:
        if not config["time_budget"] > 0:
            raise UserError(f"--time-budget must be a number of minutes > 0, got {config['time_budget']}")
        if config["finetune_epochs"] and transfers(config):
            raise UserError("--time-budget sizes one phase of training; with --finetune-epochs there are two: "
                            "drop one of them")
    check_export_name(config)


def check_export_name(config: dict) -> None:
    """A model name the export would refuse stops the run here, before training rather than after it."""
    if config["export_name"] is not None:  # a mistake even with --no-export
        check_name(config["export_name"], "--export-name")
    elif config["export"]:
        check_name(export_name(config), "The export name",
                   advice="; it is the run's name unless --export-name NAME gives another")


def check_export_formats(config: dict) -> None:
    """Normalizes --export-formats and checks its runtimes are installed, before any training."""
    if not config["export_formats"]:
        return
    config["export_formats"] = parse_formats(config["export_formats"])
    require_runtimes(config["export_formats"])
    if not config["export"]:
        raise UserError("--export-formats converts the run's SavedModel export; drop --no-export")


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


def export_name(config: dict) -> str:
    """The model the run's export is a version of: --export-name, else the run's base name (--run-name or
    MODEL-DATASET).  Not the run directory's name: a rerun of a finished command trains in ``NAME-2`` and
    exports version 2 of ``NAME``, which a server watching ``saved_models/NAME`` picks up."""
    if config["export_name"]:
        return config["export_name"]
    return os.path.basename(os.path.normpath(config["run_name"])) if config["run_name"] else default_run_name(config)


def _bool_flag(group, name, help_text):
    group.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction,
                       default=None, help=help_text)


def _data_flags(parser, D) -> None:
    data = parser.add_argument_group("Data")
    data.add_argument("--dataset", default=D["dataset"],
                      help="digits | mnist | fashion_mnist | cifar10 | folder:PATH | tfds:NAME")
    data.add_argument("--data-dir", default=D["data_dir"],
                      help="where local dataset files live (IDX, CIFAR batches, TFDS data)")
    data.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=D["image_size"],
                      help="resize images to H W (folders default to the model's input size)")
    data.add_argument("--channels", type=int, choices=(1, 3), default=D["channels"],
                      help="convert images to 1 (grey) or 3 (RGB) channels")
    data.add_argument("--val-fraction", type=float, default=D["val_fraction"],
                      help="share of each class held out for validation when the source has no validation split")
    data.add_argument("--test-fraction", type=float, default=D["test_fraction"],
                      help="share of each class held out for testing when the source has no test split")
    data.add_argument("--strict", action=argparse.BooleanOptionalAction, default=D["strict"],
                      help="fail before training if any file in a folder dataset is not a usable image "
                           "(default: skip it and list it in the run's data_manifest.json)")
    data.add_argument("--exclude", default=D["exclude"], metavar="FILE",
                      help="leave these files of a folder dataset out: `train.py audit --json FILE`'s output (its "
                           "\"exclude\" list) or a list of paths, one a line, relative to the folder; the run's "
                           "metrics.json and data_manifest.json record which were left out. No file is touched")


def _model_flags(parser, D) -> None:
    model = parser.add_argument_group("Model (unset options keep the model's paper defaults)")
    model.add_argument("--model", default=D["model"], help="a zoo name; see --list-models")
    _bool_flag(model, "batch-norm", "batch normalization on/off")
    model.add_argument("--dropout", type=float, default=None, help="dropout rate")
    model.add_argument("--activation", default=None,
                       help="relu | leaky_relu | elu | gelu | tanh | sigmoid | swish | scaled_tanh")
    model.add_argument("--kernel-initializer", default=None, help="he | glorot (xavier) | lecun | orthogonal ...")
    model.add_argument("--l1", type=float, default=None, help="L1 penalty on every kernel (in the loss)")
    model.add_argument("--l2", type=float, default=None, help="L2 penalty on every kernel (in the loss)")
    model.add_argument("--width", type=float, default=None, help="width multiplier on every layer")
    model.add_argument("--filters", type=int, nargs="+", default=None, metavar="N",
                       help="the layers' own widths, where a model takes them (lenet5: C1 C3 C5 maps and F6 "
                            "units, 6 16 120 84 in the paper); --width multiplies them")
    model.add_argument("--depth", type=int, default=None,
                       help="layers of a ResNet or Wide ResNet, as in their papers' names (resnet20 --depth 8 is "
                            "ResNet-8, wrn16_4 --depth 10 --widen-factor 2 is WRN-10-2)")
    model.add_argument("--widen-factor", type=int, default=None,
                       help="a Wide ResNet's k: its groups are 16k, 32k and 64k maps wide")
    _bool_flag(model, "whiten",
               "start the first convolution as a whitening of the training images' patches: eigenvectors of "
               "their covariance over the square roots of their eigenvalues, in +/- pairs (airbench's first "
               "layer); it trains on from there")
    _bool_flag(model, "precise-bn",
               "before each validation and the export, set batch norm's moving statistics to those of clean "
               "(un-augmented) training batches under the current weights (Wu & Johnson 2021's PreciseBN). "
               "Default: on wherever batch norm trains (a zoo model with batch norm, --weights none), because over "
               "the few hundred steps of a small data set its moving averages match no weights the network had, and a network "
               "that fits its training images can score chance on the rest; a transfer backbone's batch norm "
               "stays in inference mode, so there is nothing to re-estimate")
    model.add_argument("--preprocessing", choices=PREPROCESSING, default=D["preprocessing"],
                       help="pixels/255, or per-channel standardization learned from the training images")


def _transfer_flags(parser, D) -> None:
    tl = parser.add_argument_group(
        "Transfer learning (--backbone replaces --model; LP-FT: the head starts from a linear probe on the frozen "
        "features, trains for --epochs with the backbone frozen, then --finetune-epochs unfreeze its top at "
        "--finetune-lr; a network that ends below the probe on validation gives way to it)")
    tl.add_argument("--backbone", default=D["backbone"],
                    help="a keras.applications name (mobilenet_v2, resnet50, efficientnet_b0, ...), a zoo name, "
                         "a .keras file, or an export folder saved_models/NAME[/VERSION]")
    tl.add_argument("--weights", default=D["weights"],
                    help="imagenet (Keras' cache or a download) | none | PATH to a weights file")
    tl.add_argument("--freeze", default=D["freeze"],
                    help="what stays frozen while fine-tuning: from:auto (the backbone's usual point) | "
                         "from:LAYER | last:N | fraction:F | pattern:REGEX | none")
    tl.add_argument("--finetune-epochs", type=int, default=D["finetune_epochs"],
                    help="epochs of the second phase (0: train the head only)")
    tl.add_argument("--finetune-lr", type=float, default=D["finetune_lr"],
                    help="learning rate of the second phase (default: --lr / 10)")
    tl.add_argument("--discriminative-lr", type=float, default=D["discriminative_lr"], metavar="F",
                    help="while fine-tuning, the earliest unfrozen block learns at F x --finetune-lr, later blocks "
                         "geometrically faster, the head at the full rate (e.g. 0.01; default: one rate)")
    tl.add_argument("--head-dropout", type=float, default=D["head_dropout"], help="dropout before the classifier")
    tl.add_argument("--head-hidden", type=int, nargs="*", default=D["head_hidden"], metavar="UNITS",
                    help="hidden dense layers of the head")
    tl.add_argument("--feature-cache", action=argparse.BooleanOptionalAction, default=D["feature_cache"],
                    help="while the backbone is frozen and nothing augments, compute its features once and "
                         "train the head on them")
    tl.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=D["baseline"],
                    help="also print the linear probe's (backbone features + logistic regression) test accuracy")
    tl.add_argument("--min-phase-steps", type=int, default=D["min_phase_steps"], metavar="STEPS",
                    help="each transfer phase takes at least this many optimizer steps; a small folder is passed "
                         "over several times an epoch")


def _augmentation_flags(parser, D) -> None:
    aug = parser.add_argument_group("Augmentation (in the model graph, training only; never exported)")
    aug.add_argument("--augment", default=D["augment"],
                     help="none | light | standard | strong, or components joined by '+', e.g. "
                          f"'standard+erasing', 'light+mixup' (see augment.describe); {_dataset_defaults_text('augment')}")
    _bool_flag(aug, "flips", "allow mirroring (default: off for digits and mnist, on otherwise)")
    aug.add_argument("--tta", choices=TTA_MODES, default=D["tta"],
                     help="test-time augmentation when evaluating on the test split")
    aug.add_argument("--preview", metavar="PNG",
                     help="write a grid of augmented training images for --augment and --dataset, then exit")


def _optimization_flags(parser, D) -> None:
    opt = parser.add_argument_group("Optimization")
    opt.add_argument("--epochs", type=int, default=D["epochs"], help=f"maximum epochs (early stopping may end sooner); {_dataset_defaults_text('epochs')}")
    opt.add_argument("--time-budget", type=float, default=D["time_budget"], metavar="MINUTES",
                     help="train for about this many minutes: the epochs (and so the schedule) are sized to them "
                          "from the measured speed of the first steps, in place of --epochs")
    opt.add_argument("--batch-size", type=int, default=D["batch_size"], help="images per training step")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, default=D["optimizer"],
                     help="sgd uses --momentum (and --nesterov)")
    opt.add_argument("--lr", type=float, default=D["lr"],
                     help=f"(peak) learning rate (default: {ZOO_LR:g} for a zoo model; with --backbone, {HEAD_LR:g} "
                          "for the head, which starts from the linear probe)")
    opt.add_argument("--momentum", type=float, default=D["momentum"], help="SGD/RMSprop momentum")
    opt.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=D["nesterov"],
                     help="Nesterov momentum for SGD")
    opt.add_argument("--schedule", choices=SCHEDULES, default=D["schedule"],
                     help="learning-rate schedule over the run (by step, so it resumes exactly)")
    opt.add_argument("--warmup-epochs", type=float, default=D["warmup_epochs"],
                     help="linear warm-up for cosine; rise phase for onecycle (0: 30%% of the run)")
    opt.add_argument("--step-epochs", type=int, default=D["step_epochs"], help="step schedule: epochs per step")
    opt.add_argument("--step-gamma", type=float, default=D["step_gamma"], help="step schedule: factor per step")
    opt.add_argument("--weight-decay", type=float, default=D["weight_decay"],
                     help="decoupled weight decay (default: the optimizer's own)")
    opt.add_argument("--ema", type=float, default=D["ema"], metavar="MOMENTUM",
                     help="validate, keep and export an exponential moving average of the weights (Polyak "
                          "averaging) with this momentum; training goes on from the weights themselves. The average "
                          "starts at the first step's weights, uncorrected: keep 1/(1-MOMENTUM) steps well below "
                          "the run's (0.99 for a few thousand steps, 0.999 for tens of thousands)")
    opt.add_argument("--label-smoothing", type=float, default=D["label_smoothing"],
                     help="share of each target spread over the other classes (Szegedy et al. 2016)")
    opt.add_argument("--patience", type=int, default=D["patience"],
                     help="early stopping: epochs without improvement (0: off); the best weights are kept")
    opt.add_argument("--monitor", choices=MONITORS, default=D["monitor"],
                     help="what early stopping and best-weights selection watch")
    opt.add_argument("--class-weight", choices=CLASS_WEIGHTS, default=D["class_weight"],
                     help="weight the loss by inverse class frequency for imbalanced data")
    opt.add_argument("--seed", type=int, default=D["seed"], help="seeds the split, the weights and the shuffling")


def _distribution_flags(parser, D) -> None:
    dist = parser.add_argument_group("Distribution (tf.distribute; --batch-size is global, split between replicas)")
    dist.add_argument("--strategy", choices=STRATEGIES, default=D["strategy"],
                      help="auto: every GPU when there are several; mirrored: every GPU of this machine; "
                           "multi_worker: the machines in TF_CONFIG (run the same command on each)")


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def _numerics_flags(parser, D) -> None:
    num = parser.add_argument_group("Numerics (for GPUs; on these 2 CPU cores neither made training faster)")
    num.add_argument("--precision", choices=PRECISIONS, default=D["precision"],
                     help="Keras' dtype policy: mixed_float16 computes in float16 with loss scaling (GPUs with "
                          "tensor cores), mixed_bfloat16 in bfloat16 (TPUs, recent GPUs and CPUs); weights and "
                          "the model's outputs stay float32")
    num.add_argument("--jit-compile", action=argparse.BooleanOptionalAction, default=D["jit_compile"],
                     help="compile training steps with XLA (default: Keras' choice, on a GPU, not on a CPU)")


def _output_flags(parser, D) -> None:
    out = parser.add_argument_group("Output")
    out.add_argument("--run-name", default=D["run_name"], help="run directory name (default: MODEL-DATASET)")
    out.add_argument("--runs-dir", default=D["runs_dir"], help="where run directories go")
    out.add_argument("--export-dir", default=D["export_dir"], help="SavedModel root (TF Serving layout)")
    out.add_argument("--export", action=argparse.BooleanOptionalAction, default=D["export"],
                     help="export a SavedModel at the end")
    out.add_argument("--export-name", default=D["export_name"], metavar="NAME",
                     help="the model the export is a version of: it goes to EXPORT_DIR/NAME/VERSION, the next "
                          "version when NAME exists, which a running `train.py serve` swaps in (default: --run-name, "
                          "or MODEL-DATASET; a rerun trains in runs/NAME-2 and exports version 2 of NAME)")
    out.add_argument("--export-formats", type=lambda text: [p for p in text.split(",") if p.strip()],
                     default=D["export_formats"], metavar="LIST",
                     help="also convert the export to these formats, scored on the test split: comma-separated "
                          "tflite, tflite_fp16, tflite_int8, onnx, or all (see python train.py export --help)")
    out.add_argument("--verbose", type=int, choices=(0, 1, 2), default=D["verbose"], help="Keras progress output")


# The parser's groups, in the order --help shows them.
FLAG_GROUPS = (_data_flags, _model_flags, _transfer_flags, _augmentation_flags, _optimization_flags, _distribution_flags,
               _numerics_flags, _output_flags)


def build_parser() -> argparse.ArgumentParser:
    D = DEFAULTS
    parser = argparse.ArgumentParser(
        description="Train a zoo model on a dataset, evaluate it on the test split and export a SavedModel. "
                    "Other commands: search (hyperparameter search), find-lr (learning-rate range test), compare "
                    "(several models on the same data), ensemble (average exports), export (TFLite and ONNX "
                    "formats of an export), audit (duplicates, leaks across the split, likely wrong labels and unusable "
                    "images of a dataset), serve (TF Serving's REST and gRPC APIs over the exports); "
                    "python train.py COMMAND --help.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="JSON file of flag values (keys as in config.json); flags override it")
    parser.add_argument("--list-models", action="store_true", help="list the zoo with parameter counts and exit")
    parser.add_argument("--list-datasets", action="store_true", help="list dataset sources and exit")
    for add_flags in FLAG_GROUPS:
        add_flags(parser, D)
    return parser


def read_json_object(path: str, what: str) -> dict:
    """A JSON object from a file the user named, or a one-line error saying what is wrong with it."""
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"Cannot read {what} {path!r}: {error}") from None
    if not isinstance(values, dict):
        raise UserError(f"{what.capitalize()} {path!r} must hold a JSON object ({{\"key\": value, ...}})")
    return values


def resolve_config(argv, parser: argparse.ArgumentParser | None = None) -> tuple[dict, argparse.Namespace]:
    """Flags over config file over defaults; ``parser`` is ``build_parser()`` or a subcommand's extension of it."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    file_values = {}
    if args.config:
        file_values = read_json_object(args.config, "config file")
        unknown = sorted(set(file_values) - set(DEFAULTS))
        if unknown:
            raise UserError(f"Unknown keys in {args.config!r}: {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
        parser.set_defaults(**file_values)
        args = parser.parse_args(argv)
    dataset_values = DATASET_DEFAULTS.get(getattr(args, "dataset", None))
    if dataset_values:  # under the file's values and the flags
        parser.set_defaults(**{**dataset_values, **file_values})
        args = parser.parse_args(argv)
    config = {key: getattr(args, key, default) for key, default in DEFAULTS.items()}  # some keys have no flag
    if config["image_size"] is not None:
        config["image_size"] = list(config["image_size"])
    return quick.cap_config(config), quick.cap_arguments(args)  # both unchanged unless the docs' CI runs them


