"""Hyperparameter search over training settings, with keras-tuner.

``python train.py search`` in four steps:

1. **A space.**  ``space.ZOO_SPACE`` (architecture and depth, width, batch
   norm, dropout, activation, optimizer, learning rate and schedule, weight
   decay, augmentation, label smoothing) or ``space.TRANSFER_SPACE`` (how
   much of the backbone trains, head size and dropout, both phases' rates).
   Flags fix settings; ``--tune KEY=SPEC`` narrows or adds them.
2. **An oracle.**  keras-tuner's random search, Hyperband or Bayesian
   optimization proposes settings; its first proposal is always the
   unsearched configuration.
3. **Trials.**  Each is an ordinary training run in its own folder
   (``search.TrainingTuner``), scored on the validation split, resumable,
   and recorded as failed when it fails.
4. **Results.**  A table sorted by score (CSV and JSON), a plot of the
   trials, then the best settings retrained, tested and exported.
"""

import importlib

# Where each public name lives.  They are imported when first used (PEP 562), so ``train.py search --help``
# reads ``tuning.command``'s flags without keras-tuner and TensorFlow starting.
_HOMES = {"SearchSettings": "search", "TrainingTuner": "search", "results": "search", "run_search": "search",
          "write_results": "search", "SPACES": "space", "TRANSFER_SPACE": "space", "ZOO_SPACE": "space",
          "Param": "space", "build_space": "space", "declare": "space", "parse_spec": "space", "to_config": "space"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'tuning' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tuning.{_HOMES[name]}"), name)


__all__ = [
    "SPACES",
    "TRANSFER_SPACE",
    "ZOO_SPACE",
    "Param",
    "SearchSettings",
    "TrainingTuner",
    "build_space",
    "declare",
    "parse_spec",
    "results",
    "run_search",
    "to_config",
    "write_results",
]
