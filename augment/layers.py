"""Batched augmentation layers for raw-pixel images.

Every layer here takes float32 NHWC batches with pixel values in 0-255 (a
single HWC image works too), draws one independent transformation per image,
and is the identity unless called with ``training=True``.  Randomness comes
from a ``keras.random.SeedGenerator``, so a fixed ``seed`` gives a repeatable
sequence, inside a model and inside a ``tf.data`` map alike.

Keras' own layers are used where they fit (flip, translation, rotation, zoom,
brightness, contrast, saturation, hue); the ones here cover what Keras lacks
or does differently:

* ``RandomCropWithPadding``: the CIFAR crop (He et al. 2016): pad, then crop a
  random window of the original size.  One pad and one gather per batch.
* ``RandomErasing`` (Zhong et al. 2017) and ``Cutout`` (DeVries & Taylor
  2017).  Keras' ``RandomErasing`` samples height and width fractions
  independently and fills with clipped normal noise, half of which is black.
* ``PCAColorJitter``: AlexNet's "fancy PCA" lighting noise (Krizhevsky et al.
  2012, Section 4.1), with ``fit_pca`` to learn it from training pixels.
* ``PixelNoise``: additive Gaussian noise in pixel units; Keras'
  ``GaussianNoise`` refuses a standard deviation above 1.
* ``ElasticDistortion``: Simard, Steinkraus & Platt 2003's elastic
  distortions, the augmentation their MNIST results rest on; Keras has none.
* ``RandomSaturation``: Keras' layer clips the HSV saturation to
  ``value_range`` instead of [0, 1], so on 0-255 inputs a saturation boost
  gives negative pixels.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

# Eigen decomposition of ImageNet's RGB covariance, pixels scaled to [0, 1]
# (the values fb.resnet.torch and most AlexNet re-implementations use).
# Eigenvectors are the columns.
IMAGENET_EIGENVALUES = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class RandomImageLayer(keras.layers.Layer):
    """Shared plumbing: identity outside training, a seed, single images.

    Subclasses implement ``augment(images)`` for a float NHWC batch whose
    height and width are known statically.

    Examples:
        >>> import augment, keras
        >>> class Invert(augment.RandomImageLayer):
        ...     def augment(self, images):  # a float NHWC batch of 0-255 pixels
        ...         flip = keras.random.uniform((keras.ops.shape(images)[0], 1, 1, 1), seed=self.generator) < 0.5
        ...         return keras.ops.where(flip, 255.0 - images, images)
        >>> layer = Invert(seed=0)
        >>> layer(keras.ops.zeros((2, 8, 8, 1)), training=True).shape
        TensorShape([2, 8, 8, 1])
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        images = ops.cast(images, self.compute_dtype)
        if not training:
            return images
        if len(images.shape) == 3:
            return self.augment(images[None])[0]
        return self.augment(images)

    def augment(self, images):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _static_size(images):
    height, width = images.shape[1], images.shape[2]
    if height is None or width is None:
        raise ValueError(f"Augmentation needs a known image height and width; got shape {images.shape}")
    return int(height), int(width)


def _take_pixels(images, rows, cols, height: int, width: int):
    """(B, height, width, C): pixel ``(rows[b, i, j], cols[b, i, j])`` of image ``b``, for int32 indices that
    broadcast to (B, height, width).  Flat indices into the whole batch: one gather for all images."""
    image_height, image_width, channels = images.shape[1], images.shape[2], images.shape[-1]
    batch = ops.shape(images)[0]
    first = ops.arange(batch, dtype="int32")[:, None, None] * image_height
    index = (first + rows) * image_width + cols
    pixels = ops.take(ops.reshape(images, (-1, channels)), ops.reshape(index, (-1,)), axis=0)
    return ops.reshape(pixels, (batch, height, width, channels))


def _box_mask(top, left, box_height, box_width, height, width):
    """(B, H, W, 1) booleans, True inside each image's box.

    Built from a row test and a column test, so the cost is two small
    comparisons and one broadcast, not a per-pixel coordinate grid per box.
    """
    rows = ops.arange(height, dtype="int32")[None, :]
    cols = ops.arange(width, dtype="int32")[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_width)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[..., None]


@keras.saving.register_keras_serializable(package="augment")
class RandomCropWithPadding(RandomImageLayer):
    """Pads each image by ``padding`` pixels, then crops a random window of
    the original size: a random integer shift of up to ``padding`` pixels in
    each direction (He et al. 2016's CIFAR augmentation uses ``padding=4``).

    The batch is padded once and every image's window is read with one
    gather, which costs about as much as a flip.

    Args:
        padding: pixels added on every side.
        fill_mode: "constant" (pad with ``fill_value``), "reflect" or
            "symmetric".
        fill_value: pixel value for constant padding.
        seed: integer seed for repeatable crops.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> layer = augment.RandomCropWithPadding(padding=4, seed=0)  # the CIFAR recipe
        >>> layer(images, training=True).shape
        TensorShape([4, 32, 32, 3])
        >>> bool((layer(images) == images).numpy().all())  # the identity unless training
        True
    """

    def __init__(self, padding=4, fill_mode="constant", fill_value=0.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if int(padding) < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")
        if fill_mode not in ("constant", "reflect", "symmetric"):
            raise ValueError(f"fill_mode must be constant, reflect or symmetric; got {fill_mode!r}")
        self.padding = int(padding)
        self.fill_mode = fill_mode
        self.fill_value = float(fill_value)

    def augment(self, images):
        if self.padding == 0:
            return images
        height, width = _static_size(images)
        p = self.padding
        pad_width = [[0, 0], [p, p], [p, p], [0, 0]]
        if self.fill_mode == "constant":
            padded = ops.pad(images, pad_width, constant_values=self.fill_value)
        else:
            padded = ops.pad(images, pad_width, mode=self.fill_mode)
        offsets = keras.random.randint((ops.shape(images)[0], 2), 0, 2 * p + 1, seed=self.generator, dtype="int32")
        rows = offsets[:, :1] + ops.arange(height, dtype="int32")[None, :]
        cols = offsets[:, 1:] + ops.arange(width, dtype="int32")[None, :]
        return _take_pixels(padded, rows[:, :, None], cols[:, None, :], height, width)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value}


def _fill(images, fill, generator):
    if fill == "random":
        return keras.random.uniform(ops.shape(images), 0.0, 255.0, seed=generator, dtype=images.dtype)
    return ops.full_like(images, float(fill))


def _check_fill(fill):
    if fill != "random" and not isinstance(fill, (int, float)):
        raise ValueError(f"fill must be a pixel value or 'random', got {fill!r}")
    return fill if fill == "random" else float(fill)


def _check_probability(probability):
    if not 0.0 <= float(probability) <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability!r}")
    return float(probability)


@keras.saving.register_keras_serializable(package="augment")
class RandomErasing(RandomImageLayer):
    """Random Erasing (Zhong et al. 2017, "Random Erasing Data Augmentation").

    With probability ``probability`` an image gets one rectangle whose area
    is a uniform fraction ``area`` of the image and whose aspect ratio
    (height / width) is log-uniform in ``aspect``, filled with uniform random
    pixels (or a constant).  Where the paper redraws a box that does not fit,
    this clips it to the image, which keeps the batch free of loops.

    Args:
        probability: chance that an image is erased.
        area: (min, max) fraction of the image area to erase.
        aspect: (min, max) aspect ratio of the box.
        fill: "random" for uniform 0-255 noise, or a pixel value.
        seed: integer seed.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> layer = augment.RandomErasing(probability=0.5, seed=0)
        >>> layer(images, training=True).shape
        TensorShape([4, 32, 32, 3])
        >>> bool((layer(images) == images).numpy().all())  # the identity unless training
        True
    """

    def __init__(self, probability=0.5, area=(0.02, 0.4), aspect=(0.3, 1 / 0.3), fill="random", seed=None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.probability = _check_probability(probability)
        self.area = (float(area[0]), float(area[1]))
        self.aspect = (float(aspect[0]), float(aspect[1]))
        if not 0.0 < self.area[0] <= self.area[1] <= 1.0:
            raise ValueError(f"area must be 0 < min <= max <= 1, got {area!r}")
        if not 0.0 < self.aspect[0] <= self.aspect[1]:
            raise ValueError(f"aspect must be 0 < min <= max, got {aspect!r}")
        self.fill = _check_fill(fill)

    def augment(self, images):
        height, width = _static_size(images)
        batch = ops.shape(images)[0]
        draws = keras.random.uniform((batch, 5), seed=self.generator)
        area = (self.area[0] + draws[:, 0] * (self.area[1] - self.area[0])) * (height * width)
        log_low, log_high = math.log(self.aspect[0]), math.log(self.aspect[1])
        ratio = ops.exp(log_low + draws[:, 1] * (log_high - log_low))
        box_h = ops.clip(ops.cast(ops.round(ops.sqrt(area * ratio)), "int32"), 1, height)
        box_w = ops.clip(ops.cast(ops.round(ops.sqrt(area / ratio)), "int32"), 1, width)
        top = ops.cast(draws[:, 2] * ops.cast(height - box_h + 1, draws.dtype), "int32")
        left = ops.cast(draws[:, 3] * ops.cast(width - box_w + 1, draws.dtype), "int32")
        erase = (draws[:, 4] < self.probability)[:, None, None, None]
        mask = _box_mask(top, left, box_h, box_w, height, width) & erase
        return ops.where(mask, _fill(images, self.fill, self.generator), images)

    def get_config(self):
        return {**super().get_config(), "probability": self.probability, "area": self.area,
                "aspect": self.aspect, "fill": self.fill}


@keras.saving.register_keras_serializable(package="augment")
class Cutout(RandomImageLayer):
    """Cutout (DeVries & Taylor 2017): a ``size`` x ``size`` square centred on
    a uniformly random pixel, clipped at the border, set to ``fill``.

    The paper zeroes normalized images, i.e. fills with the mean pixel; on
    raw 0-255 inputs the default mid-grey 127.5 plays that part.  It used 16
    pixels on CIFAR-10 (half the side).

    Args:
        size: side of the square in pixels.
        probability: chance that an image gets a square.
        fill: a pixel value, or "random" for uniform noise.
        seed: integer seed.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> layer = augment.Cutout(size=8, seed=0)
        >>> layer(images, training=True).shape
        TensorShape([4, 32, 32, 3])
        >>> bool((layer(images) == images).numpy().all())  # the identity unless training
        True
    """

    def __init__(self, size=16, probability=1.0, fill=127.5, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if int(size) < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self.size = int(size)
        self.probability = _check_probability(probability)
        self.fill = _check_fill(fill)

    def augment(self, images):
        height, width = _static_size(images)
        batch = ops.shape(images)[0]
        centre = keras.random.uniform((batch, 3), seed=self.generator)
        top = ops.cast(centre[:, 0] * height, "int32") - self.size // 2
        left = ops.cast(centre[:, 1] * width, "int32") - self.size // 2
        side = ops.full_like(top, self.size)
        erase = (centre[:, 2] < self.probability)[:, None, None, None]
        mask = _box_mask(top, left, side, side, height, width) & erase
        return ops.where(mask, _fill(images, self.fill, self.generator), images)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "probability": self.probability, "fill": self.fill}


def fit_pca(images, max_pixels: int = 1_000_000, seed: int = 0):
    """Eigen decomposition of the RGB covariance of training pixels, for
    ``PCAColorJitter`` (AlexNet's "fancy PCA").

    Pixels are scaled to [0, 1] first, the scale of the ImageNet values most
    implementations use, so a layer fitted here and one left at the ImageNet
    default jitter comparably.

    Args:
        images: (N, H, W, 3) uint8 or float array of raw 0-255 pixels.
        max_pixels: a seeded random sample of at most this many pixels is
            used; more changes the result very little.
        seed: seed of that sample.

    Returns:
        (eigenvalues, eigenvectors): shape (3,) in decreasing order, and a
        (3, 3) orthonormal matrix whose columns are the eigenvectors.

    Raises:
        ValueError: the images are not RGB.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> eigenvalues, eigenvectors = augment.fit_pca(images)
        >>> eigenvalues.shape, eigenvectors.shape
        ((3,), (3, 3))
    """
    images = images if hasattr(images, "shape") else np.asarray(images)
    if len(images.shape) != 4 or images.shape[-1] != 3:
        raise ValueError(f"fit_pca needs RGB images of shape (N, H, W, 3); got shape {tuple(images.shape)}")
    if not isinstance(images, np.ndarray):  # a folder's images on disk: read a sample, not the split
        images = _sample_rows(images, max_pixels, seed)
    pixels = images.reshape(-1, 3)
    if len(pixels) > max_pixels:
        pixels = pixels[np.random.default_rng(seed).choice(len(pixels), max_pixels, replace=False)]
    covariance = np.cov(pixels.astype(np.float64) / 255.0, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    # Tiny negative values are round-off of a rank-deficient covariance.
    return np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]


def _sample_rows(images, max_pixels: int, seed: int) -> np.ndarray:
    """Enough seeded images of an on-disk split to give ``max_pixels`` pixels, read together."""
    per_image = int(np.prod(images.shape[1:3]))
    count = min(len(images), -(-max_pixels // per_image))
    return images[np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))]


@keras.saving.register_keras_serializable(package="augment")
class PCAColorJitter(RandomImageLayer):
    """AlexNet's lighting noise (Krizhevsky et al. 2012, Section 4.1): every
    image gets ``eigenvectors @ (alpha * eigenvalues)`` added to all of its
    pixels, with ``alpha ~ N(0, std)`` drawn per image and component.

    The shift is computed on the [0, 1] scale of ``fit_pca`` and multiplied
    by 255; results are clipped to 0-255.  The decomposition is part of the
    config, so a saved model keeps it.

    Args:
        eigenvalues: three eigenvalues (default: ImageNet's).
        eigenvectors: 3x3 matrix with the eigenvectors as columns.
        std: standard deviation of ``alpha`` (0.1 in the paper).
        seed: integer seed.

    Raises:
        ValueError: when built for images that do not have 3 channels.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> eigenvalues, eigenvectors = augment.fit_pca(images)  # the training images' colour statistics
        >>> layer = augment.PCAColorJitter(eigenvalues, eigenvectors, std=0.1, seed=0)
        >>> layer(images, training=True).shape
        TensorShape([4, 32, 32, 3])
    """

    def __init__(self, eigenvalues=IMAGENET_EIGENVALUES, eigenvectors=IMAGENET_EIGENVECTORS, std=0.1, seed=None,
                 **kwargs):
        super().__init__(seed=seed, **kwargs)
        values = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
        vectors = np.asarray(eigenvectors, dtype=np.float64)
        if values.shape != (3,) or vectors.shape != (3, 3):
            raise ValueError(f"PCAColorJitter needs 3 eigenvalues and a 3x3 eigenvector matrix; "
                             f"got shapes {values.shape} and {vectors.shape}")
        self.eigenvalues = tuple(float(v) for v in values)
        self.eigenvectors = tuple(tuple(float(v) for v in row) for row in vectors)
        self.std = float(std)

    @classmethod
    def from_images(cls, images, std=0.1, seed=None, **kwargs):
        """A layer whose decomposition is ``fit_pca(images)``."""
        eigenvalues, eigenvectors = fit_pca(images)
        return cls(eigenvalues, eigenvectors, std=std, seed=seed, **kwargs)

    def build(self, input_shape):
        if input_shape[-1] != 3:
            raise ValueError(f"PCAColorJitter needs RGB images (3 channels); got input shape {tuple(input_shape)}")
        super().build(input_shape)

    def augment(self, images):
        batch = ops.shape(images)[0]
        alpha = keras.random.normal((batch, 3), stddev=self.std, seed=self.generator)
        # Row form of eigenvectors @ (alpha * eigenvalues), for all images at once.
        weights = np.asarray(self.eigenvectors, np.float32).T * 255.0
        shift = ops.matmul(alpha * np.asarray(self.eigenvalues, np.float32), weights)
        return ops.clip(images + shift[:, None, None, :], 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "eigenvalues": self.eigenvalues, "eigenvectors": self.eigenvectors,
                "std": self.std}


@keras.saving.register_keras_serializable(package="augment")
class PixelNoise(RandomImageLayer):
    """Additive Gaussian noise in pixel units, clipped to 0-255.

    Keras' ``GaussianNoise`` rejects a standard deviation above 1, which is
    invisible on raw pixels.

    Args:
        stddev: noise standard deviation in pixel values.
        seed: integer seed.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> layer = augment.PixelNoise(stddev=8.0, seed=0)
        >>> layer(images, training=True).shape
        TensorShape([4, 32, 32, 3])
        >>> bool((layer(images) == images).numpy().all())  # the identity unless training
        True
    """

    def __init__(self, stddev=8.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if float(stddev) < 0:
            raise ValueError(f"stddev must be >= 0, got {stddev!r}")
        self.stddev = float(stddev)

    def augment(self, images):
        noise = keras.random.normal(ops.shape(images), stddev=self.stddev, seed=self.generator, dtype=images.dtype)
        return ops.clip(images + noise, 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


@keras.saving.register_keras_serializable(package="augment")
class RandomSaturation(RandomImageLayer):
    """Scales each image's saturation by a factor uniform in
    ``[1 - factor, 1 + factor]``: a blend with its grey version (PIL's
    ``ImageEnhance.Color``), clipped to 0-255.  Grey images pass unchanged.

    Args:
        factor: largest relative change (0.4: from 60% to 140% saturation).
        seed: integer seed.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> layer = augment.RandomSaturation(factor=0.4, seed=0)
        >>> layer(images, training=True).shape
        TensorShape([4, 32, 32, 3])
        >>> bool((layer(images) == images).numpy().all())  # the identity unless training
        True
    """

    def __init__(self, factor=0.4, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if float(factor) < 0:
            raise ValueError(f"factor must be >= 0, got {factor!r}")
        self.factor = float(factor)

    def augment(self, images):
        if images.shape[-1] != 3:
            return images
        batch = ops.shape(images)[0]
        scale = keras.random.uniform((batch, 1, 1, 1), 1.0 - self.factor, 1.0 + self.factor, seed=self.generator)
        grey = ops.sum(images * np.asarray(_LUMA, np.float32), axis=-1, keepdims=True)
        return ops.clip(grey + scale * (images - grey), 0.0, 255.0)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalized 1-D Gaussian, two sigmas (at least one pixel) either side of its centre."""
    radius = max(1, math.ceil(2 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


@keras.saving.register_keras_serializable(package="augment")
class ElasticDistortion(RandomImageLayer):
    """Elastic distortion (Simard, Steinkraus & Platt 2003, "Best practices for
    convolutional neural networks applied to visual document analysis", Section 2):
    every pixel moves by a random displacement field, uniform noise smoothed by
    a Gaussian of ``sigma`` pixels, and the image is resampled bilinearly.

    The paper scales the smoothed field by a factor alpha (34 with sigma 4 on
    28x28 MNIST), whose effect depends on sigma; here ``magnitude`` is the
    standard deviation of the displacement itself, in pixels (the paper's
    setting moves pixels by about 1.4, a twentieth of the side).  Samples from
    outside the image repeat its edge.

    Args:
        sigma: smoothness of the field in pixels (the paper's is 4 on 28x28).
        magnitude: standard deviation of each pixel's displacement, in pixels.
        seed: integer seed.

    Examples:
        >>> import augment
        >>> import numpy as np
        >>> images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        >>> layer = augment.ElasticDistortion(seed=0)  # the 28x28 setting, scaled to 32x32
        >>> layer(images, training=True).shape
        TensorShape([4, 32, 32, 3])
        >>> bool((layer(images) == images).numpy().all())  # the identity unless training
        True
    """

    def __init__(self, sigma=4.0, magnitude=1.4, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if not float(sigma) > 0 or float(magnitude) < 0:
            raise ValueError(f"sigma must be > 0 and magnitude >= 0; got sigma={sigma!r}, magnitude={magnitude!r}")
        self.sigma = float(sigma)
        self.magnitude = float(magnitude)

    def augment(self, images):
        height, width = _static_size(images)
        batch = ops.shape(images)[0]
        kernel = gaussian_kernel(self.sigma)
        # Uniform noise in [-1, 1] (variance 1/3) smoothed by the separable kernel has a standard deviation of
        # sqrt(1/3) * sum(kernel^2) (the 2-D kernel's sum of squares is the 1-D one's, squared): scale it to
        # ``magnitude``.
        scale = self.magnitude / (math.sqrt(1.0 / 3.0) * float(np.sum(kernel ** 2)))
        noise = keras.random.uniform((batch, height, width, 2), -1.0, 1.0, seed=self.generator)
        taps = len(kernel)
        field = ops.depthwise_conv(noise, np.tile(kernel.reshape(taps, 1, 1, 1), (1, 1, 2, 1)), padding="same")
        field = ops.depthwise_conv(field, np.tile(kernel.reshape(1, taps, 1, 1), (1, 1, 2, 1)), padding="same")
        rows = ops.clip(ops.arange(height, dtype="float32")[None, :, None] + scale * field[..., 0], 0, height - 1)
        cols = ops.clip(ops.arange(width, dtype="float32")[None, None, :] + scale * field[..., 1], 0, width - 1)
        top, left = ops.floor(rows), ops.floor(cols)
        down, right = (rows - top)[..., None], (cols - left)[..., None]
        top, left = ops.cast(top, "int32"), ops.cast(left, "int32")
        bottom, far = ops.minimum(top + 1, height - 1), ops.minimum(left + 1, width - 1)

        def pixels(r, c):
            return _take_pixels(images, r, c, height, width)

        upper = pixels(top, left) * (1 - right) + pixels(top, far) * right
        lower = pixels(bottom, left) * (1 - right) + pixels(bottom, far) * right
        return upper * (1 - down) + lower * down

    def get_config(self):
        return {**super().get_config(), "sigma": self.sigma, "magnitude": self.magnitude}
