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

from tuning.search import SearchSettings, TrainingTuner, results, run_search, write_results
from tuning.space import SPACES, TRANSFER_SPACE, ZOO_SPACE, Param, build_space, declare, parse_spec, to_config

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
