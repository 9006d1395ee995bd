"""LP-FT, the default way a transfer run starts and ends.

Start: the backbone's features for the training and validation images are
computed once (the fast path and the baseline need them anyway), a linear
probe is fitted on them, and the head starts from its solution
(``start_from_probe``).  Fine-tuning then starts from a head at least as good
as the probe instead of a random one (Kumar et al., ICLR 2022).

End: the network, after its phases, is compared with the probe on the
validation split (``choose``); when it ends below, the run keeps the network
as it started, i.e. the pretrained backbone with the probe as its head.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from transfer.features import extract_features, scores
from transfer.probe import Probe, fit_probe, initialize_head, vectors


@dataclasses.dataclass
class ProbeStart:
    """What ``start_from_probe`` leaves behind.

    Attributes:
        probe: the fitted linear probe.
        features: {split: backbone features} for "train" and "val" (the fast path trains on them).
        vectors: {split: (pooled vectors, labels)} the probe is scored on.
        how: how the head took the probe (``transfer.probe.initialize_head``).
    """

    probe: Probe
    features: dict
    vectors: dict
    how: str

    def accuracy(self, split: str) -> float | None:
        return self.probe.accuracy(*self.vectors[split])

    def summary(self) -> dict:
        return scores(self.probe, self.vectors)


def start_from_probe(backbone, head, arrays: dict, num_classes: int, *, fit_on_val: bool = False,
                     class_weight=None, score_test: bool = True) -> ProbeStart:
    """Fits the linear probe on the training split's features and starts ``head`` from it.

    Args:
        backbone: a ``transfer.Backbone``.
        head: the ``head_model`` on it (inside the run's model; set in place).
        arrays: the data set's ``{split: (raw images, labels)}``.
        num_classes: the head's classes.
        fit_on_val: the probe also learns from the validation split (a search's final fit).
        class_weight: scikit-learn's ``class_weight`` for the probe.
        score_test: also score the probe on the test split, now, while the backbone is still the
            pretrained one (fine-tuning changes it in place).  A search trial never looks at it.
    """
    splits = ("train", "val", "test") if score_test and "test" in arrays else ("train", "val")
    features = {split: extract_features(backbone, arrays[split][0]) for split in splits}
    pooled = {split: (vectors(head, features[split]), np.asarray(arrays[split][1])) for split in features}
    features.pop("test", None)  # only the fast path keeps features, and it trains on train and val
    fit_x, fit_y = pooled["train"]
    if fit_on_val:
        fit_x, fit_y = np.concatenate([fit_x, pooled["val"][0]]), np.concatenate([fit_y, pooled["val"][1]])
    probe = fit_probe(fit_x, fit_y, num_classes, class_weight=class_weight)
    how = initialize_head(head, probe, fit_x, fit_y)
    return ProbeStart(probe, features, pooled, how)


def choose(network_val_accuracy: float, probe_val_accuracy: float | None) -> str:
    """"network" unless it is below the probe on validation (a tie keeps the network), else "probe"."""
    if probe_val_accuracy is None or network_val_accuracy >= probe_val_accuracy:
        return "network"
    return "probe"
