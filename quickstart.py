#!/usr/bin/env python3
"""Set up the project's virtual environment on first use, then run a job in it.

    python3 quickstart.py train [train.py flags]   # LeNet-5 on digits -> saved_models/
    python3 quickstart.py test  [pytest flags]     # the test suite

Needs only Python >= 3.11 with pip and venv.  ``.venv`` is created when it is
missing, and the project is (re)installed into it, at the exact versions in
constraints.txt, whenever pyproject.toml or constraints.txt changes; otherwise
start-up costs nothing.
"""

import hashlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
STAMP = os.path.join(VENV, ".installed-pyproject")
INPUTS = ("pyproject.toml", "constraints.txt")  # what the install depends on: a change to either reinstalls
JOBS = {"train": ["train.py"], "predict": ["predict.py"], "test": ["-m", "pytest"]}


def venv_python() -> str:
    sub = ("Scripts", "python.exe") if os.name == "nt" else ("bin", "python")
    return os.path.join(VENV, *sub)


def ensure_environment() -> str:
    if sys.version_info < (3, 11):
        sys.exit(f"error: Python >= 3.11 is needed, this is {sys.version.split()[0]}")
    python = venv_python()
    if not os.path.exists(python):
        print(f"Creating the virtual environment {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    digest = hashlib.sha256()
    for name in INPUTS:
        with open(os.path.join(ROOT, name), "rb") as f:
            digest.update(f"{name}\0".encode() + f.read() + b"\0")
    wanted = digest.hexdigest()
    installed = open(STAMP).read().strip() if os.path.exists(STAMP) else ""
    if installed != wanted:
        print("Installing the project and its dependencies into .venv (first run: a few minutes)", flush=True)
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run(pip + ["--upgrade", "pip"], check=True)
        subprocess.run(pip + ["--constraint", os.path.join(ROOT, "constraints.txt"), "-e", f"{ROOT}[test]"],
                       check=True)
        with open(STAMP, "w") as f:
            f.write(wanted)
    return python


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in JOBS:
        print(f"usage: python3 quickstart.py {{{'|'.join(JOBS)}}} [arguments for the job]", file=sys.stderr)
        return 2
    python = ensure_environment()
    job, rest = sys.argv[1], sys.argv[2:]
    return subprocess.call([python, *JOBS[job], *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
