"""``python train.py search``: search, write the results, retrain the best, export it.

Every training flag sets the base configuration; a flag given on the command
line also fixes its setting (``--model resnet20`` searches ResNet-20 only).
``--tune KEY=SPEC`` narrows or widens what is searched.
"""

from __future__ import annotations

import argparse
import json
import os

from core import compat
from training import config as config_module
from training import lock, rundir
from core.errors import UserError

# The flags' choices, named here so that ``train.py search --help`` answers without keras-tuner and TensorFlow
# starting (the search itself imports them); tests/test_search.py checks each against its owner.
TUNERS = ("random", "hyperband", "bayesian")     # tuning.search.TUNERS
OBJECTIVES = ("val_accuracy", "val_loss")          # tuning.search.OBJECTIVES
SPACE_NAMES = ("zoo", "transfer", "none")          # tuning.space.SPACES

EPILOG = """\
SPEC forms for --tune KEY=SPEC: a,b,c (a choice) | LOW..HIGH | LOW..HIGH/log | LOW..HIGH/STEP | VALUE (fixed).
Examples:
  python train.py search --dataset digits --max-trials 20 --trial-epochs 8
  python train.py search --model resnet20 --tune lr=1e-3..1e-1/log --tune optimizer=sgd --tuner bayesian
  python train.py search --backbone saved_models/fashion --tuner hyperband --trial-epochs 9
Distributed: start the chief with KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=<chief address>
KERASTUNER_ORACLE_PORT=<port>, and each worker with the same command, the same two address variables and
KERASTUNER_TUNER_ID=tuner0, tuner1, ... (see docs/guides/search.md). A worker silent for --worker-timeout seconds is
dropped and its trial given to another."""


def build_parser() -> argparse.ArgumentParser:
    parser = config_module.build_parser()
    parser.prog = "train.py search"
    parser.description = ("Search training settings with keras-tuner, then retrain the best on the same data, "
                          "evaluate it on the test split and export it.")
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    group = parser.add_argument_group("Search")
    group.add_argument("--tuner", choices=TUNERS, default="random",
                       help="random search, Hyperband or Bayesian optimization (default: random)")
    group.add_argument("--space", choices=SPACE_NAMES, default=None,
                       help="what is searched besides --tune: zoo settings, transfer settings (the default "
                            "with --backbone), or none (only --tune)")
    group.add_argument("--tune", action="append", default=[], metavar="KEY=SPEC",
                       help="search KEY over SPEC (repeatable); KEY is a training flag with underscores")
    group.add_argument("--space-file", metavar="JSON",
                       help='a JSON object {"KEY": SPEC or [values] or value}, applied before --tune')
    group.add_argument("--objective", choices=OBJECTIVES, default="val_accuracy",
                       help="what trials are ranked by (default: val_accuracy)")
    group.add_argument("--max-trials", type=int, default=10, help="trials in all, failed ones included")
    group.add_argument("--trial-epochs", type=int, default=None,
                       help="epochs of each trial (Hyperband: the most any trial gets); default: min(--epochs, 10)")
    group.add_argument("--max-minutes", type=float, default=None,
                       help="start no trial after this many minutes (the same command continues later)")
    group.add_argument("--max-failures", type=int, default=5,
                       help="stop after this many failed trials in a row")
    group.add_argument("--hyperband-factor", type=int, default=3, help="Hyperband's reduction factor")
    group.add_argument("--final", choices=("train", "train+val", "none"), default="train",
                       help="retrain the best settings for --epochs on the training split (early stopping on "
                            "validation), or on training + validation for the best trial's epoch count, or not")
    group.add_argument("--search-name", help="search folder name under --runs-dir (default: search-MODEL-DATASET)")
    group.add_argument("--worker-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="distributed search: the chief drops a worker it has not heard from for this long and "
                            "gives its trial to another; workers call in every SECONDS/6 (30 s at most), so give "
                            "every process the same value (default: 120)")
    return parser


def explicit_keys(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Training settings whose flags appear in ``argv``: they stay fixed in the search."""
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    keys = set()
    for action in compat.parser_actions(parser):
        if action.dest in config_module.DEFAULTS and given & set(action.option_strings):
            keys.add(action.dest)
        if action.dest in config_module.DEFAULTS and action.option_strings and any(
                f"--no-{o[2:]}" in given for o in action.option_strings):
            keys.add(action.dest)
    return keys


def tune_specs(args) -> dict:
    from tuning.space import parse_spec

    specs = {}
    if args.space_file:
        loaded = config_module.read_json_object(args.space_file, "space file")
        specs.update({k: parse_spec(k, v) for k, v in loaded.items()})
    for item in args.tune:
        key, eq, spec = item.partition("=")
        if not eq or not key or not spec:
            raise UserError(f"--tune {item!r}: write KEY=SPEC, e.g. lr=1e-4..1e-2/log or model=lenet5,resnet20")
        specs[key.strip()] = parse_spec(key.strip(), spec)
    return specs


def main(argv: list[str]) -> int:
    parser = build_parser()
    config, args = config_module.resolve_config(argv, parser)  # --help has answered and left by now
    from training.data import load_data
    from training.recipes import load_backbone
    from training.run import summary_lines, train
    from tuning.search import SearchSettings, results, run_search, write_results
    from tuning.space import build_space

    config = config_module.complete(config)  # the search space's defaults are the run's own settings
    config_module.check_config(config)
    if args.max_trials < 1:
        raise UserError(f"--max-trials must be at least 1, got {args.max_trials}")
    if args.worker_timeout < 1:
        raise UserError(f"--worker-timeout must be at least 1 second, got {args.worker_timeout:g}")
    trial_epochs = args.trial_epochs or min(config["epochs"], 10)
    if trial_epochs < 1:
        raise UserError(f"--trial-epochs must be at least 1, got {trial_epochs}")
    kind = args.space or ("transfer" if config["backbone"] else "zoo")
    if kind == "transfer" and not config["backbone"]:
        raise UserError("--space transfer needs a --backbone")
    fixed = explicit_keys(parser, argv)
    space = build_space(kind, config, tune=tune_specs(args), fixed=fixed)
    settings = SearchSettings(tuner=args.tuner, objective=args.objective, max_trials=args.max_trials,
                              trial_epochs=trial_epochs, max_minutes=args.max_minutes,
                              max_failures=args.max_failures, hyperband_factor=args.hyperband_factor,
                              seed=config["seed"], worker_timeout=args.worker_timeout)
    name = args.search_name or f"search-{config_module.default_run_name(config)}"
    folder = os.path.join(config["runs_dir"], name)
    # The retrained best exports as --export-name, else as its run, search-NAME-best: checked before the search.
    config_module.check_export_name({**config, "run_name": f"{name}-best"})
    check_same_search(folder, config, space, settings)
    # Bad data settings fail here, once, rather than in every trial; the trials reuse what is loaded.
    data = load_data(config, load_backbone(config))

    print(f"Search {folder}: {settings.tuner}, {settings.max_trials} trials of up to {trial_epochs} epochs, "
          f"by {settings.objective}")
    for key, param in space.items():
        print(f"  {key}: {param.describe()}")
    tuner, finished = run_search(config, space, settings, folder=folder, data=data)
    if compat.is_worker():
        print("Worker finished: the chief writes the results and retrains the best settings.")
        return 0
    rows = results(tuner.oracle, settings)
    paths = write_results(rows, folder, settings)
    print_table(rows, settings)
    print(f"Results: {paths['results.csv']}, {paths['results.json']}, {paths['trials.png']}")
    best = next((row for row in rows if row["score"] is not None), None)
    if best is None:
        raise UserError(f"every trial failed (first error: {rows[0]['error'] if rows else 'none ran'}); "
                        f"see {paths['results.csv']}")
    if not finished or args.final == "none":
        return 0
    final = {**config, **best["settings"], "run_name": f"{name}-best"}
    if args.final == "train+val":
        final.update(fit_on_val=True, patience=0, epochs=int(best.get("best_epoch") or trial_epochs))
    print(f"Retraining trial {best['trial']}'s settings ({args.final}) ...")
    metrics = train(final, data=tuner.data_for(final))
    rundir.write_json(os.path.join(folder, "best.json"), {"trial": best["trial"], "score": best["score"],
                                                          "settings": best["settings"],
                                                          "final": args.final, "run_dir": metrics["run_dir"],
                                                          "test_accuracy": metrics["test_accuracy"],
                                                          "export_path": metrics["export_path"],
                                                          "export_name": metrics["export_name"],
                                                          "export_version": metrics["export_version"]})
    for line in summary_lines(metrics):
        print(line)
    return 0


def check_same_search(folder: str, config: dict, space: dict, settings) -> None:
    """A search folder continues only the search that made it; anything else is refused.

    The folder is locked for the life of this process (``training.lock``): a
    second copy of the command is refused rather than running the same trials.
    The workers of a distributed search share the folder, each with its own lock.
    """
    from dataclasses import asdict

    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "chief")
    lock.acquire(folder, name=lock.NAME if tuner_id == "chief" else f"{lock.NAME}-{tuner_id}",
                 advice="wait for it to finish, or pass --search-name NEW")
    record = {"config": rundir.fingerprint(config), "space": {k: v.describe() for k, v in space.items()},
              "tuner": settings.tuner, "objective": settings.objective, "trial_epochs": settings.trial_epochs}
    path = os.path.join(folder, "search.json")
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
    except FileNotFoundError:
        previous = None
    except (OSError, ValueError):
        previous = {}
    if previous is not None:
        changed = sorted(k for k in record if previous.get(k) != json.loads(json.dumps(record[k])))
        if changed:
            raise UserError(f"{folder} holds a search with other {', '.join(changed)}; rerun its own command to "
                            "continue it, or pass --search-name NEW")
    os.makedirs(folder, exist_ok=True)
    rundir.write_json(path, {**record, "settings": asdict(settings)})


def print_table(rows: list[dict], settings, limit: int = 10) -> None:
    from tuning.search import short

    keys = sorted({k for row in rows for k in row["settings"]})
    print(f"{'rank':>4} {'trial':>5} {settings.objective:>12}  " + " ".join(keys))
    for rank, row in enumerate(rows[:limit], start=1):
        score = f"{row['score']:.4f}" if row["score"] is not None else "FAILED"
        values = " ".join(f"{k}={short(row['settings'].get(k))}" for k in keys)
        print(f"{rank:>4} {row['trial']:>5} {score:>12}  {values}")
    if len(rows) > limit:
        print(f"  ... {len(rows) - limit} more in results.csv")

