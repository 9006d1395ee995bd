"""Which backbone layers train: freeze policies with the batch-norm rule built in.

A policy is a short string, so a command-line flag can carry it:

=================  ==========================================================
``all``            the whole backbone is frozen (train the head only)
``none``           everything trains
``last:N``         the last N layers that have weights train
``blocks:N``       the last N named blocks train (``conv5_block3``,
                   ``block_16``, ``block6a``, ``stage3_block2``...), with
                   everything after them
``fraction:F``     the top F (0-1) of the layers with weights train
``pattern:REGEX``  layers whose name matches REGEX (``re.search``) train
``from:NAME``      layers train from the first whose name starts with NAME
``from:auto``      ``from:`` the backbone's usual fine-tuning point
=================  ==========================================================

Layers count in order (``model.layers``, nested models expanded in place).
A name matches if the layer's own name or an enclosing sub-model's does.

Batch normalization (the Keras transfer-learning guide's rule): in a frozen
or partly frozen backbone every BatchNormalization layer stays frozen, even
inside the part that trains, so its ImageNet statistics and scale are kept;
``classifier_network`` also runs the backbone in inference mode, so the
moving statistics never follow the small new data set.  Change
``trainable`` only between ``compile`` calls: Keras reads it when it compiles.
"""

from __future__ import annotations

import math
import re

import keras
import numpy as np

from transfer.heads import InferenceMode

POLICY_FORMS = ("all", "none", "last:N", "blocks:N", "fraction:F", "pattern:REGEX", "from:NAME", "from:auto")


def _bad_policy(policy, why: str = "") -> ValueError:
    reason = f" ({why})" if why else ""
    return ValueError(f"Unknown freeze policy {policy!r}{reason}; valid: {', '.join(POLICY_FORMS)}")


def _children(layer) -> list:
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    if isinstance(layer, InferenceMode):
        return [layer.backbone]
    return []


def leaf_layers(model) -> list[tuple[keras.layers.Layer, tuple[str, ...]]]:
    """Every layer that is not a container, in order, with the names of the
    sub-models enclosing it (outermost first, ``model`` itself left out).

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> network = transfer.classifier_network(backbone, 3)
        >>> [(layer.name, path) for layer, path in transfer.leaf_layers(network)][:2]
        [('c1_conv', ('backbone', 'lenet5_modern')), ('c1_act', ('backbone', 'lenet5_modern'))]
    """
    leaves = []

    def visit(layer, parents):
        children = _children(layer)
        if not children:
            if not isinstance(layer, keras.layers.InputLayer):
                leaves.append((layer, parents))
            return
        for child in children:
            visit(child, parents + ((layer.name,) if layer is not model else ()))

    visit(model, ())
    return leaves


def _containers(model) -> list:
    """Nested models (and wrappers), innermost first."""
    found = []

    def visit(layer):
        for child in _children(layer):
            if _children(child):
                visit(child)
                found.append(child)

    visit(model)
    return found


def _names(layer, parents) -> tuple[str, ...]:
    return (*parents, layer.name)


def _parse_int(policy, text) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _bad_policy(policy, f"{text!r} is not a whole number") from None
    if value < 0:
        raise _bad_policy(policy, "N must be >= 0")
    return value


def _train_from(start: int, count: int) -> list[bool]:
    return [i >= start for i in range(count)]


def _blocks(leaves) -> list[str | None]:
    keys = []
    for layer, parents in leaves:
        key = None
        for name in reversed(_names(layer, parents)):  # the layer's own name first
            key = block_of(name)
            if key:
                break
        keys.append(key)
    return keys


def selection(model, policy: str, *, fine_tune_from: str | None = None) -> list[bool]:
    """Which of ``leaf_layers(model)`` the policy trains (before the batch-norm rule).

    Raises:
        ValueError: a malformed policy, or one that names no layer of ``model``.
    """
    if not isinstance(policy, str):
        raise _bad_policy(policy)
    leaves = leaf_layers(model)
    count = len(leaves)
    kind, colon, arg = policy.partition(":")
    weighted = [i for i, (layer, _) in enumerate(leaves) if _has_parameters(layer)]
    if kind in ("all", "none") and not colon:
        return [kind == "none"] * count
    if not colon or not arg:
        raise _bad_policy(policy)
    if kind == "last":
        n = _parse_int(policy, arg)
        return _train_from(weighted[-n], count) if 0 < n <= len(weighted) else [n > 0] * count
    if kind == "fraction":
        try:
            share = float(arg)
        except ValueError:
            raise _bad_policy(policy, f"{arg!r} is not a number") from None
        if not 0.0 <= share <= 1.0:
            raise _bad_policy(policy, "F must be between 0 and 1")
        n = math.ceil(share * len(weighted) - 1e-9)
        return _train_from(weighted[-n], count) if n > 0 else [False] * count
    if kind == "blocks":
        n = _parse_int(policy, arg)
        keys = _blocks(leaves)
        order = list(dict.fromkeys(k for k in keys if k))
        if not order:
            raise ValueError(f"Freeze policy {policy!r}: {model.name!r} has no layer names with numbered blocks "
                             "(like conv5_block3 or block_16); use last:N or from:NAME")
        if n == 0:
            return [False] * count
        first = order[-min(n, len(order))]
        return _train_from(keys.index(first), count)
    if kind == "pattern":
        try:
            regex = re.compile(arg)
        except re.error as error:
            raise _bad_policy(policy, f"bad regular expression: {error}") from None
        return [any(regex.search(name) for name in _names(layer, parents)) for layer, parents in leaves]
    if kind == "from":
        prefix = arg
        if arg == "auto":
            if not fine_tune_from:
                raise ValueError(f"Freeze policy 'from:auto': no usual fine-tuning point is known for "
                                 f"{model.name!r}; name one with from:NAME, or use last:N or fraction:F")
            prefix = fine_tune_from
        for i, (layer, parents) in enumerate(leaves):
            if any(name.startswith(prefix) for name in _names(layer, parents)):
                return _train_from(i, count)
        raise ValueError(f"Freeze policy {policy!r}: no layer of {model.name!r} has a name starting with {prefix!r}")
    raise _bad_policy(policy)


def _has_parameters(layer) -> bool:
    """Whether the layer has weights that gradient descent trains (not only statistics).

    Keras flips a variable's ``trainable`` with its layer's, so this asks the
    layer with ``trainable`` momentarily on.
    """
    before = layer.trainable
    layer.trainable = True
    has = bool(layer.trainable_weights)
    layer.trainable = before
    return has


def freeze(model, policy: str = "all", *, fine_tune_from: str | None = None):
    """Sets which layers of a backbone's features model train; returns the model.

    Args:
        model: a ``Backbone`` (its ``features`` are frozen and its
            ``fine_tune_from`` serves ``from:auto``) or a ``keras.Model``.
        policy: see the module docstring.  Each call starts afresh: the
            previous policy does not matter.
        fine_tune_from: the prefix ``from:auto`` stands for, for a plain model.

    Raises:
        ValueError: a malformed policy (the message lists the valid forms), or
            one that names no layer of the model.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> print(transfer.describe_freeze(transfer.freeze(backbone.features, "all")))
        trainable 0 / frozen 50,692 parameters
        >>> print(transfer.describe_freeze(transfer.freeze(backbone.features, "last:2")))
        trainable 50,536 / frozen 156 parameters
    """
    if hasattr(model, "features") and hasattr(model, "fine_tune_from"):  # a transfer.Backbone
        fine_tune_from = fine_tune_from or model.fine_tune_from
        model = model.features
    return _apply(model, selection(model, policy, fine_tune_from=fine_tune_from))


def _apply(model, mask: list[bool]):
    leaves = leaf_layers(model)
    model.trainable = True
    partial = any(not train and _has_parameters(layer) for (layer, _), train in zip(leaves, mask))
    for (layer, _), train in zip(leaves, mask):
        layer.trainable = bool(train) and not (partial and isinstance(layer, keras.layers.BatchNormalization))
    for container in [*_containers(model), model]:
        # A sub-model with nothing left to train says so itself (summaries, and Keras' own checks).
        if not any(layer.trainable for layer, _ in leaf_layers(container)):
            container.trainable = False
    return model


def unfreeze(model, from_: int | str):
    """Trains ``model`` from a leaf-layer index or a layer-name prefix on (all
    frozen before it, batch norm frozen throughout); the Keras guides'
    ``for layer in base.layers[:N]: layer.trainable = False``.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> _ = transfer.freeze(backbone.features, "all")
        >>> print(transfer.describe_freeze(transfer.unfreeze(backbone.features, "c5")))
        trainable 48,120 / frozen 2,572 parameters
    """
    if isinstance(from_, str):
        return freeze(model, f"from:{from_}")
    features = getattr(model, "features", model)
    count = len(leaf_layers(features))
    if not 0 <= int(from_) <= count:
        raise ValueError(f"unfreeze(from_={from_!r}): {features.name!r} has {count} layers")
    return _apply(features, _train_from(int(from_), count))


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, frozen) parameter counts; frozen includes batch-norm statistics,
    as in ``model.summary()``'s non-trainable count.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> transfer.parameter_counts(transfer.freeze(backbone.features, "all"))
        (0, 50692)
    """
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, frozen


def describe_freeze(model) -> str:
    """One line, e.g. ``trainable 1,234,567 / frozen 2,345,678 parameters``.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> print(transfer.describe_freeze(backbone.features))
        trainable 50,692 / frozen 0 parameters
    """
    trainable, frozen = parameter_counts(model)
    return f"trainable {trainable:,} / frozen {frozen:,} parameters"


def discriminative_multipliers(model, lowest: float) -> dict[str, float]:
    """Learning-rate factors for the trainable part of a backbone, smallest first.

    The trainable layers are grouped by block (a layer outside any named
    block is its own group); the first group learns at ``lowest`` times the
    rate, each later group a constant factor faster, up to the group below
    the head at ``lowest ** (1/G)``; the head (not in ``model``) keeps the
    full rate.  Early layers hold generic features that the new data set
    should change least (fastai's ``lr=slice(lo, hi)``).

    Args:
        model: a ``Backbone`` or its ``features`` model, frozen as it will train.
        lowest: the factor of the earliest trainable group, in (0, 1].

    Returns:
        {variable path: factor} for the use of ``training.optim.make_optimizer``.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> _ = transfer.freeze(backbone.features, "last:2")
        >>> transfer.discriminative_multipliers(backbone.features, 0.01)
        {'c3_conv/kernel': 0.01, 'c3_conv/bias': 0.01, 'c5_conv/kernel': 0.1, 'c5_conv/bias': 0.1}
    """
    if not 0.0 < float(lowest) <= 1.0:
        raise ValueError(f"the lowest learning-rate factor must be in (0, 1], got {lowest!r}")
    model = getattr(model, "features", model)
    leaves = leaf_layers(model)
    groups: list[list] = []
    last_key = object()
    for (layer, _), key in zip(leaves, _blocks(leaves)):
        if not layer.trainable_weights:
            continue
        key = key or layer.name
        if key != last_key:
            groups.append([])
            last_key = key
        groups[-1].append(layer)
    count = len(groups)
    return {variable.path: float(lowest) ** ((count - i) / count)
            for i, group in enumerate(groups) for layer in group for variable in layer.trainable_weights}


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
