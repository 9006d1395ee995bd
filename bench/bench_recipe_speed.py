"""Training speed of a Fashion-MNIST recipe and of variants of it, timed through ``fit`` in one run.

    .venv/bin/python bench/bench_recipe_speed.py --quick   # the ten-minute recipe and two variants (~1 min)
    .venv/bin/python bench/bench_recipe_speed.py --full    # and the shapes the ten-minute recipe was chosen over
    .venv/bin/python bench/bench_recipe_speed.py --full --variant precision=float32 --variant "batch_size=512 lr=0.006"

A budget in minutes is a budget in epochs, and how many epochs the minutes
hold depends on the processor: ``mixed_bfloat16`` is fast where the CPU has
AMX or AVX512-BF16 and emulated elsewhere, and one network can be cheap per
image on one machine and not on another.  So before choosing a ten-minute
recipe on a new machine, time its candidates there: this prepares each
variant as ``bench_fashion.py --set`` would (a variant is one or more
KEY=VALUE changes to the recipe), and times ``fit`` over a fixed number of
steps of each, in interleaved rounds (A, B, C, A, B, C, ...) so load from
other processes falls on all of them.  Each row gives images a second (the
median over rounds), its ratio to the recipe (the median of the per-round
ratios) and the seconds an epoch of its training images would take (54,000 with --full).
Writes JSON (default bench/results/recipe_speed_{quick,full}.json).  It
compares; it trains nothing to the end and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_fashion import RECIPES, parse_changes, prepare_recipe  # noqa: E402
from machine import machine_info, parse_size  # noqa: E402

SETTINGS = {
    "quick": {"rounds": 2, "steps": 8, "train": 4000},
    "full": {"rounds": 4, "steps": 40, "train": None},
}
# The shapes the experiment log weighed against the ten-minute recipe (--full; --quick times the first two).
VARIANTS = ("precision=float32", "batch_size=128", "batch_size=512", "filters=[16,96,480,336]",
            "model=resnet20 filters=null", "model=resnet20 filters=null depth=8",
            "model=wrn16_4 filters=null depth=10 widen_factor=2", "model=resnet18 filters=null width=0.5",
            "model=alexnet_small filters=null")
WARMUP_STEPS = 3  # traces the training step; not timed


def prepare_variant(recipe: str, changes: dict, train_limit: int | None):
    """The model, compiled as the recipe's run compiles it, and its training batches repeated."""
    from training.run import compile_model

    config, _, run = prepare_recipe(recipe, changes, train_limit=train_limit)
    compile_model(run.model, run.config, run.steps)
    batches = run.train_ds.repeat()
    run.model.fit(batches.take(WARMUP_STEPS), epochs=1, verbose=0)
    return run.model, batches, config["batch_size"], len(run.labels)


def time_steps(model, batches, steps: int) -> float:
    started = time.perf_counter()
    model.fit(batches.take(steps), epochs=1, verbose=0)
    return time.perf_counter() - started


def measure(recipe: str, variants: list[str], *, rounds: int, steps: int, train_limit=None, parser=None,
            log=print) -> list[dict]:
    """One row per variant, the recipe itself first: images a second, and the ratio to the recipe."""
    parser = parser or argparse.ArgumentParser()
    named = [("the recipe", {})] + [(text, parse_changes(text.split(), parser)) for text in variants]
    prepared = [prepare_variant(recipe, changes, train_limit) for _, changes in named]
    rates = [[] for _ in named]
    for _ in range(rounds):
        for rate, (model, batches, batch_size, _) in zip(rates, prepared):
            rate.append(steps * batch_size / time_steps(model, batches, steps))
    rows = []
    for (text, changes), rate, (model, _, batch_size, images) in zip(named, rates, prepared):
        ips = statistics.median(rate)
        ratio = statistics.median(r / base for r, base in zip(rate, rates[0]))
        rows.append({"variant": text, "changed": changes, "parameters": int(model.count_params()),
                     "batch_size": batch_size, "images_per_second": round(ips, 1), "rounds": [round(r, 1) for r in rate],
                     "ratio_to_recipe": round(ratio, 3), "train_images": images,
                     "epoch_seconds": round(images / ips, 1)})
        log(f"  {text}: {ips:,.0f} images/s, {ratio:.2f}x the recipe")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="lenet5_modern-10min", choices=list(RECIPES),
                        help="the recipe the variants change (default: lenet5_modern-10min)")
    parser.add_argument("--variant", action="append", default=[], metavar='"KEY=VALUE ..."',
                        help="a variant: changes to the recipe, as bench_fashion.py --set takes them, space-separated "
                             "(repeat for more; default: the shapes the ten-minute recipe was chosen over)")
    args, mode, out = parse_size("recipe_speed", __doc__, argv, parser=parser,
                                 quick="4,000 training images, 8 steps a round, 2 rounds, 2 variants",
                                 full="the whole training split, 40 steps a round, 4 rounds")
    settings = SETTINGS[mode]
    variants = args.variant or list(VARIANTS if args.full else VARIANTS[:2])
    rows = measure(args.recipe, variants, rounds=settings["rounds"], steps=settings["steps"],
                   train_limit=settings["train"], parser=parser)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"mode": mode, "recipe": args.recipe, "settings": settings, "machine": machine_info(),
                   "results": rows}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
