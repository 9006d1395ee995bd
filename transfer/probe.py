"""The linear probe: the floor a transfer run starts from and is checked against.

LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features
and Underperform Out-of-Distribution"): fit a linear classifier on the frozen
backbone's features to convergence first, then fine-tune from it.  A head
that starts from random weights sends large, noisy gradients into the
pretrained layers, and on a small folder it may not even finish learning
before fine-tuning starts.  The probe is cheap: the features are computed
once anyway, for the fast path.

1. ``vectors(head, features)``: one vector per image, pooled the way the head
   pools.
2. ``fit_probe``: scikit-learn's ``StandardScaler`` + multinomial
   ``LogisticRegression``, fitted to convergence.
3. ``initialize_head``: the head's ``Standardize`` layer takes the scaler's
   statistics and its output layer the probe's weights, so the network
   predicts exactly what the probe does before its first step.  A head with
   hidden layers of at least twice the class count passes the probe's logits
   through exactly (``relu(z) - relu(-z) = z``); narrower hidden layers keep
   their random weights and the output layer is a probe of their activations.
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from core.rows import batches, on_disk

# Logit offset for a class the training split lacks: the probe never predicts it.
ABSENT_CLASS_LOGIT = -10.0


@dataclasses.dataclass
class Probe:
    """A linear classifier on standardized vectors: ``logits = (x - mean) * inverse_std @ kernel + bias``.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 1)).astype("uint8")
        >>> labels = np.arange(20) % 2
        >>> vectors = transfer.pooled(transfer.extract_features(backbone, images))
        >>> probe = transfer.fit_probe(vectors, labels, 2)
        >>> isinstance(probe, transfer.Probe), probe.mean.shape
        (True, (120,))
    """

    mean: np.ndarray
    inverse_std: np.ndarray
    kernel: np.ndarray  # (features, classes)
    bias: np.ndarray  # (classes,)
    classifier: str = ""

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return ((np.asarray(vectors, np.float64) - self.mean) * self.inverse_std) @ self.kernel + self.bias

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(vectors), axis=-1)

    def accuracy(self, vectors: np.ndarray, labels: np.ndarray) -> float | None:
        labels = np.asarray(labels)
        return float(np.mean(self.predict(vectors) == labels)) if len(labels) else None


def pool(features: np.ndarray, pooling: str = "avg") -> np.ndarray:
    """Feature maps (N, H, W, C) to vectors the way a head's pooling does; vectors pass through.

    Features on disk (``transfer.features`` writes a folder's there) are pooled
    a chunk at a time, so only the vectors are ever in memory."""
    if on_disk(features):
        if not len(features):
            return pool(np.zeros(features.shape, features.dtype), pooling)
        return np.concatenate([pool(chunk, pooling) for chunk in batches(features)])
    features = np.asarray(features)
    if features.ndim != 4:
        return features.reshape(len(features), -1)
    if pooling == "avg":
        return features.mean(axis=(1, 2))
    if pooling == "max":
        return features.max(axis=(1, 2))
    return features.reshape(len(features), -1)


def head_pooling(head: keras.Model) -> str:
    """Which pooling ``head`` applies to 4-D features ("avg", "max" or "flatten")."""
    try:
        layer = head.get_layer("head_pool")
    except ValueError:
        return "flatten"
    if isinstance(layer, keras.layers.GlobalMaxPooling2D):
        return "max"
    return "avg" if isinstance(layer, keras.layers.GlobalAveragePooling2D) else "flatten"


def vectors(head: keras.Model, features: np.ndarray) -> np.ndarray:
    """What ``head``'s dense layers see for ``features`` (before standardization)."""
    return pool(features, head_pooling(head))


def _logistic_regression(x, y, *, class_weight=None, max_iter: int = 1000):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        # A probe that stops at max_iter is still a fine starting point; the warning would only alarm.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(max_iter=max_iter, class_weight=class_weight).fit(x, y)


def _dense_weights(classifier, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted LogisticRegression as (kernel, bias) of a softmax layer over all ``num_classes``."""
    classes = classifier.classes_.astype(int)
    coef, intercept = classifier.coef_, classifier.intercept_
    kernel = np.zeros((coef.shape[1], num_classes))
    bias = np.full(num_classes, float(np.min(intercept)) + ABSENT_CLASS_LOGIT)
    if len(classes) == 2:
        # Binary problems get one logit z for the second class; softmax over (-z/2, z/2) is the same sigmoid.
        kernel[:, classes[0]], kernel[:, classes[1]] = -coef[0] / 2, coef[0] / 2
        bias[classes[0]], bias[classes[1]] = -intercept[0] / 2, intercept[0] / 2
    else:
        kernel[:, classes] = coef.T
        bias[classes] = intercept
    return kernel, bias


def fit_probe(vectors_: np.ndarray, labels: np.ndarray, num_classes: int, *, class_weight=None,
              max_iter: int = 1000) -> Probe:
    """Standardize, then multinomial logistic regression (L2, C=1) fitted to convergence.

    Args:
        vectors_: (N, D) pooled features of the training images.
        labels: (N,) integer labels.
        num_classes: classes of the head (a class absent from ``labels`` is never predicted).
        class_weight: scikit-learn's ``class_weight`` ("balanced" or None).

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 1)).astype("uint8")
        >>> labels = np.arange(20) % 2
        >>> vectors = transfer.pooled(transfer.extract_features(backbone, images))
        >>> probe = transfer.fit_probe(vectors, labels, 2)
        >>> probe.kernel.shape, probe.predict(vectors).shape  # a class id per vector
        ((120, 2), (20,))
    """
    x = np.asarray(vectors_, np.float64)
    labels = np.asarray(labels).astype(int)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    inverse_std = np.where(std > 1e-12, 1.0 / np.maximum(std, 1e-12), 1.0)  # constant features: StandardScaler's 1
    standardized = (x - mean) * inverse_std
    if len(np.unique(labels)) < 2:
        kernel = np.zeros((x.shape[1], num_classes))
        bias = np.full(num_classes, ABSENT_CLASS_LOGIT)
        bias[labels[0]] = 0.0
    else:
        kernel, bias = _dense_weights(_logistic_regression(standardized, labels, class_weight=class_weight,
                                                           max_iter=max_iter), num_classes)
    return Probe(mean, inverse_std, kernel, bias,
                 classifier=f"StandardScaler + LogisticRegression(max_iter={max_iter})")


def _hidden_activations(hidden_layers, standardized: np.ndarray) -> np.ndarray:
    x = standardized
    for layer in hidden_layers:
        kernel, bias = layer.get_weights()
        x = np.maximum(x @ kernel + bias, 0.0)
    return x


def initialize_head(head: keras.Model, probe: Probe, vectors_: np.ndarray | None = None,
                    labels: np.ndarray | None = None) -> str:
    """Sets ``head`` to start from ``probe``; returns how ("linear", "pass-through" or "refit").

    ``vectors_`` and ``labels`` (the training vectors) are needed only for a
    head whose hidden layers are narrower than twice the class count: its
    output layer is then fitted as a probe of those layers' activations.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 1)).astype("uint8")
        >>> labels = np.arange(20) % 2
        >>> features = transfer.extract_features(backbone, images)
        >>> probe = transfer.fit_probe(transfer.pooled(features), labels, 2)
        >>> head = transfer.head_model(features.shape[1:], 2)
        >>> transfer.initialize_head(head, probe)  # the head now predicts what the probe does
        'linear'
    """
    head.get_layer("head_standardize").set_weights([probe.mean.astype(np.float32),
                                                    probe.inverse_std.astype(np.float32)])
    *hidden, output = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    classes = probe.kernel.shape[1]
    if not hidden:
        output.set_weights([probe.kernel.astype(np.float32), probe.bias.astype(np.float32)])
        return "linear"
    if all(layer.units >= 2 * classes for layer in hidden):
        # Carry (relu(z), relu(-z)) for the probe's logits z through every hidden layer; the output
        # subtracts them.  The other units keep their random weights and start with no say in the output.
        through = 2 * classes
        kernel, bias = hidden[0].get_weights()
        kernel[:, :classes], kernel[:, classes:through] = probe.kernel, -probe.kernel
        bias[:classes], bias[classes:through] = probe.bias, -probe.bias
        hidden[0].set_weights([kernel, bias])
        for layer in hidden[1:]:
            kernel, bias = layer.get_weights()
            kernel[:, :through] = 0.0
            kernel[:through, :through] = np.eye(through)
            bias[:through] = 0.0
            layer.set_weights([kernel, bias])
        kernel = np.zeros(output.get_weights()[0].shape, np.float32)
        kernel[:classes] = np.eye(classes)
        kernel[classes:through] = -np.eye(classes)
        output.set_weights([kernel, np.zeros(classes, np.float32)])
        return "pass-through"
    if vectors_ is None or labels is None:
        raise ValueError("a head with hidden layers narrower than twice the class count needs the training "
                         "vectors and labels to fit its output layer")
    standardized = (np.asarray(vectors_, np.float64) - probe.mean) * probe.inverse_std
    top = fit_probe(_hidden_activations(hidden, standardized), labels, classes)
    # Fold the activations' standardization into the output layer: W' = W * s, b' = b - (m * s) @ W.
    kernel = top.kernel * top.inverse_std[:, None]
    bias = top.bias - (top.mean * top.inverse_std) @ top.kernel
    output.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return "refit"
