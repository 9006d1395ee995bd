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
