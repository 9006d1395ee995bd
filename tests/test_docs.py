"""The documentation stays true to the code: generated pages are current, the README's commands parse with the
real parsers, its links resolve, and every public builder shows an example that runs.

`mkdocs build --strict` (python3 quickstart.py docs --build, in .ci/run) checks the site's own links and pages.
"""

import doctest
import inspect
import os
import re
import shlex

import pytest

from tools import gen_docs

ROOT = gen_docs.ROOT
README = os.path.join(ROOT, "README.md")
CHEAP_MODELS = ("lenet5", "lenet5_modern", "mlp", "resnet20")  # built in a second; the rest take a minute


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


# ------------------------------------------------------------------------------------------ generated pages

def test_generated_pages_and_tables_are_current():
    counts = gen_docs.committed_counts(read(gen_docs.MODELS_PAGE))
    stale = gen_docs.stale(gen_docs.generated(counts))
    assert not stale, f"stale: {', '.join(stale)}; run: python tools/gen_docs.py"


def test_the_models_page_counts_every_model_and_the_cheap_ones_match_a_fresh_build():
    import keras

    import zoo

    counts = gen_docs.committed_counts(read(gen_docs.MODELS_PAGE))
    assert set(counts) == set(zoo.names()), "run: python tools/gen_docs.py"
    for name in CHEAP_MODELS:
        model = zoo.build(name, num_classes=10)
        assert sum(w.numpy().size for w in model.trainable_weights) == counts[name], (
            f"{name}: the models page is stale; run: python tools/gen_docs.py")
        keras.backend.clear_session()


def test_every_benchmark_result_file_has_a_table():
    used = set(re.findall(r"bench/results/([\w.]+\.json)", read("docs/benchmarks.md")))
    files = {name for name in os.listdir(gen_docs.RESULTS) if name.endswith(".json")}
    assert files <= used, f"no table shows {sorted(files - used)}: add a block to tools/gen_docs.py"


def test_every_train_subcommand_has_its_parser_in_the_cli_reference():
    import train

    missing = set(train.SUBCOMMANDS) - set(gen_docs.SUBCOMMAND_PARSERS)
    assert not missing, (f"add {sorted(missing)} to SUBCOMMAND_PARSERS in tools/gen_docs.py "
                         "(the module:function that builds its parser), then run python tools/gen_docs.py")


# ------------------------------------------------------------------------------------------------ the README

def commands(text):
    """Every `python train.py|predict.py` and `python3 quickstart.py` command in the README's code blocks and
    inline code, continuation lines joined, comments dropped: (line, argv after the script)."""
    found = []
    lines, language = [], None
    for line in text.replace("\\\n", " ").splitlines():  # fences opened and closed in turn: prose between is not code
        if line.startswith("```"):
            language = line[3:].strip() if language is None else None
        elif language in ("", "bash", "sh"):
            lines.append(line)
    lines += re.findall(r"(?<!`)`((?:\.venv/bin/)?python3? [^`]+)`(?!`)", text)
    for line in lines:
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words[:-1]):
            if re.fullmatch(r"(\.venv/bin/)?python3?", word) and words[i + 1] in ("train.py", "predict.py",
                                                                                 "quickstart.py"):
                found.append((line.strip(), words[i + 1], words[i + 2:]))
                break
    return found


def parse(script, args):
    """Parses ``args`` as ``script`` would; returns None or why it was skipped."""
    import quickstart
    from training.config import resolve_config

    if script == "quickstart.py":
        assert args and args[0] in quickstart.JOBS, f"quickstart.py has no job {args[:1]}"
        job, rest = args[0], args[1:]
        if job == "train":
            return parse("train.py", rest)
        if job == "predict":
            return parse("predict.py", rest)
        if job == "docs":
            assert set(rest) <= {"--build"}, rest
        return None
    if script == "predict.py":
        gen_docs.parser_for("predict.py").parse_args(args)
        return None
    if args and not args[0].startswith("-"):
        import train

        assert args[0] in train.SUBCOMMANDS, f"train.py has no subcommand {args[0]!r}"
        parser = gen_docs.parser_for("train.py", args[0])
        parser.parse_args(args[1:])
        return None
    resolve_config(args)  # the training flags, and a --config file's keys
    return None


def test_readme_commands_parse_with_the_real_parsers(capsys):
    found = commands(read("README.md"))
    assert len(found) >= 8
    failures, skipped = [], []
    for line, script, args in found:
        try:
            why = parse(script, args)
        except SystemExit:
            failures.append(f"{line}\n    {capsys.readouterr().err.strip().splitlines()[-1]}")
            continue
        if why:
            skipped.append(why)
    assert not failures, "README commands the parsers refuse:\n" + "\n".join(failures)


def test_readme_is_short_and_each_path_starts_on_its_first_two_screens():
    lines = read("README.md").splitlines()
    assert len(lines) <= 200
    first_screens = "\n".join(lines[:100])
    for start in ("python3 quickstart.py train", "python3 quickstart.py test", "python train.py --model",
                  "--backbone", "python train.py export", "python train.py serve", "python train.py search"):
        assert start in first_screens, f"{start!r} is not on the README's first two screens"


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", read("README.md")):
        if "://" not in target:
            assert os.path.exists(os.path.join(ROOT, target)), f"README links to {target}, which does not exist"


# ------------------------------------------------------------------------------------------------ docstrings

def public_callables():
    """Every public function and class of zoo, augment and transfer: the registry's builders and functions, and
    the callables in the packages' __all__."""
    import augment
    import transfer
    import zoo
    from zoo.registry import Variant

    found = {f"zoo.{name}": getattr(zoo, name) for name in ("build", "get", "names", "list_models", "options")}
    found["zoo.Variant"] = Variant
    for variant in zoo.list_models():
        found[f"{variant.builder.__module__}.{variant.builder.__name__}"] = variant.builder
    for package in (augment, transfer):
        for name in package.__all__:
            value = getattr(package, name)
            if inspect.isfunction(value) or inspect.isclass(value):
                found[f"{package.__name__}.{name}"] = value
    return found


def test_every_public_builder_has_a_docstring_with_an_example():
    missing = [name for name, value in public_callables().items()
               if "Example" not in (inspect.getdoc(value) or "") or ">>>" not in (inspect.getdoc(value) or "")]
    assert not missing, f"no Examples section of doctests in the docstring of: {', '.join(sorted(missing))}"


@pytest.mark.slow
def test_the_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for name, value in public_callables().items():
        for test in finder.find(value, name, globs={}):
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 200
    assert results.failed == 0, "a docstring example failed (its output is above)"
