"""Backbones: a pretrained (or our own) network cut before its classifier.

A ``Backbone`` is the fastai-style body: the ``preprocessing`` layer its
weights expect (named "preprocessing", so ``core.model.assemble`` and
``inference_model`` treat it like any other run's), the ``features`` model
from preprocessed images to the last feature map (the pooled vector for a
network that pools itself, ``BackboneSpec.pooling``), the raw ``input_shape``
it was built for, and ``fine_tune_from``, the layer-name prefix where
fine-tuning usually starts (``freeze(..., "from:auto")``).

``load_backbone`` takes four kinds of source:

* a ``BACKBONES`` name (keras.applications) with ImageNet weights from Keras'
  cache or a download, no weights, or a local weights file;
* a zoo name (``zoo.build(..., include_top=False)``), random or from a file;
* a ``.keras`` file this toolkit saved (``runs/<run>/model.keras``, an
  export's ``assets/model.keras``), or a run folder holding ``model.keras``;
* an export folder ``saved_models/<name>[/<version>]``.

This module is the catalog; ``transfer.weights`` finds and checks weight
files, ``transfer.saved`` cuts the head off a saved classifier, and
``transfer.freeze`` says where fine-tuning starts for a network without a
table entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Callable

import keras
from keras import ops

import zoo
from core import compat
from core.errors import UserError
from transfer import saved
from transfer import weights as weights_module
from transfer.freeze import default_fine_tune_from

PREPROCESSING_MODES = ("caffe", "tf", "torch", "none")

# ImageNet statistics used by keras.applications.imagenet_utils.preprocess_input.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# "zoo:resnet50" is the zoo's ResNet-50 where a BACKBONES entry has the same name.
ZOO_PREFIX = "zoo:"



@keras.saving.register_keras_serializable(package="transfer")
class ImagenetPreprocessing(keras.layers.Layer):
    """keras.applications' ``preprocess_input`` as a layer, on raw 0-255 RGB pixels.

    Modes (those of ``keras.applications.imagenet_utils.preprocess_input``):

    * ``caffe``: RGB -> BGR, then subtract the ImageNet channel means (ResNet50, VGG16);
    * ``tf``: ``x / 127.5 - 1`` (ResNet50V2, MobileNetV2, InceptionV3, Xception);
    * ``torch``: ``x / 255``, then ImageNet mean and standard deviation (DenseNet);
    * ``none``: identity, for networks that rescale inside themselves
      (MobileNetV3, EfficientNet, EfficientNetV2, ConvNeXt).

    Being a layer, it travels with the model into ``.keras`` files and
    SavedModel exports, so a served model takes raw pixels.

    Examples:
        >>> import transfer, numpy as np
        >>> layer = transfer.ImagenetPreprocessing("torch")  # /255, then ImageNet's mean and std per channel
        >>> layer(np.full((1, 2, 2, 3), 255.0, "float32")).numpy()[0, 0, 0].round(2)
        array([2.25, 2.43, 2.64], dtype=float32)
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(f"Unknown preprocessing mode {mode!r} (valid: {', '.join(PREPROCESSING_MODES)})")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            return (x / 255.0 - ops.array(IMAGENET_MEAN_RGB, self.compute_dtype)) / ops.array(IMAGENET_STD_RGB,
                                                                                            self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.array(CAFFE_MEAN_BGR, self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One keras.applications network, with what transfer learning needs to know about it.

    Attributes:
        constructor: the keras.applications callable.
        preprocessing: an ``ImagenetPreprocessing`` mode (what its ``preprocess_input`` does).
        input_size: the size its ImageNet weights were trained at.
        min_size: the smallest input Keras accepts without the top.
        fine_tune_from: layer-name prefix where fine-tuning usually starts
            (the last stage or the last few blocks; see the table's comments).
        paper: short citation.
        weights_file: the file name of its no-top ImageNet weights in
            ``~/.keras/models``; ``{rows}`` is filled from ``weights_sizes``.
        weights_sizes: input sizes that have their own weights file (MobileNetV2);
            other sizes use ``input_size``'s.
        imagenet_rescale_fix: Keras adds a ``Rescaling(1/sqrt(std))`` after the
            input normalization only when built with ``weights="imagenet"``
            (EfficientNet B0-B7, tensorflow/tensorflow#49930); a model built from a
            local ImageNet ``.h5`` file gets the same effect folded into its
            normalization variance.
        pooling: keras.applications' own ``pooling`` ("avg") for a network whose
            last layer belongs after global pooling.  ConvNeXt ends in a
            LayerNormalization that its ImageNet head, and Keras with
            ``pooling="avg"``, apply to the pooled vector: ``LN(mean(x))``, not
            ``mean(LN(x))`` as a head pooling the normalized map would.  Such a
            backbone's features are Keras' pooled vectors (2-D), and the head has
            nothing left to pool.  None (the rest): the last feature map.

    Examples:
        >>> import transfer
        >>> spec = transfer.BACKBONES["mobilenet_v2"]
        >>> spec.input_size, spec.preprocessing, spec.fine_tune_from
        (224, 'tf', 'block_16_')
    """

    constructor: Callable
    preprocessing: str
    input_size: int
    min_size: int
    fine_tune_from: str
    paper: str
    weights_file: str
    weights_sizes: tuple = ()
    imagenet_rescale_fix: bool = False
    pooling: str | None = None

    def weights_filename(self, input_shape) -> str:
        rows = self.input_size
        if self.weights_sizes and input_shape[0] == input_shape[1] and input_shape[0] in self.weights_sizes:
            rows = int(input_shape[0])
        return self.weights_file.format(rows=rows)


_A = keras.applications
_EFFICIENTNET = "Tan & Le 2019, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks"


def _efficientnet(constructor, variant, size):
    # Stage 7 (one block in B0, two in B3) and the top 1x1 conv: 28-42% of the weights.
    return BackboneSpec(constructor, "none", size, 32, "block7a", _EFFICIENTNET, f"efficientnet{variant}_notop.h5",
                        imagenet_rescale_fix=True)


BACKBONES: dict[str, BackboneSpec] = {
    # conv5_: the last stage (3 bottleneck blocks), 64% of the weights.
    "resnet50": BackboneSpec(
        _A.ResNet50, "caffe", 224, 32, "conv5_", "He et al. 2015, Deep Residual Learning for Image Recognition",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50_v2": BackboneSpec(
        _A.ResNet50V2, "tf", 224, 32, "conv5_", "He et al. 2016, Identity Mappings in Deep Residual Networks",
        "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # block_16_: the last inverted-residual block and the 1280-channel conv, 40%.
    "mobilenet_v2": BackboneSpec(
        _A.MobileNetV2, "tf", 224, 32, "block_16_",
        "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5", weights_sizes=(96, 128, 160, 192, 224)),
    # The last two blocks and the final conv (69% and 59%); the network rescales its own input.
    "mobilenet_v3_small": BackboneSpec(
        _A.MobileNetV3Small, "none", 224, 32, "expanded_conv_9_", "Howard et al. 2019, Searching for MobileNetV3",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    "mobilenet_v3_large": BackboneSpec(
        _A.MobileNetV3Large, "none", 224, 32, "expanded_conv_13_", "Howard et al. 2019, Searching for MobileNetV3",
        "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    "efficientnet_b0": _efficientnet(_A.EfficientNetB0, "b0", 224),
    "efficientnet_b1": _efficientnet(_A.EfficientNetB1, "b1", 240),
    "efficientnet_b2": _efficientnet(_A.EfficientNetB2, "b2", 260),
    "efficientnet_b3": _efficientnet(_A.EfficientNetB3, "b3", 300),
    # The last four of stage 6's eight blocks and the top conv, 43%.
    "efficientnet_v2_b0": BackboneSpec(
        _A.EfficientNetV2B0, "none", 224, 32, "block6e",
        "Tan & Le 2021, EfficientNetV2: Smaller Models and Faster Training", "efficientnetv2-b0_notop.h5"),
    # mixed8 is the concatenation before the top two inception blocks (the Keras guides'
    # "freeze the first 249 layers"); its conv layers have counter names, so the cut goes by it.
    "inception_v3": BackboneSpec(
        _A.InceptionV3, "tf", 299, 75, "mixed8",
        "Szegedy et al. 2016, Rethinking the Inception Architecture for Computer Vision",
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # block5_: the last three convolutions, 48%.
    "vgg16": BackboneSpec(
        _A.VGG16, "caffe", 224, 32, "block5_",
        "Simonyan & Zisserman 2015, Very Deep Convolutional Networks for Large-Scale Image Recognition",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # conv5_: the last dense block (16 layers) and the final batch norm, 31%.
    "densenet121": BackboneSpec(
        _A.DenseNet121, "torch", 224, 32, "conv5_", "Huang et al. 2017, Densely Connected Convolutional Networks",
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    # The last stage's three blocks, 51%; the network normalizes its own input, and pools before its
    # final LayerNormalization (see BackboneSpec.pooling).
    "convnext_tiny": BackboneSpec(
        _A.ConvNeXtTiny, "none", 224, 32, "convnext_tiny_stage_3", "Liu et al. 2022, A ConvNet for the 2020s",
        "convnext_tiny_notop.h5", pooling="avg"),
    # block13_: the exit flow, 33%.
    "xception": BackboneSpec(
        _A.Xception, "tf", 299, 71, "block13_",
        "Chollet 2017, Xception: Deep Learning with Depthwise Separable Convolutions",
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}


@dataclasses.dataclass
class Backbone:
    """A network without its classifier, and how to feed it.

    Attributes:
        name: the BACKBONES or zoo name, or the file/export's network name.
        preprocessing: a Keras layer named "preprocessing" (raw 0-255 pixels in).
        features: a ``keras.Model`` from preprocessed images to the feature map
            (4-D), or to feature vectors (2-D) for MLP-like networks and for
            networks that pool themselves (``BackboneSpec.pooling``, ConvNeXt).
        input_shape: the raw (H, W, C) images it takes.
        fine_tune_from: layer-name prefix where fine-tuning usually starts.
        source: what it was loaded from (a name or a path).
        paper: citation, where known.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> isinstance(backbone, transfer.Backbone), backbone.input_shape
        (True, (32, 32, 1))
        >>> network = transfer.classifier_network(backbone, 5)  # preprocessing -> features -> a new head
    """

    name: str
    preprocessing: keras.layers.Layer
    features: keras.Model
    input_shape: tuple
    fine_tune_from: str | None = None
    source: str = ""
    paper: str = ""
    _extractor: keras.Model | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def feature_shape(self) -> tuple:
        """The shape of one example's features, e.g. (7, 7, 2048)."""
        return tuple(self.features.output_shape[1:])


def names() -> list[str]:
    """The keras.applications backbones ``BACKBONES`` describes, by name.

    Examples:
        >>> import transfer
        >>> "mobilenet_v2" in transfer.names(), "efficientnet_b0" in transfer.names()
        (True, True)
    """
    return sorted(BACKBONES)


def _check_input_shape(name: str, spec: BackboneSpec, input_shape) -> tuple:
    shape = tuple(int(d) for d in (input_shape or (spec.input_size, spec.input_size, 3)))
    if len(shape) != 3:
        raise UserError(f"Backbone {name!r} takes (H, W, C) images, got input shape {shape}")
    if shape[2] != 3:
        raise UserError(f"Backbone {name!r} takes 3-channel (RGB) images, got {shape[2]} channel(s); use --channels 3")
    if min(shape[:2]) < spec.min_size:
        raise UserError(f"Backbone {name!r} needs images of at least {spec.min_size}x{spec.min_size}, "
                        f"got {shape[0]}x{shape[1]} (its ImageNet size is {spec.input_size}x{spec.input_size})")
    return shape


def _fold_imagenet_rescale(model: keras.Model) -> None:
    """Gives a model built without ``weights="imagenet"`` the extra division by
    sqrt(std) that Keras' EfficientNet adds after its input normalization
    (x -> (x - mean) / sqrt(var) / sqrt(std) == (x - mean) / sqrt(var * std))."""
    norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    compat.scale_normalization_variance(norm, IMAGENET_STD_RGB)


def _applications_backbone(name: str, input_shape, weights) -> Backbone:
    spec = BACKBONES[name]
    shape = _check_input_shape(name, spec, input_shape)
    if weights == "imagenet":
        features = weights_module.imagenet_model(name, spec, shape)
    else:
        path = weights_module.weights_path(weights) if weights is not None else None
        features = spec.constructor(include_top=False, weights=None, input_shape=shape, pooling=spec.pooling)
        if path:
            weights_module.load_weights(features, path, f"backbone {name!r}")
            if spec.imagenet_rescale_fix and not path.endswith(".weights.h5"):
                # A legacy .h5 file is Keras' ImageNet download; see BackboneSpec.
                _fold_imagenet_rescale(features)
    preprocessing = ImagenetPreprocessing(spec.preprocessing, name="preprocessing")
    return Backbone(name, preprocessing, features, shape, spec.fine_tune_from, name, spec.paper)


def _zoo_backbone(name: str, input_shape, weights) -> Backbone:
    if weights == "imagenet":
        raise UserError(f"Zoo model {name!r} has no ImageNet weights; pass --weights none to start from random "
                        "weights, --weights PATH for a weights file, or a run's model.keras as the backbone")
    path = weights_module.weights_path(weights) if weights is not None else None
    variant = zoo.get(name)
    try:
        features = zoo.build(name, input_shape=input_shape, include_top=False, pooling=None)
    except ValueError as error:
        raise UserError(str(error)) from None
    if path:
        weights_module.load_weights(features, path, f"zoo model {name!r}")
    shape = tuple(int(d) for d in features.input_shape[1:])
    preprocessing = keras.layers.Rescaling(1.0 / 255.0, name="preprocessing")
    return Backbone(name, preprocessing, features, shape, default_fine_tune_from(features), name, variant.paper)


def _saved_backbone(parts, source: str) -> Backbone:
    name, preprocessing, features, shape = parts
    return Backbone(name, preprocessing, features, shape, default_fine_tune_from(features), source)


def is_architecture(source) -> bool:
    """Whether ``source`` names an architecture (a ``BACKBONES`` or zoo name) rather than a file with weights.

    Examples:
        >>> import transfer
        >>> transfer.is_architecture("mobilenet_v2"), transfer.is_architecture("resnet20")
        (True, True)
        >>> transfer.is_architecture("saved_models/lenet5-digits")
        False
    """
    source = os.fspath(source)
    return source in BACKBONES or source in zoo.MODELS or (
        source.startswith(ZOO_PREFIX) and source[len(ZOO_PREFIX):] in zoo.MODELS)


def load_backbone(source, *, input_shape=None, weights="imagenet") -> Backbone:
    """Loads a backbone by name or path.

    Args:
        source: a ``BACKBONES`` name, a zoo name (``zoo:NAME`` where both
            have it, e.g. ``zoo:resnet50``), a ``.keras`` file saved by
            this toolkit, a run folder holding ``model.keras``, or an export
            folder ``saved_models/<name>[/<version>]``.
        input_shape: raw (H, W, C) images; None takes the network's default
            (its ImageNet size for ``BACKBONES``, the paper input for the zoo,
            the trained size for files, which cannot change).
        weights: for named backbones: "imagenet" (Keras' cache, else a
            download; ``BACKBONES`` only), None (random) or a path to a
            ``.weights.h5``/``.h5`` file.  Files and exports carry their own
            weights: "imagenet" and None both mean those, a path is an error.

    Raises:
        UserError: unknown name, missing path or weights file, ImageNet weights
            neither cached nor downloadable, a file that is not this toolkit's.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> backbone.name, backbone.fine_tune_from, backbone.features.output.shape
        ('lenet5_modern', 'c5_conv', (None, 1, 1, 120))
        >>> mobilenet = transfer.load_backbone("mobilenet_v2", input_shape=(160, 160, 3))  # doctest: +SKIP
    """
    source = os.fspath(source)
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    if source in BACKBONES:
        return _applications_backbone(source, input_shape, weights)
    if source.startswith(ZOO_PREFIX) and source[len(ZOO_PREFIX):] in zoo.MODELS:
        return _zoo_backbone(source[len(ZOO_PREFIX):], input_shape, weights)
    if source in zoo.MODELS:
        return _zoo_backbone(source, input_shape, weights)
    path = os.path.expanduser(source)
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise UserError(f"Backbone file {source!r} does not exist")
        return _saved_backbone(saved.keras_file_features(path, input_shape, weights, source), source)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model.keras")):
            return _saved_backbone(saved.keras_file_features(os.path.join(path, "model.keras"), input_shape,
                                                             weights, source), source)
        return _saved_backbone(saved.export_features(path, input_shape, weights, source), source)
    if path.lower().endswith((".h5", ".hdf5")) and os.path.isfile(path):
        # A legacy HDF5 model file can hold Lambda layers' Python code, outside Keras' safe mode.
        raise UserError(f"Backbone {source!r} is a legacy HDF5 model file, which is not loaded because it can "
                        "carry code; use a .keras file, or pass a weights file as --weights PATH with a named "
                        "backbone")
    if os.path.exists(path):
        raise UserError(f"Backbone {source!r} is neither a .keras file nor a folder (run or export)")
    if os.sep in source or source.startswith("."):
        raise UserError(f"Backbone path {source!r} does not exist")
    valid = sorted({*BACKBONES, *zoo.MODELS})
    close = difflib.get_close_matches(source, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"Unknown backbone {source!r}; {hint}pretrained: {', '.join(names())}; "
                    f"zoo: {', '.join(zoo.names())}; or a .keras file or export folder")


__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "ImagenetPreprocessing", "is_architecture",
           "load_backbone", "names", "PREPROCESSING_MODES"]
