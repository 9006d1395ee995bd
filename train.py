"""Train, evaluate and export an image classifier: the command-line shell.

    python train.py                                   # LeNet-5 on digits
    python train.py --model resnet20 --dataset fashion_mnist --epochs 20 --optimizer sgd --lr 0.1
    python train.py --dataset folder:photos --image-size 64 64
    python train.py --list-models | --list-datasets
    python train.py search --help                     # subcommands: see SUBCOMMANDS
    python train.py serve                             # TF Serving's REST and gRPC APIs over saved_models/

The flags, their defaults and how a ``--config`` file joins them live in
``training.config``; the run itself in ``training.run``.  This file only
reads the command line, calls the library and turns errors into one line.
Imports wait until a command is chosen, so ``--help`` stays quick.
"""

from __future__ import annotations

import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up noise off the terminal


def _search(argv):
    from tuning.command import main
    return main(argv)


def _find_lr(argv):
    from insight.lr_finder import main
    return main(argv)


def _compare(argv):
    from insight.compare import main
    return main(argv)


def _ensemble(argv):
    from insight.ensemble import main
    return main(argv)


def _export(argv):
    from training.export_formats import main
    return main(argv)


def _audit(argv):
    from audit.command import main
    return main(argv)


def _serve(argv):
    if not asks_for_help(argv):
        import transfer, zoo  # noqa: F401,E401 - their layers, for the Keras models that :explain loads from exports
    from server.command import main
    return main(argv)


# "python train.py NAME ...": each takes the training flags (training.config.resolve_config) plus its own group;
# serve takes only its own (server.command).
SUBCOMMANDS = {"search": _search, "find-lr": _find_lr, "compare": _compare, "ensemble": _ensemble,
               "export": _export, "serve": _serve, "audit": _audit}


def build_parser():
    from training.config import build_parser as library_parser
    return library_parser()


def resolve_config(argv, parser=None):
    from training.config import resolve_config as library_resolve
    return library_resolve(argv, parser)


def list_models() -> None:
    import keras

    import zoo

    print(f"{'name':<18} {'trainable':>12}  {'input':<13} {'paper':<28} description")
    for variant in zoo.list_models():
        # Papers count trainable weights at their own class count: 1000 for ImageNet inputs, 10 for the rest.
        model = zoo.build(variant.name, num_classes=1000 if variant.input_shape[0] >= 200 else 10)
        params = sum(math.prod(w.shape) for w in model.trainable_weights)
        keras.backend.clear_session()
        shape = "x".join(str(d) for d in variant.input_shape)
        print(f"{variant.name:<18} {params:>12,}  {shape:<13} {variant.paper:<28} {variant.description}")


def run_training(config) -> int:
    from training.callbacks import NanLossError
    from training.run import summary_lines, train

    try:
        metrics = train(config)
    except NanLossError as error:
        print(f"error: training stopped: {error}. Nothing was exported; checkpoints of the epochs before it are "
              "kept. Try a lower --lr (or --schedule cosine --warmup-epochs 2).", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted. Run the same command again to resume from the last completed epoch.", file=sys.stderr)
        return 130
    for line in summary_lines(metrics):
        print(line)
    return 0


def asks_for_help(argv: list[str]) -> bool:
    """``-h`` or ``--help`` before any ``--``: the parsers answer it and exit, with no TensorFlow started."""
    head = argv[:argv.index("--")] if "--" in argv else argv
    return "-h" in head or "--help" in head


def main(argv=None) -> int:
    from core.errors import UserError
    from training.quiet import import_tensorflow

    argv = sys.argv[1:] if argv is None else list(argv)
    if not asks_for_help(argv):
        import_tensorflow()  # quietly, before anything else imports it; help needs none of it
    try:
        if argv and argv[0] in SUBCOMMANDS:
            try:
                return SUBCOMMANDS[argv[0]](argv[1:])
            except KeyboardInterrupt:
                print(f"\nInterrupted. Run the same command again to continue where {argv[0]} stopped.",
                      file=sys.stderr)
                return 130
        config, args = resolve_config(argv)
        if args.list_models:
            list_models()
        elif args.list_datasets:
            import imagesets

            for name, text in imagesets.SOURCES.items():
                print(f"{name:<14} {text}")
        elif args.preview:
            from training.run import preview

            print(f"Wrote {preview(config, args.preview)}")
        else:
            from training.config import check_export_formats

            check_export_formats(config)  # before training, not after
            return run_training(config)
        return 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
