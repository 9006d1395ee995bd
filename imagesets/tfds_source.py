"""Any tensorflow-datasets dataset by name (``tfds:NAME``), streamed into the image cache.

Works offline when the dataset is already prepared in ``data_dir``; otherwise
TFDS downloads and prepares it, and a failure says where to put prepared data.

A split is never held in memory: its records are read once, a few at a
time, resized to the run's size and written as rows of an image-cache entry
(``imagesets.cache``), and the split is those rows (``DiskImages``) with its
labels, like a folder's.  Later loads (a rerun, a resumed run, each search
trial) read the entry instead of the records.  The entry is keyed by the
split's record files (paths, sizes, times), the dataset's name, version and
split, and the target size, so a re-prepared dataset or another size gives
another entry.
"""

from __future__ import annotations

import numpy as np

from core.errors import UserError
from core.progress import Progress
from imagesets import cache


PREFETCH = 64              # decoded images waiting to be written into the cache
RAM_BUDGET = 64 * 2 ** 20  # bytes tf.data's autotuner may give the whole reading pipeline's buffers


def _row_shape(builder, image_size, channels) -> tuple[int, int, int]:
    """(H, W, C) every image of the dataset becomes: ``image_size`` and ``channels`` when given, else the
    dataset's own (which must then be one size for all)."""
    stored = tuple(builder.info.features[builder.info.supervised_keys[0]].shape)
    height, width = image_size if image_size is not None else stored[:2]
    depth = channels or (stored[2] if len(stored) > 2 else 1)
    if None in (height, width, depth):
        raise UserError(f"TFDS dataset {builder.name!r} has images of different sizes; pass --image-size H W")
    return int(height), int(width), int(depth)


def _records(builder, split: str, row_shape):
    """(uint8 image of ``row_shape``, label) for each record of ``split``, read a few at a time."""
    return _dataset(builder, split, row_shape).as_numpy_iterator()


def _dataset(builder, split: str, row_shape):
    """``split``'s records as a tf.data pipeline of (uint8 image of ``row_shape``, label)."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    height, width, depth = row_shape

    def fit(image, label):
        image = tf.convert_to_tensor(image)
        if image.shape[-1] != depth:
            image = tf.image.rgb_to_grayscale(image) if depth == 1 else tf.image.grayscale_to_rgb(image)
        if image.shape[0] != height or image.shape[1] != width:
            image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, (height, width))), 0, 255), tf.uint8)
        return image, label

    # No auto-cache: when a dataset's records take under 250 MiB, tfds keeps every decoded image of the split in
    # memory as it reads it (``try_autocache``), the copy this module exists to avoid.  Loading bench_memory's
    # 6,000 160x160 photos (--kinds tfds) peaked at 1,173 MB with it, 700 MB without; 1,500 at 775 and 682.
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False))
    ds = ds.map(fit, num_parallel_calls=tf.data.AUTOTUNE).prefetch(PREFETCH)
    # tf.data's autotuner may otherwise let buffers grow towards half the machine's memory while the records
    # are written to disk more slowly than they are read; a few dozen images in flight keep both busy.
    options = tf.data.Options()
    options.autotune.ram_budget = RAM_BUDGET
    return ds.with_options(options)


def _split_rows(builder, split: str, row_shape):
    """(DiskImages, labels) of ``split``: its cache entry, written first if there is none yet."""
    info = builder.info.splits[split]
    count = int(info.num_examples)
    if not count:
        raise UserError(f"TFDS split {split!r} of {builder.name!r} is empty")
    files = sorted(str(path) for path in info.filepaths)
    key = cache.source_key(files, row_shape, identity=("tfds", builder.name, str(builder.version), split))

    def decode(store):
        labels = np.zeros(count, np.int64)
        progress = Progress(count, label=f"Reading {builder.name} {split}", unit="images")
        seen = 0
        for seen, (image, label) in enumerate(_records(builder, split, row_shape), start=1):
            if seen > count:
                break
            store(seen - 1, np.asarray(image, np.uint8).reshape(row_shape))
            labels[seen - 1] = int(label)
            progress.update()
        progress.close()
        if seen != count:
            raise UserError(f"TFDS split {split!r} of {builder.name!r} gave {seen} records, its info says {count}; "
                            "prepare it again (tfds build)")
        return {"errors": [None] * count, "labels": labels.tolist()}

    try:
        pixels, meta = cache.load_or_build_rows(key, count, row_shape, decode)
    except OSError as error:
        raise UserError(f"cannot write the image cache under {cache.cache_root()!r} ({error}); set "
                        f"{cache.CACHE_ENV} to a writable folder with room for the dataset") from None
    return pixels, np.asarray(meta["labels"], np.int64)


def tfds_dataset(name: str, data_dir: str | None, image_size, channels):
    """Returns (class_names, train, test_or_None, val_or_None) for TFDS dataset ``name``."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        raise UserError(f"Unknown TFDS dataset {name!r}: {str(error).splitlines()[0]}") from None
    if not builder.is_prepared():
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise UserError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and could not be downloaded "
                f"({type(error).__name__}); prepare it there on a machine with internet access "
                f"(tfds build {name} --data_dir DIR) and pass --data-dir DIR") from None
    if not builder.info.supervised_keys:
        raise UserError(f"TFDS dataset {name!r} has no (image, label) supervised keys")
    label_feature = builder.info.features[builder.info.supervised_keys[1]]
    class_names = list(getattr(label_feature, "names", None) or [str(i) for i in range(label_feature.num_classes)])
    splits = builder.info.splits
    val_name = next((s for s in ("validation", "val") if s in splits), None)
    row_shape = _row_shape(builder, image_size, channels)
    train = _split_rows(builder, "train", row_shape)
    test = _split_rows(builder, "test", row_shape) if "test" in splits else None
    val = _split_rows(builder, val_name, row_shape) if val_name else None
    return class_names, train, test, val

