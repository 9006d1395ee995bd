"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning
applied to document recognition", Proc. IEEE 86(11)).

The classic network follows Section II.B of the paper: 32x32 input, C1 6@5x5,
S2 trainable 2x2 subsampling, C3 16@5x5 with the partial connection table of
Table I, S4, C5 120@5x5, F6 84, and a Euclidean RBF output layer, all squashed
by ``1.7159 tanh(2/3 a)``.  That gives the paper's 60,840 trainable
parameters (the "60,000" of its text).  Many libraries instead use plain
average pooling, fully connected C3 and a dense softmax output (61,706
parameters); ``lenet5_modern`` is that network with ReLU and max pooling.

Inputs smaller than 32x32 are brought to 32x32 inside the model: 24 pixels or
more are zero-padded (the paper padded 28x28 MNIST digits to 32x32), smaller
ones are enlarged to 24x24 first, so they keep a margin too.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from zoo._layers import LayerKit, head, pool2d, scaled
from zoo.registry import Variant

# The paper's widths: C1, C3 and C5 maps, F6 units.
PAPER_FILTERS = (6, 16, 120, 84)

# Table I of the paper: which S2 maps (rows) feed each C3 map (columns).
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


@keras.saving.register_keras_serializable(package="zoo")
class Subsampling(layers.Layer):
    """S2/S4 of LeNet-5: the sum of each 2x2 window times a trainable
    per-map coefficient, plus a trainable per-map bias."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.coefficient = self.add_weight(name="coefficient", shape=(channels,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

    def call(self, x):
        summed = ops.average_pool(x, pool_size=2, strides=2, padding="valid") * 4.0
        return summed * self.coefficient + self.bias


@keras.saving.register_keras_serializable(package="zoo")
class ConnectedConv2D(layers.Layer):
    """A 'valid' convolution in which output map ``j`` sees only the input maps
    listed in ``table[j]`` (C3 of LeNet-5).

    Only the connected kernels are weights (1,516 for Table I, as in the
    paper); each call scatters them into a dense kernel with zeros elsewhere,
    so the layer runs as one convolution instead of sixteen small ones.
    """

    def __init__(self, table, kernel_size=5, kernel_initializer="lecun_normal", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.table = tuple(tuple(int(i) for i in row) for row in table)
        self.kernel_size = int(kernel_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        channels, k = int(input_shape[-1]), self.kernel_size
        connections = [(i, j) for j, row in enumerate(self.table) for i in row]
        # Position of each (input, output) pair in the packed weights; the extra last slot holds a zero.
        index = np.full((channels, len(self.table)), len(connections), dtype="int32")
        for n, (i, j) in enumerate(connections):
            index[i, j] = n
        self._index = index.reshape(-1)
        self.kernel = self.add_weight(name="kernel", shape=(k, k, len(connections)),
                                      initializer=self._fan_in_initializer(), regularizer=self.kernel_regularizer)
        self.bias = self.add_weight(name="bias", shape=(len(self.table),), initializer="zeros")
        self._dense_shape = (k, k, channels, len(self.table))

    def _fan_in_initializer(self):
        # Packed weights hide the fan-in from Keras; scale as a conv with the table's mean fan-in would.
        mean_inputs = float(np.mean([len(row) for row in self.table]))
        base = self.kernel_initializer

        def init(shape, dtype=None):
            k = self.kernel_size
            return base((k, k, int(round(mean_inputs)), shape[-1]), dtype=dtype)[:, :, 0, :]
        return init

    def call(self, x):
        k = self.kernel_size
        packed = ops.concatenate([self.kernel, ops.zeros((k, k, 1), dtype=self.kernel.dtype)], axis=-1)
        dense = ops.reshape(ops.take(packed, self._index, axis=-1), self._dense_shape)
        return ops.conv(x, dense, padding="valid") + self.bias

    def get_config(self):
        return {**super().get_config(), "table": self.table, "kernel_size": self.kernel_size,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}


@keras.saving.register_keras_serializable(package="zoo")
class EuclideanRBF(layers.Layer):
    """LeNet-5's output layer: ``y_i = -||x - w_i||^2`` (negated so that the
    nearest prototype gets the largest logit, ready for softmax)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        # The paper fixed the prototypes to +-1 bitmaps; random +-1 codes play that role here.
        self.prototypes = self.add_weight(name="prototypes", shape=(input_shape[-1], self.units),
                                          initializer=keras.initializers.RandomUniform(-1.0, 1.0))

    def call(self, x):
        x2 = ops.sum(ops.square(x), axis=-1, keepdims=True)
        w2 = ops.sum(ops.square(self.prototypes), axis=0, keepdims=True)
        return -(x2 - 2.0 * ops.matmul(x, self.prototypes) + w2)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


# The paper centres MNIST's 28x28 images in a 32x32 field so that "distinctive features such as stroke end-points
# or corners can appear in the center of the receptive field of the highest-level feature detectors".  Inputs
# smaller than 24x24 (scikit-learn's 8x8 digits) are enlarged to 24x24 and get the same 4-pixel margin: stretched
# over the whole field, their strokes touched its edge, and digits scored 0.980 instead of 0.983 (seeds 0-2).
SMALL_INPUT_SIZE = 24


def _to_32(x, height, width):
    if height == width == 32:
        return x
    if height < SMALL_INPUT_SIZE or width < SMALL_INPUT_SIZE:
        x = layers.Resizing(SMALL_INPUT_SIZE, SMALL_INPUT_SIZE, name="resize_to_24")(x)
        height = width = SMALL_INPUT_SIZE
    if height <= 32 and width <= 32:
        top, left = (32 - height) // 2, (32 - width) // 2
        return layers.ZeroPadding2D(((top, 32 - height - top), (left, 32 - width - left)), name="pad_to_32")(x)
    if height < 32 or width < 32:
        return layers.Resizing(32, 32, name="resize_to_32")(x)
    return x  # larger inputs keep their size; C5 then sees more than 1x1


def lenet5(
    input_shape,
    num_classes,
    *,
    include_top=True,
    pooling=None,
    dropout=0.0,
    batch_norm=False,
    activation="scaled_tanh",
    kernel_initializer="lecun",
    l1=0.0,
    l2=0.0,
    width=1.0,
    filters=PAPER_FILTERS,
    subsampling="trainable",
    connection_table=None,
    output="rbf",
    name="lenet5",
):
    """Builds LeNet-5.

    Args:
        input_shape: (H, W, C); any channel count, small inputs are brought to 32x32.
        num_classes: outputs of the classifier.
        include_top: False ends at C5's feature map (for transfer learning).
        pooling: with ``include_top=False``: None, "avg" or "max" global pooling.
        dropout: rate before the output layer.
        batch_norm: batch normalization after C1, C3 and C5.
        activation: squashing function; the paper's is "scaled_tanh".
        kernel_initializer, l1, l2: kernel initializer and weight penalties.
        width: multiplier on every layer's width (``filters``).
        filters: C1, C3 and C5 maps and F6 units, (6, 16, 120, 84) in the
            paper.  One layer can be set apart from the others: a CPU trains a
            C1 of 16 maps 1.4x as fast as one of 18 (3x the paper's), because
            batch norm's fused kernel takes multiples of 16 channels
            (``zoo._layers.BatchNormalization``).
        subsampling: "trainable" (the paper's S2/S4), "avg" or "max" pooling.
        connection_table: C3 with the paper's Table I (needs ``width=1``); None, the
            default, uses it at the paper's widths and full connections at any other
            (Table I is defined for 6 and 16 maps), so every width builds.
        output: "rbf" (the paper's Euclidean RBF units) or "dense" (softmax layer).
        name: model name.

    Examples:
        >>> from zoo.lenet import lenet5
        >>> model = lenet5((32, 32, 1), 10)
        >>> model.count_params()  # the paper's 60,840 trainable parameters
        60840
        >>> modern = lenet5((32, 32, 1), 10, activation="relu", subsampling="max", connection_table=False,
        ...                 output="dense", kernel_initializer="he")  # zoo.build("lenet5_modern")
        >>> modern.count_params()
        61706
    """
    filters = tuple(int(f) for f in filters)
    if len(filters) != 4 or min(filters) < 1:
        raise ValueError(f"filters must be 4 positive counts (C1, C3, C5 maps and F6 units), got {filters!r}")
    c1, c3, c5, f6 = (scaled(f, width) for f in filters)
    if connection_table is None:
        connection_table = (c1, c3) == PAPER_FILTERS[:2]
    if connection_table and (c1, c3) != PAPER_FILTERS[:2]:
        raise ValueError("connection_table=True needs width=1 and the paper's filters "
                         "(Table I is defined for 6 and 16 maps)")
    if output not in ("rbf", "dense"):
        raise ValueError(f"Unknown output {output!r} (valid: rbf, dense)")
    if subsampling not in ("trainable", "avg", "max"):
        raise ValueError(f"Unknown subsampling {subsampling!r} (valid: trainable, avg, max)")
    kit = LayerKit(activation=activation, batch_norm=batch_norm, kernel_initializer=kernel_initializer, l1=l1, l2=l2)

    def subsample(x, label):
        if subsampling == "trainable":
            x = Subsampling(name=f"{label}_subsample")(x)
            return kit.act(x, name=f"{label}_act")
        return pool2d(subsampling, 2, name=f"{label}_pool")(x)

    inputs = keras.Input(shape=input_shape, name="image")
    x = _to_32(inputs, input_shape[0], input_shape[1])
    x = kit.conv(x, c1, 5, padding="valid", use_bias=True, name="c1_conv")
    x = kit.act(kit.bn(x, name="c1_bn"), name="c1_act")
    x = subsample(x, "s2")
    if connection_table:
        x = ConnectedConv2D(C3_TABLE, 5, kernel_initializer=kit.initializer, kernel_regularizer=kit.regularizer,
                            name="c3_conv")(x)
    else:
        x = kit.conv(x, c3, 5, padding="valid", use_bias=True, name="c3_conv")
    x = kit.act(kit.bn(x, name="c3_bn"), name="c3_act")
    x = subsample(x, "s4")
    x = kit.conv(x, c5, 5, padding="valid", use_bias=True, name="c5_conv")
    x = kit.act(kit.bn(x, name="c5_bn"), name="c5_act")
    if not include_top:
        return keras.Model(inputs, head(x, num_classes, include_top=False, pooling=pooling, dropout=0, kit=kit),
                           name=name)
    x = layers.Flatten(name="flatten")(x)
    x = kit.act(kit.dense(x, f6, name="f6_dense"), name="f6_act")
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    if output == "rbf":
        x = EuclideanRBF(num_classes, name="rbf")(x)
        outputs = layers.Activation("softmax", name="predictions", dtype="float32")(x)  # see LayerKit.dense
    else:
        outputs = kit.dense(x, num_classes, activation="softmax", name="predictions")
    return keras.Model(inputs, outputs, name=name)


_PAPER = "LeCun et al. 1998"
_MODERN = dict(activation="relu", subsampling="max", connection_table=False, output="dense", kernel_initializer="he")

VARIANTS = (
    Variant("lenet5", lenet5, "LeNet-5 as published: scaled tanh, trainable subsampling, C3 table, RBF output",
            _PAPER, (32, 32, 1)),
    Variant("lenet5_modern", lenet5, "LeNet-5 with ReLU, max pooling, full C3 and a softmax output",
            _PAPER, (32, 32, 1), _MODERN),
)
