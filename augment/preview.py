"""A picture of what a policy does: a grid of augmented training images."""

from __future__ import annotations

import numpy as np


def augmented_samples(images, policy_layer, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images drawn with ``seed`` and passed through ``policy_layer``
    in training mode.  Returns (indices into ``images``, uint8 results)."""
    images = images if hasattr(images, "shape") else np.asarray(images)  # a folder's stay on disk
    rng = np.random.default_rng(seed)
    # Sampling with replacement only when asked for more cells than images,
    # so a small set shows several draws of the same picture.
    index = rng.choice(len(images), size=count, replace=count > len(images))
    batch = images[index].astype(np.float32)
    if policy_layer is not None:
        batch = np.asarray(policy_layer(batch, training=True))
    return index, np.clip(np.round(batch), 0, 255).astype(np.uint8)


def save_grid(images, policy_layer, path, rows: int = 4, cols: int = 8, seed: int = 0, class_names=None,
              labels=None, *, cell: int = 96, title: str | None = None):
    """Writes a PNG grid of augmented samples, so a user can check a policy.

    Args:
        images: (N, H, W, C) raw 0-255 training images.
        policy_layer: what ``augment.policy`` returned (None shows the
            originals).
        path: where the PNG goes.
        rows, cols: grid size.
        seed: which images are drawn.
        class_names, labels: when both are given, each cell is titled with
            its class.
        cell: pixels per grid cell; the PNG is ``cols * cell`` wide and
            ``rows * cell`` high.
        title: optional figure title (drawn inside the top margin).

    Returns:
        ``path``.

    Examples:
        >>> import augment, numpy as np, os, tempfile
        >>> images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("uint8")
        >>> stage = augment.policy("strong", input_shape=(32, 32, 3), seed=0)
        >>> path = augment.save_grid(images, stage, os.path.join(tempfile.mkdtemp(), "strong.png"), rows=2, cols=4)
        >>> os.path.exists(path)
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    index, samples = augmented_samples(images, policy_layer, rows * cols, seed)
    titled = class_names is not None and labels is not None
    dpi = 100
    figure, axes = plt.subplots(rows, cols, figsize=(cols * cell / dpi, rows * cell / dpi), dpi=dpi, squeeze=False)
    for axis, sample, source in zip(axes.flat, samples, index):
        grey = sample.shape[-1] == 1
        axis.imshow(sample[..., 0] if grey else sample, cmap="gray" if grey else None, vmin=0, vmax=255,
                    interpolation="nearest")
        axis.set_axis_off()
        if titled:
            axis.set_title(str(class_names[int(np.asarray(labels)[source])]), fontsize=7, pad=2)
    top = 0.92 if title else (0.95 if titled else 1.0)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.05,
                           hspace=0.3 if titled else 0.05)
    if title:
        figure.suptitle(title, fontsize=9)
    # No bbox_inches="tight": the PNG keeps exactly the size asked for.
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
