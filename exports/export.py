"""Writing a trained model as a SavedModel that serves on its own.

Layout (TF Serving): ``<export_dir>/<name>/<version>/`` with integer versions.
Each export takes the next version, is written to a hidden temporary folder
beside it and renamed into place, so a reader never sees half a model and an
existing version is never replaced.

The signature ``serving_default`` takes ``images``: float32 (N, H, W, C) with
raw 0-255 pixels, and returns ``probabilities`` (N, K), ``class_ids`` (N,) and
``classes`` (N,) strings.  ``assets/metadata.json`` and
``assets/class_names.txt`` carry the class names and input size, so a
consumer needs only TensorFlow; ``assets/model.keras`` is the same model for
Keras users and for reuse as a transfer-learning backbone.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import tempfile

from core import compat
from core.errors import UserError, size_of, writing

SIGNATURE = "serving_default"


def version_dirs(model_dir: str) -> dict[int, str]:
    """``{version: folder name}`` of a model folder.  TF Serving reads any all-digit name as a version, so
    ``00000123`` is version 123; of two names for one number (``7`` and ``007``) the shorter wins."""
    if not os.path.isdir(model_dir):
        return {}
    found: dict[int, str] = {}
    for entry in sorted(os.listdir(model_dir), key=len, reverse=True):
        if entry.isdigit() and entry.isascii():
            found[int(entry)] = entry
    return dict(sorted(found.items()))


def versions(model_dir: str) -> list[int]:
    return list(version_dirs(model_dir))


def next_version(model_dir: str) -> int:
    found = versions(model_dir)
    return found[-1] + 1 if found else 1


STAGING = ".tmp-export-"


def remove_abandoned_staging(model_dir: str) -> list[str]:
    """Deletes staging folders left by exports on this machine whose process has died (a crash
    mid-export leaves one; it was never a version).  Returns what it removed."""
    removed = []
    prefix = f"{STAGING}{socket.gethostname()}-"
    for entry in os.listdir(model_dir):
        pid = entry[len(prefix):].split("-", 1)[0]
        if not entry.startswith(prefix) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # still exporting
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        shutil.rmtree(os.path.join(model_dir, entry), ignore_errors=True)
        removed.append(entry)
    return removed


def check_name(name: str, what: str = "Export name", advice: str = "") -> None:
    """Refuses a model name that is not one plain folder: ``<export_dir>/<name>`` must be the model's own folder,
    not a path into another, and a hidden one would be passed over by a server's scan like a staging folder."""
    separators = {"/", os.sep, os.altsep} - {None}
    if not name or name.startswith(".") or any(sep in name for sep in separators):
        raise UserError(f"{what} {name!r} must be a plain folder name (no '/', not starting with '.'){advice}")


def export_savedmodel(model, export_dir: str, name: str, *, class_names, metadata: dict | None = None) -> str:
    """Exports the inference ``model`` (raw pixels in, probabilities out) as the next version of model ``name``.

    Returns the version directory written.
    """
    check_name(name)
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    class_names = [str(c) for c in class_names]
    model_dir = os.path.join(export_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    remove_abandoned_staging(model_dir)
    found = versions(model_dir)
    # A full disk stops with one line; the staging folder is deleted and no version appears.
    with writing(model_dir, needed=size_of(os.path.join(model_dir, version_dirs(model_dir)[found[-1]])) if found else None):
        return _write_version(model, model_dir, input_shape, class_names, metadata)


def _write_version(model, model_dir: str, input_shape: tuple, class_names: list[str], metadata: dict | None) -> str:
    """Writes the next version under a hidden staging name and renames it into place."""
    import keras
    import tensorflow as tf

    tmp = tempfile.mkdtemp(prefix=f"{STAGING}{socket.gethostname()}-{os.getpid()}-", dir=model_dir)
    try:
        assets = os.path.join(tmp, "staging-assets")
        os.makedirs(assets)
        info = {"class_names": class_names, "input_shape": list(input_shape), "input": "raw pixels 0-255, float32",
                "signature": SIGNATURE, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                **(metadata or {})}
        with open(os.path.join(assets, "metadata.json"), "w") as f:
            json.dump(info, f, indent=2)
        with open(os.path.join(assets, "class_names.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(class_names) + "\n")
        # The Keras model too, so an export can serve as a transfer-learning backbone.
        model.save(os.path.join(assets, "model.keras"))

        labels = tf.constant(class_names)

        def serve(images):
            probabilities = model(images, training=False)
            class_ids = tf.argmax(probabilities, axis=-1)
            return {"probabilities": probabilities, "class_ids": class_ids, "classes": tf.gather(labels, class_ids)}

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE, serve,
                             input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name="images")])
        compat.attach_assets(archive, {"metadata_file": os.path.join(assets, "metadata.json"),
                                       "class_names_file": os.path.join(assets, "class_names.txt"),
                                       "keras_file": os.path.join(assets, "model.keras")})
        staged = os.path.join(tmp, "model")
        archive.write_out(staged, verbose=False)
        while True:
            target = os.path.join(model_dir, str(next_version(model_dir)))
            try:
                os.rename(staged, target)  # atomic; fails if another export took this number
                break
            except OSError:
                if not os.path.isdir(target):
                    raise
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
