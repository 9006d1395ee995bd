"""Backbones: a pretrained (or our own) network cut before its classifier.

A ``Backbone`` is the fastai-style body: the ``preprocessing`` layer its
weights expect (named "preprocessing", so ``training.model.assemble`` and
``inference_model`` treat it like any other run's), the ``features`` model
from preprocessed images to the last feature map, the raw ``input_shape`` it
was built for, and ``fine_tune_from``, the layer-name prefix where
fine-tuning usually starts (``freeze(..., "from:auto")``).

``load_backbone`` takes four kinds of source:

* a ``BACKBONES`` name (keras.applications) with ImageNet weights from Keras'
  cache or a download, no weights, or a local weights file;
* a zoo name (``zoo.build(..., include_top=False)``), random or from a file;
* a ``.keras`` file this toolkit saved (``runs/<run>/model.keras``, an
  export's ``assets/model.keras``), or a run folder holding ``model.keras``;
* an export folder ``saved_models/<name>[/<version>]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import urllib.parse
from typing import Callable

import keras
from keras import ops

from core import compat
from training.errors import UserError

PREPROCESSING_MODES = ("caffe", "tf", "torch", "none")

# ImageNet statistics used by keras.applications.imagenet_utils.preprocess_input.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

# "zoo:resnet50" is the zoo's ResNet-50 where a BACKBONES entry has the same name.
ZOO_PREFIX = "zoo:"

# Where a features model starts its head, by layer name (see ``_cut_head``).
HEAD_MODEL, GLOBAL_POOL, FLATTEN, PREDICTIONS = "head", "global_pool", "flatten", "predictions"


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
    # The last stage's three blocks, 51%; the network normalizes its own input.
    "convnext_tiny": BackboneSpec(
        _A.ConvNeXtTiny, "none", 224, 32, "convnext_tiny_stage_3", "Liu et al. 2022, A ConvNet for the 2020s",
        "convnext_tiny_notop.h5"),
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
            (4-D), or to feature vectors (2-D) for MLP-like networks.
        input_shape: the raw (H, W, C) images it takes.
        fine_tune_from: layer-name prefix where fine-tuning usually starts.
        source: what it was loaded from (a name or a path).
        paper: citation, where known.
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
    return sorted(BACKBONES)


def keras_home() -> str:
    """``$KERAS_HOME`` or ``~/.keras``, read now (Keras itself reads it once, at import)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _offline() -> bool:
    return os.environ.get("CNN_CLASSROOM_OFFLINE", "") not in ("", "0")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _no_imagenet_weights(name: str, filename: str, why: str, url: str | None = None) -> UserError:
    where = f" (from {url})" if url else ""
    return UserError(
        f"No ImageNet weights for backbone {name!r}: {why}. Put {filename}{where} in ~/.keras/models/ "
        f"(or $KERAS_HOME/models/), or pass --weights PATH to a local weights file, or --weights none "
        f"to start from random weights")


def _download_failure(error: BaseException) -> str | None:
    """The URL Keras failed to fetch, '' when the failure names none, None when it is no download failure."""
    import socket
    import urllib.error

    url = compat.download_failure_url(error)
    if url is not None:
        return url
    if isinstance(error, (urllib.error.URLError, socket.error, ConnectionError, TimeoutError)):
        return ""
    return None


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


# The published hashes of the no-top ImageNet weights files (md5; sha256 for ConvNeXt), as in
# keras.applications 3.15.  Keras checks a download against them; ``_check_cached_weights`` checks
# a file already in the cache, which Keras would otherwise try to download again, or load as it is
# when a call does not pass the hash.  MobileNetV2's files are published without one.
WEIGHTS_HASHES = {
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
    "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5": "fac2f116257151a9d068a22e544a4917",
    "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5": "d3e8ec802a04aa4fc771ee12a9a9b836",
    "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5": "07fb09a5933dd0c8eaafa16978110389",
    "efficientnetb0_notop.h5": "50bc09e76180e00e4465e1a485ddc09d",
    "efficientnetb1_notop.h5": "74c4e6b3e1f6a1eea24c589628592432",
    "efficientnetb2_notop.h5": "111f8e2ac8aa800a7a99e3239f7bfb39",
    "efficientnetb3_notop.h5": "af6d107764bb5b1abb91932881670226",
    "efficientnetv2-b0_notop.h5": "893217f2bb855e2983157299931e43ff",
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5": "bcbd6486424b2319ff4ef7d526e38f63",
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5": "6d6bbae143d832006294945121d1f1fc",
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5": "30ee3e1110167f948a6b9946edeeb738",
    "convnext_tiny_notop.h5": "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    "xception_weights_tf_dim_ordering_tf_kernels_notop.h5": "b0042744bf5b25fce3cb969f33bebb97",
}


def _file_hash(path: str, algorithm: str) -> str:
    import hashlib

    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_cached_weights(name: str, path: str) -> None:
    """Refuses a cached ImageNet weights file whose content is not the published file's."""
    expected = WEIGHTS_HASHES.get(os.path.basename(path))
    if expected is None or not os.path.isfile(path):
        return
    algorithm = "sha256" if len(expected) == 64 else "md5"
    found = _file_hash(path, algorithm)
    if found != expected:
        raise UserError(f"ImageNet weights {path!r} for backbone {name!r} do not match the published file "
                        f"({algorithm} {found}, expected {expected}): the file is incomplete, corrupt or "
                        "replaced; delete it and run again to download it anew")


def _imagenet_model(name: str, spec: BackboneSpec, shape: tuple) -> keras.Model:
    filename = spec.weights_filename(shape)
    cache = os.path.join(keras_home(), "models")
    if not os.path.isfile(os.path.join(cache, filename)) and _offline():
        raise _no_imagenet_weights(name, filename, f"{filename} is not in {cache}/ and downloads are off "
                                                   "(CNN_CLASSROOM_OFFLINE is set)")
    _check_cached_weights(name, os.path.join(cache, filename))
    try:
        return spec.constructor(include_top=False, weights="imagenet", input_shape=shape)
    except Exception as error:  # a failed download comes as a bare Exception
        url = _download_failure(error)
        if url is None:
            raise
        if url:
            filename = os.path.basename(urllib.parse.urlsplit(url).path) or filename
        reason = _first_line(error).rpartition(" -- ")[2]
        why = f"{filename} is not in {cache}/ and the download failed ({reason})"
        raise _no_imagenet_weights(name, filename, why, url or None) from None


def _weights_path(weights) -> str:
    path = os.path.expanduser(os.fspath(weights))
    if not os.path.isfile(path):
        raise UserError(f"Weights file {weights!r} does not exist")
    if not path.endswith(".h5"):
        raise UserError(f"Weights file {weights!r} is not a Keras weights file (.weights.h5 or .h5)")
    return path


def _load_weights(model: keras.Model, path: str, what: str) -> None:
    try:
        model.load_weights(path)
    except Exception as error:  # shape mismatches and unreadable files come in many types
        raise UserError(f"Could not load weights {path!r} into {what}: {_first_line(error)}") from None


def _applications_backbone(name: str, input_shape, weights) -> Backbone:
    spec = BACKBONES[name]
    shape = _check_input_shape(name, spec, input_shape)
    if weights == "imagenet":
        features = _imagenet_model(name, spec, shape)
    else:
        path = _weights_path(weights) if weights is not None else None
        features = spec.constructor(include_top=False, weights=None, input_shape=shape)
        if path:
            _load_weights(features, path, f"backbone {name!r}")
            if spec.imagenet_rescale_fix and not path.endswith(".weights.h5"):
                # A legacy .h5 file is Keras' ImageNet download; see BackboneSpec.
                _fold_imagenet_rescale(features)
    preprocessing = ImagenetPreprocessing(spec.preprocessing, name="preprocessing")
    return Backbone(name, preprocessing, features, shape, spec.fine_tune_from, name, spec.paper)


def _zoo_backbone(name: str, input_shape, weights) -> Backbone:
    import zoo

    if weights == "imagenet":
        raise UserError(f"Zoo model {name!r} has no ImageNet weights; pass --weights none to start from random "
                        "weights, --weights PATH for a weights file, or a run's model.keras as the backbone")
    path = _weights_path(weights) if weights is not None else None
    variant = zoo.get(name)
    try:
        features = zoo.build(name, input_shape=input_shape, include_top=False, pooling=None)
    except ValueError as error:
        raise UserError(str(error)) from None
    if path:
        _load_weights(features, path, f"zoo model {name!r}")
    shape = tuple(int(d) for d in features.input_shape[1:])
    preprocessing = keras.layers.Rescaling(1.0 / 255.0, name="preprocessing")
    return Backbone(name, preprocessing, features, shape, default_fine_tune_from(features), name, variant.paper)


# --- Cutting a saved classifier -------------------------------------------------------------


def _producer(network: keras.Model, tensor):
    """The layer of ``network`` whose output is ``tensor`` (None for an input)."""
    for layer in network.layers:
        if not isinstance(layer, keras.layers.InputLayer) and any(out is tensor for out in _outputs(layer)):
            return layer
    return None


def _outputs(layer):
    output = layer.output
    return output if isinstance(output, (list, tuple)) else [output]


def _after_weights(network: keras.Model, layer) -> bool:
    """Whether some layer with weights comes before ``layer`` (an MLP flattens the raw image)."""
    before = network.layers[:network.layers.index(layer)]
    return any(other.weights for other in before)


def _cut_head(network: keras.Model) -> keras.Model:
    """The features of a classifier network: everything before its head.

    The head starts at the first of these that the network has:

    1. a sub-model named "head" (a ``transfer.classifier_network``): the
       features are its backbone's features model;
    2. a layer named "global_pool" (zoo ResNets, Inception, AlexNet-small...):
       the features are the 4-D map it pools;
    3. a layer named "flatten" that comes after a layer with weights (LeNet-5,
       AlexNet): the 4-D map it flattens;
    4. the "predictions" layer (MLPs, whose "flatten" reads the image
       itself): its input, stepping back over dropout, i.e. the last hidden
       layer's activations.

    For a zoo network this is exactly what ``zoo.build(..., include_top=False)`` returns.
    """
    from transfer.heads import InferenceMode

    names = {layer.name for layer in network.layers}
    if HEAD_MODEL in names:
        wrapped = [layer for layer in network.layers if isinstance(layer, InferenceMode)]
        if wrapped:
            return wrapped[0].backbone
        return keras.Model(network.inputs, network.get_layer(HEAD_MODEL).input, name=f"{network.name}_features")
    tensor = None
    if GLOBAL_POOL in names:
        tensor = network.get_layer(GLOBAL_POOL).input
    elif FLATTEN in names and _after_weights(network, network.get_layer(FLATTEN)):
        tensor = network.get_layer(FLATTEN).input
    elif PREDICTIONS in names:
        tensor = network.get_layer(PREDICTIONS).input
        layer = _producer(network, tensor)
        while isinstance(layer, keras.layers.Dropout):
            tensor = layer.input
            layer = _producer(network, tensor)
    if tensor is None:
        raise UserError(f"Cannot find the head of network {network.name!r}: it has no layer named "
                        f"{HEAD_MODEL!r}, {GLOBAL_POOL!r}, {FLATTEN!r} or {PREDICTIONS!r}")
    return keras.Model(network.inputs, tensor, name=f"{network.name}_features")


def _load_failure(error: BaseException) -> str:
    """Why Keras refused a model file, from the innermost error (Keras wraps the real one)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    text = _first_line(error)
    if compat.is_lambda_refusal(text):
        return ("it holds a Lambda layer's Python code, which is never run (Keras' safe mode); "
                "use a model without Lambda layers")
    unknown = compat.unknown_object_name(text)
    if unknown is not None:
        return (f"it names {unknown!r}, which is neither a Keras nor a cnn-classroom layer; "
                "only those are loaded from files")
    return text


def _keras_file_backbone(path: str, input_shape, weights, source: str) -> Backbone:
    import zoo  # noqa: F401 - registers the zoo's custom layers for loading
    from training.model import network_of

    import augment  # noqa: F401 - registers the augmentation layers a training model holds
    if weights not in ("imagenet", None):
        raise UserError(f"Backbone {source!r} carries its own weights; --weights PATH is for named backbones only")
    try:
        # Safe mode refuses Lambda layers' serialized Python code; only classes Keras and this toolkit
        # register can be named in the file.  Nothing in the file is executed.
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # corrupt zips, unknown layers, lambdas refused by safe mode...
        raise UserError(f"Could not load {path!r} as a Keras model: {_load_failure(error)}") from None
    try:
        preprocessing = model.get_layer("preprocessing")
    except ValueError:
        raise UserError(f"{path!r} is not one of this toolkit's models: it has no layer named 'preprocessing' "
                        "(use a run's model.keras or an export)") from None
    networks = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not networks:
        raise UserError(f"{path!r} is not one of this toolkit's models: no network inside it")
    network = network_of(model)
    features = _cut_head(network)
    shape = tuple(int(d) for d in model.input_shape[1:])
    if input_shape is not None and tuple(int(d) for d in input_shape) != shape:
        raise UserError(f"Backbone {source!r} was trained on {'x'.join(map(str, shape))} images; "
                        f"it cannot take {'x'.join(map(str, input_shape))} (resize the images instead)")
    return Backbone(network.name, preprocessing, features, shape, default_fine_tune_from(features), source)


def _export_backbone(path: str, input_shape, weights, source: str) -> Backbone:
    from serving.load import resolve_export

    version_dir = resolve_export(path)
    model_file = os.path.join(version_dir, "assets", "model.keras")
    if not os.path.isfile(model_file):
        raise UserError(f"Export {version_dir!r} predates backbone support (no assets/model.keras); "
                        "use its run's model.keras as the backbone instead")
    return _keras_file_backbone(model_file, input_shape, weights, source)


# --- Where fine-tuning starts, for networks without a table entry -----------------------------

# The finest named block in a hierarchical layer name: conv4_block3, block_16, block6a,
# stage3_block2, convnext_tiny_stage_3_block_2, inception_4a, expanded_conv_10.
BLOCK_PATTERN = re.compile(r"^(.*(?:block|inception|expanded_conv)_?\d+[a-z]?)(?:_|$)")
_STAGE = re.compile(r"^(stage\d+)_")


def block_of(layer_name: str) -> str | None:
    """The block a layer belongs to, from its name (None outside any block)."""
    match = BLOCK_PATTERN.match(layer_name)
    return match.group(1) if match else None


def default_fine_tune_from(features: keras.Model) -> str | None:
    """Where to start fine-tuning a network that is not in ``BACKBONES``:
    its last stage (``stage4_``) if its layers are named by stage, else its
    last block, else its last layer with a kernel (LeNet's ``c5_conv``).

    Batch normalization never counts: the batch-norm rule keeps it frozen, so
    starting at a trailing ``c5_bn`` would fine-tune nothing at all."""
    from transfer.freeze import leaf_layers

    leaves = [layer for layer, _ in leaf_layers(features)]
    stages = [m.group(1) for m in (_STAGE.match(layer.name) for layer in leaves) if m]
    if stages:
        return stages[-1] + "_"
    blocks = [b for b in (block_of(layer.name) for layer in leaves) if b]
    if blocks:
        return blocks[-1]
    weighted = [layer.name for layer in leaves
                if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    return weighted[-1] if weighted else None


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
    """
    import zoo

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
        return _keras_file_backbone(path, input_shape, weights, source)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model.keras")):
            return _keras_file_backbone(os.path.join(path, "model.keras"), input_shape, weights, source)
        return _export_backbone(path, input_shape, weights, source)
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


__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "ImagenetPreprocessing", "block_of", "default_fine_tune_from",
           "load_backbone", "names", "PREPROCESSING_MODES"]
