#!/usr/bin/env python3
"""Set up the project's virtual environment on first use, then run a job in it.

    python3 quickstart.py train [train.py flags]   # LeNet-5 on digits -> saved_models/
    python3 quickstart.py test  [pytest flags]     # the test suite, as CI runs it
    python3 quickstart.py docs  [--build]          # the documentation site: serve it, or build it as CI does

Needs only Python >= 3.11 with pip and venv.  ``.venv`` is created when it is
missing, and the project is (re)installed into it, at the exact versions in
constraints.txt, whenever pyproject.toml or constraints.txt changes; otherwise
start-up costs nothing.

``test`` first fetches what some tests need and a fresh clone lacks: Debian's
``dataset-fashion-mnist``, ``chromium`` and ``chromium-driver`` packages, when
apt-get is there and we are root (as in CI); elsewhere it says how to get
them, and the tests that need them are skipped.
``docs`` runs the tutorials whose figures are not drawn yet, then serves the
site with ``mkdocs serve`` (http://127.0.0.1:8000), or with ``--build`` builds
it with ``mkdocs build --strict`` and checks the tutorials' figures are in it.
"""

import hashlib
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
STAMP = os.path.join(VENV, ".installed-pyproject")
INPUTS = ("pyproject.toml", "constraints.txt")  # what the install depends on: a change to either reinstalls
JOBS = {"train": ["train.py"], "predict": ["predict.py"], "test": ["-m", "pytest"], "docs": None}
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist; see tests/test_augment_training.py
# Debian packages -> (whether they are here, the tests that need them).  CI (.ci/run) installs through this too.
TEST_PACKAGES = {
    "dataset-fashion-mnist": (lambda: os.path.isdir(FASHION_MNIST), "the two Fashion-MNIST tests"),
    "chromium chromium-driver": (lambda: bool(shutil.which("chromium") and shutil.which("chromedriver")),
                                 "the model server's page test (tests/test_server_page.py)"),
}


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


def fetch_test_packages() -> None:
    """Debian's packages that some tests need and a fresh clone lacks, when this machine can install them."""
    can_install = shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0
    missing = [(packages, why) for packages, (present, why) in TEST_PACKAGES.items() if not present()]
    if missing and can_install:
        names = " ".join(packages for packages, _ in missing)
        print(f"Installing Debian's {names} for the tests that need them", flush=True)
        subprocess.run(f"apt-get update -q && apt-get install -y -q {names}", shell=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        missing = [(packages, why) for packages, (present, why) in TEST_PACKAGES.items() if not present()]
    for packages, why in missing:
        print(f"note: {why} will be skipped: "
              + (f"apt-get could not install {packages}" if can_install else
                 f"on Debian or Ubuntu, `sudo apt-get install {packages}` brings them"), flush=True)


def docs(python: str, args: list[str]) -> int:
    """Runs the tutorials that have not drawn their figures, then serves or (--build) builds the site."""
    build = "--build" in args
    args = [a for a in args if a != "--build"]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    code = subprocess.call([python, os.path.join("tools", "tutorials.py"), "--missing"], cwd=ROOT)
    if code:
        return code
    if not build:
        return subprocess.call([python, "-m", "mkdocs", "serve", *args], cwd=ROOT, env=env)
    code = subprocess.call([python, "-m", "mkdocs", "build", "--strict", *args], cwd=ROOT, env=env)
    if code:
        return code
    return subprocess.call([python, os.path.join("tools", "tutorials.py"), "--check-site", "site"], cwd=ROOT)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in JOBS:
        print(f"usage: python3 quickstart.py {{{'|'.join(JOBS)}}} [arguments for the job]", file=sys.stderr)
        return 2
    python = ensure_environment()
    job, rest = sys.argv[1], sys.argv[2:]
    if job == "docs":
        return docs(python, rest)
    if job == "test":
        fetch_test_packages()
    return subprocess.call([python, *JOBS[job], *rest], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
