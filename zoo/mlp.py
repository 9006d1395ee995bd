"""A multilayer perceptron baseline: the "why convolutions" comparison.

Fully connected networks trained by back-propagation (Rumelhart, Hinton &
Williams 1986, "Learning representations by back-propagating errors", Nature
323) were the baselines LeNet-5 was measured against: LeCun, Bottou, Bengio &
Haffner 1998 (Section III.C, Fig. 9) report 784-300-100-10 ("3-layer NN,
300+100 hidden units", 3.05% MNIST test error), our default, with 266,610
parameters on 28x28 digits.  ``hidden_units=()`` is their linear classifier;
``hidden_units=(512,)`` and ``(512, 512, 512)`` on 28x28x3 inputs are the
"MLP 1x512" (1,209,866 parameters) and "MLP 3x512" (1,735,178) of Zhang et
al. 2017, Table 1.

The image is flattened first, so the network ignores spatial structure: a
pixel permutation fixed across the data set leaves its accuracy unchanged,
which is exactly what a CNN's local, shared weights exploit.  LeCun et al.
used sigmoid-like units; the default here is ReLU, like the other families.
"""

from __future__ import annotations

import keras
from keras import layers

from zoo._layers import LayerKit, check_pooling, check_rate, scaled
from zoo.registry import Variant

LECUN_HIDDEN = (300, 100)  # LeCun et al. 1998, "3-layer NN, 300+100 HU"


def mlp(
    input_shape,
    num_classes,
    *,
    include_top=True,
    pooling=None,
    dropout=0.0,
    batch_norm=False,
    activation="relu",
    kernel_initializer="he",
    l1=0.0,
    l2=0.0,
    width=1.0,
    hidden_units=LECUN_HIDDEN,
    name="mlp",
):
    """Builds Flatten -> hidden dense layers -> softmax.

    Args:
        input_shape: any shape; it is flattened.
        num_classes: outputs of the classifier.
        include_top: False ends at the last hidden layer's activations
            (at the flattened input when there are no hidden layers).
        pooling: accepted for the shared signature and validated, but the
            features are already vectors, so there is nothing to pool.
        dropout: rate on every hidden layer's output.
        batch_norm: batch norm between each hidden dense layer and its activation.
        activation, kernel_initializer, l1, l2: as for every zoo builder.
        width: multiplier on every hidden layer's units.
        hidden_units: the hidden layers' widths, e.g. (300, 100); () for a
            linear (softmax regression) classifier.
        name: model name.

    Examples:
        >>> from zoo.mlp import mlp
        >>> mlp((28, 28, 1), 10).count_params()  # LeCun et al.'s 784-300-100-10
        266610
        >>> mlp((28, 28, 1), 10, hidden_units=()).count_params()  # their linear classifier
        7850
    """
    check_pooling(pooling)
    check_rate("dropout", dropout)
    hidden_units = tuple(hidden_units)
    if not all(isinstance(n, int) and n > 0 for n in hidden_units):
        raise ValueError(f"hidden_units must be positive integers, got {hidden_units!r}")
    kit = LayerKit(activation=activation, batch_norm=batch_norm, kernel_initializer=kernel_initializer, l1=l1, l2=l2)

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden_units, start=1):
        if dropout and i > 1:
            x = layers.Dropout(dropout, name=f"hidden{i - 1}_dropout")(x)
        x = kit.dense(x, scaled(units, width), use_bias=not batch_norm, name=f"hidden{i}_dense")
        x = kit.act(kit.bn(x, name=f"hidden{i}_bn"), name=f"hidden{i}_act")
    if not include_top:
        return keras.Model(inputs, x, name=name)
    if dropout and hidden_units:
        x = layers.Dropout(dropout, name=f"hidden{len(hidden_units)}_dropout")(x)
    outputs = kit.dense(x, num_classes, activation="softmax", name="predictions")
    return keras.Model(inputs, outputs, name=name)


VARIANTS = (
    Variant("mlp", mlp, "Multilayer perceptron baseline, 300-100 hidden ReLU units", "LeCun et al. 1998",
            (28, 28, 1)),
)
