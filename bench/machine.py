"""What every benchmark shares: its --quick/--full/--json flags, and the machine it ran on
(CPU model and count, GPUs, library versions) for its JSON."""

from __future__ import annotations

import argparse
import os
import platform
import sys


def parse_size(name: str, doc: str, argv, *, quick: str, full: str, parser=None):
    """Parses ``--quick`` (the default) or ``--full``, and ``--json``; returns (args, mode, output path).

    ``parser`` carries a benchmark's own extra flags, when it has any.
    """
    parser = parser or argparse.ArgumentParser(description=doc.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="full", action="store_false", help=f"{quick} (default)")
    group.add_argument("--full", dest="full", action="store_true", help=full)
    parser.add_argument("--json", help=f"output file (default bench/results/{name}_{{quick,full}}.json)")
    parser.add_argument("--conditions", metavar="TEXT", default=None,
                        help="what else ran on the machine, recorded with the results and printed under their table "
                             "(e.g. 'taken while a test suite shared the two cores')")
    parser.set_defaults(full=False)  # else argparse takes --quick's store_false default, True: full
    args = parser.parse_args(argv)
    mode = "full" if args.full else "quick"
    return args, mode, args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 f"{name}_{mode}.json")


# Vector extensions oneDNN picks its convolution kernels by: two machines that both call themselves "Intel(R)
# Xeon(R) Processor" trained the same Fashion-MNIST recipe at 17 and 25 s an epoch, and these tell them apart.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_id() -> dict:
    """Family, model and stepping, and which of ``CPU_FEATURES`` the CPU has (empty off Linux)."""
    fields = _cpuinfo()
    if not fields:
        return {}
    flags = set(fields.get("flags", "").split())
    return {"family": fields.get("cpu family"), "model": fields.get("model"), "stepping": fields.get("stepping"),
            "features": [name for name in CPU_FEATURES if name in flags]}


def command() -> str:
    """The command that is running, as a reader would type it from the repository: ``python bench/X.py FLAGS``."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return " ".join(["python", script, *sys.argv[1:]])


def machine_info() -> dict:
    """Where and how results were taken; every benchmark's JSON carries it, so each file names its own processor
    and the command that wrote it."""
    import keras
    import tensorflow as tf

    return {"command": command(), "cpu": cpu_model(), "cpu_id": cpu_id(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()}
