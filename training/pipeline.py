"""tf.data input pipelines from an ImageSet: batched, one-hot, prefetched."""

from __future__ import annotations

import numpy as np

from core.rows import on_disk, reader


def make_pipeline(images, labels: np.ndarray, num_classes: int, *, batch_size: int, shuffle: bool, seed: int,
                  one_hot: bool = True, cast: bool = True, shard: tuple[int, int] | None = None):
    """(float32 raw-pixel images, one-hot labels) batches.

    The pipeline shuffles indices, not images, and reads each batch by
    index (``core.rows.reader``): the images stay where they are, uint8 in
    memory or rows of a folder's cache on disk, and are cast per batch.  A
    dataset-sized shuffle buffer of images would be another whole copy;
    one of indices is 8 bytes an image.  With the same seed the order is
    the one shuffling the images gave.

    ``shard=(count, index)``: this input pipeline's share when ``count``
    workers train together: every worker shuffles the indices alike (same
    seed, same epoch), keeps every ``count``-th from ``index`` on, and reads
    only those images.  Each takes ``len // count`` of them, so every worker
    makes the same number of steps (all-reduce needs that); the few left over
    change each epoch with the shuffle.

    ``cast=False`` hands the uint8 images on as they are: a Keras functional
    network casts its inputs to its input dtype inside its own graph, so
    training needs no float32 copy of every batch in the pipeline (4x the
    bytes to write, then to move); code that does arithmetic on the batches
    themselves (mixup, cutmix) asks for the cast.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(np.arange(len(labels), dtype=np.int64))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if shard is not None:
        count, index = shard
        ds = ds.shard(count, index).take(len(labels) // count)
    read, sort = reader(images, labels), on_disk(images)

    def to_batch(index):  # one stage: every map is another function to start with each epoch's iterator
        if sort:
            # A batch is a set: its order does not change the gradient.  Sorted, the rows of a batch that sit
            # together in the cache file come in one read, and the reads go forward through the file.
            index = tf.sort(index)
        x, y = read(index)
        y = tf.one_hot(y, num_classes) if one_hot else y
        return (tf.cast(x, tf.float32) if cast else x), y

    return ds.batch(batch_size).map(to_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
