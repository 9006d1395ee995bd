"""Fashion-MNIST test accuracy of each zoo family with this toolkit's recipe, beside
the published results for the same families, and the time to reach 90/93/94/95%.

    .venv/bin/python bench/bench_fashion.py --quick          # LeNet-5 and ResNet-20 on a subset: a smoke run
    .venv/bin/python bench/bench_fashion.py --full           # 54,000 training images, the real recipe (hours)
    .venv/bin/python bench/bench_fashion.py --full --models lenet5 resnet20 --epochs 15
    .venv/bin/python bench/bench_fashion.py --full --equal-time 5   # every family for 5 minutes of training
    .venv/bin/python bench/bench_fashion.py --full --models lenet5_modern --set label_smoothing=0   # one change
    .venv/bin/python bench/bench_fashion.py --full --models lenet5_modern-10min   # ten minutes of training
    .venv/bin/python bench/bench_fashion.py --full --models lenet5_modern-5min    # five

``--equal-time MINUTES`` answers "which family, for the time I have?": each of
the six families trains for the same wall-clock minutes, its epochs and
one-cycle schedule sized to them by ``--time-budget``'s machinery
(``training.budget``: timed steps, then re-planned after every epoch so the
schedule ends with the time), the per-epoch test scoring kept off the clock.
Its results go to bench/results/fashion_equal_<minutes>min.json.

The recipe is what ``train.py`` does: the library's split (10% of the training
set held out for validation), in-graph augmentation, label smoothing 0.1, a
one-cycle learning-rate schedule, and each family's optimizer below.  After
every epoch a callback scores the model (without training augmentation; with
the recipe's test-time views when it sets ``tta``) on the 10,000 test images;
the first epoch whose test accuracy reaches a threshold gives the "time to"
column.  That time is training wall time, the evaluations excluded.
The reported accuracy is the last epoch's, not the best one seen on the test set.  Every
epoch is scored without test-time views; the recipe's views (``tta``; ten for
"shift", longer to score than an epoch takes to train) score the last epoch and
those within a point of a threshold not yet reached, the only ones where they
can cross it first.

Published numbers: the "Benchmark" table of the Fashion-MNIST README
(github.com/zalandoresearch/fashion-mnist, README.md, section "Benchmark";
submitted results, which the dataset's authors note they have not verified).
Writes JSON (default bench/results/fashion_quick.json or fashion_full.json).
It compares; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import machine_info, parse_size  # noqa: E402

THRESHOLDS = (0.90, 0.93, 0.94, 0.95)
# Test-time views gave up to +0.6 points over plain predictions in the ten-minute recipe's runs; a margin of a
# whole point leaves room.  An epoch whose plain accuracy is further below every threshold is not scored with them.
TTA_REACH = 0.01

# Rows of the Fashion-MNIST README's Benchmark table, matched to a zoo family.
PUBLISHED = {
    "alexnet_small": [("AlexNet (no row in the table)", None)],
    "lenet5_modern": [("2 Conv Layers with 3 FC 1.8M parameters (Normalization)", 0.932),
                      ("2 Conv Layers net <100K parameters (None)", 0.925),
                      ("2 Conv Layers 113K parameters (Normalization)", 0.922)],
    "inception_small": [("GoogleNet with cross-entropy loss (None)", 0.937)],
    "resnet20": [("ResNet18 (normalization, flips, translation, rotation)", 0.949)],
    "resnet56": [("ResNet18 (normalization, flips, translation, rotation)", 0.949)],
    "wrn16_4": [("WRN-28-10 (mean/std, random crops + horizontal flips)", 0.959),
                ("WRN40-4 8.9M params (mean/std, random crops + horizontal flips)", 0.967)],
}

# The project's recipe per family, in the repository's recipes/fashion_mnist/<model>.json: the --config file a
# user gives train.py to run the same thing (python train.py --config recipes/fashion_mnist/resnet20.json).  SGD
# families follow He et al. (momentum 0.9, weight decay 5e-4), with one-cycle instead of step decay so a short run
# still ends at a small learning rate.  <model>-<what>.json is another recipe of the same model (lenet5_modern-10min
# and -5min: as far as ten and five minutes of two CPU cores go); one that sets time_budget trains for those minutes.
RECIPE_DIR = os.path.join(ROOT, "recipes", "fashion_mnist")
LABELS = {"alexnet_small": "AlexNet, small", "lenet5_modern": "LeNet-5 (ReLU, max pooling)", "inception_small": "Inception, small",
          "resnet20": "ResNet-20", "resnet56": "ResNet-56", "wrn16_4": "Wide ResNet WRN-16-4",
          "lenet5_modern-10min": "LeNet-5 + BN, wide C3, 10 min", "lenet5_modern-5min": "LeNet-5 + BN, wide C3, 5 min"}
FAMILIES = tuple(LABELS)


def family_of(name: str) -> str:
    """The zoo family a recipe belongs to: its file name up to a "-" (lenet5_modern-10min: lenet5_modern)."""
    return name.partition("-")[0]


def read_recipe(name: str) -> dict:
    """The flags of ``name``'s recipe file, the model and the dataset included."""
    with open(os.path.join(RECIPE_DIR, f"{name}.json")) as f:
        return json.load(f)


RECIPES = {name: read_recipe(name) for name in FAMILIES}
# Quick: a smoke run of two families.  Fewer steps than this leave batch norm's moving
# averages unsettled, and the others cost minutes an epoch even on a subset.
QUICK = {"models": ["lenet5_modern", "resnet20"], "train": 4000, "test": 2000, "epochs": 2, "batch_size": 64}


def prepare_recipe(name: str, changes: dict, *, epochs: int | None = None, train_limit=None, batch_size=None):
    """``name``'s recipe with ``changes``, prepared as train.py prepares a run (seed, model, augmentation,
    pipelines) on at most ``train_limit`` training images: (config, data, run).  The run gets no time budget
    (a benchmark that trains for minutes plans them itself); ``config`` keeps the recipe's, for the row."""
    import tempfile

    from training.run import DEFAULTS, load_data, prepare

    config = {**DEFAULTS, **RECIPES[name], **changes, **({"epochs": epochs} if epochs else {})}
    config["batch_size"] = batch_size or config["batch_size"]
    data = load_data(config)
    if train_limit:
        data.arrays["train"] = tuple(part[:train_limit] for part in data.arrays["train"])
    run = prepare({**config, "time_budget": None}, log=lambda *_: None,
                  run_dir=tempfile.mkdtemp(prefix=f"bench-fashion-{name}-"), data=data)
    return config, data, run


def run_family(name: str, *, epochs: int, train_limit=None, test_limit=None, batch_size=None, minutes=None,
               changes=None, log=print) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from augment import predict_tta
    from core.model import inference_model
    from training.data import flips_for
    from training.run import compile_model

    tf.get_logger().setLevel("ERROR")  # one predict function per family is expected, not a retracing problem
    changes = dict(changes or {})
    # The run's own preparation; the benchmark keeps its own loop, which scores the test split after every epoch
    # without checkpoints, and plans a time budget itself (below).
    config, data, run = prepare_recipe(name, changes, epochs=epochs, train_limit=train_limit, batch_size=batch_size)
    x_test, y_test = data.arrays["test"]
    if test_limit:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    model, train_ds, y_train = run.model, run.train_ds, run.labels
    planned = scale = None
    if minutes:  # equal time: epochs planned from timed steps, the schedule's clock rescaled after each epoch
        from training import budget

        measured = budget.measure(model, train_ds, run.val_ds.take(0), run.steps,  # no validation pass here
                                  lambda target: compile_model(target, run.config, run.steps))
        planned = max(1, int(minutes * 60 // measured["epoch_seconds"]))
        epochs = budget.most_epochs(planned)
        scale = keras.Variable(1.0, trainable=False, dtype="float32")
    compile_model(model, run.config, run.steps, epochs=planned or epochs, stretch=scale)
    inference = inference_model(model)
    test_images = x_test.astype(np.float32)

    class Scorer(keras.callbacks.Callback):
        """Test accuracy after each epoch; its own time is kept out of the training clock."""

        def __init__(self):
            super().__init__()
            self.curve, self.reached, self.excluded = [], {}, 0.0

        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            began = time.perf_counter()
            elapsed = began - self.start - self.excluded
            plain = score("none")
            self.curve.append({"epoch": epoch + 1, "seconds": round(elapsed, 1), "test_accuracy": plain,
                               "plain_accuracy": plain, "train_loss": float(logs.get("loss", float("nan")))})
            # --tta as train.py scores the test split: the recipe's views (shift: ten of them), which can take
            # longer than the epoch did.  So they score an epoch whose plain accuracy is within TTA_REACH of a
            # threshold not yet reached (only there can they cross it), and the last one (finish, after fit).
            if any(plain >= t - TTA_REACH for t in THRESHOLDS if t not in self.reached):
                self.with_views()
            else:
                self.passed()
            self.excluded += time.perf_counter() - began

        def with_views(self):
            entry = self.curve[-1]
            if config["tta"] != "none" and "views" not in entry:
                entry.update(test_accuracy=score(config["tta"]), views=config["tta"])
            self.passed()

        def passed(self):
            entry = self.curve[-1]
            for threshold in THRESHOLDS:
                if entry["test_accuracy"] >= threshold and threshold not in self.reached:
                    self.reached[threshold] = entry["seconds"]
            views = f" ({entry['views']} views)" if "views" in entry else ""
            log(f"  {name} epoch {entry['epoch']}/{epochs}: test accuracy {entry['test_accuracy']:.4f}{views} "
                f"at {entry['seconds']:.0f} s")

    def score(views: str) -> float:
        predicted = predict_tta(inference, test_images, views, flips=flips_for(config), batch_size=512).argmax(1)
        return float(np.mean(predicted == y_test))

    scorer = Scorer()
    callbacks = [scorer]
    if config["ema"] is not None:  # --ema: the scorer sees the averaged weights, training the trained ones
        from training.callbacks import AveragedWeights

        averaged = AveragedWeights()
        callbacks = [averaged, scorer, averaged.back]
    if minutes:
        # After the scorer, on a clock that leaves its test scoring out: the budget is training time.
        callbacks.append(budget.Deadline(run.run_dir, {"minutes": minutes, "epochs": planned}, scale, 0.0,
                                         most=epochs, clock=lambda: time.perf_counter() - scorer.excluded))
        callbacks[-1].started = time.perf_counter()
    model.fit(train_ds, epochs=epochs, callbacks=callbacks, verbose=0)
    if config["ema"] is not None and not averaged.averaged:
        averaged.swap()  # the last epoch is scored as it was during training: with the averaged weights
    scorer.with_views()  # the reported accuracy is the last epoch's, with the recipe's views
    keras.backend.clear_session()
    last = scorer.curve[-1]
    extra = {"minutes": minutes, "planned_epochs": planned} if minutes else {}
    label = LABELS[name] + "".join(f" [{key}={value}]" for key, value in changes.items())
    # The network is the row's name unless --set swapped it; then the recipe says which ran.
    recipe = {k: config[k] for k in (*RECIPES[name], *changes) if k != "model" or k in changes}
    # Each result names its own machine: the file keeps earlier runs, and machines of one name differ in speed.
    return {"model": name, "label": label, "recipe": recipe, "changed": changes, "machine": machine_info(),
            **extra, "epochs": len(scorer.curve), "train_images": int(len(y_train)), "test_images": int(len(y_test)),
            "parameters": int(inference.count_params()), "test_accuracy": last["test_accuracy"],
            "train_seconds": last["seconds"],
            "seconds_to": {f"{t:.2f}": scorer.reached.get(t) for t in THRESHOLDS},
            "published": [{"row": row, "accuracy": acc} for row, acc in PUBLISHED[family_of(name)]], "curve": scorer.curve}


def table(results: list[dict]) -> str:
    def minutes(seconds):
        return "—" if seconds is None else f"{seconds / 60:.1f} min"

    lines = [f"{'family':<28} {'epochs':>6} {'test acc':>8} {'published (best row)':>22} "
             + " ".join(f"{'to ' + format(t, '.0%'):>9}" for t in THRESHOLDS)]
    for r in results:
        best_row, best = max(PUBLISHED[family_of(r["model"])], key=lambda p: p[1] or 0)
        published = f"{best:>22.3f}" if best else f"{'—':>22}"
        lines.append(f"{r['label']:<28} {r['epochs']:>6} {r['test_accuracy']:>8.4f} {published} "
                     + " ".join(f"{minutes(r['seconds_to'][f'{t:.2f}']):>9}" for t in THRESHOLDS))
    return "\n".join(lines)


def parse_changes(items, parser) -> dict:
    """--set KEY=VALUE pairs as a dict; the value is JSON, or a plain string when it is not."""
    from training.config import DEFAULTS

    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            parser.error(f"--set {item!r}: give KEY=VALUE with a key of train.py's config.json")
        try:
            changes[key] = json.loads(value)
        except ValueError:
            changes[key] = value
    return changes


def main(argv=None) -> int:
    from training.config import DEFAULTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", choices=list(RECIPES),
                        help="families to run (default: all with --full, LeNet-5 and ResNet-20 with --quick)")
    parser.add_argument("--epochs", type=int, help="override every family's epochs")
    parser.add_argument("--equal-time", type=float, metavar="MINUTES",
                        help="train every family for this many minutes instead of its epochs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one setting of every recipe (a JSON value, or else a string: label_smoothing=0, "
                             "augment=none), to measure what it brings; the row is labelled with it")
    args, mode, out = parse_size("fashion", __doc__, argv, parser=parser,
                                 quick="4,000 training images, 2 epochs, LeNet-5 and ResNet-20",
                                 full="the whole training split, the recipe's epochs")
    if args.equal_time and not args.json:
        out = os.path.join(os.path.dirname(out), f"fashion_equal_{args.equal_time:g}min.json")
    # Runs of earlier invocations of the same mode stay in the file unless this one repeats their
    # family and recipe (a full run takes hours; it can be done a family at a time).
    try:
        with open(out) as f:
            earlier = json.load(f)
        kept = [r for r in earlier["results"] if earlier.get("mode") == mode]
    except (OSError, ValueError, KeyError):
        kept = []
    changes = parse_changes(args.set, parser)
    results = []
    for name in args.models or (list(RECIPES) if args.full else QUICK["models"]):
        recipe = RECIPES[name]
        # A recipe sized in minutes (time_budget) trains for them, like train.py --config does, unless
        # --equal-time sets every family's.
        minutes = args.equal_time or (recipe.get("time_budget") if args.full else None)
        epochs = args.epochs or (recipe.get("epochs", DEFAULTS["epochs"]) if args.full else QUICK["epochs"])
        limits = {} if args.full else {"train_limit": QUICK["train"], "test_limit": QUICK["test"],
                                       "batch_size": QUICK["batch_size"]}
        results.append(run_family(name, epochs=epochs, minutes=minutes, changes=changes, **limits))
        def key(r):
            return r["model"], json.dumps(r["recipe"], sort_keys=True)

        done = {key(r) for r in results}
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:  # after every family, so a long run keeps what it finished
            json.dump({"mode": mode, "machine": machine_info(),
                       "results": [r for r in kept if key(r) not in done] + results,
                       "source": "github.com/zalandoresearch/fashion-mnist README.md, Benchmark table"}, f, indent=2)
    print(table(results))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
