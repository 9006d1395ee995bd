"""Looking at the mistakes: the test images the model got wrong most confidently,
and the pairs of classes it mixes up most.

Confident mistakes are where mislabelled images, ambiguous classes and
shortcuts the model learned (background, colour, framing) show up; the
confused pairs say which classes need more (or cleaner) examples.
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


def plot_mistakes(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, class_names: list[str],
                  path: str, *, limit: int = 16, title: str = "") -> list[int]:
    """Writes a grid of the most confidently wrong images; returns their indices."""
    chosen = most_confident_mistakes(labels, probabilities, limit)
    columns = min(4, max(1, len(chosen)))
    rows = max(1, math.ceil(len(chosen) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, chosen):
        image = np.asarray(images[index])
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
        predicted = int(probabilities[index].argmax())
        ax.set_title(f"true {class_names[int(labels[index])]}\npredicted {class_names[predicted]} "
                     f"({probabilities[index, predicted]:.2f})", fontsize=9, color="firebrick")
    if len(chosen) == 0:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    fig.suptitle(title or "most confident mistakes (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [int(i) for i in chosen]


def report(images, labels, probabilities, class_names, path: str, title: str = "") -> list[dict]:
    """``mistakes.png`` at ``path`` and the most confused class pairs (for metrics.json)."""
    plot_mistakes(images, labels, probabilities, class_names, path, title=title)
    return confused_pairs(labels, probabilities, class_names)


def summary(pairs: list[dict], limit: int = 3) -> list[str]:
    if not pairs:
        return []
    shown = ", ".join(f"{p['true']}->{p['predicted']} ({p['count']})" for p in pairs[:limit])
    return [f"Most confused (true->predicted, test images): {shown}"]
