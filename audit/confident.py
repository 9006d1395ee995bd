"""Confident learning (Northcutt, Jiang & Chuang, JAIR 2021), through cleanlab: which labels to doubt.

cleanlab's ``find_label_issues`` counts, per pair of classes, the images
whose out-of-sample probability of another class is above that class's own
average confidence (the confident joint), and flags that many images, the
least likely first.  On a folder whose classes a small model confuses by
itself (Fashion-MNIST's shirts, T-shirts and pullovers), that count also
takes in the model's own mistakes; so an image is reported only when it is
flagged and its given label's out-of-sample probability is below
``threshold`` too: at 0.05 that kept precision at 0.78 to 0.96 on the
benchmark's folders (``bench/bench_audit.py``), where the count alone gave
0.48 on Fashion-MNIST.

Checked with cleanlab 2.9.0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

THRESHOLD = 0.05  # the given label's out-of-sample probability below which a flagged image is reported


@dataclasses.dataclass
class LabelIssue:
    index: int  # into the labels given
    given: int
    suggested: int  # the most probable class out of sample
    score: float  # the given label's out-of-sample probability (cleanlab's self-confidence): lower is worse


def label_issues(labels: np.ndarray, probabilities: np.ndarray, *, threshold: float = THRESHOLD) -> list[LabelIssue]:
    """The images whose label to doubt, most doubtful first.

    Args:
        labels: (N,) given classes, 0..K-1.
        probabilities: (N, K) out-of-sample predicted probabilities (K-fold).
        threshold: report only images whose given class has an out-of-sample
            probability below it (1.0: all that cleanlab flags).
    """
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    flagged = find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate")
    score = probabilities[np.arange(len(labels)), labels]
    chosen = np.flatnonzero(flagged & (score < threshold))
    chosen = chosen[np.argsort(score[chosen], kind="stable")]
    return [LabelIssue(int(i), int(labels[i]), int(np.argmax(probabilities[i])), float(score[i])) for i in chosen]
