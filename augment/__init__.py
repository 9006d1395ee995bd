"""Data augmentation for raw-pixel image batches.

    import augment
    layer = augment.policy("standard", input_shape=(32, 32, 3), seed=0)
    model = core.model.assemble(network, (32, 32, 3), preprocessing=..., augmentation=layer)
    print(augment.describe("light+randaugment", input_shape=(28, 28, 1)))

    mix = augment.mixer("mixup", num_classes=10, seed=0)   # batch level
    train = data.train.batch(128).map(mix)                  # soft labels

    probabilities = augment.predict_tta(model, images, mode="flip")
    augment.save_grid(images, layer, "preview.png")

The layers take float32 NHWC batches of raw 0-255 pixels and are the
identity unless called with ``training=True``.  See ``augment.policies`` for
what each named policy contains.
"""

from augment.batch import BATCH_OPS, cutmix, mixer, mixup
from augment.layers import (
    Cutout,
    ElasticDistortion,
    PCAColorJitter,
    PixelNoise,
    RandomCropWithPadding,
    RandomErasing,
    RandomImageLayer,
    RandomSaturation,
    fit_pca,
)
from augment.policies import COMPONENTS, POLICIES, Augmentation, default_flips, describe, names, parse, policy
from augment.preview import save_grid
from augment.randaugment import RandAugment
from augment.tta import predict_tta

__all__ = [
    "Augmentation",
    "BATCH_OPS",
    "COMPONENTS",
    "POLICIES",
    "Cutout",
    "ElasticDistortion",
    "PCAColorJitter",
    "PixelNoise",
    "RandAugment",
    "RandomCropWithPadding",
    "RandomErasing",
    "RandomImageLayer",
    "RandomSaturation",
    "cutmix",
    "default_flips",
    "describe",
    "fit_pca",
    "mixer",
    "mixup",
    "names",
    "parse",
    "policy",
    "predict_tta",
    "save_grid",
]
