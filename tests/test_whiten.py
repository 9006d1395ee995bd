"""--whiten: the first convolution starts as a whitening of the training images' patches (core.whiten)."""

import keras
import numpy as np
import pytest

import zoo
from core.model import preprocessing_layer
from core.whiten import first_convolution, whiten_first_convolution, whitening_filters


def correlated_patches(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    mixing = 0.5 * rng.normal(size=(6, 6)) + 2.0 * np.eye(6)  # well conditioned: epsilon hardly matters
    return rng.normal(size=(n, 6)) @ mixing + 5.0


def test_filters_decorrelate_patches_to_unit_variance_in_signed_pairs():
    patches = correlated_patches()
    filters = whitening_filters(patches, 12)
    assert filters.shape == (6, 12)
    np.testing.assert_allclose(filters[:, 1::2], -filters[:, 0::2])
    white = (patches - patches.mean(0)) @ filters[:, 0::2]
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(6), atol=0.05)
    # Largest variance first: the first filter alone is the top principal direction.
    variances = np.var((patches - patches.mean(0)) @ (filters[:, 0::2] / np.linalg.norm(filters[:, 0::2], axis=0)),
                       axis=0)
    assert np.all(np.diff(variances) <= 1e-9)
    assert whitening_filters(patches, 5).shape == (6, 5)
    with pytest.raises(ValueError, match="only that many"):
        whitening_filters(patches, 13)


def fashion_like_images(n=300, seed=0):
    """Smooth 28x28 grey images (blurred noise): neighbouring pixels correlate, as in real photographs."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(n, 28, 28, 1))
    for axis in (1, 2):
        images = (images + np.roll(images, 1, axis) + np.roll(images, -1, axis)) / 3
    return images.astype(np.uint8)


def test_lenet_first_convolution_sees_decorrelated_unit_variance_patches():
    images = fashion_like_images()
    network = zoo.build("lenet5_modern", input_shape=(28, 28, 1), filters=(64, 16, 120, 84), batch_norm=True)
    conv = first_convolution(network)
    untouched = np.array(conv.kernel.numpy()[..., 50:])
    preprocess = preprocessing_layer("standardize", images)
    info = whiten_first_convolution(network, images, preprocess=preprocess, seed=0)
    assert info == {"layer": "c1_conv", "filters": 64, "whitened": 50, "patch": 25}
    kernel = conv.kernel.numpy()
    np.testing.assert_array_equal(kernel[..., 50:], untouched)  # beyond 2 x 25 filters: the initialiser's
    np.testing.assert_allclose(kernel[..., 1:50:2], -kernel[..., 0:50:2])
    np.testing.assert_array_equal(conv.bias.numpy(), 0.0)
    # What c1 computes on images it has not seen (after the padding to 32x32, as in the network):
    # its positive filters' outputs are decorrelated, each at about unit variance.
    held_out = np.asarray(preprocess(fashion_like_images(100, seed=1).astype(np.float32)))
    c1 = keras.Model(network.inputs, conv.output)
    outputs = np.asarray(c1.predict(held_out, verbose=0))[:, 4:-4, 4:-4, 0:50:2].reshape(-1, 25)
    covariance = np.cov(outputs, rowvar=False)
    np.testing.assert_allclose(np.diag(covariance)[:20], 1.0, atol=0.15)
    off = covariance - np.diag(np.diag(covariance))
    assert np.abs(off[:20, :20]).max() < 0.15


def test_a_network_without_a_convolution_is_refused():
    with pytest.raises(ValueError, match="has none"):
        whiten_first_convolution(zoo.build("mlp", input_shape=(8, 8, 1)), np.zeros((4, 8, 8, 1), np.uint8))


def test_a_network_built_under_mixed_bfloat16_is_whitened_in_float32():
    from core.model import dtype_policy

    images = fashion_like_images(64)
    with dtype_policy("mixed_bfloat16"):
        network = zoo.build("lenet5_modern", input_shape=(28, 28, 1), filters=(16, 16, 120, 84), batch_norm=True)
    info = whiten_first_convolution(network, images, preprocess=preprocessing_layer("standardize", images))
    kernel = first_convolution(network).kernel.numpy()
    assert info["whitened"] == 16 and kernel.dtype == np.float32
    np.testing.assert_allclose(kernel[..., 1::2], -kernel[..., 0::2])
