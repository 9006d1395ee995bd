"""The record each architecture family publishes for each of its named variants."""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Variant:
    """One buildable name in the zoo.

    Attributes:
        name: registry key, e.g. ``"resnet20"``.
        builder: the family's public builder function.
        description: one line for listings.
        paper: short citation, e.g. ``"He et al. 2015"``.
        input_shape: default (H, W, C), the paper's input.
        defaults: keyword arguments that turn the family builder into this
            variant (e.g. ``{"depth": 20}``); user options override them.

    Examples:
        >>> import zoo
        >>> variant = zoo.get("wrn16_4")
        >>> variant.builder.__name__, variant.defaults
        ('wide_resnet', {'depth': 16, 'widen_factor': 4, 'block_dropout': 0.0})
        >>> model = variant.builder((32, 32, 3), 10, **variant.defaults)  # what zoo.build("wrn16_4") does
    """

    name: str
    builder: Callable
    description: str
    paper: str
    input_shape: tuple
    defaults: dict = dataclasses.field(default_factory=dict)
