"""What a run leaves for the person who ran it: curves, confusion matrix, per-class report."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (servers, CI)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import classification_report, confusion_matrix  # noqa: E402


def plot_learning_curves(history: list[dict], path: str, title: str = "") -> None:
    """Train vs. validation loss and accuracy per epoch, side by side."""
    epochs = [row["epoch"] + 1 for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [row.get(prefix + metric) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, marker="o", markersize=3,
                        label=("validation " if prefix else "train ") + metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: str, title: str = "") -> None:
    n = len(class_names)
    size = min(4 + 0.5 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > threshold else "black")
    ax.set_title(title or "confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_predictions(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str]):
    """Accuracy, confusion matrix and scikit-learn's per-class report (dict and text)."""
    predicted = probabilities.argmax(axis=1)
    ids = list(range(len(class_names)))
    matrix = confusion_matrix(labels, predicted, labels=ids)
    report = classification_report(labels, predicted, labels=ids, target_names=class_names, output_dict=True,
                                   zero_division=0)
    text = classification_report(labels, predicted, labels=ids, target_names=class_names, zero_division=0, digits=4)
    return float((predicted == labels).mean()), matrix, report, text


# --- what the network learned and why it answers -------------------------------------------------------------

def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The image (H, W, 1 or 3; 0-255) with ``heatmap`` (in [0, 1], any size: enlarged bilinearly to the
    image's) over it in the "jet" colours, as uint8 RGB of the image's own height and width."""
    from PIL import Image

    image = np.clip(np.asarray(image, np.float32), 0, 255)
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    height, width = rgb.shape[:2]
    heat = np.asarray(heatmap, np.float32)
    if heat.shape != (height, width):
        heat = np.asarray(Image.fromarray(heat).resize((width, height), Image.Resampling.BILINEAR))
    colours = plt.get_cmap("jet")(np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    return np.round((1.0 - alpha) * rgb + alpha * colours).astype(np.uint8)


def plot_filters(kernels: np.ndarray, path: str, title: str = "", limit: int = 64) -> None:
    """The first convolution's kernels (k, k, in, out) as a grid of small images: grey for one input channel,
    colour for three (each kernel scaled to its own range, as in AlexNet's Figure 3); other widths show the mean
    over input channels."""
    kernels = np.asarray(kernels, np.float32)[..., :limit]
    count = kernels.shape[-1]
    columns = min(8, count)
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.1 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:count]):
        kernel = kernels[..., i]
        kernel = kernel if kernel.shape[-1] == 3 else kernel.mean(axis=-1, keepdims=True)
        low, high = kernel.min(), kernel.max()
        kernel = (kernel - low) / (high - low) if high > low else np.zeros_like(kernel)
        ax.imshow(kernel if kernel.shape[-1] == 3 else kernel[..., 0], cmap=None if kernel.shape[-1] == 3 else "gray",
                  interpolation="nearest")
    fig.suptitle(title or f"first-layer filters ({kernels.shape[0]}x{kernels.shape[1]}, {count} shown)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_feature_maps(image: np.ndarray, stages: list[tuple[str, np.ndarray]], path: str, title: str = "",
                      per_stage: int = 8) -> None:
    """One image, then per stage (a row each) its most active feature maps: what each layer of the network
    sees.  ``stages`` is ``explain.feature_maps``' list of (layer path, (h, w, channels))."""
    rows = 1 + len(stages)
    fig, axes = plt.subplots(rows, per_stage, figsize=(1.3 * per_stage, 1.35 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    image = np.asarray(image, np.float32)
    axes[0, 0].imshow(image[..., 0] if image.shape[-1] == 1 else np.clip(image, 0, 255).astype(np.uint8),
                      cmap="gray" if image.shape[-1] == 1 else None, vmin=0, vmax=255)
    axes[0, 0].set_title("input", fontsize=8)
    for row, (name, maps) in enumerate(stages, start=1):
        strongest = np.argsort(-np.abs(maps).mean(axis=(0, 1)), kind="stable")[:per_stage]
        for column, channel in enumerate(strongest):
            axes[row, column].imshow(maps[..., channel], cmap="viridis", interpolation="nearest")
        axes[row, 0].set_title(f"{name.rsplit('/', 1)[-1]} {maps.shape[0]}x{maps.shape[1]}x{maps.shape[2]}",
                               fontsize=8, loc="left")
    fig.suptitle(title or "feature maps, stage by stage (most active channels)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_what_it_learned(model, image: np.ndarray, filters_path: str, maps_path: str, title: str = "") -> list[str]:
    """``filters.png`` (the first convolution's kernels) and ``feature_maps.png`` (one image stage by stage) for a
    convolutional network; returns the files written (none for an MLP)."""
    import explain

    written = []
    first = explain.first_filters(model)
    if first is not None:
        plot_filters(first[1], filters_path, title=f"{title}: {first[0].rsplit('/', 1)[-1]} filters".lstrip(": "))
        written.append(filters_path)
    stages = explain.feature_maps(model, image)
    if stages:
        plot_feature_maps(image, stages, maps_path, title=f"{title}: feature maps, stage by stage".lstrip(": "))
        written.append(maps_path)
    return written
