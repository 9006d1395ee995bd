"""Runs every shell and Python block of the README and the guides as written, the way CI checks that they work.

    python tools/run_docs.py                       # README.md and docs/guides/*.md
    python tools/run_docs.py docs/guides/serve.md  # one page
    python tools/run_docs.py --list                # the blocks, and which are exempt and why

Each page runs top to bottom in a fresh folder that sees the repository's files (``train.py``, ``examples/``,
``recipes/``, ``.venv``) but keeps its own ``runs/``, ``saved_models/`` and home, so a page's later blocks find what
its earlier ones made, and nothing lands in the work tree.  ``python`` is the project's ``.venv`` one, as after
``source .venv/bin/activate``.  Quick mode (``core/quick.py``, ``CNN_CLASSROOM_QUICK=1``) lowers epochs, trials
and images so that the commands, unchanged, finish in seconds; it is set here and never shown in the docs.

What is not run as a plain command, and why:

- a block whose first line is a comment starting ``# needs the internet`` (pretrained weights, downloads): these
  machines reach none, and the comment tells the reader so;
- ``python3 quickstart.py test`` and ``python3 quickstart.py docs``: CI's own steps (``.ci/run``), run there;
- ``curl`` fails on an HTTP error status (``--fail-with-body``), where a reader would read the error;
- ``python train.py serve ...`` runs in the background, as in a second terminal, and the block goes on once the
  server answers on its REST port; every server of a page is stopped when the page ends.

A bash block runs under ``set -eo pipefail``: the first command that fails fails the block, and a failed block
stops its page (the blocks after it may need what it made).  The exit status is 1 if any block failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs/guides/*.md")))]
LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
EXEMPT = "# needs the internet"
RUN_BY_CI = ("python3 quickstart.py test", "python3 quickstart.py docs")  # .ci/run's steps; tests check they are
SERVE = re.compile(r"^python train\.py serve\b")
# What a page's folder does not share with the repository: what its commands write, and what they must not see.
PRIVATE = {".git", "runs", "saved_models", "site", ".pytest_cache", "build"}
BLOCK_TIMEOUT = 900  # seconds; a quick-mode block takes seconds to a minute or two
FENCE = re.compile(r"^```(\w+)?[^\n]*$")

PRELUDE = r"""
set -eo pipefail
curl() { command curl --fail-with-body "$@"; echo; }  # an HTTP error fails the block, as a reader would see it fail
serve_in_background() {  # "$@" is the page's serve command; returns once its REST port answers
  local port=8501 log="$DOCS_FOLDER/serve-$RANDOM.log"
  for argument in "$@"; do case "$argument" in --rest_api_port=*|--rest-port=*) port="${argument#*=}";; esac; done
  "$@" > "$log" 2>&1 &
  local pid=$!
  echo "$pid" >> "$DOCS_FOLDER/servers"
  for _ in $(seq 600); do
    if command curl -s -o /dev/null "http://127.0.0.1:$port/"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "the server exited:"; cat "$log"; return 1; fi
    sleep 0.2
  done
  echo "the server did not answer on port $port in 120 s:"; cat "$log"; return 1
}
"""


@dataclasses.dataclass
class Block:
    page: str
    line: int          # of the opening fence, 1-based
    language: str      # "bash" or "python"
    code: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def exempt(self) -> str | None:
        """Why the block is not run (its first line, which says so), or None."""
        first = next((line.strip() for line in self.code.splitlines() if line.strip()), "")
        return first[1:].strip() if first.startswith(EXEMPT) else None


def blocks(page: str, text: str | None = None) -> list[Block]:
    """The shell and Python blocks of a Markdown page, in order."""
    if text is None:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        language = LANGUAGES.get((opening.group(1) or "").lower())
        if language:
            found.append(Block(page, i + 1, language, "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return found


def logical_lines(code: str) -> list[str]:
    """A shell block's commands, a backslash-continued command joined into one line."""
    out, current = [], ""
    for line in code.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    if current:
        out.append(current)
    return out


def shell_script(code: str) -> str:
    """A bash block as it runs here: CI's own steps left to CI, a server started in the background."""
    lines = []
    for line in logical_lines(code):
        command = line.strip()
        if command.startswith(RUN_BY_CI):
            lines.append(f": run by .ci/run: {command}")
        elif SERVE.match(command):
            lines.append("serve_in_background " + command)
        else:
            lines.append(line)
    return PRELUDE + "\n".join(lines) + "\n"


def page_folder(folder: str) -> dict:
    """Fills ``folder`` with links to the repository's files and returns the environment its blocks run in."""
    for name in os.listdir(ROOT):
        if name not in PRIVATE:
            os.symlink(os.path.join(ROOT, name), os.path.join(folder, name))
    home = os.path.join(folder, "home")
    os.makedirs(home)
    bin_dir = os.path.join(ROOT, ".venv", "bin")
    return {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            "VIRTUAL_ENV": os.path.join(ROOT, ".venv"), "HOME": home, "DOCS_FOLDER": folder,
            "CNN_CLASSROOM_QUICK": "1", "CNN_CLASSROOM_OFFLINE": "1", "MPLBACKEND": "Agg",
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def stop_servers(folder: str) -> None:
    path = os.path.join(folder, "servers")
    if not os.path.exists(path):
        return
    for pid in open(path).read().split():
        try:
            os.kill(int(pid), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            continue
        for _ in range(100):  # up to 10 s for a clean stop, then no more waiting
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(int(pid), signal.SIGKILL)


def run_block(block: Block, folder: str, env: dict, number: int) -> subprocess.CompletedProcess:
    script = os.path.join(folder, f"block{number}." + ("sh" if block.language == "bash" else "py"))
    with open(script, "w", encoding="utf-8") as f:
        f.write(shell_script(block.code) if block.language == "bash" else block.code)
    command = ["bash", script] if block.language == "bash" else [os.path.join(ROOT, ".venv", "bin", "python"), script]
    try:
        return subprocess.run(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(command, 124, f"{error.output or ''}\ntimed out after {BLOCK_TIMEOUT} s")


def run_page(page: str, log=print, text: str | None = None) -> list[str]:
    """Runs one page's blocks in a folder of its own; returns the failures, one line each."""
    folder = tempfile.mkdtemp(prefix="docs-")
    env = page_folder(folder)
    failures = []
    try:
        for number, block in enumerate(blocks(page, text)):
            if block.exempt:
                log(f"{block.where}: not run, {block.exempt}")
                continue
            start = time.monotonic()
            done = run_block(block, folder, env, number)
            seconds = time.monotonic() - start
            if done.returncode == 0:
                log(f"{block.where}: ok ({seconds:.0f} s)")
                continue
            tail = "\n".join("    " + line for line in done.stdout.rstrip().splitlines()[-30:])
            log(f"{block.where}: FAILED (exit {done.returncode}, {seconds:.0f} s); the page stops here\n{tail}")
            failures.append(f"{block.where}: exit {done.returncode}")
            break
    finally:
        stop_servers(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", help="Markdown pages (default: README.md and docs/guides/*.md)")
    parser.add_argument("--list", action="store_true", help="list the blocks and exit")
    args = parser.parse_args(argv)
    pages = args.pages or PAGES
    missing = [page for page in pages if not os.path.isfile(os.path.join(ROOT, page))]
    if missing:
        parser.error(f"no such page: {', '.join(missing)}")
    if args.list:
        for page in pages:
            for block in blocks(page):
                print(f"{block.where}: {block.language}" + (f", not run: {block.exempt}" if block.exempt else ""))
        return 0
    start, failures = time.monotonic(), []
    for page in pages:
        failures += run_page(page, log=lambda line: print(line, flush=True))
    count = sum(len(blocks(page)) for page in pages)
    print(f"{count} blocks on {len(pages)} pages in {time.monotonic() - start:.0f} s: "
          + (f"{len(failures)} failed ({'; '.join(failures)})" if failures else "all ran"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
