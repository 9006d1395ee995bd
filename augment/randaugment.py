"""RandAugment (Cubuk, Zoph, Shlens & Le 2019, "RandAugment: Practical
automated data augmentation with a reduced search space"), vectorized.

Each image gets ``num_ops`` operations drawn uniformly from ``OPS``, all at
one shared ``magnitude`` on the 0-10 scale of the reference implementation
(``_MAX_LEVEL = 10`` in tensorflow/tpu's ``autoaugment.py``).  Operations that
have a direction (rotate, shear, translate, and the enhance factors) pick it
at random per image.  Magnitude maps follow timm's "increasing" variants, so a
larger magnitude always means a stronger change (the reference maps solarize
and posterize the other way round).

Why not ``keras.layers.RandAugment``: called on a batch it draws one list of
operations for the whole batch, so all 128 images of a step get the same
operations, and it evaluates all eleven of its operations on the whole batch
twice.  Here every image draws its own; each round splits the batch by the
op drawn (``tf.dynamic_partition``), applies each op only to its images, the
geometric ones in one shared resampling, and stitches the batch back.  That
makes the layer TensorFlow-specific, like the toolkit itself.
"""

from __future__ import annotations

import difflib
import math

import keras
import tensorflow as tf
from keras import ops

from augment.layers import RandomImageLayer, _static_size

MAX_LEVEL = 10.0

GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# The paper's fourteen operations.
OPS = ("identity", "auto_contrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
       "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")

_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL's convert("L").


def _per_image(value):
    return value[:, None, None, None]


def _grey(images):
    if images.shape[-1] == 1:
        return images
    return ops.sum(images * ops.convert_to_tensor(_GREY, images.dtype), axis=-1, keepdims=True)


def _blend(degenerate, images, factor):
    """PIL's ImageEnhance: factor 0 gives ``degenerate``, 1 the image."""
    return ops.clip(degenerate + _per_image(factor) * (images - degenerate), 0.0, 255.0)


def _sharpen_degenerate(images):
    """PIL's SMOOTH filter on the interior, border pixels unchanged."""
    channels = images.shape[-1]
    kernel = ops.convert_to_tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], images.dtype) / 13.0
    kernel = ops.tile(kernel[:, :, None, None], (1, 1, channels, 1))
    smooth = ops.depthwise_conv(images, kernel, padding="same")
    height, width = _static_size(images)
    inside = ops.pad(ops.ones((height - 2, width - 2), "bool"), [[1, 1], [1, 1]], constant_values=False)
    return ops.where(inside[None, :, :, None], smooth, images)


def _auto_contrast(images):
    # tf's reductions: keras.ops.min refuses the empty groups a batch split can give.
    low = tf.reduce_min(images, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(images, axis=(1, 2), keepdims=True)
    scale = 255.0 / ops.maximum(high - low, 1e-3)
    return ops.where(high > low, ops.clip((images - low) * scale, 0.0, 255.0), images)


def _equalize(images):
    """PIL's ImageOps.equalize per image and channel, from one bincount."""
    batch = ops.shape(images)[0]
    channels = images.shape[-1]
    levels = ops.cast(ops.clip(ops.round(images), 0, 255), "int32")
    plane = ops.arange(batch, dtype="int32")[:, None, None, None] * channels + ops.arange(channels, dtype="int32")
    bins = ops.reshape(plane * 256 + levels, (-1,))
    counts = ops.segment_sum(ops.ones_like(bins), bins, num_segments=batch * channels * 256)
    histogram = ops.reshape(counts, (-1, 256))
    # PIL leaves out the count of the brightest level present.
    brightest = 255 - ops.argmax(ops.flip(histogram > 0, axis=1), axis=1)
    last = ops.take_along_axis(histogram, ops.cast(brightest[:, None], "int32"), axis=1)
    step = (ops.sum(histogram, axis=1, keepdims=True) - last) // 255
    below = ops.cumsum(histogram, axis=1) - histogram
    lut = ops.minimum((below + step // 2) // ops.maximum(step, 1), 255)
    lut = ops.where(step > 0, lut, ops.arange(256, dtype="int32")[None, :])
    equalized = ops.take(ops.reshape(lut, (-1,)), bins)
    return ops.reshape(ops.cast(equalized, images.dtype), ops.shape(images))


def _colour_op(name, images, level, sign):
    """``name`` applied to the whole batch; ``sign`` (B,) is +-1 per image."""
    enhance = 1.0 + sign * (level / MAX_LEVEL * 0.9)
    if name == "identity":
        return images
    if name == "auto_contrast":
        return _auto_contrast(images)
    if name == "equalize":
        return _equalize(images)
    if name == "solarize":
        threshold = 256.0 - level / MAX_LEVEL * 256.0
        return ops.where(images >= threshold, 255.0 - images, images)
    if name == "posterize":
        step = 2.0 ** (int(level / MAX_LEVEL * 4))  # 8 bits down to 4
        return ops.floor(images / step) * step
    if name == "color":
        return _blend(ops.broadcast_to(_grey(images), ops.shape(images)), images, enhance)
    if name == "contrast":
        return _blend(ops.mean(_grey(images), axis=(1, 2, 3), keepdims=True), images, enhance)
    if name == "brightness":
        return _blend(ops.zeros_like(images), images, enhance)
    if name == "sharpness":
        return _blend(_sharpen_degenerate(images), images, enhance)
    raise AssertionError(name)


def _geometric_transform(name, level, sign, height, width):
    """(B, 8) projective transforms mapping output pixels to input pixels."""
    amount = sign * (level / MAX_LEVEL)
    one, zero = ops.ones_like(sign), ops.zeros_like(sign)
    if name == "rotate":
        angle = amount * (30.0 * math.pi / 180.0)
        cos, sin = ops.cos(angle), ops.sin(angle)
        cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
        return ops.stack([cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, zero, zero], 1)
    if name == "shear_x":
        return ops.stack([one, amount * 0.3, zero, zero, one, zero, zero, zero], 1)
    if name == "shear_y":
        return ops.stack([one, zero, zero, amount * 0.3, one, zero, zero, zero], 1)
    if name == "translate_x":
        return ops.stack([one, zero, amount * 0.3 * width, zero, one, zero, zero, zero], 1)
    if name == "translate_y":
        return ops.stack([one, zero, zero, zero, one, amount * 0.3 * height, zero, zero], 1)
    raise AssertionError(name)


@keras.saving.register_keras_serializable(package="augment")
class RandAugment(RandomImageLayer):
    """RandAugment with a per-image choice of operations.

    Args:
        num_ops: N, operations applied to each image in sequence.
        magnitude: M on the 0-10 scale (9 is the paper's ImageNet setting).
            At 10: rotate 30 degrees, shear 0.3, translate 30% of the side,
            enhance factors 1 +- 0.9, solarize everything, posterize to 4 bits.
        operations: names from ``OPS`` to draw from (default: all fourteen).
        fill_value: pixel value of areas uncovered by geometric operations
            (128, as the reference implementation).
        seed: integer seed.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> layer = augment.RandAugment(num_ops=2, magnitude=9, seed=0)
        >>> layer(images, training=True).shape
        TensorShape([4, 32, 32, 3])
        >>> bool((layer(images) == images).numpy().all())  # the identity unless training
        True
    """

    def __init__(self, num_ops=2, magnitude=9.0, operations=None, fill_value=128.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if int(num_ops) < 0:
            raise ValueError(f"num_ops must be >= 0, got {num_ops!r}")
        if not 0.0 <= float(magnitude) <= MAX_LEVEL:
            raise ValueError(f"magnitude must be in [0, {MAX_LEVEL:g}], got {magnitude!r}")
        chosen = tuple(operations) if operations is not None else OPS
        for name in chosen:
            if name not in OPS:
                close = difflib.get_close_matches(name, OPS, n=2)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"Unknown RandAugment op {name!r}{hint} (valid: {', '.join(OPS)})")
        if not chosen:
            raise ValueError("RandAugment needs at least one op")
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.operations = chosen
        # All geometric ops share one group (one resampling); each other op is its own.
        keys = ["geometric" if name in GEOMETRIC_OPS else name for name in chosen]
        self._groups = tuple(dict.fromkeys(keys))
        self._group_of_op = tuple(self._groups.index(key) for key in keys)
        self.fill_value = float(fill_value)

    def augment(self, images):
        for _ in range(self.num_ops):
            images = self._one_round(images)
        return images

    def _one_round(self, images):
        height, width = _static_size(images)
        batch = ops.shape(images)[0]
        choice = keras.random.randint((batch,), 0, len(self.operations), seed=self.generator, dtype="int32")
        sign = ops.where(keras.random.uniform((batch,), seed=self.generator) < 0.5, -1.0, 1.0)
        # Images are split by the group of the op they drew, each group is
        # transformed alone, and the results are stitched back in place: a
        # round costs about one op on the whole batch, not one per op.
        count = len(self._groups)
        group = ops.take(ops.convert_to_tensor(self._group_of_op, "int32"), choice)
        positions = tf.dynamic_partition(tf.range(batch), group, count)
        parts = tf.dynamic_partition(images, group, count)
        signs = tf.dynamic_partition(sign, group, count)
        choices = tf.dynamic_partition(choice, group, count)
        outputs = [self._apply_group(name, part, part_sign, part_choice, height, width)
                   for name, part, part_sign, part_choice in zip(self._groups, parts, signs, choices)]
        return tf.ensure_shape(tf.dynamic_stitch(positions, outputs), images.shape)

    def _apply_group(self, group, images, sign, choice, height, width):
        if group != "geometric":
            return _colour_op(group, images, self.magnitude, sign)
        # One resampling for every geometric op: each image's own transform.
        transform = None
        for index, name in enumerate(self.operations):
            if name in GEOMETRIC_OPS:
                candidate = _geometric_transform(name, self.magnitude, sign, height, width)
                transform = candidate if transform is None else ops.where((choice == index)[:, None], candidate,
                                                                          transform)
        return ops.image.affine_transform(images, transform, interpolation="nearest", fill_mode="constant",
                                          fill_value=self.fill_value)

    def get_config(self):
        return {**super().get_config(), "num_ops": self.num_ops, "magnitude": self.magnitude,
                "operations": list(self.operations), "fill_value": self.fill_value}
