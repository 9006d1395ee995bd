"""Batch-norm networks from scratch on a small folder, with batch norm's moving averages and with --precise-bn.

A folder of scikit-learn digits, 30 images a class (210 to train, 30 to
validate, 60 to test), at 64x64, 8 epochs: the command a new user runs.  For
MobileNetV2, EfficientNetB0 and ResNet50 with ``--weights none`` and the
zoo's ResNet-20 (with batch norm), each run twice:

    python train.py --dataset folder:DIGITS --backbone mobilenet_v2 --weights none --image-size 64 64 --epochs 8 \\
        --no-precise-bn      # the moving averages Keras keeps (before)
    python train.py ... --precise-bn    # statistics re-estimated before each validation and the export (after)

and MobileNetV2 on the folder of all 1,797 digits (200 a class asked, 1,259
to train), both ways, for what a larger folder gets.  Each run is a fresh
``train.py`` process from start to export.  Besides test accuracy, each row
keeps the run's own measurement (``metrics.json``'s "batch_norm"): validation
accuracy on the last epoch's weights with the moving averages, with
statistics re-estimated on clean training batches, and with batch
statistics, and the layer whose moving variance is furthest from the
re-estimated one.

    .venv/bin/python bench/bench_batchnorm.py            # seed 0: ten runs, about 40 minutes on 2 CPU cores
    .venv/bin/python bench/bench_batchnorm.py --full     # seeds 0, 1 and 2
    .venv/bin/python bench/bench_batchnorm.py --only mobilenet_v2   # some of the networks

Prints a table and writes JSON (``--json``, default bench/results/batchnorm_<mode>.json).
It compares; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from machine import machine_info, parse_size  # noqa: E402

COMMAND = ["--image-size", "64", "64", "--epochs", "8"]
NETWORKS = {  # name: the flags that choose it
    "mobilenet_v2": ["--backbone", "mobilenet_v2", "--weights", "none"],
    "efficientnet_b0": ["--backbone", "efficientnet_b0", "--weights", "none"],
    "resnet50": ["--backbone", "resnet50", "--weights", "none"],
    "resnet20": ["--model", "resnet20", "--batch-norm"],
}
FOLDERS = {"30": 30, "200": 200}  # images a class asked of write_digit_folder (digits has 174-183 a class)
CASES = [(name, "30") for name in NETWORKS] + [("mobilenet_v2", "200")]
STATISTICS = {"moving averages": "--no-precise-bn", "re-estimated": "--precise-bn"}


def run_once(folder: str, network: str, statistics: str, seed: int, work: str) -> dict:
    name = f"{network}-{os.path.basename(folder)}-{STATISTICS[statistics].lstrip('-')}-seed{seed}"
    flags = ["--dataset", f"folder:{folder}", *NETWORKS[network], *COMMAND, STATISTICS[statistics]]
    command = [sys.executable, os.path.join(ROOT, "train.py"), *flags, "--seed", str(seed), "--verbose", "0",
               "--runs-dir", os.path.join(work, "runs"), "--export-dir", os.path.join(work, "saved_models"),
               "--run-name", name]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"train.py failed for {name}: {done.stderr.strip().splitlines()[-3:]}")
    with open(os.path.join(work, "runs", name, "metrics.json")) as f:
        metrics = json.load(f)
    last = metrics["history"][-1] if metrics.get("history") else metrics.get("final_epoch", {})
    return {"network": network, "statistics": statistics, "seed": seed,
            "command": "python train.py " + " ".join(flags).replace(folder, os.path.basename(folder)),
            "test_accuracy": metrics["test_accuracy"], "test_samples": metrics["test_samples"],
            "train_accuracy_last_epoch": last.get("accuracy"), "val_accuracy_last_epoch": last.get("val_accuracy"),
            "best_epoch": metrics["best_epoch"], "counts": metrics["counts"], "batch_norm": metrics.get("batch_norm"),
            "diagnosis": metrics["diagnosis"]["verdict"], "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(NETWORKS), help="only these networks")
    args, mode, out = parse_size("batchnorm", __doc__, argv, quick="seed 0", full="seeds 0, 1 and 2",
                                 parser=parser)
    seeds = [0, 1, 2] if args.full else [0]
    from helpers import write_digit_folder

    work = tempfile.mkdtemp(prefix="bench-batchnorm-")
    rows = []
    try:
        folders = {size: write_digit_folder(os.path.join(work, f"DIGITS{size}"), n_per_class=per_class,
                                            classes=[str(d) for d in range(10)])
                   for size, per_class in FOLDERS.items()}
        for network, size in CASES:
            if args.only and network not in args.only:
                continue
            for seed in seeds:
                for statistics in STATISTICS:
                    row = run_once(folders[size], network, statistics, seed, work)
                    rows.append({"folder": f"DIGITS{size}", **row})
                    measured = (row["batch_norm"] or {}).get("val_accuracy", {})
                    print(f"{network:<16} DIGITS{size:<4} seed {seed}  {statistics:<16} test {row['test_accuracy']:.3f}"
                          f"  (validation, last epoch: moving {measured.get('moving_average', float('nan')):.3f},"
                          f" re-estimated {measured.get('reestimated', float('nan')):.3f},"
                          f" batch {measured.get('batch_statistics', float('nan')):.3f})"
                          f"  {row['seconds']:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"mode": mode, "seeds": seeds, "command_shape": "python train.py --dataset folder:DIGITS<N> "
                   "<network flags> " + " ".join(COMMAND) + " --no-precise-bn | --precise-bn",
                   "folders": {f"DIGITS{size}": f"tests/helpers.py write_digit_folder(n_per_class={per_class}, "
                               "all ten classes)" for size, per_class in FOLDERS.items()},
                   "rows": rows, "machine": machine_info()}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
