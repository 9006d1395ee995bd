"""What every benchmark shares: its --quick/--full/--json flags, and the machine it ran on
(CPU model and count, GPUs, library versions) for its JSON."""

from __future__ import annotations

import argparse
import os
import platform


def parse_size(name: str, doc: str, argv, *, quick: str, full: str, parser=None):
    """Parses ``--quick`` (the default) or ``--full``, and ``--json``; returns (args, mode, output path).

    ``parser`` carries a benchmark's own extra flags, when it has any.
    """
    parser = parser or argparse.ArgumentParser(description=doc.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="full", action="store_false", help=f"{quick} (default)")
    group.add_argument("--full", dest="full", action="store_true", help=full)
    parser.add_argument("--json", help=f"output file (default bench/results/{name}_{{quick,full}}.json)")
    args = parser.parse_args(argv)
    mode = "full" if args.full else "quick"
    return args, mode, args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 f"{name}_{mode}.json")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import keras
    import tensorflow as tf

    return {"cpu": cpu_model(), "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()}
