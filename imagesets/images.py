"""Decoding image files into arrays the way the models expect them.

One function does it for training data (folder datasets) and for inference
(``predict.py``), so a photo is converted exactly the same way in both.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

# Extensions we look at; the content decides in the end (PIL sniffs the header).
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def is_hidden(name: str) -> bool:
    """OS litter and tool folders: .DS_Store, .ipynb_checkpoints, Thumbs.db, ._foo."""
    return name.startswith(".") or name.startswith("__") or name.lower() in {"thumbs.db", "desktop.ini"}


def _flatten_alpha(image: Image.Image) -> Image.Image:
    # Transparent pixels become white, the usual background of product shots and
    # drawings, instead of the arbitrary colour stored under alpha=0.
    background = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Converts any PIL mode (L, LA, P, RGB, RGBA, CMYK, I;16, ...) to L or RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: rescale to 8 bits rather than clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = _flatten_alpha(image)
    if channels == 1:
        return image.convert("L")
    if channels == 3:
        return image.convert("RGB")
    raise ValueError(f"channels must be 1 or 3, got {channels!r}")


def load_image(path: str | os.PathLike, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """Reads one image file into a uint8 array of shape (H, W, channels).

    Animated images give their first frame; EXIF orientation is applied;
    ``size`` is (height, width), or None to keep the file's size.

    Raises:
        OSError / ValueError / Image.DecompressionBombError for files that are
        not readable images.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            image = to_mode(image, channels)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
            array = np.asarray(image, dtype=np.uint8)
    return array.reshape(array.shape[0], array.shape[1], channels)


def list_images(folder: str | os.PathLike) -> list[str]:
    """Every non-hidden file under ``folder`` (recursively), sorted; no extension filter."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        found.extend(os.path.join(root, f) for f in sorted(files) if not is_hidden(f))
    return found
