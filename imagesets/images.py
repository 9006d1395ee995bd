"""Decoding image files into arrays the way the models expect them.

One function does it for training data (folder datasets) and for inference
(``predict.py``), so a photo is converted exactly the same way in both.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Extensions we look at; the content decides in the end (PIL sniffs the header).
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose applies


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
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    mode = "L" if channels == 1 else "RGB"
    return image if image.mode == mode else image.convert(mode)  # convert() would copy even to its own mode


class NotAnImage(ValueError):
    """A file that cannot be used as an image; the message is the reason, for the data manifest."""


def max_pixels() -> int:
    """The largest image (width x height) we decode: PIL's decompression-bomb limit (~89 megapixels)."""
    return int(Image.MAX_IMAGE_PIXELS or 89_478_485)


def _byte_count(source) -> int:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source)
    position = source.seek(0, os.SEEK_END)
    source.seek(0)
    return position


def _open_checked(source):
    """Opens ``source`` (a path, or a binary file such as an upload) reading only its header, refusing empty
    files and decompression bombs."""
    if _byte_count(source) == 0:
        raise NotAnImage("empty file (0 bytes)")
    with warnings.catch_warnings():
        # PIL only warns between 1x and 2x its limit; the explicit check below refuses those too.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except Image.DecompressionBombError as error:
            raise NotAnImage(f"too many pixels, refused from its header ({error})".splitlines()[0]) from None
        except UnidentifiedImageError:
            raise NotAnImage("not an image: its content is no known image format") from None
    width, height = image.size
    if width * height > max_pixels():
        image.close()
        raise NotAnImage(f"too many pixels ({width}x{height} > {max_pixels():,}), refused from its header "
                         "as a possible decompression bomb")
    return image


def _draft_jpeg(image: Image.Image, size: tuple[int, int], channels: int) -> None:
    """Asks libjpeg to decode a large JPEG at 1/2, 1/4 or 1/8 scale, never below ``size``.

    JPEG stores 8x8 blocks of frequencies, so libjpeg can reconstruct a
    smaller image straight from them (DCT-domain scaling) instead of decoding
    every pixel and shrinking afterwards: a 12-megapixel phone photo bound for
    224x224 decodes at 504x378, several times faster.  Only a JPEG at least
    twice the target in both sides is drafted, so smaller images decode
    exactly as before.  The target is taken in the stored orientation: EXIF
    orientation is applied after decoding.
    """
    height, width = size

    def twice(w, h):
        return image.size[0] >= 2 * w and image.size[1] >= 2 * h

    if image.format not in ("JPEG", "MPO") or not (twice(width, height) or twice(height, width)):
        return  # the common small image: not even its EXIF is read
    if image.getexif().get(ORIENTATION) in (5, 6, 7, 8):  # stored sideways: rotated 90 degrees after decoding
        height, width = width, height
    if twice(width, height):
        # "L" lets libjpeg skip the colour channels of a YCbCr JPEG when a grey image is wanted.
        image.draft("L" if channels == 1 else None, (width, height))


def load_image(path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """Reads one image file into a uint8 array of shape (H, W, channels).

    ``path`` is a file's path or an open binary file (the model server passes uploads as ``io.BytesIO``,
    so an uploaded image is converted exactly as a file on disk).  The content decides, not the extension.  Animated images give their first
    frame; EXIF orientation is applied; ``size`` is (height, width), or None
    to keep the file's size.  A JPEG at least twice ``size`` in both sides is
    decoded at a reduced scale first (see ``_draft_jpeg``).  Images over
    ``max_pixels()`` are refused from their header, before any pixel is
    decoded.

    Raises:
        NotAnImage: empty, unidentifiable or oversized files.
        OSError / ValueError / SyntaxError: truncated or corrupt image data.
    """
    with _open_checked(path) as image:
        image.seek(0)
        if size is not None:
            _draft_jpeg(image, size, channels)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # in place: without an EXIF turn it would copy the pixels
        image = to_mode(image, channels)
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
        array = np.asarray(image, dtype=np.uint8)
    return array.reshape(array.shape[0], array.shape[1], channels)


def problem(error: BaseException) -> str:
    """One line saying why a file was not usable, for logs and the data manifest."""
    if isinstance(error, NotAnImage):
        return str(error)
    text = str(error).splitlines()[0] if str(error) else ""
    if "truncated" in text.lower() or isinstance(error, EOFError):
        return f"truncated image ({text or type(error).__name__})"[:200]
    return f"unreadable image ({type(error).__name__}: {text})"[:200]


def list_images(folder: str | os.PathLike) -> list[str]:
    """Every non-hidden file under ``folder`` (recursively), sorted; no extension filter."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        found.extend(os.path.join(root, f) for f in sorted(files) if not is_hidden(f))
    return found
