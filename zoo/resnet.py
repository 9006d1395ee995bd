"""Residual networks: ResNet (He, Zhang, Ren & Sun 2015, "Deep Residual Learning
for Image Recognition", CVPR 2016), pre-activation ResNet (He, Zhang, Ren & Sun
2016, "Identity Mappings in Deep Residual Networks", ECCV 2016) and Wide ResNet
(Zagoruyko & Komodakis 2016, "Wide Residual Networks", BMVC 2016).

Two builders cover the family; both describe the network as data and build it
with one loop over stages:

* ``resnet`` with ``stem="imagenet"``: Table 1 of He et al. 2015.  A 7x7/2
  convolution and a 3x3/2 max pool, then four stages of 64-128-256-512 filters
  made of basic blocks (two 3x3 convolutions; ResNet-18/34) or bottleneck
  blocks (1x1, 3x3, 1x1 with 4x expansion; ResNet-50/101/152).  Projection
  shortcuts where the shape changes: the paper's option B, which it uses for
  ResNet-50/101/152 and torchvision for every depth.  (Table 2's
  ResNet-18/34 used option A, ``shortcut="zero_pad"``.)
* ``resnet`` with ``stem="cifar"``: Section 4.2 of He et al. 2015.  A 3x3
  convolution, then three stages of n basic blocks with 16-32-64 filters,
  depth 6n+2, and parameter-free shortcuts (option A: strided subsampling
  plus zero channels), as in the paper's CIFAR-10 experiments.
* ``wide_resnet``: WRN-d-k of Zagoruyko & Komodakis, pre-activation basic
  blocks with 16k-32k-64k filters, depth 6n+4, optional dropout between the
  two convolutions of each block, and 1x1 projection shortcuts.

``preact=True`` turns either ``resnet`` layout into He et al. 2016's
pre-activation network: each block is BN-act-conv ... BN-act-conv and adds
its input unchanged, and one BN-act follows the last block.

Where we follow common libraries rather than the papers, and why:

* Bottleneck blocks stride on the 3x3 convolution ("ResNet v1.5", as in
  torchvision, timm and Facebook's fb.resnet.torch), not on the first 1x1 as
  in the 2015 paper's released Caffe models and
  ``keras.applications.ResNet50``.  A strided 1x1 convolution discards three
  quarters of its input without looking at it; the 3x3 sees every pixel, and
  NVIDIA's DeepLearningExamples report about 0.5% better top-1 accuracy for
  about 5% less throughput.  The parameter count does not change.
* Convolutions followed by batch norm have no bias, as in the authors'
  released models and torchvision: batch norm's beta makes a bias redundant.
  That is why our counts equal torchvision's (ResNet-50: 25,557,032) and
  ``keras.applications`` is higher (25,583,592 trainable).
* Stride-2 convolutions pad ``kernel_size // 2`` on every side, like
  torchvision.  TensorFlow's "same" padding pads an even-sized input only at
  the bottom and right, which centres a strided 3x3 window one pixel away
  from the pixel the 1x1 shortcut samples.
* The option-A shortcut appends its zero channels after the existing ones;
  the paper does not say where they go, and any placement is equivalent up to
  a permutation of the following layer's channels.
* Pre-activation blocks follow fb.resnet.torch's ``preresnet.lua``, the
  Wide ResNet authors' code and ``keras.applications.ResNetV2``: a
  projection shortcut branches off after the block's first BN-act, while
  identity and option-A shortcuts carry the raw input, keeping the identity
  path clean.  The pre-activation stem is the convolution (and for ImageNet
  the zero-padded max pool) alone, as in ``keras.applications.ResNetV2`` and
  timm, because the first block's BN-act follows it.  He et al. 2016 put
  that BN-act right after conv1 instead, before the split into two paths;
  the parameter count is the same, and every block stays alike.

Layer names are stable and hierarchical, so layers can be frozen by name:

* stem: ``conv1_conv``, ``conv1_bn``, ``conv1_act``; ImageNet also
  ``conv1_conv_pad``, ``pool1_pad``, ``pool1_pool``.
* blocks: ``stage{s}_block{b}_conv{i}`` with its ``_bn{i}`` and ``_act{i}``
  (stages and blocks count from 1; in a pre-activation block ``bn{i}`` and
  ``act{i}`` come before ``conv{i}``), ``_conv{i}_pad`` before a strided
  convolution, ``_dropout`` (Wide ResNet), ``_add`` and, after the addition
  of a post-activation block, ``_out``.
* shortcuts: ``stage{s}_block1_shortcut_conv`` and ``_shortcut_bn``
  (projection) or ``stage{s}_block1_shortcut_pad`` (option A).
* pre-activation networks end with ``post_bn`` and ``post_act``; the
  classifier is ``predictions`` (see ``zoo._layers.head``).
"""

from __future__ import annotations

import numbers

import keras
from keras import layers, ops

from zoo._layers import LayerKit, _unknown, check_rate, head, scaled
from zoo.registry import Variant

# Block type and blocks per stage for each ImageNet depth (He et al. 2015, Table 1).
IMAGENET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_FILTERS = (64, 128, 256, 512)
CIFAR_FILTERS = (16, 32, 64)
BOTTLENECK_EXPANSION = 4
STEMS = ("imagenet", "cifar")
SHORTCUTS = ("projection", "zero_pad")


@keras.saving.register_keras_serializable(package="zoo")
class ZeroPadShortcut(layers.Layer):
    """Option-A shortcut of He et al. 2015: every ``strides``-th pixel, with
    zero channels appended up to ``filters``.  It has no weights."""

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def call(self, x):
        if self.strides > 1:
            x = x[:, :: self.strides, :: self.strides, :]
        extra = self.filters - x.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]]) if extra else x

    def compute_output_shape(self, input_shape):
        def subsampled(size):
            return None if size is None else -(-size // self.strides)

        batch, height, width, _ = input_shape
        return (batch, subsampled(height), subsampled(width), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


def _basic_branch(filters, strides):
    """A basic block's residual branch: two 3x3 convolutions, the first strided
    (ResNet-18/34, CIFAR ResNets, Wide ResNets)."""
    return ((filters, 3, strides), (filters, 3, 1))


def _bottleneck_branch(filters, strides):
    """A bottleneck block's residual branch: 1x1 reduce, strided 3x3 (v1.5,
    see the module docstring), 1x1 expand (ResNet-50/101/152)."""
    return ((filters, 1, 1), (filters, 3, strides), (filters * BOTTLENECK_EXPANSION, 1, 1))


BLOCKS = {"basic": _basic_branch, "bottleneck": _bottleneck_branch}


def _conv(kit, x, filters, kernel_size, strides=1, *, name):
    if strides > 1 and kernel_size > 1:
        # Symmetric padding keeps strided windows centred on the pixels the shortcut samples.
        x = layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        return kit.conv(x, filters, kernel_size, strides, name=name, padding="valid")
    return kit.conv(x, filters, kernel_size, strides, name=name)


def _shortcut(kit, x, activated, filters, strides, kind, *, preact, name):
    """The block input unchanged, or an option-A/B shortcut where the shape changes.

    ``activated`` is the pre-activated input a projection reads in a
    pre-activation block (``x`` itself otherwise).
    """
    if strides == 1 and x.shape[-1] == filters:
        return x
    if kind == "zero_pad":
        return ZeroPadShortcut(filters, strides, name=f"{name}_shortcut_pad")(x)
    shortcut = kit.conv(activated, filters, 1, strides, name=f"{name}_shortcut_conv")
    # A pre-activation projection is added unnormalized, like the residual branch.
    return shortcut if preact else kit.bn(shortcut, name=f"{name}_shortcut_bn")


def _block(kit, x, convs, *, preact, shortcut, dropout, name):
    """One residual block whose branch is ``convs``, (filters, kernel, strides) triples.

    Post-activation (He et al. 2015): conv-BN-act ... conv-BN, add, act.
    Pre-activation (He et al. 2016): BN-act-conv ... BN-act-conv, add.
    ``dropout`` goes before the last convolution (Zagoruyko & Komodakis 2016).
    """
    activated = x
    y = x
    for i, (filters, kernel_size, strides) in enumerate(convs, 1):
        if preact:
            y = kit.act(kit.bn(y, name=f"{name}_bn{i}"), name=f"{name}_act{i}")
            if i == 1:
                activated = y
        if dropout and i == len(convs):
            y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
        y = _conv(kit, y, filters, kernel_size, strides, name=f"{name}_conv{i}")
        if not preact:
            y = kit.bn(y, name=f"{name}_bn{i}")
            if i < len(convs):
                y = kit.act(y, name=f"{name}_act{i}")
    strides = max(s for _, _, s in convs)
    skip = _shortcut(kit, x, activated, convs[-1][0], strides, shortcut, preact=preact, name=name)
    y = layers.Add(name=f"{name}_add")([skip, y])
    return y if preact else kit.act(y, name=f"{name}_out")


def _stack(kit, x, branch, filters, blocks, strides, *, name, **block_options):
    """One stage: ``blocks`` blocks whose residual branch is ``branch(filters,
    strides)``; only the first one strides."""
    for b in range(1, blocks + 1):
        x = _block(kit, x, branch(filters, strides if b == 1 else 1), name=f"{name}_block{b}", **block_options)
    return x


def _trunk(kit, x, branch, stages, *, preact, shortcut, dropout=0.0):
    """All stages, given as (filters, blocks, strides); then, for pre-activation
    blocks, the BN-act their last addition still lacks (He et al. 2016)."""
    for s, (filters, blocks, strides) in enumerate(stages, 1):
        x = _stack(kit, x, branch, filters, blocks, strides, name=f"stage{s}",
                   preact=preact, shortcut=shortcut, dropout=dropout)
    if preact:
        x = kit.act(kit.bn(x, name="post_bn"), name="post_act")
    return x


def _stem(kit, x, stem, filters, *, preact):
    if stem == "imagenet":
        x = _conv(kit, x, filters, 7, 2, name="conv1_conv")
    else:
        x = kit.conv(x, filters, 3, name="conv1_conv")
    if not preact:
        x = kit.act(kit.bn(x, name="conv1_bn"), name="conv1_act")
    if stem == "imagenet":
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    return x


def _blocks_per_stage(depth, per_block, extra, examples):
    """n for a depth of ``per_block * n + extra`` with n >= 1, or a ValueError."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < per_block + extra \
            or (depth - extra) % per_block:
        raise ValueError(f"depth={depth!r} is not valid: it must be {per_block}n+{extra} "
                         f"with n >= 1 (e.g. {examples})")
    return (int(depth) - extra) // per_block


def resnet(
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
    depth=None,
    stem="imagenet",
    preact=False,
    shortcut=None,
    name=None,
):
    """Builds a ResNet for ImageNet or CIFAR, post- or pre-activation.

    Args:
        input_shape: (H, W, C); the papers use (224, 224, 3) for ImageNet and
            (32, 32, 3) for CIFAR, but any size works.
        num_classes: outputs of the classifier.
        include_top: False ends at the last feature map (for pre-activation
            networks after the final BN-act), for transfer learning.
        pooling: with ``include_top=False``: None (the 4-D map), "avg" or "max".
        dropout: rate before the classifier; the papers use none.
        batch_norm: batch normalization after (or, with ``preact``, before)
            every convolution; without it the convolutions get biases.
        activation: nonlinearity everywhere; the papers use "relu".
        kernel_initializer: the papers use He et al.'s initialization ("he").
        l1, l2: kernel penalties.  The papers' weight decay of 1e-4 is
            ``l2=5e-5``, since Keras penalizes ``l2 * sum(w**2)``.
        width: multiplier on every filter count.
        depth: ImageNet: 18, 34, 50, 101 or 152.  CIFAR: 6n+2 (20, 32, 44,
            56, 110, ...).  None means 50 for ImageNet and 20 for CIFAR.
        stem: "imagenet" (7x7/2 convolution, max pool, four stages) or
            "cifar" (3x3 convolution, three stages of 16-32-64 filters).
        preact: pre-activation blocks of He et al. 2016.
        shortcut: where a block changes shape, "projection" (1x1 convolution,
            option B) or "zero_pad" (strided subsampling plus zero channels,
            option A, no parameters).  None means option B for ImageNet and
            option A for CIFAR (see the module docstring).
        name: model name; None derives one such as "preact_resnet56".

    Raises:
        ValueError: an unknown stem, depth or shortcut, or a bad shared option.

    Examples:
        >>> from zoo.resnet import resnet
        >>> resnet((32, 32, 3), 10, depth=56, stem="cifar").name
        'resnet56'
        >>> resnet((32, 32, 3), 10, depth=20, stem="cifar", preact=True).name
        'preact_resnet20'
        >>> features = resnet((224, 224, 3), 1000, depth=18, include_top=False)
        >>> features.output.shape, features.layers[-1].name
        ((None, 7, 7, 512), 'stage4_block2_out')
    """
    if stem not in STEMS:
        raise _unknown("stem", stem, STEMS)
    if stem == "imagenet":
        depth = 50 if depth is None else depth
        if depth not in IMAGENET_STAGES:
            raise ValueError(f"Unknown depth {depth!r} for stem='imagenet' "
                             f"(valid: {', '.join(map(str, IMAGENET_STAGES))})")
        kind, blocks = IMAGENET_STAGES[depth]
        filters = IMAGENET_FILTERS
    else:
        depth = 20 if depth is None else depth
        kind, blocks = "basic", (_blocks_per_stage(depth, 6, 2, "20, 32, 44, 56, 110"),) * 3
        filters = CIFAR_FILTERS
    if shortcut is None:
        shortcut = "projection" if stem == "imagenet" else "zero_pad"
    if shortcut not in SHORTCUTS:
        raise _unknown("shortcut", shortcut, SHORTCUTS)
    kit = LayerKit(activation=activation, batch_norm=batch_norm, kernel_initializer=kernel_initializer, l1=l1, l2=l2)
    filters = [scaled(f, width) for f in filters]
    stages = [(f, n, 1 if s == 0 else 2) for s, (f, n) in enumerate(zip(filters, blocks))]

    inputs = keras.Input(shape=input_shape, name="image")
    x = _stem(kit, inputs, stem, filters[0], preact=preact)
    x = _trunk(kit, x, BLOCKS[kind], stages, preact=preact, shortcut=shortcut)
    outputs = head(x, num_classes, include_top=include_top, pooling=pooling, dropout=dropout, kit=kit)
    return keras.Model(inputs, outputs, name=name or f"{'preact_' if preact else ''}resnet{depth}")


def wide_resnet(
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
    depth=28,
    widen_factor=10,
    block_dropout=0.0,
    name=None,
):
    """Builds WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis 2016).

    A 3x3 convolution of 16 filters, then three stages of (depth-4)/6
    pre-activation basic blocks with 16k, 32k and 64k filters (k the widen
    factor), strides 1, 2, 2, and a final BN-act.

    Args:
        input_shape: (H, W, C); the paper uses (32, 32, 3).
        num_classes: outputs of the classifier.
        include_top: False ends at the last feature map, after the final BN-act.
        pooling: with ``include_top=False``: None (the 4-D map), "avg" or "max".
        dropout: rate before the classifier; the paper uses none.
        batch_norm: batch normalization before every convolution.
        activation: nonlinearity everywhere; the paper uses "relu".
        kernel_initializer: the paper uses He et al.'s initialization ("he").
        l1, l2: kernel penalties.  The paper's weight decay of 5e-4 is
            ``l2=2.5e-4``, since Keras penalizes ``l2 * sum(w**2)``.
        width: multiplier on every filter count, the stem's included.
        depth: 6n+4 (10, 16, 22, 28, 40, ...).
        widen_factor: k, the multiplier on the stages' 16-32-64 filters.
        block_dropout: dropout between the two convolutions of every block;
            the paper uses 0 or 0.3.
        name: model name; None derives one such as "wrn28_10".

    Raises:
        ValueError: a bad depth, widen factor or block dropout, or a bad shared option.

    Examples:
        >>> from zoo.resnet import wide_resnet
        >>> model = wide_resnet((32, 32, 3), 10, depth=16, widen_factor=4)
        >>> model.name, model.output.shape
        ('wrn16_4', (None, 10))
    """
    blocks = _blocks_per_stage(depth, 6, 4, "16, 22, 28, 40")
    if not widen_factor > 0:
        raise ValueError(f"widen_factor must be > 0, got {widen_factor!r}")
    block_dropout = check_rate("block_dropout", block_dropout)
    kit = LayerKit(activation=activation, batch_norm=batch_norm, kernel_initializer=kernel_initializer, l1=l1, l2=l2)
    stages = [(scaled(f * widen_factor, width), blocks, strides) for f, strides in zip(CIFAR_FILTERS, (1, 2, 2))]

    inputs = keras.Input(shape=input_shape, name="image")
    x = _stem(kit, inputs, "cifar", scaled(CIFAR_FILTERS[0], width), preact=True)
    x = _trunk(kit, x, _basic_branch, stages, preact=True, shortcut="projection", dropout=block_dropout)
    outputs = head(x, num_classes, include_top=include_top, pooling=pooling, dropout=dropout, kit=kit)
    return keras.Model(inputs, outputs, name=name or f"wrn{depth}_{widen_factor}")


_HE15 = "He et al. 2015"
_HE16 = "He et al. 2016"
_WRN = "Zagoruyko & Komodakis 2016"
_IMAGENET = (224, 224, 3)
_CIFAR = (32, 32, 3)


def _imagenet(depth, preact=False):
    kind, blocks = IMAGENET_STAGES[depth]
    prefix, paper = ("preact_", _HE16) if preact else ("", _HE15)
    what = "pre-activation " if preact else ""
    return Variant(f"{prefix}resnet{depth}", resnet, f"ResNet-{depth}, {what}{kind} blocks {blocks}, for ImageNet",
                   paper, _IMAGENET, {"depth": depth, "stem": "imagenet", "preact": preact})


def _cifar(depth, preact=False):
    prefix, paper = ("preact_", _HE16) if preact else ("", _HE15)
    what = "pre-activation " if preact else ""
    return Variant(f"{prefix}resnet{depth}", resnet,
                   f"ResNet-{depth}, 3 stages of {(depth - 2) // 6} {what}basic blocks, for CIFAR",
                   paper, _CIFAR, {"depth": depth, "stem": "cifar", "preact": preact})


def _wrn(depth, k, block_dropout=0.0):
    suffix = "_dropout" if block_dropout else ""
    with_dropout = f" with dropout {block_dropout} in the blocks" if block_dropout else ""
    return Variant(f"wrn{depth}_{k}{suffix}", wide_resnet, f"Wide ResNet WRN-{depth}-{k}{with_dropout}, for CIFAR",
                   _WRN, _CIFAR, {"depth": depth, "widen_factor": k, "block_dropout": block_dropout})


VARIANTS = (
    *(_imagenet(depth) for depth in IMAGENET_STAGES),
    *(_cifar(depth) for depth in (20, 32, 44, 56, 110)),
    *(_imagenet(depth, preact=True) for depth in (18, 50, 152)),
    *(_cifar(depth, preact=True) for depth in (20, 56, 110)),
    _wrn(16, 4),
    _wrn(16, 8),
    _wrn(28, 10),
    _wrn(28, 10, block_dropout=0.3),
    _wrn(40, 4),
)
