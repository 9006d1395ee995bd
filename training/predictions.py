"""Classifying image files with an export: what ``predict.py`` prints.

Files are read and converted exactly as the training data were
(``imagesets.images.load_image``); an unreadable file is reported, not
fatal.  The export is a SavedModel, or one of its TFLite/ONNX files.  With an
explanation folder, each image's class heatmap is written there too.
"""

from __future__ import annotations

import os

import numpy as np

from augment import predict_tta
from core.errors import UserError
from explain import METHODS, explain
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
             tta: str = "none", explain_dir: str | None = None, method: str = "gradcam") -> dict:
    """``{"export", "predictions": [{"path", "top": [{"class", "probability"}]}], "skipped": [...]}``.

    With ``explain_dir``, each prediction also names its ``explanation``: the heatmap of its top class
    (``heatmap``, a .npy of the file's height x width in [0, 1]) and that heatmap over the image (``overlay``, a
    PNG of the file's size), written there (``write_explanations``)."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    if explain_dir is not None and (format_name or os.path.isfile(export_path)):
        raise UserError("--explain needs the SavedModel export (its Keras model); TFLite and ONNX files have no "
                        "layers to look into")
    if method not in METHODS:
        raise UserError(f"Unknown --explain-method {method!r} (valid: {', '.join(METHODS)})")
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
    if explain_dir is not None:
        write_explanations(export, np.stack(images).astype(np.float32), used, probabilities.argmax(axis=1),
                           predictions, explain_dir, method)
    return {"export": export.path, "predictions": predictions, "skipped": skipped}


def write_explanations(export, images: np.ndarray, paths: list[str], classes: np.ndarray, predictions: list[dict],
                       folder: str, method: str = "gradcam") -> None:
    """Per image, ``NNN-NAME.heatmap.npy`` (float32, the file's own height x width, in [0, 1]) and
    ``NNN-NAME.overlay.png`` (the file with the heatmap over it, its size), named in its prediction.

    Recomputed from the export's Keras model rather than carried in the SavedModel as a signature: the method,
    the layer and the class stay choices of the caller, and every export already carries that model."""
    import zoo  # noqa: F401 - registers the zoo's and transfer's layers for loading the Keras model
    import transfer  # noqa: F401

    from PIL import Image

    from training.reports import overlay  # matplotlib: loaded only when asked for

    os.makedirs(folder, exist_ok=True)
    model = export.keras_model()
    try:
        heatmaps = explain(model, images, method, classes)
    except ValueError as error:
        raise UserError(f"--explain: {error}") from None
    channels = export.input_shape[2]
    for n, (path, heatmap, prediction) in enumerate(zip(paths, heatmaps, predictions)):
        original = load_image(path, None, channels)  # the file's own size: the heatmap is stretched back to it
        height, width = original.shape[:2]
        full = np.clip(np.asarray(Image.fromarray(heatmap).resize((width, height), Image.Resampling.BILINEAR)), 0, 1)
        stem = f"{n:03d}-{os.path.splitext(os.path.basename(path))[0]}"
        heatmap_path, overlay_path = (os.path.join(folder, f"{stem}.{kind}") for kind in ("heatmap.npy",
                                                                                         "overlay.png"))
        np.save(heatmap_path, full.astype(np.float32))
        Image.fromarray(overlay(original, full)).save(overlay_path)
        prediction["explanation"] = {"method": method, "class": export.class_names[int(classes[n])],
                                     "heatmap": heatmap_path, "overlay": overlay_path}
