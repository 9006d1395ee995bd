"""Train, evaluate and export an image classifier.

    python train.py                                   # LeNet-5 on digits
    python train.py --model resnet20 --dataset fashion_mnist --epochs 20 --optimizer sgd --lr 0.1
    python train.py --dataset folder:photos --image-size 64 64
    python train.py --list-models | --list-datasets
    python train.py search --help                     # subcommands: see SUBCOMMANDS

Every flag's default comes from ``training.run.DEFAULTS``, then from a JSON
``--config`` file, then from the command line.  The resolved configuration is
saved in the run directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up noise off the terminal


# Subcommands beyond plain training: "python train.py NAME ..." runs MODULE.main(argv), which
# takes the same flags as training (resolve_config(argv, parser)) plus its own group.
SUBCOMMANDS = {"search": "tuning.command", "find-lr": "insight.lr_finder", "compare": "insight.compare",
               "ensemble": "insight.ensemble"}


def _bool_flag(group, name, help_text):
    group.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction,
                       default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    from training.run import DEFAULTS as D

    parser = argparse.ArgumentParser(
        description="Train a zoo model on a dataset, evaluate it on the test split and export a SavedModel. "
                    "Other commands: search (hyperparameter search), find-lr (learning-rate range test), compare "
                    "(several models on the same data), ensemble (average exports); python train.py COMMAND --help.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", help="JSON file of flag values (keys as in config.json); flags override it")
    parser.add_argument("--list-models", action="store_true", help="list the zoo with parameter counts and exit")
    parser.add_argument("--list-datasets", action="store_true", help="list dataset sources and exit")

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
    model.add_argument("--preprocessing", choices=("rescale", "standardize"), default=D["preprocessing"],
                       help="pixels/255, or per-channel standardization learned from the training images")

    tl = parser.add_argument_group(
        "Transfer learning (--backbone replaces --model: the head trains for --epochs with the backbone frozen, "
        "then --finetune-epochs unfreeze its top at --finetune-lr)")
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

    aug = parser.add_argument_group("Augmentation (in the model graph, training only; never exported)")
    aug.add_argument("--augment", default=D["augment"],
                     help="none | light | standard | strong, or components joined by '+', e.g. "
                          "'standard+erasing', 'light+mixup' (see augment.describe)")
    _bool_flag(aug, "flips", "allow mirroring (default: off for digits and mnist, on otherwise)")
    aug.add_argument("--tta", choices=("none", "flip", "ten_crop"), default=D["tta"],
                     help="test-time augmentation when evaluating on the test split")
    aug.add_argument("--preview", metavar="PNG",
                     help="write a grid of augmented training images for --augment and --dataset, then exit")

    opt = parser.add_argument_group("Optimization")
    opt.add_argument("--epochs", type=int, default=D["epochs"], help="maximum epochs (early stopping may end sooner)")
    opt.add_argument("--batch-size", type=int, default=D["batch_size"], help="images per training step")
    opt.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "rmsprop"), default=D["optimizer"],
                     help="sgd uses --momentum (and --nesterov)")
    opt.add_argument("--lr", type=float, default=D["lr"], help="(peak) learning rate")
    opt.add_argument("--momentum", type=float, default=D["momentum"], help="SGD/RMSprop momentum")
    opt.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=D["nesterov"],
                     help="Nesterov momentum for SGD")
    opt.add_argument("--schedule", choices=("constant", "step", "cosine", "onecycle"), default=D["schedule"],
                     help="learning-rate schedule over the run (by step, so it resumes exactly)")
    opt.add_argument("--warmup-epochs", type=float, default=D["warmup_epochs"],
                     help="linear warm-up for cosine; rise phase for onecycle (0: 30%% of the run)")
    opt.add_argument("--step-epochs", type=int, default=D["step_epochs"], help="step schedule: epochs per step")
    opt.add_argument("--step-gamma", type=float, default=D["step_gamma"], help="step schedule: factor per step")
    opt.add_argument("--weight-decay", type=float, default=D["weight_decay"],
                     help="decoupled weight decay (default: the optimizer's own)")
    opt.add_argument("--label-smoothing", type=float, default=D["label_smoothing"],
                     help="share of each target spread over the other classes (Szegedy et al. 2016)")
    opt.add_argument("--patience", type=int, default=D["patience"],
                     help="early stopping: epochs without improvement (0: off); the best weights are kept")
    opt.add_argument("--monitor", choices=("val_loss", "val_accuracy"), default=D["monitor"],
                     help="what early stopping and best-weights selection watch")
    opt.add_argument("--class-weight", choices=("none", "balanced"), default=D["class_weight"],
                     help="weight the loss by inverse class frequency for imbalanced data")
    opt.add_argument("--seed", type=int, default=D["seed"], help="seeds the split, the weights and the shuffling")

    dist = parser.add_argument_group("Distribution (tf.distribute; --batch-size is global, split between replicas)")
    dist.add_argument("--strategy", choices=("auto", "one_device", "mirrored", "multi_worker"), default=D["strategy"],
                      help="auto: every GPU when there are several; mirrored: every GPU of this machine; "
                           "multi_worker: the machines in TF_CONFIG (run the same command on each)")

    out = parser.add_argument_group("Output")
    out.add_argument("--run-name", default=D["run_name"], help="run directory name (default: MODEL-DATASET)")
    out.add_argument("--runs-dir", default=D["runs_dir"], help="where run directories go")
    out.add_argument("--export-dir", default=D["export_dir"], help="SavedModel root (TF Serving layout)")
    out.add_argument("--export", action=argparse.BooleanOptionalAction, default=D["export"],
                     help="export a SavedModel at the end")
    out.add_argument("--verbose", type=int, choices=(0, 1, 2), default=D["verbose"], help="Keras progress output")
    return parser


def read_json_object(path: str, what: str) -> dict:
    """A JSON object from a file the user named, or a one-line error saying what is wrong with it."""
    from training.errors import UserError

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
    from training.errors import UserError
    from training.run import DEFAULTS

    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.config:
        file_values = read_json_object(args.config, "config file")
        unknown = sorted(set(file_values) - set(DEFAULTS))
        if unknown:
            raise UserError(f"Unknown keys in {args.config!r}: {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}")
        parser.set_defaults(**file_values)
        args = parser.parse_args(argv)
    config = {key: getattr(args, key, default) for key, default in DEFAULTS.items()}  # some keys have no flag
    if config["image_size"] is not None:
        config["image_size"] = list(config["image_size"])
    return config, args


def list_models() -> None:
    import zoo

    import keras

    print(f"{'name':<18} {'trainable':>12}  {'input':<13} {'paper':<28} description")
    for variant in zoo.list_models():
        # Papers count trainable weights at their own class count: 1000 for ImageNet inputs, 10 for the rest.
        model = zoo.build(variant.name, num_classes=1000 if variant.input_shape[0] >= 200 else 10)
        params = sum(math.prod(w.shape) for w in model.trainable_weights)
        keras.backend.clear_session()
        shape = "x".join(str(d) for d in variant.input_shape)
        print(f"{variant.name:<18} {params:>12,}  {shape:<13} {variant.paper:<28} {variant.description}")


def main(argv=None) -> int:
    from training.errors import UserError
    from training.quiet import import_tensorflow

    import_tensorflow()

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            import importlib

            try:
                return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
            except KeyboardInterrupt:
                print(f"\nInterrupted. Run the same command again to continue where {argv[0]} stopped.",
                      file=sys.stderr)
                return 130
        config, args = resolve_config(argv)
        if args.list_models:
            list_models()
            return 0
        if args.list_datasets:
            import imagesets

            for name, text in imagesets.SOURCES.items():
                print(f"{name:<14} {text}")
            return 0
        if args.preview:
            from training.run import preview

            print(f"Wrote {preview(config, args.preview)}")
            return 0
        from training.callbacks import NanLossError
        from training.run import summary_lines, train

        try:
            metrics = train(config)
        except NanLossError as error:
            print(f"error: training stopped: {error}. Nothing was exported; checkpoints of the epochs before it are "
                  "kept. Try a lower --lr (or --schedule cosine --warmup-epochs 2).", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nInterrupted. Run the same command again to resume from the last completed epoch.",
                  file=sys.stderr)
            return 130
        for line in summary_lines(metrics):
            print(line)
        return 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
