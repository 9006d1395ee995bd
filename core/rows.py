"""Working on a split's images a batch at a time, whether they sit in memory or on disk.

A split's images are an (N, H, W, C) uint8 array, or, for a folder source, an
``imagesets.diskarray.DiskImages`` that reads rows from the folder's image
cache when indexed.  Both index the same way (``images[index]`` gives an
ndarray), so code that goes a batch at a time never holds a whole split:
that is what keeps a folder of any size within memory.  A view of some rows
(``take``) and a join of two splits (``concatenate``) stay views on disk.
"""

from __future__ import annotations

import numpy as np

CHUNK = 256  # images per read; at 224x224x3 as float32, 154 MB


def on_disk(images) -> bool:
    """True for an array-like that reads its rows from a file (it knows how to make views of itself)."""
    return hasattr(images, "select") and not isinstance(images, np.ndarray)


def take(images, index):
    """The rows ``index`` of ``images``: a view for images on disk, an array copy in memory."""
    return images.select(index) if on_disk(images) else images[index]


def concatenate(parts):
    """The rows of ``parts`` one after the other, as ``np.concatenate`` (a view for images on disk)."""
    if all(on_disk(part) for part in parts):
        first, *rest = parts
        return first.concat(*rest)
    return np.concatenate([np.asarray(part) for part in parts])


def batches(images, size: int = CHUNK, dtype=None):
    """Consecutive batches of at most ``size`` rows, as ndarrays (cast to ``dtype`` when given)."""
    for start in range(0, len(images), size):
        batch = images[start:start + size]
        yield batch if dtype is None else np.asarray(batch, dtype)


def predict(model, images, batch_size: int = 256, *, transform=None, progress=None) -> np.ndarray:
    """``model.predict`` over ``images`` a chunk at a time, as float32 raw pixels.

    Keras would cast and hold the whole split at once (a float32 copy, 4x
    the uint8 images); a chunk at a time holds one chunk.  ``transform``
    maps each float32 chunk first (a TTA view); ``progress`` (a
    ``core.progress.Progress``) is told of each chunk done.
    """
    if len(images) == 0:  # as Keras answers an empty split
        return np.asarray(model.predict(np.zeros((0, *images.shape[1:]), np.float32), verbose=0))
    return np.concatenate(list(predict_chunks(model, images, batch_size, transform=transform, progress=progress)))


def predict_chunks(model, images, batch_size: int = 256, *, transform=None, progress=None):
    """``predict``'s outputs a chunk at a time, in order, for a caller that stores them as they come
    (a backbone's features written to disk); nothing for no images."""
    chunk = batch_size * max(1, CHUNK // batch_size)  # whole batches, so the batches are Keras' own
    for part in batches(images, chunk, np.float32):
        part = transform(part) if transform is not None else part
        out = np.asarray(model.predict(part, batch_size=batch_size, verbose=0))
        if progress is not None:
            progress.update(len(part))
        yield out


def reader(images, labels):
    """A ``tf.data`` map function: a batch of indices -> (uint8 images, int32 labels) of those rows.

    The images are not copied into TensorFlow: a pipeline shuffles indices
    and reads each batch by index (in ``tf.numpy_function``; a disk read
    releases the GIL), so it holds a few batches of images, never the split.
    """
    import tensorflow as tf

    labels = np.asarray(labels).astype(np.int32)
    dtype, row_shape = tf.as_dtype(images.dtype), tuple(images.shape[1:])

    def read(index):
        return np.asarray(images[index]), labels[index]

    def read_batch(index):
        x, y = tf.numpy_function(read, [index], [dtype, tf.int32], stateful=False)
        return tf.ensure_shape(x, (None, *row_shape)), tf.ensure_shape(y, (None,))

    return read_batch
