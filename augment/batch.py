"""Batch-level augmentation that mixes images *and* labels: mixup and CutMix.

These change the labels, so they cannot live in the model's augmentation
layer; map them over a batched ``tf.data.Dataset`` instead and train with
categorical cross-entropy on the resulting soft labels::

    mix = augment.mixer("mixup+cutmix", num_classes=10, seed=0)
    train = data.train.shuffle(10_000).batch(128).map(mix)
    model.compile(loss=keras.losses.CategoricalCrossentropy(), ...)

Each image is mixed with a partner from a random permutation of its batch,
with its own mixing weight drawn from Beta(alpha, alpha).  Randomness is
TensorFlow's stateful op-seeded kind, so a traced ``map`` gives a new draw for
every batch while a fixed ``seed`` repeats the sequence run to run.
"""

from __future__ import annotations

import tensorflow as tf

BATCH_OPS = {
    "mixup": "mixup (Zhang et al. 2018): a convex blend of two images and their labels, weight ~ Beta(0.2, 0.2)",
    "cutmix": "CutMix (Yun et al. 2019): a box from a partner image pasted in, labels weighted by area, "
              "area ~ Beta(1, 1)",
}
DEFAULT_ALPHA = {"mixup": 0.2, "cutmix": 1.0}


def _op_seed(seed, offset):
    return None if seed is None else int(seed) + offset


def _soft_labels(labels, num_classes):
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 1 or (labels.shape.rank == 2 and labels.shape[-1] == 1 and num_classes != 1):
        if num_classes is None:
            raise ValueError("Integer labels need num_classes to become one-hot labels")
        return tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), int(num_classes))
    return tf.cast(labels, tf.float32)


def _beta(shape, alpha, seed):
    """Beta(alpha, alpha) from two gammas (TensorFlow has no beta sampler)."""
    first = tf.random.gamma(shape, alpha, seed=_op_seed(seed, 1))
    second = tf.random.gamma(shape, alpha, seed=_op_seed(seed, 2))
    return first / tf.maximum(first + second, 1e-12)


def _partners(batch, seed):
    return tf.random.shuffle(tf.range(batch), seed=_op_seed(seed, 3))


def _check_alpha(alpha):
    if float(alpha) <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    return float(alpha)


def mixup(images, labels, alpha: float = 0.2, seed: int | None = None, num_classes: int | None = None):
    """mixup (Zhang, Cisse, Dauphin & Lopez-Paz 2018) on one batch.

    ``image_i' = lam_i * image_i + (1 - lam_i) * image_j`` and the same for
    the labels, with ``j`` a random partner in the batch and
    ``lam_i ~ Beta(alpha, alpha)``.

    Args:
        images: (B, H, W, C) raw pixels.
        labels: (B, K) one-hot (or soft) labels, or (B,) integers with
            ``num_classes``.
        alpha: Beta concentration; 0.2 is the paper's ImageNet value, 1.0
            its CIFAR one.
        seed: op seed for a repeatable sequence of batches.
        num_classes: K, needed only for integer labels.

    Returns:
        (mixed float32 images, float32 soft labels summing to 1 per row).

    Examples:
        >>> import augment, numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> labels = np.array([0, 1, 2, 3])
        >>> mixed, soft = augment.mixup(images, labels, alpha=0.2, seed=0, num_classes=10)
        >>> mixed.shape, soft.shape  # each row of soft sums to 1
        (TensorShape([4, 32, 32, 3]), TensorShape([4, 10]))
    """
    alpha = _check_alpha(alpha)
    images = tf.cast(images, tf.float32)
    labels = _soft_labels(labels, num_classes)
    batch = tf.shape(images)[0]
    weight = _beta([batch], alpha, seed)
    partner = _partners(batch, seed)
    mixed = (weight[:, None, None, None] * images
             + (1.0 - weight[:, None, None, None]) * tf.gather(images, partner))
    soft = weight[:, None] * labels + (1.0 - weight[:, None]) * tf.gather(labels, partner)
    return mixed, soft


def cutmix(images, labels, alpha: float = 1.0, seed: int | None = None, num_classes: int | None = None):
    """CutMix (Yun et al. 2019, "CutMix: Regularization Strategy to Train
    Strong Classifiers with Localizable Features") on one batch.

    A box covering a ``1 - lam`` share of the image (``lam ~ Beta(alpha,
    alpha)``), centred uniformly and clipped at the border, is copied from a
    random partner; the labels are weighted by the pixel shares actually
    kept after clipping.

    Args:
        images: (B, H, W, C) raw pixels.
        labels: (B, K) one-hot (or soft) labels, or (B,) integers with
            ``num_classes``.
        alpha: Beta concentration (1.0 in the paper).
        seed: op seed for a repeatable sequence of batches.
        num_classes: K, needed only for integer labels.

    Returns:
        (mixed float32 images, float32 soft labels summing to 1 per row).

    Examples:
        >>> import augment, numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> labels = np.array([0, 1, 2, 3])
        >>> mixed, soft = augment.cutmix(images, labels, alpha=1.0, seed=0, num_classes=10)
        >>> mixed.shape, soft.shape
        (TensorShape([4, 32, 32, 3]), TensorShape([4, 10]))
    """
    alpha = _check_alpha(alpha)
    images = tf.cast(images, tf.float32)
    labels = _soft_labels(labels, num_classes)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    cut = tf.sqrt(1.0 - _beta([batch], alpha, seed))
    centre = tf.random.uniform([batch, 2], seed=_op_seed(seed, 4))

    def span(size, fraction, where):
        size_f = tf.cast(size, tf.float32)
        half = tf.cast(tf.round(fraction * size_f), tf.int32) // 2
        middle = tf.cast(where * size_f, tf.int32)
        return tf.clip_by_value(middle - half, 0, size), tf.clip_by_value(middle + half, 0, size)

    top, bottom = span(height, cut, centre[:, 0])
    left, right = span(width, cut, centre[:, 1])
    rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    box = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]
    partner = _partners(batch, seed)
    mixed = tf.where(box, tf.gather(images, partner), images)
    kept = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / tf.cast(height * width, tf.float32)
    soft = kept[:, None] * labels + (1.0 - kept[:, None]) * tf.gather(labels, partner)
    return mixed, soft


def mixer(spec, *, num_classes: int | None = None, seed: int | None = None, alpha: dict | None = None):
    """A ``tf.data``-mappable ``(images, labels) -> (images, soft labels)``.

    Args:
        spec: "mixup", "cutmix", or both (a list, or a "+"-joined spec; other
            parts of a policy spec are ignored).  With both, each batch uses
            one of them, chosen at random.
        num_classes: needed when the labels are integers.
        seed: op seed.
        alpha: per-op Beta concentration overrides, e.g. ``{"mixup": 1.0}``.

    Returns:
        The function, or None when ``ops`` names neither.

    Examples:
        >>> import augment, numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> labels = np.array([0, 1, 2, 3])
        >>> import tensorflow as tf
        >>> batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
        >>> batches = batches.map(augment.mixer("mixup", num_classes=10, seed=0))
        >>> [tensor.shape for tensor in next(iter(batches))]
        [TensorShape([4, 32, 32, 3]), TensorShape([4, 10])]
    """
    if isinstance(spec, str):
        spec = [part.strip().lower() for part in spec.split("+")]
    chosen = [name for name in BATCH_OPS if name in spec]
    if not chosen:
        return None
    alphas = {**DEFAULT_ALPHA, **(alpha or {})}
    functions = {"mixup": mixup, "cutmix": cutmix}

    def apply(name, images, labels):
        return functions[name](images, labels, alpha=alphas[name], seed=seed, num_classes=num_classes)

    def mix(images, labels):
        if len(chosen) == 1:
            return apply(chosen[0], images, labels)
        coin = tf.random.uniform([], seed=_op_seed(seed, 5)) < 0.5
        return tf.cond(coin, lambda: apply(chosen[0], images, labels), lambda: apply(chosen[1], images, labels))

    return mix
