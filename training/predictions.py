"""Classifying image files with an export: what ``predict.py`` prints.

Files are read and converted exactly as the training data were
(``imagesets.images.load_image``); an unreadable file is reported, not
fatal.  The export is a SavedModel, or one of its TFLite/ONNX files.
"""

from __future__ import annotations

import os

import numpy as np

from augment import predict_tta
from core.errors import UserError
from imagesets.images import list_images, load_image, problem
from exports.formats import load_format
from exports.load import load_export


def collect_files(paths: list[str]) -> list[str]:
    """Image files named, or found in the folders named."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += list_images(path)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UserError(f"Image path {path!r} does not exist")
    if not files:
        raise UserError(f"No files found in {', '.join(paths)}")
    return files


def open_export(path: str, format_name: str | None = None):
    """A SavedModel export, or a ``.tflite``/``.onnx`` file (a path, or ``format_name`` of an export's formats/)."""
    return load_format(path, format_name) if format_name or os.path.isfile(path) else load_export(path)


def classify(export_path: str, paths: list[str], *, format_name: str | None = None, top_k: int = 3,
             tta: str = "none") -> dict:
    """``{"export", "predictions": [{"path", "top": [{"class", "probability"}]}], "skipped": [...]}``."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    files = collect_files(paths)
    export = open_export(export_path, format_name)
    height, width, channels = export.input_shape
    images, used, skipped = [], [], []
    for path in files:
        try:
            images.append(load_image(path, (height, width), channels))
            used.append(path)
        except Exception as error:  # unreadable files are reported, not fatal
            skipped.append({"path": path, "reason": problem(error)})
    if not images:
        raise UserError(f"None of the {len(files)} files is a readable image")
    probabilities = predict_tta(export, np.stack(images).astype(np.float32), tta,
                                flips=export.metadata.get("flips", True))
    k = min(top_k, len(export.class_names))
    predictions = [{"path": path, "top": [{"class": export.class_names[i], "probability": float(probs[i])}
                                          for i in np.argsort(-probs)[:k]]}
                   for path, probs in zip(used, probabilities)]
    return {"export": export.path, "predictions": predictions, "skipped": skipped}
