"""Any tensorflow-datasets dataset by name (``tfds:NAME``), read into memory.

Works offline when the dataset is already prepared in ``data_dir``; otherwise
TFDS downloads and prepares it, and a failure says where to put prepared data.
"""

from __future__ import annotations

import numpy as np

from core.errors import UserError


def _to_arrays(builder, split: str, image_size, channels):
    import tensorflow as tf

    image_key, label_key = builder.info.supervised_keys
    ds = builder.as_dataset(split=split, as_supervised=True)

    def fit(image, label):
        image = tf.convert_to_tensor(image)
        if channels is not None and image.shape[-1] != channels:
            image = tf.image.rgb_to_grayscale(image) if channels == 1 else tf.image.grayscale_to_rgb(image)
        if image_size is not None:
            image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, image_size)), 0, 255), tf.uint8)
        return image, label

    images, labels = [], []
    for image, label in ds.map(fit).as_numpy_iterator():
        images.append(image)
        labels.append(label)
    if not images:
        raise UserError(f"TFDS split {split!r} of {builder.name!r} is empty")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise UserError(f"TFDS dataset {builder.name!r} has images of different sizes; pass --image-size H W")
    return np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int64)


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
    train = _to_arrays(builder, "train", image_size, channels)
    test = _to_arrays(builder, "test", image_size, channels) if "test" in splits else None
    val = _to_arrays(builder, val_name, image_size, channels) if val_name else None
    return class_names, train, test, val
