"""Per-image PIL versions of RandAugment's operations.

The vectorized ``RandAugment`` layer is checked against these in the tests
and timed against them in ``bench/bench_augment.py``; they are the plain,
one-image-at-a-time definition of each operation (Cubuk et al. 2019).
"""

from __future__ import annotations

from PIL import Image, ImageEnhance, ImageOps


def pil_op(picture: Image.Image, name: str, level: float, sign: float) -> Image.Image:
    """Applies RandAugment operation ``name`` at magnitude ``level`` (0-10) to an RGB PIL image;
    ``sign`` (+1 or -1) picks the direction of signed operations."""
    factor = 1.0 + sign * level / 10 * 0.9
    amount = sign * level / 10
    affine = {"shear_x": (1, amount * 0.3, 0, 0, 1, 0), "shear_y": (1, 0, 0, amount * 0.3, 1, 0),
              "translate_x": (1, 0, amount * 0.3 * picture.width, 0, 1, 0),
              "translate_y": (1, 0, 0, 0, 1, amount * 0.3 * picture.height)}
    if name in affine:
        return picture.transform(picture.size, Image.AFFINE, affine[name], fillcolor=(128, 128, 128))
    return {
        "identity": lambda: picture,
        "rotate": lambda: picture.rotate(amount * 30, fillcolor=(128, 128, 128)),
        "auto_contrast": lambda: ImageOps.autocontrast(picture),
        "equalize": lambda: ImageOps.equalize(picture),
        "solarize": lambda: ImageOps.solarize(picture, 256 - level / 10 * 256),
        "posterize": lambda: ImageOps.posterize(picture, 8 - int(level / 10 * 4)),
        "color": lambda: ImageEnhance.Color(picture).enhance(factor),
        "contrast": lambda: ImageEnhance.Contrast(picture).enhance(factor),
        "brightness": lambda: ImageEnhance.Brightness(picture).enhance(factor),
        "sharpness": lambda: ImageEnhance.Sharpness(picture).enhance(factor),
    }[name]()
