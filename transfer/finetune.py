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
from transfer.freeze import freeze
from transfer.probe import Probe, fit_probe, initialize_head, vectors

# The head's rate.  It starts from the probe, on standardized features: a small, well-conditioned problem
# that takes a higher rate than a network trained from scratch (fastai's fine_tune trains its frozen phase
# at 2e-3).  bench/bench_transfer.py measures it beside the zoo's 1e-3 and a hand-picked 1e-2.
HEAD_LR = 3e-3
# Fine-tuning runs at a third of the head's rate (fastai's fine_tune halves its rate for the unfrozen
# phase) and warms up over this share of its steps: a fresh optimizer's first moments are noisy, and its
# first steps are the ones that reach the pretrained weights.  At a tenth (3e-4) fine-tuning barely left the
# probe on bench/bench_transfer.py --tiny: 20 images a class, 0.919 against 0.936 at a third.
FINETUNE_FACTOR = 1 / 3
FINETUNE_WARMUP = 0.1


@dataclasses.dataclass
class ProbeStart:
    """What ``start_from_probe`` leaves behind.

    Attributes:
        probe: the fitted linear probe.
        features: {split: backbone features} for "train" and "val" (the fast path trains on them).
        vectors: {split: (pooled vectors, labels)} the probe is scored on.
        how: how the head took the probe (``transfer.probe.initialize_head``).

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 1)).astype("uint8")
        >>> labels = np.arange(20) % 2
        >>> head = transfer.head_model(backbone.features.output.shape[1:], 2)
        >>> arrays = {"train": (images, labels), "val": (images[:6], labels[:6])}
        >>> start = transfer.start_from_probe(backbone, head, arrays, 2, score_test=False)
        >>> isinstance(start, transfer.ProbeStart), start.features["train"].shape
        (True, (20, 1, 1, 120))
    """

    probe: Probe
    features: dict
    vectors: dict
    how: str

    def accuracy(self, split: str) -> float | None:
        return self.probe.accuracy(*self.vectors[split])

    def loss(self, split: str, label_smoothing: float = 0.0) -> float | None:
        """The probe's mean cross-entropy on ``split`` (against smoothed targets, as the run's loss)."""
        x, labels = self.vectors[split]
        return cross_entropy(softmax(self.probe.logits(x)), labels, label_smoothing)

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

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 1)).astype("uint8")
        >>> labels = np.arange(20) % 2
        >>> head = transfer.head_model(backbone.features.output.shape[1:], 2)
        >>> arrays = {"train": (images, labels), "val": (images[:6], labels[:6])}
        >>> start = transfer.start_from_probe(backbone, head, arrays, 2, score_test=False)
        >>> start.how, sorted(start.features)
        ('linear', ['train', 'val'])
    """
    splits = ("train", "val", "test") if score_test and "test" in arrays else ("train", "val")
    features = {split: extract_features(backbone, arrays[split][0], split=split) for split in splits}
    pooled = {split: (vectors(head, features[split]), np.asarray(arrays[split][1])) for split in features}
    features.pop("test", None)  # only the fast path keeps features, and it trains on train and val
    fit_x, fit_y = pooled["train"]
    if fit_on_val:
        fit_x, fit_y = np.concatenate([fit_x, pooled["val"][0]]), np.concatenate([fit_y, pooled["val"][1]])
    probe = fit_probe(fit_x, fit_y, num_classes, class_weight=class_weight)
    how = initialize_head(head, probe, fit_x, fit_y)
    return ProbeStart(probe, features, pooled, how)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> float | None:
    """Mean cross-entropy against one-hot targets smoothed by ``label_smoothing`` (Keras'
    ``CategoricalCrossentropy(label_smoothing=...)``, the run's own loss); None for no examples.

    Examples:
        >>> import transfer, numpy as np
        >>> round(transfer.cross_entropy(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])), 4)
        0.1643
    """
    labels = np.asarray(labels).astype(int)
    if not len(labels):
        return None
    probabilities = np.asarray(probabilities, np.float64)
    targets = np.full(probabilities.shape, label_smoothing / probabilities.shape[-1])
    targets[np.arange(len(labels)), labels] += 1.0 - label_smoothing
    return float(-np.mean(np.sum(targets * np.log(np.clip(probabilities, 1e-12, 1.0)), axis=-1)))


def choose(network: tuple, probe: tuple, *, ties_by_loss: bool = True) -> str:
    """Which to keep, from (validation accuracy, validation cross-entropy) of each: "network" or "probe".

    The higher accuracy wins.  On a tie the network stays unless
    ``ties_by_loss`` and the probe's cross-entropy is lower, measured the way
    the run measures its own validation loss (against targets smoothed by its
    ``--label-smoothing``): against hard labels an unsmoothed probe,
    confident by construction, won nearly every tie.  The caller turns
    ``ties_by_loss`` off when validation holds too few images to rank the
    two: a fine-tuned network started from the probe and learned on from
    there, so a tie is no evidence against it.  On bench/bench_transfer.py,
    with one or two validation images a class, every switch to the probe
    lost 4 to 9 points on the test split.

    Examples:
        >>> import transfer
        >>> transfer.choose(network=(0.90, 0.30), probe=(0.90, 0.35))  # a tie in accuracy: the lower loss
        'network'
        >>> transfer.choose(network=(0.80, 0.30), probe=(0.90, 0.50))
        'probe'
    """
    (network_accuracy, network_loss), (probe_accuracy, probe_loss) = network, probe
    if probe_accuracy is None or network_accuracy > probe_accuracy:
        return "network"
    if network_accuracy < probe_accuracy:
        return "probe"
    lower = ties_by_loss and None not in (network_loss, probe_loss) and probe_loss < network_loss
    return "probe" if lower else "network"


def unfreeze_top(backbone, policy: str) -> str:
    """Trains the top of ``backbone`` for fine-tuning; returns the policy applied.

    ``from:auto`` is the backbone's usual fine-tuning point (its last 30% of
    layers with weights when it has none).

    Raises:
        ValueError: a malformed policy, or one that leaves no backbone weight to
            train (batch norm always stays frozen, so ``from:c5_bn`` trains nothing).

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> transfer.unfreeze_top(backbone, "from:auto")  # the backbone's usual point: its fine_tune_from
        'from:c5_conv'
    """
    if policy == "from:auto":
        policy = f"from:{backbone.fine_tune_from}" if backbone.fine_tune_from else "fraction:0.3"
    freeze(backbone.features, policy)
    if not backbone.features.trainable_weights:
        raise ValueError(f"{policy} leaves no weight of backbone {backbone.name!r} to fine-tune (batch norm always "
                         "stays frozen); choose layers with kernels, e.g. last:2 or from:LAYER")
    return policy
