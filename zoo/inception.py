"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going Deeper with
Convolutions", CVPR 2015, arXiv:1409.4842) and a small Inception network for
32x32 images (Zhang, Bengio, Hardt, Recht & Vinyals 2017, "Understanding deep
learning requires rethinking generalization", ICLR, Appendix A / Fig. 3).

``googlenet`` follows Table 1 of the paper: a 7x7/2 stem, max pool, LRN,
1x1 + 3x3 convolutions, LRN, max pool, then nine Inception modules (3a-3b,
4a-4e, 5a-5b) separated by 3x3/2 max pools, average pooling, 40% dropout and
a linear softmax layer.  The module widths are the data in
``GOOGLENET_MODULES``.  All convolutions and pools use "same" padding, which
reproduces the table's 112-56-28-14-7 map sizes from a 224x224 input; the
final 7x7 average pool is a global average pool, identical at 224x224 and
valid at any other input size.  Any input size works (at 32x32 the last stage
sees a 1x1 map); the auxiliary classifiers need at least 65x65 because their
unpadded 5x5/3 pool must fit the 4a/4d map of ceil(H/16) pixels.

Table 1's "params" column is not self-consistent, so do not expect every row
to match.  Counting kernels only, in units of 1024 (the convention under which
conv2, 112.0K, and the linear layer, 1000.0K, come out exact), rows 3a, 3b and
4b agree within 1K and 4a and 4e within 1%, but 4c (497.5K built vs 463K
printed), 4d (590.5K vs 580K), 5a (1018K vs 1072K), 5b (1409K vs 1388K) and
conv1 (7x7x3x64 = 9.2K vs 2.7K) do not.  The "ops" column (kernel weights
times output positions) agrees with the printed widths in every row but conv1
and 5a, so the widths are right and those params entries are slips in the
table.  The params column sums to 6,797.7K (about 6.8M); the network as built
has 6,998,552 parameters (1000 classes, no auxiliary classifiers).

The paper's LRN has no learned parameters; ``LocalResponseNormalization`` wraps
``tf.nn.local_response_normalization`` (AlexNet imports it from here).  The
paper gives no LRN constants for GoogLeNet; we use those of the Caffe reference
model (``bvlc_googlenet``: size 5, alpha 1e-4 over the window, beta 0.75,
k 1).  ``batch_norm=True`` replaces LRN by batch normalization after every
convolution (the Inception v2 recipe); the paper default is no batch norm.

Auxiliary classifiers (Section 5): after 4a and 4d, a 5x5/3 average pool, a
1x1 convolution with 128 filters, a 1024-unit fully connected ReLU layer, 70%
dropout and a linear softmax layer.  During training the paper adds their
losses to the main loss with weight 0.3; at inference they are discarded::

    model = googlenet((224, 224, 3), 1000, aux_classifiers=True)
    model.compile(loss=["sparse_categorical_crossentropy"] * 3, loss_weights=[1.0, 0.3, 0.3])
    deployed = without_aux(model)   # shares the trained weights
"""

from __future__ import annotations

import itertools

import keras
import tensorflow as tf
from keras import layers

from zoo._layers import LayerKit, check_rate, head, pool2d, scaled
from zoo.registry import Variant

# Table 1: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per module.
# The leading digit of a name is its stage; a 3x3/2 max pool separates stages.
GOOGLENET_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
AUX_AFTER = ("4a", "4d")  # Section 5: where the two auxiliary classifiers branch off
AUX_MIN_INPUT = 65  # the 4a map, ceil(H/16), must hold the aux classifiers' 5x5 pool

# The small Inception of Zhang et al. 2017 (Fig. 3): a 3x3 conv with 96 filters,
# then stages of two-branch modules (#1x1, #3x3), each stage but the last ending
# in a downsample module (3x3/2 conv with the given filters || 3x3/2 max pool).
SMALL_STEM = 96
SMALL_STAGES = (
    ((32, 32), (32, 48)),
    ((112, 48), (96, 64), (80, 80), (48, 96)),
    ((176, 160), (176, 160)),
)
SMALL_DOWNSAMPLE = (80, 96)


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(layers.Layer):
    """Local response normalization across channels (Krizhevsky et al. 2012, Sec. 3.3).

    ``b_c = a_c / (bias + alpha * sum_{|c'-c| <= depth_radius} a_c'^2) ** beta``.
    Note that ``alpha`` multiplies the plain sum, as in the AlexNet paper; Caffe
    divides its ``alpha`` by the window size ``2 * depth_radius + 1``.
    """

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, x):
        return tf.nn.local_response_normalization(
            x, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


def _caffe_lrn(name):
    # bvlc_googlenet's norm1/norm2: local_size 5, alpha 1e-4 (divided by 5 in Caffe), beta 0.75, k 1.
    return LocalResponseNormalization(depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75, name=name)


def _inception_module(x, widths, kit, name):
    """Concatenates the four branches of Fig. 2(b): 1x1; 1x1 reduce -> 3x3;
    1x1 reduce -> 5x5; 3x3 max pool -> 1x1 projection.

    A zero width drops that branch (or, for a reduce, feeds the input
    straight to the 3x3/5x5), which also gives the two-branch modules of the
    small network.
    """
    n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_proj = widths
    branches = []
    if n1x1:
        branches.append(kit.conv_bn_act(x, n1x1, 1, name=f"{name}_1x1"))
    for size, reduce, filters in ((3, n3x3red, n3x3), (5, n5x5red, n5x5)):
        if filters:
            y = kit.conv_bn_act(x, reduce, 1, name=f"{name}_{size}x{size}_reduce") if reduce else x
            branches.append(kit.conv_bn_act(y, filters, size, name=f"{name}_{size}x{size}"))
    if pool_proj:
        y = pool2d("max", 3, 1, padding="same", name=f"{name}_pool")(x)
        branches.append(kit.conv_bn_act(y, pool_proj, 1, name=f"{name}_pool_proj"))
    return layers.Concatenate(name=f"{name}_concat")(branches)


def _scaled_widths(widths, width):
    return tuple(scaled(w, width) if w else 0 for w in widths)


def _downsample_module(x, filters, kit, name):
    """Zhang et al.'s downsample module: a 3x3/2 conv beside a 3x3/2 max pool."""
    conv = kit.conv_bn_act(x, filters, 3, 2, name=f"{name}_3x3")
    pool = pool2d("max", 3, 2, padding="same", name=f"{name}_pool")(x)
    return layers.Concatenate(name=f"{name}_concat")([conv, pool])


def _aux_classifier(x, num_classes, kit, width, name):
    """Section 5's side classifier; its output layer is called ``name``."""
    x = pool2d("avg", 5, 3, name=f"{name}_pool")(x)
    x = kit.conv_bn_act(x, scaled(128, width), 1, name=f"{name}_1x1")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = kit.act(kit.dense(x, scaled(1024, width), name=f"{name}_fc_dense"), name=f"{name}_fc_act")
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return kit.dense(x, num_classes, activation="softmax", name=name)


def _check_input(input_shape, family):
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"{family} needs input_shape (H, W, C), got {input_shape!r}")


def googlenet(
    input_shape,
    num_classes,
    *,
    include_top=True,
    pooling=None,
    dropout=0.4,
    batch_norm=False,
    activation="relu",
    kernel_initializer="he",
    l1=0.0,
    l2=0.0,
    width=1.0,
    aux_classifiers=False,
    name="googlenet",
):
    """Builds GoogLeNet (Table 1 of Szegedy et al. 2014).

    Args:
        input_shape: (H, W, C); the paper's is (224, 224, 3), any size works
            (at least 65x65 with ``aux_classifiers``).
        num_classes: outputs of the classifier(s).
        include_top: False ends at inception 5b's 1024-channel map.
        pooling: global pooling of the features, None, "avg" or "max"; with
            ``include_top`` None means the paper's average pool.
        dropout: rate before the linear layer (paper: 0.4).
        batch_norm: batch norm after every convolution instead of the two LRNs.
        activation: the paper's is "relu".
        kernel_initializer, l1, l2: kernel initializer and weight penalties.
        width: multiplier on every convolution's and the aux FC's width.
        aux_classifiers: add Section 5's two side classifiers; the model then
            has outputs ``[predictions, aux1, aux2]`` (weight their losses by
            0.3; drop them for inference with ``without_aux``).
        name: model name.

    Raises:
        ValueError: a bad option, or an input too small for the aux classifiers.

    Examples:
        >>> from zoo.inception import googlenet
        >>> model = googlenet((224, 224, 3), 1000)
        >>> model.get_layer("inception_4a_3x3_conv").filters  # Table 1, row 4a, "#3x3"
        208
    """
    _check_input(input_shape, "googlenet")
    if aux_classifiers and not include_top:
        raise ValueError("aux_classifiers=True needs include_top=True (they are classifiers)")
    if aux_classifiers and min(input_shape[:2]) < AUX_MIN_INPUT:
        raise ValueError(f"aux_classifiers=True needs inputs of at least {AUX_MIN_INPUT}x{AUX_MIN_INPUT} "
                         f"(5x5 pool on the 4a map), got {input_shape!r}")
    check_rate("dropout", dropout)
    kit = LayerKit(activation=activation, batch_norm=batch_norm, kernel_initializer=kernel_initializer, l1=l1, l2=l2)

    def lrn(x, label):
        return x if batch_norm else _caffe_lrn(label)(x)

    inputs = keras.Input(shape=input_shape, name="image")
    x = kit.conv_bn_act(inputs, scaled(64, width), 7, 2, name="conv1_7x7")
    x = lrn(pool2d("max", 3, 2, padding="same", name="pool1")(x), "pool1_lrn")
    x = kit.conv_bn_act(x, scaled(64, width), 1, name="conv2_3x3_reduce")
    x = lrn(kit.conv_bn_act(x, scaled(192, width), 3, name="conv2_3x3"), "conv2_lrn")
    x = pool2d("max", 3, 2, padding="same", name="pool2")(x)
    aux = []
    stages = [(s, list(m)) for s, m in itertools.groupby(GOOGLENET_MODULES, key=lambda m: m[0])]
    for i, (stage, modules) in enumerate(stages):
        if i:
            x = pool2d("max", 3, 2, padding="same", name=f"pool{stage}")(x)
        for module in modules:
            x = _inception_module(x, _scaled_widths(GOOGLENET_MODULES[module], width), kit, f"inception_{module}")
            if aux_classifiers and module in AUX_AFTER:
                aux.append(_aux_classifier(x, num_classes, kit, width, f"aux{len(aux) + 1}"))
    outputs = head(x, num_classes, include_top=include_top, pooling=pooling, dropout=dropout, kit=kit)
    return keras.Model(inputs, [outputs, *aux] if aux else outputs, name=name)


def without_aux(model):
    """The inference network of a GoogLeNet built with ``aux_classifiers``:
    the same layers and weights, only the main ``predictions`` output."""
    return keras.Model(model.input, model.get_layer("predictions").output, name=model.name)


def inception_small(
    input_shape,
    num_classes,
    *,
    include_top=True,
    pooling=None,
    dropout=0.0,
    batch_norm=True,
    activation="relu",
    kernel_initializer="he",
    l1=0.0,
    l2=0.0,
    width=1.0,
    name="inception_small",
):
    """Builds the small Inception of Zhang et al. 2017.

    conv 3x3 96 -> inception (32,32), (32,48) -> downsample 80 -> inception
    (112,48), (96,64), (80,80), (48,96) -> downsample 96 -> inception
    (176,160) x2 -> global average pool -> softmax, every conv followed by
    batch norm and ReLU.  The paper fed 28x28 crops of CIFAR-10 (a final 7x7
    map); 32x32 gives 8x8, and any size works since the pooling is global.
    The paper's 1,649,402 parameters (10 classes) count one shift per conv
    channel (TF's batch norm without scale, or ``batch_norm=False``); Keras
    batch norm also learns a scale, 1,712 more trainable parameters.

    Args:
        input_shape: (H, W, C), e.g. (32, 32, 3).
        num_classes: outputs of the classifier.
        include_top: False ends at the last module's 336-channel map.
        pooling: global pooling of the features, None, "avg" or "max".
        dropout: rate before the classifier (the paper used none).
        batch_norm: batch norm after every convolution (paper: yes).
        activation, kernel_initializer, l1, l2: as for every zoo builder.
        width: multiplier on every convolution's width.
        name: model name.

    Examples:
        >>> from zoo.inception import inception_small
        >>> model = inception_small((32, 32, 3), 10)
        >>> model.count_params() > 1_600_000
        True
        >>> inception_small((32, 32, 3), 10, include_top=False, pooling="avg").output.shape
        (None, 336)
    """
    _check_input(input_shape, "inception_small")
    kit = LayerKit(activation=activation, batch_norm=batch_norm, kernel_initializer=kernel_initializer, l1=l1, l2=l2)
    inputs = keras.Input(shape=input_shape, name="image")
    x = kit.conv_bn_act(inputs, scaled(SMALL_STEM, width), 3, name="stem")
    for s, modules in enumerate(SMALL_STAGES, start=1):
        for b, (n1x1, n3x3) in enumerate(modules, start=1):
            x = _inception_module(x, _scaled_widths((n1x1, 0, n3x3, 0, 0, 0), width), kit, f"stage{s}_block{b}")
        if s <= len(SMALL_DOWNSAMPLE):
            x = _downsample_module(x, scaled(SMALL_DOWNSAMPLE[s - 1], width), kit, f"stage{s}_downsample")
    outputs = head(x, num_classes, include_top=include_top, pooling=pooling, dropout=dropout, kit=kit)
    return keras.Model(inputs, outputs, name=name)


VARIANTS = (
    Variant("googlenet", googlenet, "GoogLeNet (Inception v1) as in Table 1, LRN, optional auxiliary classifiers",
            "Szegedy et al. 2014", (224, 224, 3)),
    Variant("inception_small", inception_small, "Small Inception for 32x32 images (conv 96, 10 two-branch modules)",
            "Zhang et al. 2017", (32, 32, 3)),
)
