"""Looking at the mistakes: the test images the model got wrong most confidently,
and the pairs of classes it mixes up most.

Confident mistakes are where mislabelled images, ambiguous classes and
shortcuts the model learned (background, colour, framing) show up; the
confused pairs say which classes need more (or cleaner) examples.  Beside each
mistake, its Grad-CAM heatmap for the class the model gave shows what it looked
at to answer: the digit's stroke, or the background.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def most_confident_mistakes(labels: np.ndarray, probabilities: np.ndarray, limit: int = 16) -> np.ndarray:
    """Indices of misclassified examples, the most confident prediction first."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]


def confused_pairs(labels: np.ndarray, probabilities: np.ndarray, class_names: list[str],
                   limit: int = 5) -> list[dict]:
    """The off-diagonal cells of the confusion matrix with the most images.

    Each entry: true and predicted class, the count, and the share of the true
    class's test images that went to that predicted class.
    """
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    k = len(class_names)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    np.fill_diagonal(matrix, 0)
    order = np.argsort(-matrix, axis=None, kind="stable")[:limit]
    pairs = []
    for flat in order:
        true, pred = divmod(int(flat), k)
        count = int(matrix[true, pred])
        if count == 0:
            break
        support = int((labels == true).sum())
        pairs.append({"true": class_names[true], "predicted": class_names[pred], "count": count,
                      "share_of_true_class": round(count / support, 4)})
    return pairs


def explain_mistakes(model, images, probabilities: np.ndarray, chosen) -> np.ndarray | None:
    """Grad-CAM heatmaps of the chosen images for the class the model wrongly gave them (what it looked at to
    answer); occlusion for a network without convolutions; None without a model."""
    if model is None or len(chosen) == 0:
        return None
    import explain

    batch = np.stack([np.asarray(images[int(i)], np.float32) for i in chosen])
    predicted = probabilities[np.asarray(chosen)].argmax(axis=1)
    try:
        return explain.gradcam(model, batch, predicted)
    except ValueError:
        return explain.occlusion(model, batch, predicted)


def plot_mistakes(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, class_names: list[str],
                  path: str, *, limit: int = 16, title: str = "", model=None) -> list[int]:
    """Writes a grid of the most confidently wrong images, each beside its heatmap for the predicted class when
    ``model`` is given; returns their indices."""
    from training.reports import overlay

    chosen = most_confident_mistakes(labels, probabilities, limit)
    heatmaps = explain_mistakes(model, images, probabilities, chosen)
    per_image = 1 if heatmaps is None else 2
    columns = min(4, max(1, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / columns))
    fig, axes = plt.subplots(rows, columns * per_image, figsize=(2.6 * columns * (1 + 0.8 * (per_image - 1)),
                                                                 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, index in enumerate(chosen):
        ax = axes[n // columns, (n % columns) * per_image]
        image = np.asarray(images[index])
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
        predicted = int(probabilities[index].argmax())
        ax.set_title(f"true {class_names[int(labels[index])]}\npredicted {class_names[predicted]} "
                     f"({probabilities[index, predicted]:.2f})", fontsize=9, color="firebrick")
        if heatmaps is not None:
            beside = axes[n // columns, (n % columns) * per_image + 1]
            beside.imshow(overlay(image, heatmaps[n]))
            beside.set_title(f"why {class_names[predicted]}", fontsize=9)
    if len(chosen) == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    fig.suptitle(title or "most confident mistakes (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [int(i) for i in chosen]


def report(images, labels, probabilities, class_names, path: str, title: str = "", model=None) -> list[dict]:
    """``mistakes.png`` at ``path`` (with heatmaps when ``model`` is given) and the most confused class pairs
    (for metrics.json)."""
    plot_mistakes(images, labels, probabilities, class_names, path, title=title, model=model)
    return confused_pairs(labels, probabilities, class_names)


def summary(pairs: list[dict], limit: int = 3) -> list[str]:
    if not pairs:
        return []
    shown = ", ".join(f"{p['true']}->{p['predicted']} ({p['count']})" for p in pairs[:limit])
    return [f"Most confused (true->predicted, test images): {shown}"]
