"""TF Serving's own test models, built here with TensorFlow 2.21 the way TF Serving's
``servables/tensorflow/testdata/saved_model_half_plus_two.py`` builds them, so that a test can hold our server
to what ``tensorflow_model_server`` does with them.

Each builder writes one version, ``BASE/00000123/`` (zero-padded, as TF Serving's testdata has it), and
returns BASE, the model base path a server is given (``--model_base_path`` or a config's ``base_path``).

The TF1 models (``half_plus_two_tf1``, ``half_plus_three_tf1``) are graphs saved by ``SavedModelBuilder``:

* a placeholder ``tf_example:0`` of serialized ``tf.Example`` protos, parsed into the features ``x`` and ``x2``
  (``x2`` defaults to 0.0), both ``FixedLenFeature([1], float32)``, so ``x:0`` and ``x2:0`` are ``[-1, 1]``;
* variables ``a = 0.5``, ``b = 2.0`` (3.0 for half_plus_three), ``c = 3.0`` and, for the ``x2`` path, ``a2 =
  0.5``, ``c2 = 3.0``; ``y = a*x + b``, ``y2 = a*x + c``, ``y3 = a2*x2 + c2``;
* signatures ``serving_default`` (predict, ``{x: x:0} -> {y: y:0}``), ``classify_x_to_y`` (classify,
  ``{inputs: tf_example:0} -> {scores: y:0}``), ``regress_x_to_y`` / ``regress_x_to_y2`` (regress,
  ``{inputs: tf_example:0} -> {outputs: y:0 / y2:0}``), ``regress_x2_to_y3`` (regress, ``{inputs: x2:0} ->
  {outputs: y3:0}``) and ``classify_x2_to_y3`` (classify, ``{inputs: x2:0} -> {scores: y3:0}``);
* an asset ``foo.txt`` ("asset-file-contents") whose file name a main op assigns to a variable on load.

The TF2 model (``half_plus_two_tf2``) is a ``tf.Module`` saved by ``tf.saved_model.save`` with the same
signature names, keys and arithmetic; as with every TF2 export, each signature's method_name is
``tensorflow/serving/predict`` and there is an ``__saved_model_init_op`` entry.  One deliberate difference
from TF Serving's prebuilt ``saved_model_half_plus_two_tf2_cpu``: ``x`` and ``x2`` are ``[None]`` (a batch of
scalars) instead of ``[1]``, so the REST row and columnar cases (``{"instances": [2.0, 3.0, 4.0]}``) can run on
it as on the TF1 model.
"""

from __future__ import annotations

import os
import tempfile

VERSION = 123
VERSION_DIR = f"{VERSION:08d}"  # "00000123"
ASSET_NAME = "foo.txt"
ASSET_CONTENTS = "asset-file-contents"


def _write_asset(folder: str) -> str:
    path = os.path.join(folder, ASSET_NAME)
    with open(path, "w") as f:
        f.write(ASSET_CONTENTS)
    return path


def _tf1(base, b: float) -> str:
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = os.path.join(str(base), VERSION_DIR)
    consts = v1.saved_model.signature_constants

    def regression(inputs, outputs):
        return v1.saved_model.signature_def_utils.build_signature_def(
            {consts.REGRESS_INPUTS: v1.saved_model.utils.build_tensor_info(inputs)},
            {consts.REGRESS_OUTPUTS: v1.saved_model.utils.build_tensor_info(outputs)}, consts.REGRESS_METHOD_NAME)

    def classification(inputs, scores):
        return v1.saved_model.signature_def_utils.build_signature_def(
            {consts.CLASSIFY_INPUTS: v1.saved_model.utils.build_tensor_info(inputs)},
            {consts.CLASSIFY_OUTPUT_SCORES: v1.saved_model.utils.build_tensor_info(scores)},
            consts.CLASSIFY_METHOD_NAME)

    with tempfile.TemporaryDirectory() as staging, tf.Graph().as_default() as graph:
        a = v1.Variable(0.5, name="a")
        b_var = v1.Variable(b, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        features = {"x": v1.FixedLenFeature([1], tf.float32),
                    "x2": v1.FixedLenFeature([1], tf.float32, default_value=[0.0])}
        parsed = v1.parse_example(serialized, features)
        x = tf.identity(parsed["x"], name="x")
        y = tf.identity(tf.add(tf.multiply(a, x), b_var), name="y")
        y2 = tf.identity(tf.add(tf.multiply(a, x), c), name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        # Separate variables for the x2 path, as TF Serving's script has them.
        a2 = v1.Variable(0.5, name="a2")
        c2 = v1.Variable(3.0, name="c2")
        y3 = tf.identity(tf.add(tf.multiply(a2, x2), c2), name="y3")

        # The asset: its path in the ASSET_FILEPATHS collection (the builder copies the file into assets/),
        # and a variable outside every collection that the main op sets to the file's name on load.
        asset_path = tf.constant(_write_asset(staging))
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_path)
        filename = v1.Variable(ASSET_NAME, name="filename_tensor", trainable=False, collections=[])
        assign_filename = filename.assign(ASSET_NAME)

        predict = v1.saved_model.signature_def_utils.build_signature_def(
            {"x": v1.saved_model.utils.build_tensor_info(x)}, {"y": v1.saved_model.utils.build_tensor_info(y)},
            consts.PREDICT_METHOD_NAME)
        signatures = {
            "regress_x_to_y": regression(serialized, y),
            "regress_x_to_y2": regression(serialized, y2),
            "regress_x2_to_y3": regression(x2, y3),
            "classify_x_to_y": classification(serialized, y),
            "classify_x2_to_y3": classification(x2, y3),
            consts.DEFAULT_SERVING_SIGNATURE_DEF_KEY: predict,
        }
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
                assets_collection=v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS),
                main_op=tf.group(assign_filename))
            builder.save()
    return str(base)


def half_plus_two_tf1(base) -> str:
    """TF Serving's ``saved_model_half_plus_two_cpu`` (y = 0.5x + 2) as ``base/00000123``; returns ``base``."""
    return _tf1(base, 2.0)


def half_plus_three_tf1(base) -> str:
    """TF Serving's ``saved_model_half_plus_three`` (y = 0.5x + 3) as ``base/00000123``; returns ``base``."""
    return _tf1(base, 3.0)


def half_plus_two_tf2(base) -> str:
    """TF Serving's ``saved_model_half_plus_two_tf2_cpu`` (y = 0.5x + 2), a ``tf.Module`` saved with
    ``tf.saved_model.save``, as ``base/00000123``; returns ``base``."""
    import tensorflow as tf

    features = {"x": tf.io.FixedLenFeature([1], tf.float32),
                "x2": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}
    examples = tf.TensorSpec([None], tf.string, name="inputs")
    floats = tf.TensorSpec([None], tf.float32, name="inputs")

    class HalfPlusTwo(tf.Module):
        def __init__(self, asset_path):
            super().__init__(name="half_plus_two")
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")
            self.a2 = tf.Variable(0.5, name="a2")
            self.c2 = tf.Variable(3.0, name="c2")
            self.asset = tf.saved_model.Asset(asset_path)

        def _x(self, inputs):
            return tf.io.parse_example(inputs, features)["x"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[examples])
        def regress_x_to_y(self, inputs):
            return {"outputs": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[examples])
        def regress_x_to_y2(self, inputs):
            return {"outputs": self.a * self._x(inputs) + self.c}

        @tf.function(input_signature=[examples])
        def classify_x_to_y(self, inputs):
            return {"scores": self.a * self._x(inputs) + self.b}

        @tf.function(input_signature=[floats])
        def regress_x2_to_y3(self, inputs):
            return {"outputs": self.a2 * inputs + self.c2}

        @tf.function(input_signature=[floats])
        def classify_x2_to_y3(self, inputs):
            return {"scores": self.a2 * inputs + self.c2}

    with tempfile.TemporaryDirectory() as staging:
        module = HalfPlusTwo(_write_asset(staging))
        signatures = {"serving_default": module.predict, "regress_x_to_y": module.regress_x_to_y,
                      "regress_x_to_y2": module.regress_x_to_y2, "classify_x_to_y": module.classify_x_to_y,
                      "regress_x2_to_y3": module.regress_x2_to_y3,
                      "classify_x2_to_y3": module.classify_x2_to_y3}
        tf.saved_model.save(module, os.path.join(str(base), VERSION_DIR), signatures=signatures)
    return str(base)
