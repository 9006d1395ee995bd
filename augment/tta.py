"""Test-time augmentation: average a model's class probabilities over
several views of each image.

Modes:
    none: the images as they are (the same as plain prediction).
    flip: the images and their left-right mirrors (2 views).
    ten_crop: AlexNet's ten crops (Krizhevsky et al. 2012, Section 4.1): four
        corners and the centre, and their mirrors.  AlexNet cut 224 crops
        from 256 images; here the image is zero-padded by ``padding`` pixels
        (side/8 by default, the padding of the "standard" training crop) and
        the crops have the model's input size, so every view matches what
        the network saw in training without resizing.  The centre crop is
        the original image.
    shift: the ten crops with one pixel of padding: the image, its four
        diagonal one-pixel shifts and their mirrors.  Small images trained
        with small crops (``light``) are better served by one-pixel
        translations, the test-time augmentation of fast CIFAR-10 training
        (airbench), than by side/8: on Fashion-MNIST one 10-minute run of
        ``recipes/fashion_mnist/lenet5_modern-10min.json`` scored 0.9329 with
        flip, 0.9341 with ten crops at 2 px and 0.9366 with these.

With ``flips=False`` (digits, text) mirrored views are left out: "flip"
becomes plain prediction, "ten_crop" and "shift" five crops.
"""

from __future__ import annotations

import functools

import numpy as np

from core.rows import predict

MODES = ("none", "flip", "ten_crop", "shift")
CROP_PADDING = {"ten_crop": None, "shift": 1}  # the crop modes' padding; None: side/8


def _mirror(images):
    return images[:, :, ::-1, :]


def views(images, mode: str = "flip", *, flips: bool = True, padding: int | None = None) -> list[np.ndarray]:
    """The list of (N, H, W, C) float32 arrays ``predict_tta`` averages over."""
    if mode not in MODES:
        raise ValueError(f"Unknown TTA mode {mode!r} (valid: {', '.join(MODES)})")
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"TTA needs a batch of images (N, H, W, C); got shape {images.shape}")
    if mode == "none":
        return [images]
    if mode == "flip":
        return [images, _mirror(images)] if flips else [images]
    height, width = images.shape[1:3]
    padding = CROP_PADDING[mode] if padding is None else padding
    pad = max(1, min(height, width) // 8) if padding is None else int(padding)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    corners = [(0, 0), (0, 2 * pad), (2 * pad, 0), (2 * pad, 2 * pad), (pad, pad)]
    crops = [padded[:, top:top + height, left:left + width, :] for top, left in corners]
    return crops + [_mirror(crop) for crop in crops] if flips else crops


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _as_probabilities(outputs, from_logits):
    if from_logits is None:
        # A softmax head gives rows in [0, 1] summing to 1; anything else is logits.
        from_logits = bool(outputs.min() < 0 or outputs.max() > 1
                           or not np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))
    return _softmax(outputs) if from_logits else outputs


def predict_tta(model, images, mode: str = "flip", *, batch_size: int = 256, flips: bool = True,
                padding: int | None = None, from_logits: bool | None = None) -> np.ndarray:
    """Class probabilities averaged over the views of ``mode``.

    Args:
        model: a Keras model taking raw-pixel images (an assembled or an
            inference model).
        images: (N, H, W, C) raw pixels.
        mode: one of ``MODES`` (see the module docstring).
        batch_size: prediction batch size.
        flips: False leaves out mirrored views.
        padding: zero padding for the crop modes (default: side/8 for "ten_crop", 1 for "shift").
        from_logits: whether the model outputs logits; None decides from
            the outputs (rows that are not probability distributions).

    Returns:
        (N, num_classes) float32 probabilities; rows sum to 1.

    Examples:
        >>> import augment, keras, numpy as np
        >>> model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
        ...                           keras.layers.Dense(5, activation="softmax")])
        >>> images = np.zeros((6, 32, 32, 3), "float32")
        >>> augment.predict_tta(model, images, mode="flip").shape  # each image and its mirror, averaged
        (6, 5)
    """
    images = images if hasattr(images, "shape") else np.asarray(images)
    count = _view_count(images.shape[1:], mode, flips)  # a bad mode or shape fails here, before predicting
    total = None
    for view in range(count):
        # One view of a chunk at a time (core.rows.predict): the split is never held as float32, let alone x10.
        pick = functools.partial(_view, view=view, mode=mode, flips=flips, padding=padding)
        outputs = np.asarray(predict(model, images, batch_size, transform=pick), dtype=np.float64)
        probabilities = _as_probabilities(outputs, from_logits)
        total = probabilities if total is None else total + probabilities
    return (total / count).astype(np.float32)


def _view_count(row_shape, mode: str, flips: bool) -> int:
    return len(views(np.zeros((1, *row_shape), np.float32), mode, flips=flips, padding=1))


def _view(chunk, *, view: int, mode: str, flips: bool, padding):
    return views(chunk, mode, flips=flips, padding=padding)[view]
