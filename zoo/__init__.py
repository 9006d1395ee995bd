"""The model zoo: classic CNN architectures by name.

    import zoo
    model = zoo.build("lenet5", input_shape=(28, 28, 1), num_classes=10)
    for variant in zoo.list_models(): print(variant.name, variant.description)

Every builder shares one keyword-only signature
``(input_shape, num_classes, *, include_top, pooling, dropout, batch_norm,
activation, kernel_initializer, l1, l2, width, name, ...)`` and returns an
uncompiled ``keras.Model`` whose input is scaled pixels (the caller adds
rescaling and augmentation in front, see ``training.assemble``).
"""

from __future__ import annotations

import difflib
import inspect

from zoo import alexnet, inception, lenet, mlp, resnet
from zoo.registry import Variant

_FAMILIES = (lenet, alexnet, inception, resnet, mlp)

MODELS: dict[str, Variant] = {v.name: v for family in _FAMILIES for v in family.VARIANTS}


def names() -> list[str]:
    """Every registered model name, sorted.

    Examples:
        >>> import zoo
        >>> zoo.names()[:4]
        ['alexnet', 'alexnet_small', 'googlenet', 'inception_small']
    """
    return sorted(MODELS)


def list_models() -> list[Variant]:
    """Every registry entry (a ``Variant``), sorted by name.

    Examples:
        >>> import zoo
        >>> [variant.name for variant in zoo.list_models() if variant.builder.__name__ == "wide_resnet"]
        ['wrn16_4', 'wrn16_8', 'wrn28_10', 'wrn28_10_dropout', 'wrn40_4']
    """
    return [MODELS[n] for n in names()]


def get(name: str) -> Variant:
    """The registry entry for ``name``; unknown names get close-match suggestions.

    Examples:
        >>> import zoo
        >>> variant = zoo.get("resnet56")
        >>> variant.paper, variant.input_shape, variant.defaults["depth"]
        ('He et al. 2015', (32, 32, 3), 56)
        >>> zoo.get("resnt56")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: Unknown model 'resnt56'; did you mean resnet56, ...
    """
    try:
        return MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, names(), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(f"Unknown model {name!r}; {hint}valid models: {', '.join(names())}") from None


def options(name: str) -> list[str]:
    """The keyword options the model ``name`` accepts.

    Examples:
        >>> import zoo
        >>> zoo.options("wrn16_4")[-4:]
        ['depth', 'widen_factor', 'block_dropout', 'name']
    """
    params = inspect.signature(get(name).builder).parameters
    return [p for p, spec in params.items() if spec.kind is inspect.Parameter.KEYWORD_ONLY]


def build(name: str, /, input_shape=None, num_classes: int = 10, **overrides):
    """Builds the registered model ``name``.

    Args:
        name: a registry key (see ``names()``).
        input_shape: (H, W, C); defaults to the variant's paper input.
        num_classes: size of the classifier.
        **overrides: builder options. ``None`` values are dropped, so unset
            command-line flags keep the model's own defaults.

    Raises:
        ValueError: unknown name, or an option this model does not take.

    Examples:
        >>> import zoo
        >>> model = zoo.build("lenet5", input_shape=(32, 32, 1), num_classes=10)
        >>> model.name, model.output.shape
        ('lenet5', (None, 10))
        >>> zoo.build("resnet20", num_classes=100, width=0.5, dropout=None).output.shape  # None keeps the default
        (None, 100)
    """
    variant = get(name)
    given = {k: v for k, v in overrides.items() if v is not None}
    accepted = options(name)
    for key in given:
        if key not in accepted:
            raise ValueError(f"Model {name!r} does not take option {key!r}; it takes: {', '.join(accepted)}")
    kwargs = {**variant.defaults, **given}
    kwargs.setdefault("name", name)
    return variant.builder(tuple(input_shape or variant.input_shape), int(num_classes), **kwargs)
