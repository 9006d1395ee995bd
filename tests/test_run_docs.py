"""The docs' commands as CI runs them (tools/run_docs.py) and quick mode (core/quick.py), which makes them short.

CI's own step runs every block of the README and the guides; these tests hold the runner to failing when a block
is broken, and the pages to naming only files that ship (examples/) and commands a reader can type."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from core import quick
from tools import run_docs

ROOT = run_docs.ROOT
PLACEHOLDERS = re.compile(r"~/|\bmy_\w+\.(?:png|jpg)|\[PIXELS\]|\s\.\.\.(?:\s|$)|[=\s]/models/|new_photos|other_images")


def test_a_broken_block_fails_its_page_names_it_and_stops_the_page(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "# A page", "",
        "```bash", "ls examples/digits/3.png > listed.txt", "python3 quickstart.py test -q", "```", "",  # line 3
        "```bash", "# needs the internet: a download", "curl https://example.invalid/weights.h5", "```", "",  # 8
        "```python", "print(open('listed.txt').read())", "```", "",  # line 13: sees what block 1 wrote
        "```python", "import numpy as np", "np.array([1, 2]).reshape(3)", "```", "",  # line 17: broken
        "```bash", "touch never.txt", "```", "",  # line 22: after the failure, never run
    ]))
    lines = []
    failures = run_docs.run_page(str(page), log=lines.append)
    assert failures == [f"{page}:17: exit 1"]
    text = "\n".join(lines)
    assert f"{page}:3: ok" in text and f"{page}:13: ok" in text
    assert f"{page}:8: not run, needs the internet: a download" in text
    assert "cannot reshape array" in text  # the failing block's own error reaches the log
    assert f"{page}:22" not in text


def test_the_runner_exits_non_zero_on_a_broken_page_and_zero_on_a_good_one(tmp_path, capsys):
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text("```bash\ntest -f examples/digits/instances.json\n```\n")
    bad.write_text("```bash\ntest -f examples/digits/no_such_digit.png\n```\n")
    assert run_docs.main([str(good)]) == 0
    assert run_docs.main([str(good), str(bad)]) == 1
    assert "1 failed" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:  # a page that is not there: argparse's one line, exit 2
        run_docs.main([str(tmp_path / "no_such_page.md")])
    assert refused.value.code == 2 and "no such page" in capsys.readouterr().err


def test_a_shell_block_becomes_a_script_with_servers_in_the_background_and_cis_steps_left_to_ci():
    script = run_docs.shell_script("python train.py serve --port=9000 \\\n    --rest_api_port=9001\n"
                                   "python3 quickstart.py docs --build\ncurl http://127.0.0.1:9001/\n")
    body = script[len(run_docs.PRELUDE):].splitlines()
    assert body[0].startswith("serve_in_background python train.py serve --port=9000")
    assert "--rest_api_port=9001" in body[0]  # the continued line joined: the prelude reads the port from it
    assert body[1] == ": run by .ci/run: python3 quickstart.py docs --build"
    assert body[2] == "curl http://127.0.0.1:9001/"


def test_cis_own_steps_that_the_runner_leaves_out_are_in_ci_run():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    for command in run_docs.RUN_BY_CI:
        assert command in ci
    assert ".venv/bin/python tools/run_docs.py" in ci


@pytest.mark.parametrize("page", run_docs.PAGES)
def test_every_block_of_the_readme_and_the_guides_is_typeable_or_says_why_not(page):
    found = run_docs.blocks(page)
    assert found, f"{page} has no shell or Python block"
    for block in found:
        if block.exempt:
            assert "internet" in block.exempt
            continue
        placeholder = PLACEHOLDERS.search(block.code)
        assert not placeholder, f"{block.where}: {placeholder.group(0)!r} is not something a reader has"


def test_every_example_file_the_docs_name_ships():
    for page in run_docs.PAGES:
        for block in run_docs.blocks(page):
            for path in re.findall(r"examples/[\w./-]+", block.code):
                assert os.path.exists(os.path.join(ROOT, path.rstrip("/."))), f"{block.where}: {path}"


def test_quick_mode_caps_what_makes_a_command_long_and_nothing_else(monkeypatch):
    from training.config import resolve_config
    from tuning.command import build_parser as search_parser

    argv = ["--model", "resnet20", "--dataset", "fashion_mnist", "--epochs", "20", "--time-budget", "10",
            "--lr", "0.05"]
    monkeypatch.delenv(quick.ENVIRONMENT, raising=False)
    config, _ = resolve_config(argv)
    assert (config["epochs"], config["time_budget"]) == (20, 10.0)
    monkeypatch.setenv(quick.ENVIRONMENT, "1")
    config, _ = resolve_config(argv)
    assert (config["epochs"], config["time_budget"], config["lr"], config["model"]) == (1, 0.1, 0.05, "resnet20")
    _, args = resolve_config(["search", "--max-trials", "20", "--trial-epochs", "8"][1:], search_parser())
    assert (args.max_trials, args.trial_epochs) == (2, 1)
    assert quick.cap_config({"finetune_epochs": 0})["finetune_epochs"] == 0  # off stays off
    assert quick.cap_config({"time_budget": 10})["time_budget"] == 0.1  # a whole number in a --config file


def test_quick_mode_keeps_a_few_images_of_every_class_of_a_built_in_dataset(monkeypatch):
    import imagesets

    monkeypatch.setenv(quick.ENVIRONMENT, "1")
    data = imagesets.load("digits")
    train, test = data.arrays["train"][1], data.arrays["test"][1]
    assert len(train) + len(data.arrays["val"][1]) + len(test) == 10 * quick.IMAGES_PER_CLASS["train"]
    assert set(np.unique(train)) == set(range(10)) and set(np.unique(test)) == set(range(10))
    monkeypatch.setenv(quick.ENVIRONMENT, "0")
    assert sum(imagesets.load("digits").counts().values()) == 1797
