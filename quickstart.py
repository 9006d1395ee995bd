#!/usr/bin/env python3
"""Set up the project's virtual environment on first use, then run a job in it.

    python3 quickstart.py train [train.py flags]   # LeNet-5 on digits -> saved_models/
    python3 quickstart.py test  [pytest flags]     # the test suite

Needs only Python >= 3.10 with pip and venv.  ``.venv`` is created when it is
missing, and the project is (re)installed into it whenever pyproject.toml
changes; otherwise start-up costs nothing.
"""

import hashlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
STAMP = os.path.join(VENV, ".installed-pyproject")
JOBS = {"train": ["train.py"], "predict": ["predict.py"], "test": ["-m", "pytest"]}


def venv_python() -> str:
    sub = ("Scripts", "python.exe") if os.name == "nt" else ("bin", "python")
    return os.path.join(VENV, *sub)


def ensure_environment() -> str:
    if sys.version_info < (3, 10):
        sys.exit(f"error: Python >= 3.10 is needed, this is {sys.version.split()[0]}")
    python = venv_python()
    if not os.path.exists(python):
        print(f"Creating the virtual environment {VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        wanted = hashlib.sha256(f.read()).hexdigest()
    installed = open(STAMP).read().strip() if os.path.exists(STAMP) else ""
    if installed != wanted:
        print("Installing the project and its dependencies into .venv (first run: a few minutes)", flush=True)
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run(pip + ["--upgrade", "pip"], check=True)
        subprocess.run(pip + ["-e", f"{ROOT}[test]"], check=True)
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
