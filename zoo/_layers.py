"""Shared building blocks for the zoo: option parsing and a small layer kit.

Every architecture family takes the same options (activation, batch norm,
initializer, weight penalties).  ``LayerKit`` turns those options into layers
once, so a block function only says *what* it stacks, not how each layer is
configured.
"""

from __future__ import annotations

import difflib

import keras
from keras import layers

from core import compat

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid", "swish", "scaled_tanh")

# Friendly aliases users type for the usual initializer families.
INITIALIZERS = {
    "he": "he_normal",
    "he_normal": "he_normal",
    "he_uniform": "he_uniform",
    "kaiming": "he_normal",
    "glorot": "glorot_uniform",
    "xavier": "glorot_uniform",
    "glorot_uniform": "glorot_uniform",
    "glorot_normal": "glorot_normal",
    "lecun": "lecun_normal",
    "lecun_normal": "lecun_normal",
    "lecun_uniform": "lecun_uniform",
    "orthogonal": "orthogonal",
    "truncated_normal": "truncated_normal",
}

POOLINGS = (None, "avg", "max")


def _unknown(kind: str, value, valid) -> ValueError:
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"Unknown {kind} {value!r}{hint} (valid: {', '.join(str(v) for v in valid)})")


def check_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise _unknown("activation", name, ACTIVATIONS)
    return name


def resolve_initializer(name: str) -> str:
    if name not in INITIALIZERS:
        raise _unknown("kernel initializer", name, sorted(INITIALIZERS))
    return INITIALIZERS[name]


def check_pooling(pooling):
    if pooling not in POOLINGS:
        raise _unknown("pooling", pooling, POOLINGS)
    return pooling


def check_rate(name: str, value: float) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="zoo")
class ScaledTanh(layers.Layer):
    """LeCun's squashing function ``1.7159 * tanh(2/3 * x)`` (LeCun et al. 1998, App. A)."""

    def call(self, x):
        return 1.7159 * keras.ops.tanh(x * (2.0 / 3.0))


class BatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, trained with TensorFlow's fused kernel where that kernel is faster.

    Named as Keras' own on purpose: a ``.keras`` file stores a layer's weights
    under its class's name, so weights and checkpoints saved before and after
    this class load into each other.

    The same layer, variables and results (outputs within float rounding, the
    same moving averages); only the training step of a convolution's output
    with a multiple of 16 channels runs as one ``FusedBatchNormV3`` op instead
    of Keras' moments, normalization and moving-average updates: about twice
    as fast forward and back on this toolkit's CPUs, and ResNet-20's training
    step 1.4x as fast.  Measured with other channel counts (LeNet-5's 18 at 3x
    width) it was almost three times slower, so those layers, dense layers,
    inference, frozen layers, masks and renorm all take Keras' own path.  Saved models
    name the layer ``keras.layers.BatchNormalization`` (``core.compat.serialize_as``),
    so they load with Keras' own layer, as they did before this class.
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=tf.cast(inputs, "float32"), scale=self.gamma if self.scale else tf.ones_like(self.moving_mean),
            offset=self.beta if self.center else tf.zeros_like(self.moving_mean), mean=tf.zeros([0]),
            variance=tf.zeros([0]), epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        # The kernel's variance is the unbiased one; Keras averages the batch's own (biased) variance.
        count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], "float32")
        variance = variance * tf.maximum(count - 1.0, 0.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)

    def _fused(self, inputs, training, mask) -> bool:
        rank = len(inputs.shape)
        return (bool(training) and self.trainable and mask is None and keras.backend.backend() == "tensorflow"
                and rank == 4 and self.axis in (-1, rank - 1) and inputs.shape[-1] is not None
                and inputs.shape[-1] % 16 == 0 and not self.synchronized and not self.renorm)


compat.serialize_as(BatchNormalization, layers.BatchNormalization)


class LayerKit:
    """Makes conv/dense/norm/activation layers with one family-wide configuration.

    Args:
        activation: one of ``ACTIVATIONS``.
        batch_norm: insert BatchNormalization after convolutions (and drop
            their bias, which batch norm makes redundant).
        kernel_initializer: a key of ``INITIALIZERS``.
        l1, l2: weight penalties on every kernel.
    """

    def __init__(self, *, activation="relu", batch_norm=True, kernel_initializer="he", l1=0.0, l2=0.0):
        self.activation = check_activation(activation)
        self.batch_norm = bool(batch_norm)
        self.initializer = resolve_initializer(kernel_initializer)
        if l1 < 0 or l2 < 0:
            raise ValueError(f"weight penalties must be >= 0, got l1={l1!r}, l2={l2!r}")
        self.regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None

    def _kernel_args(self):
        return dict(kernel_initializer=self.initializer, kernel_regularizer=self.regularizer)

    def conv(self, x, filters, kernel_size, strides=1, *, name, padding="same", use_bias=None, groups=1):
        if use_bias is None:
            use_bias = not self.batch_norm
        return layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
            groups=groups, name=name, **self._kernel_args(),
        )(x)

    def dense(self, x, units, *, name, activation=None, use_bias=True):
        # A softmax output computes in float32 under a mixed policy, as Keras' mixed-precision guide asks: in
        # bfloat16 the probabilities are rounded to three digits and sum to 1 only within about 1%.
        dtype = "float32" if activation == "softmax" else None
        return layers.Dense(units, activation=activation, use_bias=use_bias, name=name, dtype=dtype,
                            **self._kernel_args())(x)

    def bn(self, x, *, name):
        # Epsilon and momentum as in keras.applications, so imported weights behave alike.
        return BatchNormalization(epsilon=1.001e-5, name=name)(x) if self.batch_norm else x

    def act(self, x, *, name, activation=None):
        activation = activation or self.activation
        if activation == "scaled_tanh":
            return ScaledTanh(name=name)(x)
        if activation == "leaky_relu":
            return layers.LeakyReLU(negative_slope=0.1, name=name)(x)
        return layers.Activation(activation, name=name)(x)

    def conv_bn_act(self, x, filters, kernel_size, strides=1, *, name, padding="same"):
        x = self.conv(x, filters, kernel_size, strides, name=f"{name}_conv", padding=padding)
        x = self.bn(x, name=f"{name}_bn")
        return self.act(x, name=f"{name}_act")


def pool2d(kind: str, pool_size, strides=None, *, name, padding="valid"):
    """A spatial pooling layer of ``kind`` ("max" or "avg")."""
    if kind == "max":
        return layers.MaxPooling2D(pool_size, strides=strides, padding=padding, name=name)
    if kind == "avg":
        return layers.AveragePooling2D(pool_size, strides=strides, padding=padding, name=name)
    raise _unknown("pooling type", kind, ("max", "avg"))


def head(x, num_classes, *, include_top, pooling, dropout, kit: LayerKit, classifier_activation="softmax"):
    """Global pooling + dropout + classifier, or the pooled/unpooled features.

    With ``include_top=False`` the model ends at the features (for transfer
    learning); ``pooling`` then picks None (the 4-D map), "avg" or "max".
    """
    check_pooling(pooling)
    if not include_top:
        if pooling == "avg":
            return layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if pooling == "max":
            return layers.GlobalMaxPooling2D(name="max_pool")(x)
        return x
    if len(x.shape) == 4:
        x = (layers.GlobalMaxPooling2D if pooling == "max" else layers.GlobalAveragePooling2D)(name="global_pool")(x)
    if dropout:
        x = layers.Dropout(check_rate("dropout", dropout), name="head_dropout")(x)
    return kit.dense(x, num_classes, activation=classifier_activation, name="predictions")


def scaled(filters: int, width: float) -> int:
    """Filters scaled by a width multiplier, at least 1, kept divisible where it was."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(1, int(round(filters * width)))
