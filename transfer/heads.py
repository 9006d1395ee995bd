"""Heads: a new classifier on a backbone's features, and the network joining the two.

``head_model`` is its own small ``keras.Model`` (named "head"), so the fast
path can train it alone on precomputed features and then put the very same
object on the backbone with ``classifier_network(backbone, head=head)``.

Every head standardizes its pooled features first (``Standardize``, identity
until set): a linear probe fitted on standardized features
(``transfer.probe``) then becomes the head's starting point exactly, and the
head trains on well-scaled inputs whatever the backbone's activation scale.
"""

from __future__ import annotations

import keras
from keras import ops

HEAD_POOLINGS = ("avg", "max", "flatten")


@keras.saving.register_keras_serializable(package="transfer")
class InferenceMode(keras.layers.Layer):
    """Runs the wrapped model with ``training=False`` whatever the outer call says.

    The Keras guides' ``x = base_model(x, training=False)`` no longer holds in
    Keras 3: a functional model records that call, and ``fit`` then passes
    ``training=True`` through it (keras-team/keras#20285), so unfrozen batch
    norm layers would update their moving statistics from the new data set.
    Calling the backbone inside this layer keeps batch norm (and dropout) in
    inference mode in every phase; which weights train is still set by
    ``trainable`` (see ``transfer.freeze``).

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> import keras
        >>> inputs = keras.Input((32, 32, 1))
        >>> features = transfer.InferenceMode(backbone.features)(inputs)  # batch norm stays in inference mode
        >>> keras.Model(inputs, features).output.shape
        (None, 1, 1, 120)
    """

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.built = backbone.built

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        self.built = True

    def call(self, inputs):
        return self.backbone(inputs, training=False)

    def compute_output_spec(self, inputs):
        return self.backbone.compute_output_spec(inputs)

    def get_config(self):
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone, **config)


@keras.saving.register_keras_serializable(package="transfer")
class Standardize(keras.layers.Layer):
    """``(x - mean) * inverse_std`` per feature, with both held as frozen weights.

    Starts as the identity; ``transfer.probe.initialize_head`` sets the
    statistics of the training features.  Weights rather than constructor
    arguments, so setting them needs no rebuild and they travel in weight files.

    Examples:
        >>> import transfer, numpy as np
        >>> layer = transfer.Standardize()
        >>> layer(np.array([[1.0, 2.0]], "float32")).numpy()  # the identity until the probe's statistics are set
        array([[1., 2.]], dtype=float32)
    """

    def build(self, input_shape):
        size = int(input_shape[-1])
        self.mean = self.add_weight(shape=(size,), initializer="zeros", trainable=False, name="mean")
        self.inverse_std = self.add_weight(shape=(size,), initializer="ones", trainable=False, name="inverse_std")

    def call(self, x):
        return (x - ops.cast(self.mean, x.dtype)) * ops.cast(self.inverse_std, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def head_model(feature_shape, num_classes: int, *, dropout: float = 0.2, hidden=(), pooling: str = "avg",
               name: str = "head") -> keras.Model:
    """A classifier for features of ``feature_shape``.

    Global pooling (4-D feature maps only), standardization (``Standardize``,
    named "head_standardize"), then for each ``hidden`` width a dropout and a
    Dense+ReLU layer, then dropout and a softmax layer named "predictions".

    Args:
        feature_shape: one example's features, (H, W, C) or (D,).
        num_classes: outputs of the classifier.
        dropout: rate before every Dense layer (0 for none).
        hidden: widths of hidden layers, e.g. (256,); () for a linear head.
        pooling: for feature maps: "avg", "max" or "flatten".
        name: model name.

    Examples:
        >>> import transfer
        >>> head = transfer.head_model((5, 5, 16), 3, dropout=0.2, hidden=(64,))
        >>> head.output.shape, [layer.name for layer in head.layers][:3]
        ((None, 3), ['features', 'head_pool', 'head_standardize'])
    """
    feature_shape = tuple(int(d) for d in feature_shape)
    if pooling not in HEAD_POOLINGS:
        raise ValueError(f"Unknown head pooling {pooling!r} (valid: {', '.join(HEAD_POOLINGS)})")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"head dropout must be in [0, 1), got {dropout!r}")
    hidden = tuple(hidden or ())
    if not all(isinstance(n, int) and n > 0 for n in hidden):
        raise ValueError(f"head hidden widths must be positive integers, got {hidden!r}")
    if len(feature_shape) not in (1, 3):
        raise ValueError(f"head takes (H, W, C) feature maps or (D,) vectors, got features of shape {feature_shape}")
    inputs = keras.Input(shape=feature_shape, name="features")
    x = inputs
    if len(feature_shape) == 3:
        pool = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D,
                "flatten": keras.layers.Flatten}[pooling]
        x = pool(name="head_pool")(x)
    x = Standardize(name="head_standardize")(x)
    for i, units in enumerate(hidden, start=1):
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"head_dropout{i}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"head_hidden{i}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 under a mixed policy, as zoo's LayerKit.dense: bfloat16 probabilities sum to 1 only within 1%.
    outputs = keras.layers.Dense(int(num_classes), activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def classifier_network(backbone, num_classes: int | None = None, *, head: keras.Model | None = None,
                       name: str | None = None, **head_options) -> keras.Model:
    """Preprocessed images -> backbone features (inference mode) -> head.

    This is the network ``core.model.assemble(network, input_shape,
    preprocessing=backbone.preprocessing, augmentation=...)`` wraps, so
    training, ``inference_model`` and exports work as for a zoo network.

    Args:
        backbone: a ``transfer.Backbone``.
        num_classes: classes of a new head (not with ``head``).
        head: an existing head (e.g. one trained on cached features) to reuse.
        name: network name; default "<backbone>_transfer".
        **head_options: ``head_model`` options (dropout, hidden, pooling).

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> network = transfer.classifier_network(backbone, 3)
        >>> [layer.name for layer in network.layers], network.output.shape
        (['preprocessed', 'backbone', 'head'], (None, 3))
    """
    if head is None:
        if num_classes is None:
            raise ValueError("classifier_network needs num_classes, or a head")
        head = head_model(backbone.feature_shape, num_classes, **head_options)
    else:
        if head_options:
            raise ValueError(f"head options {sorted(head_options)} apply to a new head, not to one given")
        if tuple(head.input_shape[1:]) != tuple(backbone.feature_shape):
            raise ValueError(f"head takes features of shape {tuple(head.input_shape[1:])}, "
                             f"the backbone gives {tuple(backbone.feature_shape)}")
        if num_classes is not None and head.output_shape[-1] != num_classes:
            raise ValueError(f"head has {head.output_shape[-1]} classes, not {num_classes}")
    inputs = keras.Input(shape=tuple(backbone.input_shape), name="preprocessed")
    features = InferenceMode(backbone.features, name="backbone")(inputs)
    return keras.Model(inputs, head(features), name=name or f"{backbone.name}_transfer")
