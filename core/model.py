"""Putting a zoo network together with its input stages, and taking them apart for export.

A training model is ``image (raw 0-255) -> augmentation -> preprocessing -> network``.
Augmentation layers are identity outside training and are dropped from the
export; preprocessing (rescaling or per-channel standardization learned from
the training images) stays, so a served model takes raw pixels.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from core.rows import batches, on_disk

PREPROCESSING = ("rescale", "standardize")


def preprocessing_layer(kind: str, train_images: np.ndarray | None = None):
    """``rescale``: pixels / 255.  ``standardize``: per-channel mean and standard
    deviation of the training images (Keras' Normalization, adapted once)."""
    if kind == "rescale":
        return keras.layers.Rescaling(1.0 / 255.0, name="preprocessing")
    if kind == "standardize":
        if train_images is None:
            raise ValueError("standardize needs the training images to learn mean and variance from")
        layer = keras.layers.Normalization(axis=-1, name="preprocessing")
        layer.adapt(_adapt_data(train_images))
        return layer
    raise ValueError(f"Unknown preprocessing {kind!r} (valid: {', '.join(PREPROCESSING)})")


def _adapt_data(images):
    """What Normalization adapts on: the float32 array, or batches read from disk for a folder's images."""
    if not on_disk(images):
        return np.asarray(images, dtype=np.float32)
    import tensorflow as tf

    # Keras reads a dataset a batch at a time, updating the mean and variance as it goes.
    return tf.data.Dataset.from_generator(lambda: batches(images, dtype=np.float32),
                                          output_signature=tf.TensorSpec((None, *images.shape[1:]), tf.float32))


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set to ``name`` while a model is built, then put back.

    Layers take the policy when they are made, and a model made under
    "mixed_float16" gets loss scaling when it compiles; the policy is global,
    so it must not outlive the run that asked for it."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def _float32(outputs):
    # Under a mixed policy the network's last layer computes in float16/bfloat16: probabilities, the loss and
    # every consumer (metrics, exports) get float32.
    return outputs if outputs.dtype == "float32" else keras.layers.Activation(
        "linear", dtype="float32", name="float32_outputs")(outputs)


def assemble(network: keras.Model, input_shape, *, preprocessing, augmentation=None) -> keras.Model:
    """The training model: raw images in, the network's outputs out (float32 whatever the policy)."""
    inputs = keras.Input(shape=tuple(input_shape), dtype="float32", name="image")
    x = augmentation(inputs) if augmentation is not None else inputs
    x = preprocessing(x)
    outputs = _float32(network(x))
    return keras.Model(inputs, outputs, name=f"{network.name}_trainer")


def network_of(model: keras.Model) -> keras.Model:
    """The zoo network inside an assembled model."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model)][-1]


def inference_model(model: keras.Model) -> keras.Model:
    """The assembled model without augmentation, sharing its weights."""
    inputs = keras.Input(shape=model.input_shape[1:], dtype="float32", name="image")
    x = model.get_layer("preprocessing")(inputs)
    network = network_of(model)
    return keras.Model(inputs, _float32(network(x)), name=network.name)
