"""A network's first convolution started as a whitening of the training images' patches (``--whiten``).

Neighbouring pixels are strongly correlated, so a first convolution from a
random initialiser spends its early steps finding the directions in which
patches vary.  Started from the eigenvectors of the patch covariance, each
divided by the square root of its eigenvalue (the ingredients of ZCA
whitening; Jordan 2024's airbench makes them its first layer), its filters
see each patch in its principal directions at unit variance from the first
step.  The filters come in pairs, ``+v`` and ``-v``, so that after a ReLU each
direction passes both ways; the first ``2 x`` patch-size filters are set, by
decreasing eigenvalue, and any beyond keep the layer's initialiser.  They go
on training like any other weights: this is where they start.

The patches are those the convolution itself sees: the training images
through the model's preprocessing and whatever the network does before the
layer (LeNet-5's padding to 32x32), at the layer's own strides and padding.
"""

from __future__ import annotations

import keras
import numpy as np

from core.rows import take

IMAGES = 512  # training images sampled for the patches
PATCHES = 100_000  # patches the covariance is computed from, at most
EPSILON = 1e-3  # added to each eigenvalue, relative to the largest: keeps noise directions from blowing up


def first_convolution(network: keras.Model):
    """The first ``Conv2D`` of ``network`` in its layer order, or None."""
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D):
            return layer
    return None


def whitening_filters(patches: np.ndarray, count: int) -> np.ndarray:
    """(D, count) filters for (N, D) ``patches``: eigenvectors of their covariance over sqrt(eigenvalue),
    largest first, each followed by its negative; ``count`` is at most 2D.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> patches = rng.normal(size=(5000, 3)) @ np.array([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]])
        >>> filters = whitening_filters(patches, 6)
        >>> white = (patches - patches.mean(0)) @ filters[:, ::2]  # the positive half
        >>> np.allclose(np.cov(white, rowvar=False), np.eye(3), atol=0.03)  # decorrelated, at unit variance
        True
    """
    centred = patches - patches.mean(axis=0)
    covariance = centred.T @ centred / max(1, len(centred) - 1)
    values, vectors = np.linalg.eigh(covariance)  # ascending
    values, vectors = values[::-1], vectors[:, ::-1]
    scaled = vectors / np.sqrt(np.maximum(values, 0.0) + EPSILON * max(values[0], 1e-12))
    pairs = (count + 1) // 2
    if pairs > scaled.shape[1]:
        raise ValueError(f"{count} filters need {pairs} directions; patches of {scaled.shape[1]} values have "
                         f"only that many")
    filters = np.empty((scaled.shape[0], 2 * pairs), dtype=np.float64)
    filters[:, 0::2], filters[:, 1::2] = scaled[:, :pairs], -scaled[:, :pairs]
    return filters[:, :count]


def patches_for(layer, inputs: np.ndarray, *, limit: int = PATCHES, seed: int = 0) -> np.ndarray:
    """(N, kh*kw*C) patches of ``inputs`` (what ``layer`` receives) at the layer's strides and padding,
    a random ``limit`` of them at most."""
    import tensorflow as tf

    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    patches = tf.image.extract_patches(tf.convert_to_tensor(inputs, tf.float32), sizes=[1, kh, kw, 1],
                                       strides=[1, sh, sw, 1], rates=[1, 1, 1, 1],
                                       padding=layer.padding.upper())
    patches = np.asarray(patches).reshape(-1, kh * kw * inputs.shape[-1])
    if len(patches) > limit:
        patches = patches[np.random.default_rng(seed).choice(len(patches), limit, replace=False)]
    return patches.astype(np.float64)


def whiten_first_convolution(network: keras.Model, images, *, preprocess=None, seed: int = 0) -> dict:
    """Sets ``network``'s first convolution to whitening filters of ``images``' patches (see the module).

    Args:
        network: a zoo network (``core.model.network_of``).
        images: training images, raw pixels (an array, or rows on disk).
        preprocess: the model's preprocessing layer, applied before the network.
        seed: which images and patches are sampled.

    Returns:
        What was set: the layer's name, its filters, those whitened, and the
        patch size (for the run's summary).

    Raises:
        ValueError: the network has no convolution, or one with dilation or groups.
    """
    layer = first_convolution(network)
    if layer is None:
        raise ValueError(f"--whiten starts a network's first convolution; {network.name} has none")
    if tuple(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1:
        raise ValueError(f"--whiten needs a plain first convolution; {layer.name} is dilated or grouped")
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(images), min(IMAGES, len(images)), replace=False))
    sample = np.asarray(take(images, index), dtype=np.float32)
    if preprocess is not None:
        sample = np.asarray(preprocess(sample))
    seen = sample
    if layer.input is not network.inputs[0]:  # LeNet-5's padding to 32x32, say
        seen = np.asarray(keras.Model(network.inputs, layer.input).predict(sample, batch_size=128, verbose=0),
                          dtype=np.float32)  # float32 whatever the dtype policy
    patches = patches_for(layer, seen, seed=seed)
    kernel = np.asarray(layer.kernel.numpy() if hasattr(layer.kernel, "numpy") else layer.kernel)
    kh, kw, channels, count = kernel.shape
    whitened = min(count, 2 * patches.shape[1])
    kernel[..., :whitened] = whitening_filters(patches, whitened).reshape(kh, kw, channels, whitened)
    layer.kernel.assign(kernel.astype(layer.kernel.dtype))
    if layer.use_bias:
        layer.bias.assign(np.zeros(layer.bias.shape, dtype=layer.bias.dtype))
    return {"layer": layer.name, "filters": int(count), "whitened": int(whitened),
            "patch": int(patches.shape[1])}
