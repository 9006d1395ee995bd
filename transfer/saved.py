"""Backbones cut from saved classifiers: a run's ``model.keras`` or an export folder.

The head of a classifier this toolkit saved is found by layer name
(``cut_head``); what comes before it is the features model.  Files load in
Keras' safe mode: Lambda layers' code and unknown classes are refused, never run.
"""

from __future__ import annotations

import os

import keras

import augment  # noqa: F401 - registers the augmentation layers a training model holds
import zoo  # noqa: F401 - registers the zoo's custom layers for loading
from core import compat
from core.errors import UserError
from core.model import network_of
from exports.load import resolve_export
from transfer.heads import InferenceMode
from transfer.weights import first_line

# Where a features model starts its head, by layer name (see ``cut_head``).
HEAD_MODEL, GLOBAL_POOL, FLATTEN, PREDICTIONS = "head", "global_pool", "flatten", "predictions"



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


def cut_head(network: keras.Model) -> keras.Model:
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
    text = first_line(error)
    if compat.is_lambda_refusal(text):
        return ("it holds a Lambda layer's Python code, which is never run (Keras' safe mode); "
                "use a model without Lambda layers")
    unknown = compat.unknown_object_name(text)
    if unknown is not None:
        return (f"it names {unknown!r}, which is neither a Keras nor a cnn-classroom layer; "
                "only those are loaded from files")
    return text


def keras_file_features(path: str, input_shape, weights, source: str):
    """(network name, preprocessing layer, features model, input shape) of a ``.keras`` file this toolkit saved."""
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
    features = cut_head(network)
    shape = tuple(int(d) for d in model.input_shape[1:])
    if input_shape is not None and tuple(int(d) for d in input_shape) != shape:
        raise UserError(f"Backbone {source!r} was trained on {'x'.join(map(str, shape))} images; "
                        f"it cannot take {'x'.join(map(str, input_shape))} (resize the images instead)")
    return network.name, preprocessing, features, shape


def export_features(path: str, input_shape, weights, source: str):
    """``keras_file_features`` of an export folder's ``assets/model.keras``."""
    version_dir = resolve_export(path)
    model_file = os.path.join(version_dir, "assets", "model.keras")
    if not os.path.isfile(model_file):
        raise UserError(f"Export {version_dir!r} predates backbone support (no assets/model.keras); "
                        "use its run's model.keras as the backbone instead")
    return keras_file_features(model_file, input_shape, weights, source)
