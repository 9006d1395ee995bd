"""Datasets: every source gives the same thing, an ``ImageSet`` of raw uint8
images and integer labels split into train / val / test, plus class names.

    import imagesets
    data = imagesets.load("digits")
    data = imagesets.load("folder:photos", image_size=(96, 96), channels=3)
    data.train            # tf.data.Dataset of (uint8 image, int32 label)
    data.class_names, data.input_shape

Sources: ``digits`` (scikit-learn, offline), ``mnist`` and ``fashion_mnist``
(local IDX files or a Keras download), ``cifar10``, ``folder:PATH`` and
``tfds:NAME``.  Splits a source lacks are carved out of its training data,
per class and seeded.
"""

from __future__ import annotations

import difflib

import numpy as np

from imagesets.base import SPLITS, ImageSet, from_arrays, stratified_split
from core import quick
from core.errors import UserError

SOURCES = {
    "digits": "scikit-learn's 8x8 handwritten digits (1,797 images; bundled, no download)",
    "mnist": "MNIST handwritten digits, 28x28 (local IDX files or a Keras download)",
    "fashion_mnist": "Fashion-MNIST clothing, 28x28 (local IDX files, Debian's package, or a Keras download)",
    "cifar10": "CIFAR-10, 32x32 colour (Keras' cache or a download)",
    "folder:PATH": "your own images: PATH/<class>/<image files>, or PATH/train|val|test/<class>/...",
    "tfds:NAME": "any tensorflow-datasets dataset prepared in --data-dir (or downloadable), streamed to disk",
}

__all__ = ["ImageSet", "SOURCES", "SPLITS", "load", "stratified_split"]


def _resize_arrays(images: np.ndarray, size, channels) -> np.ndarray:
    import tensorflow as tf

    if channels is not None and images.shape[-1] != channels:
        images = np.repeat(images, 3, axis=-1) if channels == 3 else np.round(
            images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None].astype(np.uint8)
    if size is not None and tuple(images.shape[1:3]) != tuple(size):
        images = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(images, size)), 0, 255), tf.uint8).numpy()
    return images


def load(spec: str, *, data_dir: str | None = None, image_size=None, channels: int | None = None,
         val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0, exclude=()) -> ImageSet:
    """Loads the dataset ``spec`` (see ``SOURCES``).

    Args:
        spec: "digits", "mnist", "fashion_mnist", "cifar10", "folder:PATH" or "tfds:NAME".
        data_dir: where local files live (IDX files, CIFAR batches, TFDS data).
        image_size: (height, width) to resize to; folders need it, other sources
            keep their native size when it is None.
        channels: 1 or 3 to convert to; None keeps the source's.
        val_fraction, test_fraction: shares carved per class when a source has no
            such split (test only for sources without a test split).
        seed: the split's seed.
        exclude: (path, reason) pairs of a folder's files to leave out (``--exclude``).

    Raises:
        UserError: unknown source, missing files, unusable folder.
    """
    from imagesets import builtin

    for name, share in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= share < 0.9:
            raise UserError(f"{name} must be in [0, 0.9), got {share}")
    skipped, ignored, scan = [], None, None
    kind, _, arg = spec.partition(":")
    if exclude and not (kind == "folder" and arg):
        raise UserError(f"--exclude leaves out files of a folder dataset; {spec!r} is not a folder:PATH")
    if kind == "folder" and arg:
        from imagesets.folder import folder

        if image_size is None:
            raise UserError("folder datasets need an image size (--image-size H W)")
        class_names, train, test, val, skipped, ignored, scan = folder(arg, image_size=tuple(image_size),
                                                                       channels=channels or 3, exclude=exclude)
    elif kind == "tfds" and arg:
        from imagesets.tfds_source import tfds_dataset

        class_names, train, test, val = tfds_dataset(arg, data_dir, image_size, channels)
    elif spec == "digits":
        class_names, train, test = builtin.digits()
        val = None
    elif spec in ("mnist", "fashion_mnist"):
        class_names, train, test = builtin.idx_dataset(spec, data_dir)
        val = None
    elif spec == "cifar10":
        class_names, train, test = builtin.cifar10(data_dir)
        val = None
    else:
        names = [s.split(":")[0] for s in SOURCES]
        close = difflib.get_close_matches(spec, names, n=2)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(f"Unknown dataset {spec!r}; {hint}valid: {', '.join(SOURCES)}")

    if kind not in ("folder", "tfds"):  # a built-in dataset; a folder or a TFDS set is the reader's own, read whole
        train, test, val = quick.cap_split(train, "train"), quick.cap_split(test, "test"), quick.cap_split(val, "val")

    def fit(part):
        return None if part is None else (_resize_arrays(part[0], image_size, channels), part[1])

    # One stable name per source keeps run names and exports readable.
    return from_arrays(spec, class_names, fit(train), fit(test), fit(val), val_fraction=val_fraction,
                       test_fraction=test_fraction, seed=seed, skipped=skipped, ignored=ignored, scan=scan)
