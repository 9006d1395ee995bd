"""Quick mode: every command of the README and the guides, run as written, in seconds.

CI runs each shell and Python block of the docs (``tools/run_docs.py``) with ``CNN_CLASSROOM_QUICK=1``.  The
commands stay the ones a reader copies (``--epochs 20``, ``--max-trials 20``); quick mode lowers what makes them
long, and nothing else, so a block that is wrong (a flag renamed, a path that does not exist, an import missing)
still fails:

- training: at most one epoch a phase, and a time budget of a few seconds;
- search: at most two trials of one epoch; the learning-rate finder: twenty steps;
- the built-in datasets: a few images a class in each split (folders are the reader's own and are read whole).

The caps are a table (``CONFIG_CAPS``, ``ARGUMENT_CAPS``, ``IMAGES_PER_CLASS``) so that the quick run's shape is
read in one place.  Outside quick mode every function here returns what it was given.
"""

from __future__ import annotations

import os

import numpy as np

ENVIRONMENT = "CNN_CLASSROOM_QUICK"

# A run's settings (training.config's keys) -> the most quick mode allows.  time_budget is in minutes.
CONFIG_CAPS = {"epochs": 1, "finetune_epochs": 1, "time_budget": 0.1}
# A subcommand's own flags (argparse names) -> the most quick mode allows.
ARGUMENT_CAPS = {"max_trials": 2, "trial_epochs": 1, "max_minutes": 1.0, "steps": 20}
# Images a class kept in each split of a built-in dataset: enough for every class in every split, and for a
# batch of statistics in the models with batch norm.
IMAGES_PER_CLASS = {"train": 24, "val": 6, "test": 6}


def active() -> bool:
    return os.environ.get(ENVIRONMENT, "") not in ("", "0")


def _lower(value, cap):
    """``value`` no larger than ``cap``; None (not set) and 0 (turned off) stay as they are."""
    if value is None or isinstance(value, bool) or not value:
        return value
    return cap if value > cap else value  # the cap's own type: a budget of 10 (an int in a --config file) -> 0.1


def cap_config(config: dict) -> dict:
    """A run's settings with quick mode's caps applied (the same dict outside quick mode)."""
    if not active():
        return config
    return {**config, **{key: _lower(config[key], cap) for key, cap in CONFIG_CAPS.items() if key in config}}


def cap_arguments(args):
    """A subcommand's parsed flags with quick mode's caps applied, in place; returns them."""
    if active():
        for name, cap in ARGUMENT_CAPS.items():
            if hasattr(args, name):
                setattr(args, name, _lower(getattr(args, name), cap))
    return args


def cap_split(part, split: str):
    """The first ``IMAGES_PER_CLASS[split]`` images of each class of ``part`` = (images, labels), in their order;
    ``part`` itself outside quick mode."""
    if part is None or not active():
        return part
    images, labels = part
    keep = np.concatenate([np.flatnonzero(labels == label)[:IMAGES_PER_CLASS[split]] for label in np.unique(labels)])
    keep.sort()
    return images[keep], labels[keep]
