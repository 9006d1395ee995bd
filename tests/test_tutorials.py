"""The tutorials in docs/tutorials/ run from top to bottom and draw every figure their page shows.

Each is a jupytext Markdown notebook, run as a script by tools/tutorials.py in a temporary folder.  The figures
land in docs/tutorials/figures/, where `mkdocs build` (python3 quickstart.py docs --build) picks them up and
checks that the built pages show them.
"""

import os
import time

import pytest

from tools import tutorials

PATHS = tutorials.tutorials()


def test_there_are_four_tutorials():
    assert [os.path.basename(p) for p in PATHS] == [
        "audit-a-folder.md", "export-and-serve.md", "fine-tune-and-diagnose.md", "lenet5-to-savedmodel.md"]


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=os.path.basename)
def test_tutorial_runs_and_draws_its_figures(path, tmp_path):
    started = time.time()
    result = tutorials.run(path, str(tmp_path))
    assert result.returncode == 0, f"{os.path.basename(path)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    shown = tutorials.figures(path)
    assert shown, f"{os.path.basename(path)} shows no figure"
    for name in shown:
        figure = os.path.join(tutorials.FIGURES, name)
        assert os.path.exists(figure) and os.path.getmtime(figure) >= started - 1, f"{name} was not drawn by this run"
