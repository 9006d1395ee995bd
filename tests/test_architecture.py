"""The shape of the code: layers that only point down, short steps, library internals behind one door."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

from helpers import ROOT

PACKAGES = ("core", "zoo", "augment", "imagesets", "exports", "transfer", "training", "tuning", "insight")
# Modules of other libraries that are not their public API; only core/compat.py may import them.
PRIVATE_MODULES = re.compile(r"^(keras\.src|keras_tuner\.src|tensorflow\.python|"
                             r"tensorflow\.lite\.(tools|python))\b")


def library_files():
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.relpath(os.path.join(folder, name), ROOT)


def imported_modules(path):
    tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_import_contracts_hold():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_no_library_module_imports_a_command_line_script():
    offenders = [(path, module) for path in library_files() for module in imported_modules(path)
                 if module.split(".")[0] in ("train", "predict")]
    assert offenders == []


def test_private_library_modules_are_imported_only_by_core_compat():
    offenders = [(path, module) for path in library_files() for module in imported_modules(path)
                 if PRIVATE_MODULES.match(module) and path != os.path.join("core", "compat.py")]
    assert offenders == []


def functions(path):
    tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())
    return {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_training_is_made_of_short_steps():
    long = {f"{path}:{name}": lines for path in library_files() if path.startswith("training" + os.sep)
            for name, lines in functions(path).items() if lines > 60}
    assert long == {}
    assert functions(os.path.join("training", "run.py"))["train"] <= 40
