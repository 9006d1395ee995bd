"""Features computed once: the fast path for a frozen backbone, and a scikit-learn baseline.

With the whole backbone frozen and no augmentation, every epoch would push
the same images through the same frozen network.  ``extract_features`` does
it once; the head then trains on the stored features in a fraction of the
time, and ``classifier_network(backbone, head=head)`` puts that same head
back on the backbone for prediction and export.
"""

from __future__ import annotations

import math
import os
import tempfile
import weakref

import keras
import numpy as np

from core.progress import Progress
from core.rows import on_disk, predict, predict_chunks
from imagesets import cache
from imagesets.diskarray import DiskImages
from transfer.probe import fit_probe, pool


def feature_extractor(backbone) -> keras.Model:
    """Raw 0-255 images -> the backbone's features, in inference mode (built once per backbone,
    so repeated extraction reuses one compiled predict function).

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> transfer.feature_extractor(backbone).output.shape  # raw pixels in, features out
        (None, 1, 1, 120)
    """
    if backbone._extractor is not None:
        return backbone._extractor
    inputs = keras.Input(shape=tuple(backbone.input_shape), dtype="float32", name="image")
    features = backbone.features(backbone.preprocessing(inputs), training=False)
    backbone._extractor = keras.Model(inputs, features, name=f"{backbone.name}_extractor")
    return backbone._extractor


def extract_features(backbone, raw_images, batch_size: int = 64, *, split: str = "") -> np.ndarray:
    """The backbone's features for raw 0-255 images (N, H, W, C), as float32.

    A progress line (stderr) names ``split`` when this takes more than a
    second: a large backbone on a few thousand photos takes minutes on a CPU.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (20, 32, 32, 1)).astype("uint8")
        >>> labels = np.arange(20) % 2
        >>> transfer.extract_features(backbone, images).shape
        (20, 1, 1, 120)
    """
    images = raw_images if hasattr(raw_images, "shape") else np.asarray(raw_images)
    if len(images.shape) != 4 or tuple(images.shape[1:]) != tuple(backbone.input_shape):
        raise ValueError(f"backbone {backbone.name!r} takes images of shape (N, "
                         f"{', '.join(map(str, backbone.input_shape))}), got {tuple(images.shape)}")
    if len(images) == 0:
        return np.zeros((0, *backbone.feature_shape), np.float32)
    # A chunk at a time: a folder's images are read from disk, and no split is held as float32.
    progress = Progress(len(images), label=f"Computing {backbone.name} features{' of ' + split if split else ''}",
                        unit="images")
    if on_disk(images):
        features = _on_disk(feature_extractor(backbone), images, batch_size, progress, backbone.feature_shape)
    else:
        features = np.asarray(predict(feature_extractor(backbone), images, batch_size, progress=progress),
                              np.float32)
    progress.close()
    return features


def _on_disk(extractor, images, batch_size: int, progress, feature_shape) -> DiskImages:
    """Features of images on disk, written to a temporary file as they are computed and read back by row.

    A backbone's feature maps can outweigh its images: MobileNetV2's 7x7x1280 float32 map is 251 KB an image,
    against 151 KB for the 224x224 photo, so 20,000 photos' features would take 5 GB of memory.  On disk
    they take none; the file goes when the last view of it is collected (or, after a crash, with the image
    cache's abandoned entries, a day later).
    """
    folder = os.path.join(cache.cache_root(), "features")
    os.makedirs(folder, exist_ok=True)
    cache.remove_abandoned(folder)
    fd, path = tempfile.mkstemp(prefix="features" + cache.PARTIAL, suffix=".f32", dir=folder)
    owner = _TemporaryFile(path)
    try:
        os.ftruncate(fd, len(images) * math.prod(feature_shape) * 4)
    finally:
        os.close(fd)
    features = DiskImages(path, feature_shape, count=len(images), dtype=np.float32, owner=owner)
    done = 0
    for chunk in predict_chunks(extractor, images, batch_size, progress=progress):
        features.write(done, chunk)
        done += len(chunk)
    return features


class _TemporaryFile:
    """Deletes ``path`` when collected (every view of a ``DiskImages`` holds it as ``owner``)."""

    def __init__(self, path: str):
        self.path = path
        weakref.finalize(self, _remove, path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def pooled(features: np.ndarray) -> np.ndarray:
    """One vector per example: feature maps averaged over their positions.

    Examples:
        >>> import transfer, numpy as np
        >>> transfer.pooled(np.ones((4, 7, 7, 32), "float32")).shape
        (4, 32)
    """
    return pool(features, "avg")


def sklearn_baseline(backbone, data, *, batch_size: int = 64, max_iter: int = 1000) -> dict:
    """The linear probe (``transfer.probe``) on the backbone's global-average-pooled features, scored.

    The quickest honest baseline for a transfer run: if a fine-tuned network
    does not beat a linear classifier on frozen features, the fine-tuning did
    not help.  Features are standardized first, which logistic regression
    needs to converge on unscaled activations.

    Args:
        backbone: a ``transfer.Backbone``.
        data: an ``imagesets.ImageSet``.

    Returns:
        ``{"train_accuracy", "val_accuracy", "test_accuracy"}`` (None for an
        empty split), ``"feature_dim"`` and ``"classifier"``.

    Examples:
        >>> import transfer
        >>> backbone = transfer.load_backbone("zoo:lenet5_modern", input_shape=(32, 32, 1), weights=None)
        >>> import imagesets
        >>> data = imagesets.load("digits", image_size=(32, 32))
        >>> scores = transfer.sklearn_baseline(backbone, data)  # random features: a floor, not a result
        >>> sorted(scores)
        ['classifier', 'feature_dim', 'test_accuracy', 'train_accuracy', 'val_accuracy']
    """
    splits = [split for split in ("train", "val", "test") if split in data.arrays]
    vectors = {split: (pool(extract_features(backbone, data.arrays[split][0], batch_size, split=split)),
                       np.asarray(data.arrays[split][1])) for split in splits}
    probe = fit_probe(*vectors["train"], data.num_classes, max_iter=max_iter)
    return scores(probe, vectors)


def scores(probe, vectors: dict) -> dict:
    """A probe's accuracy on each split of ``{split: (vectors, labels)}``, its size and what it is."""
    result = {f"{split}_accuracy": probe.accuracy(x, y) for split, (x, y) in vectors.items()}
    result["feature_dim"] = int(probe.kernel.shape[0])
    result["classifier"] = probe.classifier
    return result
