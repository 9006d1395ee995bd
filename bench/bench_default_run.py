"""The default run, as a user starts it: ``python train.py --seed N`` for seeds 0, 1 and 2, each a fresh
process from start to export, its test accuracy and wall time.

    .venv/bin/python bench/bench_default_run.py                         # the defaults (LeNet-5 on digits)
    .venv/bin/python bench/bench_default_run.py -- --augment crop        # the same with other train.py flags

Flags after ``--`` go to every run, so a variant of the defaults is measured
the same way, on the same seeds; the JSON records them.  Runs write to a
temporary folder, so nothing of the user's ``runs/`` or ``saved_models/`` is
touched.  Writes JSON (default bench/results/default_run.json, or
default_run_<flags>.json with flags).  It compares; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine import machine_info  # noqa: E402


def run_once(seed: int, flags: list[str], work: str) -> dict:
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--seed", str(seed), "--verbose", "0",
               "--runs-dir", os.path.join(work, "runs"), "--export-dir", os.path.join(work, "saved_models"),
               "--run-name", f"seed{seed}", *flags]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"train.py failed for seed {seed}: {done.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(work, "runs", f"seed{seed}", "metrics.json")) as f:
        metrics = json.load(f)
    return {"seed": seed, "test_accuracy": metrics["test_accuracy"], "test_samples": metrics["test_samples"],
            "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"], "seconds": round(seconds, 1),
            "exported": metrics["export_path"] is not None}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", help="output file")
    args = parser.parse_args(own)
    name = "default_run" + ("_" + "_".join(f.lstrip("-") for f in flags) if flags else "")
    out = args.json or os.path.join(ROOT, "bench", "results", f"{name}.json")
    work = tempfile.mkdtemp(prefix="bench-default-run-")
    try:
        runs = []
        for seed in args.seeds:
            runs.append(run_once(seed, flags, work))
            print(f"seed {seed}: test accuracy {runs[-1]['test_accuracy']:.4f} in {runs[-1]['seconds']:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mean = statistics.mean(r["test_accuracy"] for r in runs)
    print(f"mean test accuracy {mean:.4f}; {min(r['seconds'] for r in runs):.1f}-"
          f"{max(r['seconds'] for r in runs):.1f} s a run, start to export")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"command": "train.py --seed N " + " ".join(flags), "flags": flags, "runs": runs,
                   "mean_test_accuracy": mean, "machine": machine_info()}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
