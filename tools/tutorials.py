"""Runs the tutorials in docs/tutorials/ (jupytext Markdown notebooks) as scripts, which draws their figures.

    python tools/tutorials.py                 # every tutorial, each in a fresh working folder
    python tools/tutorials.py --missing       # only those whose figures are not all drawn yet
    python tools/tutorials.py docs/tutorials/export-and-serve.md
    python tools/tutorials.py --check-site site   # after mkdocs build: each page shows its figures

Each notebook's Python cells become one script (jupytext's percent format), run by this interpreter in a
temporary folder with the repository first on the path, so its runs and exports never land in the work tree.
Its figures go to docs/tutorials/figures/, where its Markdown image links point and the site picks them up.
tests/test_tutorials.py runs each through ``run`` and checks its figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = os.path.join(ROOT, "docs", "tutorials")
FIGURES = os.path.join(TUTORIALS, "figures")


def tutorials() -> list[str]:
    return sorted(os.path.join(TUTORIALS, name) for name in os.listdir(TUTORIALS) if name.endswith(".md"))


def figures(path: str) -> list[str]:
    """The images a tutorial's page shows: its Markdown links into figures/."""
    with open(path, encoding="utf-8") as f:
        return re.findall(r"!\[[^\]]*\]\(figures/([^)\s]+)\)", f.read())


def script(path: str) -> str:
    """The tutorial's code cells as one Python script."""
    import jupytext

    return jupytext.writes(jupytext.read(path), fmt="py:percent")


def run(path: str, workdir: str, *, timeout: float = 300, figures_dir: str = FIGURES) -> subprocess.CompletedProcess:
    """Runs ``path`` in ``workdir``; returns the finished process, its output captured."""
    os.makedirs(figures_dir, exist_ok=True)
    target = os.path.join(workdir, "tutorial.py")
    with open(target, "w", encoding="utf-8") as f:
        f.write(script(path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "MPLBACKEND": "Agg", "CNN_CLASSROOM_FIGURES": figures_dir, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, target], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)


def site_problems(site: str) -> list[str]:
    """What a built site lacks: a tutorial page, an <img> of one of its figures, or the figure's file."""
    problems = []
    for path in tutorials():
        stem = os.path.splitext(os.path.basename(path))[0]
        page = os.path.join(site, "tutorials", stem, "index.html")
        if not os.path.exists(page):
            problems.append(f"{page} was not built")
            continue
        with open(page, encoding="utf-8") as f:
            shown = set(re.findall(r'<img[^>]*\ssrc="[^"]*figures/([^"/]+)"', f.read()))
        for name in figures(path):
            image = os.path.join(site, "tutorials", "figures", name)
            if name not in shown:
                problems.append(f"{page} does not show figures/{name}")
            elif not os.path.isfile(image) or os.path.getsize(image) == 0:
                problems.append(f"{image} is missing or empty")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", help="tutorials to run (default: all)")
    parser.add_argument("--missing", action="store_true", help="only tutorials with a figure not drawn yet")
    parser.add_argument("--check-site", metavar="SITE", help="check a built site shows every tutorial figure; run nothing")
    args = parser.parse_args(argv)
    if args.check_site:
        problems = site_problems(args.check_site)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print(f"{args.check_site}: every tutorial page shows its figures")
        return 1 if problems else 0
    paths = args.paths or tutorials()
    if args.missing:
        paths = [p for p in paths if not all(os.path.exists(os.path.join(FIGURES, f)) for f in figures(p))]
    failed = 0
    for path in paths:
        started = time.time()
        with tempfile.TemporaryDirectory(prefix="tutorial-") as workdir:
            result = run(path, workdir)
        name = os.path.relpath(path, ROOT)
        if result.returncode:
            failed += 1
            print(f"{name}: FAILED (exit {result.returncode})\n{result.stdout[-3000:]}{result.stderr[-3000:]}",
                  file=sys.stderr)
        else:
            print(f"{name}: ran in {time.time() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
