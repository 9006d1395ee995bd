"""Augmentation inside real training: every policy trains, and flip TTA pays off."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import augment
import imagesets
import zoo
from core.model import assemble, inference_model, preprocessing_layer

FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def digits():
    return imagesets.load("digits", image_size=(16, 16), channels=3)


@pytest.mark.parametrize("spec", ["none", "light", "standard", "strong", "standard+pca+noise+cutout",
                                  "light+mixup", "flip+cutmix"])
def test_every_policy_builds_and_trains_a_step(spec, digits):
    images, labels = digits.arrays["train"]
    layer = augment.policy(spec, input_shape=digits.input_shape, seed=1, pca=augment.fit_pca(images))
    network = zoo.build("lenet5_modern", input_shape=digits.input_shape, num_classes=10)
    model = assemble(network, digits.input_shape, preprocessing=preprocessing_layer("rescale"), augmentation=layer)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    x = images[:64].astype(np.float32)
    y = keras.utils.to_categorical(labels[:64], 10)
    mix = augment.mixer(spec, num_classes=10, seed=1)
    if mix is not None:
        x, y = (np.asarray(t) for t in mix(x, y))
        assert np.allclose(y.sum(axis=1), 1.0) and (y.max(axis=1) < 1).any()  # labels really mixed
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist is not installed")
def test_flip_tta_is_at_least_as_accurate_as_plain_prediction():
    data = imagesets.load("fashion_mnist", seed=0)
    x_train, y_train = data.arrays["train"]
    x_test, y_test = data.arrays["test"]
    keras.utils.set_random_seed(0)
    network = zoo.build("lenet5_modern", input_shape=data.input_shape, num_classes=10, batch_norm=True)
    layer = augment.policy("flip", input_shape=data.input_shape, seed=0)
    model = assemble(network, data.input_shape, preprocessing=preprocessing_layer("rescale"), augmentation=layer)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train[:12000].astype(np.float32), y_train[:12000], batch_size=128, epochs=2, verbose=0)
    inference = inference_model(model)
    images = x_test[:4000].astype(np.float32)
    plain = (augment.predict_tta(inference, images, "none").argmax(1) == y_test[:4000]).mean()
    flipped = (augment.predict_tta(inference, images, "flip").argmax(1) == y_test[:4000]).mean()
    assert plain > 0.75  # the model really learned something
    assert flipped >= plain, (flipped, plain)
