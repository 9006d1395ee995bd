"""Named augmentation policies and the spec language that composes them.

A spec is policy and component names joined by "+", e.g. ``"standard"``,
``"flip+crop+erasing"`` or ``"light+randaugment"``.  ``policy(spec, ...)``
turns it into the ``keras.Sequential`` named "augmentation" that
``core.model.assemble`` puts in front of the network.

Named policies (pixel sizes for 32x32 / 28x28 / 8x8 inputs):

==========  ===============================================================
none        nothing (``policy`` returns None)
light       flip + crop with half the standard padding (2 / 2 / 1 px)
standard    flip + crop, padding a side/8 (4 / 3 / 1 px): the CIFAR
            augmentation of He et al. 2016.  About 1% of a CIFAR ResNet-20
            training step on 2 CPU cores (bench/bench_augment.py)
strong      standard + RandAugment (N=2, M=9; M=5 below 16 px) + random
            erasing (p=0.5, 2-40% of the area; 2-20% below 16 px)
==========  ===============================================================

Components (``describe(spec, input_shape=...)`` prints the exact settings):
crop (pad side/8 with zeros, random window), flip (left-right), translate
(10%), rotate (10 degrees), zoom (10%), elastic (Simard et al. 2003's
distortion, scaled from its 28x28 setting), randaugment, brightness (20%),
contrast (20%), saturation (40%), hue (0.05), pca (AlexNet lighting; colour
only like saturation and hue), noise (std 8), erasing, cutout (side/2 grey
square); batch level: mixup, cutmix.

Components are applied in one fixed order whatever order the spec names
them in: geometry (crop, flip, translate, rotate, zoom, elastic), RandAugment, colour,
noise, then erasing/cutout, so erased boxes stay rectangles.  A component
named twice keeps its strongest setting ("light+standard" crops like
standard).  ``flips=False`` drops mirroring everywhere (digits and text must
never be mirrored; see ``default_flips``).  "mixup" and "cutmix" mix labels,
so they are not layers: ``policy`` skips them and ``augment.mixer(spec)``
returns the batch function for them.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

import keras

from augment.batch import BATCH_OPS
from augment.layers import (
    Cutout,
    ElasticDistortion,
    PCAColorJitter,
    PixelNoise,
    RandomCropWithPadding,
    RandomErasing,
    RandomSaturation,
)
from augment.randaugment import RandAugment


@dataclasses.dataclass(frozen=True)
class Policy:
    """A named policy: a description and component name -> strength (1 = standard)."""

    description: str
    components: dict


POLICIES: dict[str, Policy] = {
    "none": Policy("no augmentation", {}),
    "light": Policy("horizontal flip + crop with half the standard padding", {"flip": 1.0, "crop": 0.5}),
    "standard": Policy("horizontal flip + pad-and-crop (side/8 pixels), the CIFAR standard",
                       {"flip": 1.0, "crop": 1.0}),
    "strong": Policy("standard + RandAugment (N=2, M=9) + random erasing (p=0.5)",
                     {"flip": 1.0, "crop": 1.0, "randaugment": 1.0, "erasing": 1.0}),
}

# Datasets whose images must never be mirrored: digits and characters.
NO_FLIP_DATASETS = frozenset({"digits", "mnist", "emnist", "kmnist", "svhn", "svhn_cropped"})


def default_flips(dataset_name: str) -> bool:
    """False for digit and character datasets ("digits", "mnist", ...), True
    otherwise; "tfds:" prefixes are ignored.  Fashion-MNIST mirrors fine.

    Examples:
        >>> import augment
        >>> augment.default_flips("mnist"), augment.default_flips("cifar10")
        (False, True)
    """
    name = dataset_name.lower().removeprefix("tfds:").split("/")[0]
    return name not in NO_FLIP_DATASETS


@dataclasses.dataclass(frozen=True)
class Settings:
    """Parameters that depend on the input shape."""

    height: int
    width: int
    channels: int
    flips: bool

    @property
    def side(self) -> int:
        return min(self.height, self.width)

    @property
    def padding(self) -> int:
        return max(1, self.side // 8)

    @property
    def magnitude(self) -> float:
        # 8x8 digits lose their identity under the ImageNet magnitude.
        return 9.0 if self.side >= 16 else 5.0

    @property
    def erased_area(self) -> tuple[float, float]:
        # A 40% noise box leaves too little of an 8x8 digit to recognise.
        return (0.02, 0.4) if self.side >= 16 else (0.02, 0.2)

    @property
    def cutout(self) -> int:
        return max(2, self.side // 2)


def _crop(s, strength, seed):
    pad = max(1, round(s.padding * strength))
    return (f"pad {pad} px with zeros, then a random {s.height}x{s.width} window",
            lambda: RandomCropWithPadding(pad, seed=seed, name="crop"))


def _flip(s, strength, seed):
    return ("mirror left-right with probability 0.5",
            lambda: keras.layers.RandomFlip("horizontal", seed=seed, name="flip"))


def _translate(s, strength, seed):
    share = 0.1 * strength
    return (f"shift up to {share:.0%} of each side (reflected border)",
            lambda: keras.layers.RandomTranslation(share, share, seed=seed, name="translate"))


def _rotate(s, strength, seed):
    degrees = 10.0 * strength
    return (f"rotate up to +-{degrees:g} degrees",
            lambda: keras.layers.RandomRotation(degrees / 360.0, seed=seed, name="rotate"))


def _zoom(s, strength, seed):
    share = 0.1 * strength
    return (f"zoom in or out up to {share:.0%}", lambda: keras.layers.RandomZoom(share, seed=seed, name="zoom"))


def _elastic(s, strength, seed):
    # Simard et al.'s MNIST setting (sigma 4 on 28x28, pixels moved by about 1.4) scaled to the image's side.
    sigma, magnitude = s.side * 4.0 / 28.0, s.side * 0.05 * strength
    return (f"elastic distortion: field smoothed over {sigma:.2g} px, pixels moved by {magnitude:.2g} px (std)",
            lambda: ElasticDistortion(sigma, magnitude, seed=seed, name="elastic"))


def _randaugment(s, strength, seed):
    magnitude = min(10.0, s.magnitude * strength)
    return (f"RandAugment: 2 of 14 ops per image at magnitude {magnitude:g}/10",
            lambda: RandAugment(num_ops=2, magnitude=magnitude, seed=seed, name="randaugment"))


def _brightness(s, strength, seed):
    share = 0.2 * strength
    return (f"brightness +-{share:.0%} of the pixel range",
            lambda: keras.layers.RandomBrightness(share, value_range=(0, 255), seed=seed, name="brightness"))


def _contrast(s, strength, seed):
    share = 0.2 * strength
    return (f"contrast x[{1 - share:g}, {1 + share:g}]",
            lambda: keras.layers.RandomContrast(share, value_range=(0, 255), seed=seed, name="contrast"))


def _saturation(s, strength, seed):
    share = 0.4 * strength
    return (f"saturation x[{1 - share:g}, {1 + share:g}]",
            lambda: RandomSaturation(share, seed=seed, name="saturation"))


def _hue(s, strength, seed):
    share = 0.05 * strength
    return (f"hue shift up to {share:g} of the colour wheel",
            lambda: keras.layers.RandomHue(share, value_range=(0, 255), seed=seed, name="hue"))


def _pca(s, strength, seed, decomposition=None):
    values, vectors = decomposition if decomposition is not None else (None, None)
    source = "fitted" if decomposition is not None else "ImageNet"
    std = 0.1 * strength

    def build():
        if decomposition is None:
            return PCAColorJitter(std=std, seed=seed, name="pca")
        return PCAColorJitter(values, vectors, std=std, seed=seed, name="pca")

    return f"AlexNet PCA lighting, alpha ~ N(0, {std:g}), {source} eigenvectors", build


def _noise(s, strength, seed):
    stddev = 8.0 * strength
    return (f"Gaussian pixel noise, std {stddev:g}",
            lambda: PixelNoise(stddev, seed=seed, name="noise"))


def _erasing(s, strength, seed):
    probability = min(1.0, 0.5 * strength)
    low, high = s.erased_area
    return (f"random erasing: p={probability:g}, {low:.0%}-{high:.0%} of the area, noise fill",
            lambda: RandomErasing(probability, area=s.erased_area, seed=seed, name="erasing"))


def _cutout(s, strength, seed):
    size = max(1, round(s.cutout * strength))
    return (f"cutout: one {size}x{size} grey square", lambda: Cutout(size, seed=seed, name="cutout"))


# In application order (see the module docstring).  Each maps (settings,
# strength, seed) to (a one-line description, a factory for its layer).
COMPONENTS: dict[str, Callable] = {
    "crop": _crop,
    "flip": _flip,
    "translate": _translate,
    "rotate": _rotate,
    "zoom": _zoom,
    "elastic": _elastic,
    "randaugment": _randaugment,
    "brightness": _brightness,
    "contrast": _contrast,
    "saturation": _saturation,
    "hue": _hue,
    "pca": _pca,
    "noise": _noise,
    "erasing": _erasing,
    "cutout": _cutout,
}
COLOUR_ONLY = frozenset({"saturation", "hue", "pca"})


def names() -> list[str]:
    """Every word a spec may use: policies, components, batch ops.

    Examples:
        >>> import augment
        >>> augment.names()[:4]
        ['none', 'light', 'standard', 'strong']
    """
    return [*POLICIES, *COMPONENTS, *BATCH_OPS]


def parse(spec: str) -> tuple[dict[str, float], list[str]]:
    """Splits ``spec`` into {component: strength} and the batch ops it names.

    Raises:
        ValueError: an empty or unknown part, named in the message with
            close matches and the valid names.

    Examples:
        >>> import augment
        >>> augment.parse("standard+erasing+mixup")
        ({'flip': 1.0, 'crop': 1.0, 'erasing': 1.0}, ['mixup'])
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Empty augmentation spec {spec!r}; valid: {', '.join(names())}")
    components: dict[str, float] = {}
    batch_ops: list[str] = []
    for raw in spec.split("+"):
        part = raw.strip().lower()
        if part in POLICIES:
            for name, strength in POLICIES[part].components.items():
                components[name] = max(strength, components.get(name, 0.0))
        elif part in COMPONENTS:
            components[part] = max(1.0, components.get(part, 0.0))
        elif part in BATCH_OPS:
            if part not in batch_ops:
                batch_ops.append(part)
        else:
            close = difflib.get_close_matches(part, names(), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"Unknown augmentation {part!r} in {spec!r}; {hint}valid: {', '.join(names())}")
    return components, batch_ops


def _settings(input_shape, flips) -> Settings:
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    height, width, channels = (int(d) for d in input_shape)
    return Settings(height, width, channels, bool(flips))


def _resolve(spec, input_shape, flips, seed, pca=None):
    """[(name, description, factory)] in application order."""
    settings = _settings(input_shape, flips)
    components, _ = parse(spec)
    chosen = []
    for offset, (name, component) in enumerate(COMPONENTS.items()):
        if name not in components or (name == "flip" and not settings.flips):
            continue
        if name in COLOUR_ONLY and settings.channels != 3:
            raise ValueError(f"Augmentation {name!r} needs colour (3-channel) images; input_shape is "
                             f"{tuple(input_shape)}")
        layer_seed = None if seed is None else int(seed) + offset
        if name == "pca":
            text, factory = _pca(settings, components[name], layer_seed, pca)
        else:
            text, factory = component(settings, components[name], layer_seed)
        chosen.append((name, text, factory))
    return chosen


@keras.saving.register_keras_serializable(package="augment")
class Augmentation(keras.Sequential):
    """The augmentation stage: a ``keras.Sequential`` that, like the layers in
    this package, is the identity unless called with ``training=True``.

    Keras' own random layers default to ``training=True`` when called
    directly; this container passes its own default down instead, so
    ``policy_layer(images)`` never augments by accident.

    Examples:
        >>> import augment, numpy as np
        >>> stage = augment.policy("light", input_shape=(28, 28, 1), flips=False, seed=0)
        >>> isinstance(stage, augment.Augmentation), [layer.name for layer in stage.layers]
        (True, ['crop'])
        >>> images = np.zeros((2, 28, 28, 1), "float32")
        >>> bool((stage(images) == images).numpy().all())  # called without training=True: unchanged
        True
    """

    def call(self, inputs, training=False, mask=None, **kwargs):
        return super().call(inputs, training=bool(training), mask=mask, **kwargs)


def policy(spec: str, *, input_shape, flips: bool = True, seed: int | None = None, pca=None):
    """The augmentation stage for ``spec``.

    Args:
        spec: policy and component names joined by "+" (see ``describe``).
        input_shape: (height, width, channels) of the raw images; pixel
            parameters scale with it.
        flips: False never mirrors (digits, text).
        seed: base seed; each layer gets its own derived from it.
        pca: optional ``(eigenvalues, eigenvectors)`` from ``fit_pca`` for
            the "pca" component (default: ImageNet's).

    Returns:
        an ``Augmentation`` (a ``keras.Sequential`` named "augmentation"), or None when the spec
        leaves nothing to apply (``"none"``, or only batch ops).

    Raises:
        ValueError: unknown names, or a colour-only component on grey images.

    Examples:
        >>> import augment, numpy as np
        >>> stage = augment.policy("standard+erasing", input_shape=(32, 32, 3), seed=0)
        >>> [layer.name for layer in stage.layers]
        ['crop', 'flip', 'erasing']
        >>> stage(np.zeros((8, 32, 32, 3), "float32"), training=True).shape
        TensorShape([8, 32, 32, 3])
    """
    chosen = _resolve(spec, input_shape, flips, seed, pca)
    if not chosen:
        return None
    inputs = [keras.Input(shape=tuple(int(d) for d in input_shape), dtype="float32")]
    return Augmentation(inputs + [factory() for _, _, factory in chosen], name="augmentation")


def describe(spec: str, *, input_shape=(32, 32, 3), flips: bool = True) -> str:
    """What ``spec`` does at ``input_shape``, one component per line.

    Examples:
        >>> import augment
        >>> print(augment.describe("light", input_shape=(28, 28, 1)))
        light at 28x28x1:
          crop: pad 2 px with zeros, then a random 28x28 window
          flip: mirror left-right with probability 0.5
    """
    chosen = _resolve(spec, input_shape, flips, seed=None)
    _, batch_ops = parse(spec)
    shape = "x".join(str(d) for d in input_shape)
    lines = [f"{spec} at {shape}{'' if flips else ', no flips'}:"]
    lines += [f"  {name}: {text}" for name, text, _ in chosen]
    lines += [f"  {name} (batch level, see augment.mixer): {BATCH_OPS[name]}" for name in batch_ops]
    if len(lines) == 1:
        lines.append("  nothing (identity)")
    return "\n".join(lines)
