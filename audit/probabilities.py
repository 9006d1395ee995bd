"""Out-of-sample class probabilities by K-fold cross-validation, and features for near copies.

Confident learning needs each image's probabilities from a model that did
not train on that image.  The fast model is the toolkit's linear probe
(``transfer.probe``: standardized features, logistic regression), fitted
K times, each time on the other folds' features.

Where the features come from:

* ``--backbone`` (a pretrained network, a zoo export, a run's ``model.keras``):
  its features are computed once, and only the probe is cross-validated.
* by default, offline and with no pretrained weights: a small zoo network
  (``SELF_MODEL``) trained on the folder itself.  A network trained on an
  image remembers that image's label, flipped or not, so it is trained K
  times too, each on the other folds (cross-fitting), and a fold's
  probabilities come from the probe on the features of the network that never
  saw it.  Few epochs: networks fit the clean majority first and memorise
  the flipped labels last (Arpit et al. 2017, "A Closer Look at Memorization
  in Deep Networks").
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

import transfer
import zoo
from core.model import assemble, preprocessing_layer
from core.rows import take
from transfer.saved import cut_head
from training.pipeline import make_pipeline

SELF_MODEL = "lenet5_modern"
SELF_EPOCHS = 8
BATCH_SIZE = 64


@dataclasses.dataclass
class Predicted:
    probabilities: np.ndarray  # (N, K) out of sample
    features: np.ndarray  # (N, D) L2-normalized, for near copies
    source: str  # what the features came from, in words


def folds_for(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(labels).min())
    folds = max(2, min(folds, smallest))
    return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _probe_fold(vectors, labels, train, held_out, num_classes) -> np.ndarray:
    probe = transfer.fit_probe(vectors[train], labels[train], num_classes)
    return _softmax(probe.logits(vectors[held_out]))


def with_backbone(backbone, images, labels, num_classes: int, splits, log=print) -> Predicted:
    """K-fold probe on one backbone's features (computed once)."""
    vectors = transfer.pooled(transfer.extract_features(backbone, images))
    probabilities = np.zeros((len(labels), num_classes))
    for train, held_out in splits:
        probabilities[held_out] = _probe_fold(vectors, labels, train, held_out, num_classes)
    log(f"Probe on {backbone.name} features, {len(splits)}-fold")
    return Predicted(probabilities, _normalized(vectors), f"backbone {backbone.name}")


def self_trained(images, labels, num_classes: int, splits, *, model: str = SELF_MODEL, epochs: int = SELF_EPOCHS,
                 seed: int = 0, log=print) -> Predicted:
    """Cross-fitted: per fold, ``model`` trained on the other folds, and the probe on its features."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # a new network per fold: tf.function's retracing warnings say nothing here
    input_shape = tuple(images.shape[1:])
    probabilities = np.zeros((len(labels), num_classes))
    features = []
    for fold, (train, held_out) in enumerate(splits):
        keras.utils.set_random_seed(seed + fold)
        network = zoo.build(model, input_shape=input_shape, num_classes=num_classes)
        classifier = assemble(network, input_shape, preprocessing=preprocessing_layer("rescale"))
        classifier.compile(optimizer="adam", loss="categorical_crossentropy")
        pipeline = make_pipeline(take(images, train), labels[train], num_classes, batch_size=BATCH_SIZE,
                                 shuffle=True, seed=seed + fold, cast=False)
        classifier.fit(pipeline, epochs=epochs, verbose=0, shuffle=False)  # the pipeline shuffles
        backbone = transfer.Backbone(f"{model}_fold{fold + 1}", keras.layers.Rescaling(1.0 / 255.0),
                                     cut_head(network), input_shape)
        vectors = transfer.pooled(transfer.extract_features(backbone, images))
        probabilities[held_out] = _probe_fold(vectors, labels, train, held_out, num_classes)
        features.append(_normalized(vectors))
        log(f"  fold {fold + 1}/{len(splits)}: {model} trained on {len(train)} images for {epochs} epochs, "
            f"probe on the {len(held_out)} it did not see")
        keras.backend.clear_session()
    # Averaging each fold's cosine similarity: the folds' normalized features side by side, over sqrt(folds).
    joined = np.concatenate(features, axis=1) / np.sqrt(len(features))
    return Predicted(probabilities, joined, f"{model} trained on the folder, {len(splits)} times (cross-fitted)")
