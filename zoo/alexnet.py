"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with
Deep Convolutional Neural Networks", NeurIPS) and the small AlexNet used on
CIFAR-10 by Zhang et al. 2017 ("Understanding deep learning requires
rethinking generalization", Appendix A).

``alexnet`` follows Section 3 and Fig. 2 of the paper: five ReLU convolutions
(96 11x11/4, 256 5x5, 384 3x3, 384 3x3, 256 3x3), local response
normalization (k=2, n=5, alpha=1e-4, beta=0.75) after the first two,
overlapping 3x3/2 max pools after the two LRNs and the fifth convolution, then
fully connected layers of 4096, 4096 and ``num_classes`` units with dropout 0.5
on the first two.  The paper's two-GPU split is reproduced with grouped
convolutions (``groups=2`` on conv2, conv4 and conv5, whose kernels only see
the maps on their own GPU): 60,965,224 parameters at 1000 classes, the
paper's "60 million".  ``grouped=False`` is the one-tower network (62,378,344).

Input size: the paper's text says 224x224, but an 11x11 stride-4 convolution
without padding maps 224 to 54.25, not the 55 of Fig. 2; 227x227 gives exactly
55x55x96, then 27, 13 and a 6x6x256 map (9216 inputs to fc6).  We use 227x227
and no padding on conv1, "same" padding on conv2-5 (as the paper's map sizes
need) and unpadded pools.  Other sizes of at least 67x67 work (fc6 is sized
to whatever map they give: 224 gives 5x5x256); smaller ones leave nothing for
the third pool and are rejected.

The paper initialised weights from N(0, 0.01) and some biases to 1 to get
ReLUs started; we default to He initialization, which trains without that.
"""

from __future__ import annotations

import collections

import keras
from keras import layers

from zoo._layers import LayerKit, _unknown, check_rate, head, pool2d, scaled
from zoo.inception import LocalResponseNormalization
from zoo.registry import Variant

Conv = collections.namedtuple("Conv", "filters kernel stride split")

# Section 3.5 / Fig. 2.  ``split``: the layer only sees maps on its own GPU.
ALEXNET_CONVS = (
    Conv(96, 11, 4, split=False),
    Conv(256, 5, 1, split=True),
    Conv(384, 3, 1, split=False),  # conv3 takes input from both GPUs
    Conv(384, 3, 1, split=True),
    Conv(256, 3, 1, split=True),
)
ALEXNET_LRN_AFTER = (1, 2)  # conv indices followed by LRN, then a max pool
ALEXNET_POOL_AFTER = (1, 2, 5)
ALEXNET_FC = (4096, 4096)
ALEXNET_MIN_INPUT = 67  # 11x11/4 then three unpadded 3x3/2 pools need 67 pixels for a 1x1 map

# Zhang et al.'s small AlexNet: two (5x5 conv -> 3x3/2 max pool -> LRN) modules
# and fully connected layers of 384 and 192 units (the TensorFlow CIFAR-10 tutorial model).
SMALL_CONVS = (64, 64)
SMALL_FC = (384, 192)

NORMALIZATIONS = ("lrn", "batch_norm", None)


def _paper_lrn(name):
    return LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, name=name)


def _tutorial_lrn(name):
    # The TensorFlow CIFAR-10 tutorial's norm1/norm2, which the small AlexNet inherits.
    return LocalResponseNormalization(depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, name=name)


def _resolve(normalization, batch_norm):
    if normalization not in NORMALIZATIONS:
        raise _unknown("normalization", normalization, NORMALIZATIONS)
    return "batch_norm" if batch_norm else normalization


def _fully_connected(x, units, dropout, kit, first):
    """Flatten, then ReLU dense layers ``fc{first}``, ``fc{first+1}``..., each followed by dropout."""
    x = layers.Flatten(name="flatten")(x)
    for i, n in enumerate(units, start=first):
        x = kit.act(kit.dense(x, n, name=f"fc{i}_dense"), name=f"fc{i}_act")
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return x


def alexnet(
    input_shape,
    num_classes,
    *,
    include_top=True,
    pooling=None,
    dropout=0.5,
    batch_norm=False,
    activation="relu",
    kernel_initializer="he",
    l1=0.0,
    l2=0.0,
    width=1.0,
    normalization="lrn",
    grouped=True,
    name="alexnet",
):
    """Builds AlexNet (Krizhevsky et al. 2012).

    Args:
        input_shape: (H, W, C); the paper's is (227, 227, 3), at least 67x67.
        num_classes: outputs of the classifier.
        include_top: False ends at pool5's 6x6x256 map (at 227x227).
        pooling: with ``include_top=False``: None, "avg" or "max" global pooling.
        dropout: rate after fc6 and fc7 (paper: 0.5).
        batch_norm: shorthand for ``normalization="batch_norm"``; overrides it.
        activation: the paper's is "relu".
        kernel_initializer, l1, l2: kernel initializer and weight penalties.
        width: multiplier on every conv and hidden FC width (kept even when grouped).
        normalization: "lrn" (paper: after conv1 and conv2), "batch_norm"
            (after every convolution) or None.
        grouped: the two-GPU split, ``groups=2`` on conv2, conv4 and conv5.
        name: model name.

    Examples:
        >>> from zoo.alexnet import alexnet
        >>> model = alexnet((227, 227, 3), 1000)
        >>> model.count_params()  # the two-GPU split kept as grouped convolutions
        60965224
    """
    norm = _resolve(normalization, batch_norm)
    if len(input_shape) != 3 or min(input_shape[:2]) < ALEXNET_MIN_INPUT:
        raise ValueError(f"alexnet needs input_shape (H, W, C) of at least "
                         f"{ALEXNET_MIN_INPUT}x{ALEXNET_MIN_INPUT}, got {input_shape!r}")
    check_rate("dropout", dropout)
    kit = LayerKit(activation=activation, batch_norm=norm == "batch_norm", kernel_initializer=kernel_initializer,
                   l1=l1, l2=l2)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, spec in enumerate(ALEXNET_CONVS, start=1):
        filters = scaled(spec.filters, width)
        filters += filters % 2 if grouped else 0  # both towers need the same number of maps
        # Only conv1 is unpadded (227 -> 55); the later map sizes need "same" padding.
        padding = "valid" if spec.stride > 1 else "same"
        x = kit.conv(x, filters, spec.kernel, spec.stride, padding=padding, groups=2 if grouped and spec.split else 1,
                     name=f"conv{i}_conv")
        x = kit.act(kit.bn(x, name=f"conv{i}_bn"), name=f"conv{i}_act")
        if norm == "lrn" and i in ALEXNET_LRN_AFTER:
            x = _paper_lrn(f"conv{i}_lrn")(x)
        if i in ALEXNET_POOL_AFTER:
            x = pool2d("max", 3, 2, name=f"pool{i}")(x)
    if not include_top:
        return keras.Model(inputs, head(x, num_classes, include_top=False, pooling=pooling, dropout=0, kit=kit),
                           name=name)
    x = _fully_connected(x, [scaled(n, width) for n in ALEXNET_FC], dropout, kit, first=6)
    outputs = kit.dense(x, num_classes, activation="softmax", name="predictions")
    return keras.Model(inputs, outputs, name=name)


def alexnet_small(
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
    normalization="lrn",
    name="alexnet_small",
):
    """Builds the small AlexNet of Zhang et al. 2017 for 32x32-ish images.

    Two (conv 5x5 64 -> max pool 3x3/2 -> LRN) modules, fully connected ReLU
    layers of 384 and 192 units and a softmax layer.  Convolutions and pools
    use "same" padding, so any input size works; at the paper's 28x28 CIFAR
    crops it has 1,387,786 parameters (10 classes), at 32x32 1,756,426.

    Args:
        input_shape: (H, W, C), e.g. (32, 32, 3).
        num_classes: outputs of the classifier.
        include_top: False ends at the second module's map.
        pooling: with ``include_top=False``: None, "avg" or "max" global pooling.
        dropout: rate after each hidden FC layer (the paper used none).
        batch_norm: shorthand for ``normalization="batch_norm"``; overrides it.
        activation, kernel_initializer, l1, l2: as for every zoo builder.
        width: multiplier on the conv and hidden FC widths.
        normalization: "lrn" (paper), "batch_norm" or None.
        name: model name.

    Examples:
        >>> from zoo.alexnet import alexnet_small
        >>> model = alexnet_small((32, 32, 3), 10)
        >>> model.output.shape
        (None, 10)
        >>> alexnet_small((32, 32, 3), 10, include_top=False, pooling="avg").output.shape
        (None, 64)
    """
    norm = _resolve(normalization, batch_norm)
    if len(input_shape) != 3:
        raise ValueError(f"alexnet_small needs input_shape (H, W, C), got {input_shape!r}")
    check_rate("dropout", dropout)
    kit = LayerKit(activation=activation, batch_norm=norm == "batch_norm", kernel_initializer=kernel_initializer,
                   l1=l1, l2=l2)

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, filters in enumerate(SMALL_CONVS, start=1):
        x = kit.conv(x, scaled(filters, width), 5, name=f"conv{i}_conv")
        x = kit.act(kit.bn(x, name=f"conv{i}_bn"), name=f"conv{i}_act")
        x = pool2d("max", 3, 2, padding="same", name=f"pool{i}")(x)
        if norm == "lrn":
            x = _tutorial_lrn(f"pool{i}_lrn")(x)
    if not include_top:
        return keras.Model(inputs, head(x, num_classes, include_top=False, pooling=pooling, dropout=0, kit=kit),
                           name=name)
    x = _fully_connected(x, [scaled(n, width) for n in SMALL_FC], dropout, kit, first=3)
    outputs = kit.dense(x, num_classes, activation="softmax", name="predictions")
    return keras.Model(inputs, outputs, name=name)


_PAPER = "Krizhevsky et al. 2012"

VARIANTS = (
    Variant("alexnet", alexnet, "AlexNet with LRN, overlapping pools and the two-GPU split as grouped convs",
            _PAPER, (227, 227, 3)),
    Variant("alexnet_small", alexnet_small, "Small AlexNet for 32x32 images: two 5x5 conv/pool/LRN modules, FC 384-192",
            "Zhang et al. 2017", (32, 32, 3)),
)
