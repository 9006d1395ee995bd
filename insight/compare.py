"""Several models or option sets on the same data, split and seed: one table, one plot.

    python train.py compare --models mlp lenet5 resnet20 --epochs 5
    python train.py compare --model lenet5_modern --set batch_norm=true --set batch_norm=false --epochs 10
    python train.py compare --models mlp lenet5 --set dropout=0 --set dropout=0.3,l2=1e-4

Every model is trained with every ``--set`` (none: the flags as given).  Each
variant is an ordinary run (``training.run.train``) inside the comparison's
folder ``<runs-dir>/compare-<dataset>[-N]/``, which also receives
``compare.csv``, ``compare.json`` and ``compare.png`` (validation loss and
accuracy of every variant overlaid).  Running the same command again after an
interruption reuses the variants that finished and resumes the one that did
not.  Variants are not exported unless ``--export`` is given.
"""

from __future__ import annotations

import csv
import json
import os

from core.errors import UserError
from training import config as config_module
from training import rundir

COLUMNS = ("variant", "test_accuracy", "parameters", "train_seconds", "epochs_run", "best_epoch", "diagnosis")


def parse_set(text: str, valid) -> dict:
    """``"batch_norm=true,dropout=0.3"`` -> ``{"batch_norm": True, "dropout": 0.3}`` (values read as JSON)."""
    options = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise UserError(f"--set {text!r}: expected KEY=VALUE[,KEY=VALUE...], e.g. --set batch_norm=true")
        if key not in valid:
            raise UserError(f"--set {text!r}: unknown option {key!r}; valid keys are the flags' names, "
                            "e.g. batch_norm, dropout, l2, lr, augment")
        value = value.strip()
        lowered = value.lower()
        if lowered in ("none", "null"):
            options[key] = None
        elif lowered in ("true", "false"):
            options[key] = lowered == "true"
        else:
            try:
                options[key] = json.loads(value)
            except ValueError:
                options[key] = value
    return options


def _show(value) -> str:
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def variants(models: list[str], sets: list[dict]) -> list[tuple[str, dict]]:
    """(label, options) for every model with every option set."""
    out = []
    for model in models:
        for options in sets or [{}]:
            parts = [model] + [f"{k}={_show(v)}" for k, v in options.items()]
            label = "-".join(parts) if len(models) > 1 or not options else "-".join(parts[1:])
            label = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in label)
            out.append((label, {"model": model, **options}))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        raise UserError(f"Two variants have the same name ({', '.join(labels)}); give distinct --models or --set")
    return out


def choose_folder(runs_dir: str, base: str) -> str:
    """The comparison's folder: the first of base, base-2, ... without a finished ``compare.json``."""
    for index in range(1, 10_000):
        path = os.path.join(runs_dir, base if index == 1 else f"{base}-{index}")
        if not os.path.isfile(os.path.join(path, "compare.json")):
            return path
    raise RuntimeError(f"too many comparisons named {base!r} in {runs_dir}")


def _finished(folder: str, label: str, config: dict):
    """The metrics of a variant that already finished with this configuration, else None."""
    run_dir = os.path.join(folder, label)
    previous = rundir.read_config(run_dir)
    if not rundir.is_finished(run_dir) or previous is None or rundir.fingerprint(previous) != rundir.fingerprint(
            json.loads(json.dumps(config, default=str))):
        return None
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    metrics["run_dir"] = run_dir
    return metrics


def compare(base_config: dict, variant_list: list[tuple[str, dict]], folder: str, log=print) -> list[dict]:
    """Trains (or reuses) every variant in ``folder``; returns one table row per variant."""
    os.makedirs(folder, exist_ok=True)
    rows, histories = [], {}
    for label, options in variant_list:
        config = config_module.complete({**base_config, **options, "run_name": label, "runs_dir": folder})
        metrics = _finished(folder, label, config)
        if metrics is None:
            log(f"--- {label}")
            from training import run  # here, so that compare --help starts no TensorFlow

            metrics = run.train(config, log=log)
        else:
            log(f"--- {label}: finished before, reused")
        histories[label] = rundir.read_history(os.path.join(metrics["run_dir"], "history.csv"))
        rows.append({"variant": label, "test_accuracy": metrics["test_accuracy"],
                     "parameters": metrics["parameters"], "train_seconds": metrics["train_seconds_this_session"],
                     "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
                     "diagnosis": (metrics.get("diagnosis") or {}).get("verdict"), "run_dir": metrics["run_dir"],
                     "options": options})
    plot_curves(histories, os.path.join(folder, "compare.png"),
                title=f"{base_config.get('dataset', config_module.DEFAULTS['dataset'])}, same split and seed: "
                      "validation (solid) and training (dotted)")
    with open(os.path.join(folder, "compare.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "run_dir"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    rundir.write_json(os.path.join(folder, "compare.json"), {"rows": rows, "base_config": base_config})
    return rows


def plot_curves(histories: dict[str, list[dict]], path: str, title: str = "") -> None:
    """Validation loss and accuracy of every variant (training loss dotted), one colour each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (label, history) in enumerate(histories.items()):
        colour = colours[n % len(colours)]
        epochs = [row["epoch"] + 1 for row in history]
        for ax, metric in zip(axes, ("loss", "accuracy")):
            if all(f"val_{metric}" in row for row in history):
                ax.plot(epochs, [row[f"val_{metric}"] for row in history], "-", color=colour, marker="o",
                        markersize=3, label=f"{label} (validation)")
            if all(metric in row for row in history):
                ax.plot(epochs, [row[metric] for row in history], ":", color=colour, label=f"{label} (train)")
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(rows: list[dict]) -> list[str]:
    width = max(len("variant"), *(len(r["variant"]) for r in rows))
    lines = [f"{'variant':<{width}}  {'test acc':>8}  {'params':>10}  {'train s':>8}  {'epochs':>6}  {'best':>4}  "
             "diagnosis"]
    for r in rows:
        lines.append(f"{r['variant']:<{width}}  {r['test_accuracy']:>8.4f}  {r['parameters']:>10,}  "
                     f"{r['train_seconds']:>8.1f}  {r['epochs_run']:>6}  {r['best_epoch'] or '-':>4}  "
                     f"{r['diagnosis'] or '-'}")
    return lines


def build_parser():
    """``train.py compare``: the training flags and a Compare group."""
    parser = config_module.build_parser()
    parser.prog = "train.py compare"
    parser.description = "Train several models or option sets on the same data and seed; one table, one plot."
    group = parser.add_argument_group("Compare")
    group.add_argument("--models", nargs="+", metavar="MODEL", help="zoo models to compare (default: --model)")
    group.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                       help="one option set per --set, e.g. --set batch_norm=true --set batch_norm=false")
    group.add_argument("--name", help="comparison folder under --runs-dir (default: compare-DATASET)")
    parser.set_defaults(export=False)
    return parser


def main(argv) -> int:
    parser = build_parser()
    config, args = config_module.resolve_config(argv, parser)
    if config["backbone"]:
        raise UserError("compare trains zoo models (--models); it does not take --backbone")
    if config["export_name"]:  # every variant would become a version of one model, and a server serve the last
        raise UserError("--export-name names one model; compare exports each variant (with --export) under its "
                        "own name: drop --export-name")
    sets = [parse_set(text, config_module.DEFAULTS) for text in args.sets]
    variant_list = variants(args.models or [config["model"]], sets)
    if len(variant_list) < 2:
        raise UserError("Nothing to compare: give two or more --models, or two or more --set")
    import zoo

    for _, options in variant_list:
        try:
            zoo.get(options["model"])  # a typo fails before the first variant trains
        except ValueError as error:
            raise UserError(str(error)) from None
    base = args.name or f"compare-{config_module.default_run_name({**config, 'model': 'x'}).split('-', 1)[1]}"
    folder = choose_folder(config["runs_dir"], base)
    rows = compare({k: v for k, v in config.items() if k not in ("run_name", "runs_dir")}, variant_list, folder)
    for line in table(rows):
        print(line)
    print(f"Wrote {os.path.join(folder, 'compare.png')}, compare.csv and compare.json; one run directory per variant")
    return 0
