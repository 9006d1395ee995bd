"""Exports: TF Serving layout, versions that never overwrite, atomic writes, loading back."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from exports import export_savedmodel, load_export, resolve_export
from core.errors import UserError
from core.model import assemble, inference_model, preprocessing_layer


def tiny_model(input_shape=(8, 8, 1), classes=3):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    network = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x), name="tiny")
    return inference_model(assemble(network, input_shape, preprocessing=preprocessing_layer("rescale")))


class FailsWhenArmed(keras.layers.Layer):
    """Raises while being traced for export, to stand in for a crash mid-export."""

    armed = False

    def call(self, x):
        if FailsWhenArmed.armed:
            raise RuntimeError("simulated crash during export")
        return x


def test_versions_count_up_and_never_overwrite(tmp_path):
    model = tiny_model()
    first = export_savedmodel(model, str(tmp_path), "tiny", class_names=["a", "b", "c"])
    first_pb = open(os.path.join(first, "saved_model.pb"), "rb").read()
    second = export_savedmodel(model, str(tmp_path), "tiny", class_names=["a", "b", "c"])
    assert [os.path.basename(p) for p in (first, second)] == ["1", "2"]
    assert open(os.path.join(first, "saved_model.pb"), "rb").read() == first_pb
    assert sorted(os.listdir(tmp_path / "tiny")) == ["1", "2"]  # no temporary folders left behind
    assert resolve_export(str(tmp_path / "tiny")) == second


def test_loaded_export_matches_the_model_on_raw_pixels(tmp_path):
    model = tiny_model()
    path = export_savedmodel(model, str(tmp_path), "tiny", class_names=["a", "b", "c"], metadata={"note": "x"})
    loaded = load_export(str(tmp_path / "tiny"))
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(images), model.predict(images, verbose=0), atol=1e-6)
    assert loaded.class_names == ["a", "b", "c"] and loaded.input_shape == (8, 8, 1)
    assert loaded.metadata["note"] == "x" and loaded.path == path
    # The Keras copy in the assets (for reuse as a backbone) is the same model.
    again = keras.models.load_model(os.path.join(path, "assets", "model.keras"), safe_mode=True)
    np.testing.assert_allclose(again.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_a_crash_during_export_leaves_no_version_behind(tmp_path):
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(FailsWhenArmed()(inputs)))
    model = keras.Model(inputs, outputs)
    export_savedmodel(model, str(tmp_path), "m", class_names=["x", "y"])
    FailsWhenArmed.armed = True
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            export_savedmodel(model, str(tmp_path), "m", class_names=["x", "y"])
    finally:
        FailsWhenArmed.armed = False
    assert sorted(os.listdir(tmp_path / "m")) == ["1"]

    # A process killed mid-export leaves its staging folder; the next export clears it, not a live one's.
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    abandoned = tmp_path / "m" / f".tmp-export-{host}-{int(dead.stdout)}-abc"
    live = tmp_path / "m" / f".tmp-export-{host}-{os.getpid()}-def"
    abandoned.mkdir()
    live.mkdir()
    export_savedmodel(model, str(tmp_path), "m", class_names=["x", "y"])
    assert sorted(os.listdir(tmp_path / "m")) == [live.name, "1", "2"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is a file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "is not a SavedModel"),
])
def test_bad_export_paths_are_user_errors(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        load_export(str(make(tmp_path)))


def test_a_foreign_savedmodel_is_refused_clearly(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "foreign"))
    with pytest.raises(UserError, match="metadata.json"):
        load_export(str(tmp_path / "foreign"))


def test_predicts_command_line_offers_exactly_the_librarys_modes_and_formats():
    # predict.py writes them out so that --help does not load Keras; they must not drift apart.
    import predict
    from augment.tta import MODES
    from exports.formats import FORMATS

    assert predict.TTA_MODES == MODES and predict.FORMATS == FORMATS
    tta = next(action for action in predict.build_parser()._actions if action.dest == "tta")
    assert tuple(tta.choices) == MODES
