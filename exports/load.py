"""Finding and loading an export: a version directory, or a model folder meaning its newest version."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from core.errors import UserError
from exports.export import version_dirs


def resolve_export(path: str) -> str:
    """``saved_models/<name>/<version>`` as given, or the newest version of ``saved_models/<name>``."""
    if not os.path.exists(path):
        raise UserError(f"Export {path!r} does not exist")
    if not os.path.isdir(path):
        raise UserError(f"Export {path!r} is a file; expected a SavedModel folder (saved_models/<name>[/<version>])")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    numbered = [folder for folder in version_dirs(path).values()
                if os.path.isfile(os.path.join(path, folder, "saved_model.pb"))]
    if not numbered:
        raise UserError(f"{path!r} is not a SavedModel: no saved_model.pb in it or in numbered version folders")
    return os.path.join(path, numbered[-1])


@dataclasses.dataclass
class LoadedExport:
    path: str
    class_names: list[str]
    input_shape: tuple[int, int, int]
    metadata: dict
    signature: object

    def predict(self, images: np.ndarray, batch_size: int = 64, verbose: int = 0) -> np.ndarray:
        """Class probabilities for a float/uint8 batch of raw-pixel images (Keras-style
        signature, so ``augment.predict_tta`` can average over views of an export)."""
        import tensorflow as tf

        out = [self.signature(images=tf.constant(images[i:i + batch_size], tf.float32))["probabilities"].numpy()
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def keras_model(self):
        """The export's Keras model (``assets/model.keras``): the same network as its signature, with its layers
        reachable, for what needs more than the signature's outputs (class heatmaps).  Loaded on first use."""
        if getattr(self, "_keras", None) is None:
            self._keras = load_keras_model(self.path)
        return self._keras


def load_keras_model(version_dir: str):
    """``assets/model.keras`` of an export, loaded safely (no code from the file runs).  The zoo's and
    transfer's own layers must be registered first (importing ``zoo`` and ``transfer`` does it)."""
    import keras

    path = os.path.join(version_dir, "assets", "model.keras")
    if not os.path.isfile(path):
        raise UserError(f"Export {version_dir!r} has no assets/model.keras (written by an older version); "
                        "export its run again")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"Could not load the Keras model of {version_dir!r}: {reason}") from None


def read_metadata(path: str) -> tuple[str, dict]:
    """(version directory, its ``assets/metadata.json``) of an export, without loading the model."""
    version_dir = resolve_export(path)
    try:
        with open(os.path.join(version_dir, "assets", "metadata.json"), encoding="utf-8") as f:
            return version_dir, json.load(f)
    except (OSError, ValueError):
        raise UserError(f"{version_dir!r} is a SavedModel but not one of this toolkit's exports "
                        "(assets/metadata.json is missing or unreadable)") from None


def load_export(path: str) -> LoadedExport:
    import tensorflow as tf

    version_dir, metadata = read_metadata(path)
    try:
        loaded = tf.saved_model.load(version_dir)
        signature = loaded.signatures["serving_default"]
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"Could not load SavedModel {version_dir!r}: {reason}") from None
    # Keep a reference to the loaded object: the signature's variables live on it.
    export = LoadedExport(version_dir, metadata["class_names"], tuple(metadata["input_shape"]), metadata, signature)
    export._module = loaded
    return export
