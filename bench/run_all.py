"""Runs every benchmark in bench/, each in a fresh interpreter, at one size.

    .venv/bin/python bench/run_all.py --quick    # all four in a few minutes on 2 CPU cores
    .venv/bin/python bench/run_all.py --full     # the real sizes: hours (the Fashion-MNIST recipe dominates)

Each script prints its table and writes JSON to bench/results/<name>_{quick,full}.json.
The older benchmarks (augment, transfer, feature cache) have their own sizes and are
run by hand.  Exits non-zero if any script failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ["bench_fashion.py", "bench_throughput.py", "bench_input.py", "bench_inference.py"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="full", action="store_false", help="small sizes (default)")
    group.add_argument("--full", dest="full", action="store_true", help="the real sizes")
    parser.add_argument("--only", nargs="*", choices=SCRIPTS, help="run only these")
    args = parser.parse_args(argv)
    size = "--full" if args.full else "--quick"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    failed, timings = [], []
    for script in args.only or SCRIPTS:
        print(f"\n=== {script} {size}", flush=True)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, os.path.join(HERE, script), size], env=env)
        timings.append((script, time.perf_counter() - start, done.returncode))
        if done.returncode:
            failed.append(script)
    print("\n=== summary")
    for script, seconds, code in timings:
        print(f"  {script:<22} {seconds:>7.0f} s  {'ok' if code == 0 else f'FAILED (exit {code})'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
