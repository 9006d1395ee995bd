"""An export in other runtimes' formats, each scored against the SavedModel on the same test images.

    VERSION/formats/model.tflite        TFLite, float32
    VERSION/formats/model_fp16.tflite   TFLite, float16 weights (computed in float32)
    VERSION/formats/model_int8.tflite   TFLite, full-integer: int8 weights and activations, uint8 pixels in
    VERSION/formats/model.onnx          ONNX (tf2onnx), run with onnxruntime
    VERSION/formats/labels.txt          the class names, one per line, in output order
    VERSION/formats/report.json         {"saved_model": {...}, "formats": {NAME: {...}}, "metadata": {...}}

Every file takes what the SavedModel takes, ``images``: (N, H, W, C) raw 0-255
pixels with the preprocessing inside, and returns ``probabilities`` (N, K).
The class-name output of the SavedModel is left out (a string lookup is not a
TFLite builtin); the names travel in ``labels.txt``.  TFLite files use builtin
ops only (no Flex/SELECT_TF_OPS), so the plain LiteRT runtime runs them.

Conversion goes through Keras' own ``Model.export(format="litert" | "onnx")``
with the TFLite converter's options passed through.  The int8 file is
calibrated on a sample of the run's training images (the representative
dataset) and takes uint8 pixels: its input scale is 1 and zero point 0 when
the calibration images span 0-255, i.e. raw pixels go in unchanged; the
report records the input's quantization either way and ``predict`` applies it.
A layer that 8 bits cannot carry (``INT8_FLOAT_LAYERS``: the classic LeNet-5's
RBF output) is computed in float32 in that file, with the softmax after it;
the report lists it as ``float_layers``.

``formats/`` is written once per version: it is built in a hidden staging
folder inside the version and renamed into place, so a crash leaves no half
``formats/`` (the next call deletes a dead process's staging folder), and a
version that already has ``formats/`` is refused with one line.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import statistics
import tempfile
import time
import warnings

import numpy as np

from core import compat
from core.errors import UserError
from core.rows import batches
from exports.export import STAGING, remove_abandoned_staging
from exports.load import read_metadata, resolve_export

FORMATS = ("tflite", "tflite_fp16", "tflite_int8", "onnx")
FILES = dict(zip(FORMATS, ("model.tflite", "model_fp16.tflite", "model_int8.tflite", "model.onnx")))
DESCRIPTIONS = dict(zip(FORMATS, ("TFLite float32", "TFLite float16 weights", "TFLite int8 (full integer)",
                                  "ONNX float32")))
FOLDER = "formats"
LABELS = "labels.txt"
REPORT = "report.json"
INPUT, OUTPUT = "images", "probabilities"  # the SavedModel signature's names, kept in every format
ONNX_EXTRA = "pip install 'cnn-classroom[onnx]'"
CALIBRATION_IMAGES = 300
COLUMNS = ("format", "file", "size_bytes", "test_accuracy", "drop", "agreement", "latency_ms")

# Layer classes whose ops stay float32 in the int8 file, together with the softmax that reads them, so that
# the logits are never rounded to int8.  Chosen from measurements, not by guess: on the classic LeNet-5
# (digits, 30 epochs) tf.lite.experimental.QuantizationDebugger finds every op rounded as well as 8 bits
# allow (RMSE 0.0-0.44 of each tensor's int8 step), but the steps differ: 0.004-0.05 everywhere up to F6,
# 0.68-0.81 for the RBF's tensors, whose -(|x|^2 - 2x.w + |w|^2) spans about 200 while a test image's two
# best classes are 3.6 apart at the median and under 0.8 apart for 4.5% of them.  Rounding those logits
# cost 1.7 points (2.8% of answers changed); with the RBF and the softmax in float the drop is 0.3 point
# for 2 KB more.  Keeping F6 float as well removes the rest but makes the file 0.43x the float32 one
# instead of 0.33x, too little of int8's saving left.  Models without these layers convert unchanged.
INT8_FLOAT_LAYERS = ("EuclideanRBF",)


def parse_formats(value) -> list[str]:
    """``"tflite,onnx"``, ``"all"`` or a list of names -> the names in ``FORMATS`` order, checked."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    if "all" in names:
        return list(FORMATS)
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise UserError(f"Unknown export format {unknown[0]!r}; valid: {', '.join(FORMATS)} (or all)")
    if not names:
        raise UserError(f"No export format given; valid: {', '.join(FORMATS)} (or all)")
    return [name for name in FORMATS if name in names]


def require_runtimes(names) -> None:
    """A one-line error naming the extra to install when ONNX is asked for without its packages."""
    if "onnx" not in names:
        return
    missing = []
    for module in ("tf2onnx", "onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(f"The onnx format needs {', '.join(missing)}, which are not installed: {ONNX_EXTRA}")


# ---------------------------------------------------------------- runtimes


def _tflite_interpreter(path: str):
    """(interpreter, runtime name).  LiteRT's own package when installed (what TensorFlow 2.21 recommends);
    otherwise ``tf.lite.Interpreter``, which TF 2.21 still ships while warning that it will move there."""
    try:
        from importlib.metadata import version

        from ai_edge_litert import interpreter as litert

        return litert.Interpreter(model_path=path), f"ai_edge_litert {version('ai-edge-litert')}"
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice, on every load
            return tf.lite.Interpreter(model_path=path), f"tf.lite.Interpreter (TensorFlow {tf.__version__})"


class TFLiteModel:
    """A ``.tflite`` file behind a Keras-like ``predict`` taking raw-pixel images."""

    def __init__(self, path: str):
        try:
            self.interpreter, self.runtime = _tflite_interpreter(path)
            self.runner = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as error:  # not a flatbuffer, or no signature to call
            raise UserError(f"Could not load TFLite model {path!r}: {_first_line(error)}") from None
        self.input_name, self.input = _named(self.runner.get_input_details(), INPUT)
        self.output_name, self.output = _named(self.runner.get_output_details(), OUTPUT)
        self.input_shape = tuple(int(d) for d in self.input["shape_signature"][1:])

    def _call(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):  # the int8 file: quantize with its own input scale
            scale, zero_point = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
        out = self.runner(**{self.input_name: x.astype(dtype)})[self.output_name]
        if np.issubdtype(out.dtype, np.integer):
            scale, zero_point = self.output["quantization"]
            out = (out.astype(np.float32) - zero_point) * scale
        return np.asarray(out, np.float32)

    def predict(self, images: np.ndarray, batch_size: int = 64, verbose: int = 0) -> np.ndarray:
        return _batched(self._call, images, batch_size)


class OnnxModel:
    """A ``.onnx`` file in onnxruntime, with the same ``predict``."""

    def __init__(self, path: str):
        try:
            import onnxruntime
        except ImportError:
            raise UserError(f"Running an .onnx model needs onnxruntime: {ONNX_EXTRA}") from None
        try:
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types
            raise UserError(f"Could not load ONNX model {path!r}: {_first_line(error)}") from None
        self.runtime = f"onnxruntime {onnxruntime.__version__}"
        self.input_name, first = _named({i.name: i for i in self.session.get_inputs()}, INPUT)
        self.output_name, _ = _named({o.name: o for o in self.session.get_outputs()}, OUTPUT)
        self.input_shape = tuple(int(d) for d in first.shape[1:])

    def _call(self, images: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.asarray(images, np.float32)})[0]

    def predict(self, images: np.ndarray, batch_size: int = 64, verbose: int = 0) -> np.ndarray:
        return _batched(self._call, images, batch_size)


class SavedModelRunner:
    """The SavedModel's ``serving_default`` signature, for scoring it the same way."""

    def __init__(self, version_dir: str):
        from exports.load import load_export

        self.export = load_export(version_dir)
        self.runtime = "TensorFlow SavedModel"

    def _call(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self.export.signature(images=tf.constant(images, tf.float32))[OUTPUT].numpy()

    def predict(self, images: np.ndarray, batch_size: int = 64, verbose: int = 0) -> np.ndarray:
        return _batched(self._call, images, batch_size)


def _named(details: dict, name: str):
    """(name, details) of the tensor called ``name``, or of the only one (a file converted elsewhere)."""
    if name in details:
        return name, details[name]
    if len(details) == 1:
        return next(iter(details.items()))
    raise UserError(f"The model has tensors {', '.join(details)}; expected one called {name!r}")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _batched(call, images, batch_size: int) -> np.ndarray:
    out = [call(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


RUNNERS = {"tflite": TFLiteModel, "tflite_fp16": TFLiteModel, "tflite_int8": TFLiteModel, "onnx": OnnxModel}


class LoadedFormat:
    """A converted file with its class names (``labels.txt`` beside it), shaped like ``exports.LoadedExport``
    so ``predict.py`` and ``augment.predict_tta`` use either."""

    def __init__(self, path: str, runner, class_names: list[str], metadata: dict):
        self.path, self.runner, self.class_names, self.metadata = path, runner, class_names, metadata
        self.input_shape = runner.input_shape

    def predict(self, images: np.ndarray, batch_size: int = 64, verbose: int = 0) -> np.ndarray:
        return self.runner.predict(images, batch_size=batch_size)


def load_format(path: str, name: str | None = None) -> LoadedFormat:
    """A ``.tflite``/``.onnx`` file, or format ``name`` of an export (``saved_models/NAME[/VERSION]``)."""
    if name is not None:
        (name,) = parse_formats([name])
        if not os.path.isfile(path):
            version_dir = resolve_export(path)
            path = os.path.join(version_dir, FOLDER, FILES[name])
            if not os.path.isfile(path):
                raise UserError(f"{version_dir!r} has no {FOLDER}/{FILES[name]}; write it with "
                                f"python train.py export {version_dir} --formats {name}")
    if not os.path.isfile(path):
        raise UserError(f"Model file {path!r} does not exist")
    if path.endswith(".tflite"):
        runner = TFLiteModel(path)
    elif path.endswith(".onnx"):
        runner = OnnxModel(path)
    else:
        raise UserError(f"{path!r} is a file but not a .tflite or .onnx model; give one of those, or a SavedModel "
                        "folder (saved_models/NAME[/VERSION])")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(os.path.join(folder, LABELS), encoding="utf-8") as f:
            class_names = f.read().splitlines()
    except OSError:
        raise UserError(f"No {LABELS} next to {path!r}; the class names are read from it") from None
    try:
        with open(os.path.join(folder, REPORT), encoding="utf-8") as f:
            metadata = json.load(f).get("metadata", {})
    except (OSError, ValueError):
        metadata = {}  # a copied model file with its labels is enough to predict
    return LoadedFormat(path, runner, class_names, metadata)


# ---------------------------------------------------------------- conversion


def _probabilities_model(version_dir: str):
    """The export's Keras model renamed to the signature's names: ``images`` in, ``{"probabilities"}`` out.

    Safe mode loads only registered classes: the zoo's are registered here; a transfer model's head layers
    are registered by whoever imported ``transfer`` (a training run, ``training.export_formats``), which sits
    above this module.
    """
    import keras

    import zoo  # noqa: F401 - registers the zoo's custom layers for loading

    path = os.path.join(version_dir, "assets", "model.keras")
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:
        raise UserError(f"Could not load the Keras model of {version_dir!r}: {_first_line(error)}") from None
    inputs = keras.Input(model.input_shape[1:], name=INPUT)
    return keras.Model(inputs, {OUTPUT: model(inputs, training=False)}, name="probabilities_only")


def _convert(name: str, model, path: str, calibration: np.ndarray) -> dict:
    """Writes format ``name`` of ``model`` to ``path``; returns what the report says about the conversion."""
    import tensorflow as tf

    spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT)]
    if name == "onnx":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf2onnx's numpy-2 shims warn on import
            model.export(path, format="onnx", input_signature=spec, verbose=False)
        import onnx

        opset = max(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))
        return {"converter": "keras Model.export(format='onnx') (tf2onnx)", "opset": int(opset)}
    # Keras' LiteRT export allows SELECT_TF_OPS; builtins only keeps the file runnable by plain LiteRT.
    options = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    info = {"converter": "keras Model.export(format='litert') (tf.lite.TFLiteConverter)"}
    if name == "tflite_fp16":
        options.update(optimizations=[tf.lite.Optimize.DEFAULT],
                       target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS],
                                    "supported_types": [tf.float16]})
    elif name == "tflite_int8":
        def representative_dataset():
            for image in calibration:
                yield [image[None].astype(np.float32)]

        options.update(optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative_dataset,
                       target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
                       inference_input_type=tf.uint8, inference_output_type=tf.float32)
        info["calibration_images"] = len(calibration)
        info["float_layers"] = float_layers(model)
    if info.get("float_layers"):
        with open(path, "wb") as f:
            f.write(_int8_keeping_float(model, spec, options["representative_dataset"], info["float_layers"]))
    else:
        model.export(path, format="litert", input_signature=spec, verbose=False, **options)
    info["ops"], float_ops = tflite_ops(path)
    if name == "tflite_int8":
        info["float_ops"] = float_ops  # float_layers' ops, the softmax after them, and any without an int8 kernel
    return info


def float_layers(model) -> list[str]:
    """Names of the layers of ``model``, nested models' included, that the int8 file computes in float32."""
    names = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ in INT8_FLOAT_LAYERS:
            names.append(layer.name)
        names.extend(float_layers(layer))
    return names


def _int8_keeping_float(model, spec, representative_dataset, layers: list[str]) -> bytes:
    """The int8 file with the ops of ``layers`` and the softmax computed in float32; uint8 pixels in.

    The converter has no option to keep chosen ops in float; TensorFlow's quantization debugger has (its
    denylists).  So the model is calibrated through the debugger as the converter would calibrate it,
    quantized without those ops, and given the uint8 input that the converter's own int8 file has.  The
    SavedModel it converts is written as Keras' LiteRT export writes it, so the file's signature is the same.
    """
    import functools
    import re

    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice, from inside the debugger
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", functools.partial(model.__call__, training=False), input_signature=spec)
        archive.write_out(saved, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                             debug_dataset=representative_dataset)
    # An op's output tensor is named by TensorFlow's name scopes, one of them its layer's name (``rbf_1``).
    in_layers = re.compile(rf"^({'|'.join(map(re.escape, layers))})(_\d+)?$")
    nodes = [tensor for _, outputs, _ in compat.tflite_nodes(debugger.calibrated_model) for tensor in outputs
             if any(in_layers.match(part) for part in tensor.split("/"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes,
                                                                         denylisted_ops=["SOFTMAX"])
    return compat.tflite_uint8_input(debugger.get_nondebug_quantized_model())


def tflite_ops(path: str) -> tuple[list[str], list[str]]:
    """(every op in a .tflite file, the ops computing in float32); see ``core.compat.tflite_nodes``."""
    return compat.tflite_ops(path)


# ---------------------------------------------------------------- scoring


def _latency_ms(runner, image: np.ndarray, repeats: int) -> float:
    """Median wall time of single-image calls, after a few warm-up calls."""
    for _ in range(5):
        runner._call(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner._call(image)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _score(runner, images, labels, reference, latency_image, repeats) -> tuple[dict, np.ndarray]:
    """(accuracy, drop and agreement against ``reference``, latency; the probabilities)."""
    probabilities = _predict(runner, images)
    score = {"runtime": runner.runtime, "latency_ms": round(_latency_ms(runner, latency_image, repeats), 4)}
    if len(labels):
        score["test_accuracy"] = float(np.mean(probabilities.argmax(-1) == labels))
    if reference is not None and len(labels):
        score["drop"] = reference["accuracy"] - score["test_accuracy"]
        score["agreement"] = float(np.mean(probabilities.argmax(-1) == reference["top1"]))
        score["max_abs_diff"] = float(np.abs(probabilities - reference["probabilities"]).max())
    return score, probabilities


def _predict(runner, images) -> np.ndarray:
    """The runner's probabilities a chunk at a time: a folder's test images are read from disk, and are
    never all held as float32."""
    if not len(images):
        return runner.predict(np.zeros((0, *images.shape[1:]), np.float32), batch_size=256)
    return np.concatenate([runner.predict(chunk, batch_size=256) for chunk in batches(images, 256, np.float32)])


def _dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def unwritten_target(version_dir: str) -> str:
    """``VERSION/formats``; a one-line refusal when it exists, since formats are written once per version."""
    target = os.path.join(version_dir, FOLDER)
    if os.path.exists(target):
        raise UserError(f"{target!r} already exists; formats are written once per export version "
                        "(delete that folder to write them again)")
    return target


def export_formats(source: str, formats, *, test: tuple[np.ndarray, np.ndarray], calibration: np.ndarray,
                   calibration_images: int = CALIBRATION_IMAGES, repeats: int = 100, seed: int = 0,
                   log=print) -> dict:
    """Writes ``formats`` of the export ``source`` into ``VERSION/formats/`` and scores each on ``test``.

    Args:
        source: ``saved_models/NAME/VERSION`` (or ``saved_models/NAME``: its newest version).
        formats: names from ``FORMATS``, a comma-separated string, or ``"all"``.
        test: (raw-pixel images, integer labels) of the run's test split.
        calibration: the run's training images; ``calibration_images`` of them, drawn with ``seed``,
            calibrate the int8 file.
        repeats: batch-1 calls timed for each median latency.

    Returns:
        The report written to ``formats/report.json``.

    Raises:
        UserError: unknown format, missing ONNX packages, not an export, ``formats/`` already there,
            or test images of another shape than the export's input.
    """
    names = parse_formats(formats)
    require_runtimes(names)
    version_dir, metadata = read_metadata(source)
    target = unwritten_target(version_dir)
    images = test[0] if hasattr(test[0], "shape") else np.asarray(test[0], np.float32)  # read a chunk at a time
    labels = np.asarray(test[1])
    input_shape = tuple(metadata["input_shape"])
    if tuple(images.shape[1:]) != input_shape:
        raise UserError(f"Test images are {images.shape[1:]}, but {version_dir!r} takes {input_shape}")
    rng = np.random.default_rng(seed)
    pool = calibration if hasattr(calibration, "shape") else np.asarray(calibration)
    chosen = pool[np.sort(rng.choice(len(pool), min(calibration_images, len(pool)), replace=False))]
    latency_image = (images[:1] if len(images) else chosen[:1]).astype(np.float32)

    saved = SavedModelRunner(version_dir)
    reference_score, reference_probabilities = _score(saved, images, labels, None, latency_image, repeats)
    reference = {"accuracy": reference_score.get("test_accuracy"), "top1": reference_probabilities.argmax(-1),
                 "probabilities": reference_probabilities}
    report = {
        "saved_model": {"path": version_dir, **reference_score,
                        "size_bytes": os.path.getsize(os.path.join(version_dir, "saved_model.pb"))
                        + _dir_size(os.path.join(version_dir, "variables"))},
        "formats": {},
        "metadata": {"source": version_dir, "class_names": metadata["class_names"],
                     "input_shape": list(input_shape), "input": INPUT, "output": OUTPUT,
                     "flips": metadata.get("flips", True), "dataset": metadata.get("dataset"),
                     "model": metadata.get("model"), "test_images": len(labels),
                     "latency": f"batch-1 median of {repeats} calls",
                     "created": datetime.datetime.now(datetime.UTC).isoformat()},
    }
    model = _probabilities_model(version_dir)
    remove_abandoned_staging(version_dir)
    tmp = tempfile.mkdtemp(prefix=f"{STAGING}{socket.gethostname()}-{os.getpid()}-", dir=version_dir)
    try:
        staged = os.path.join(tmp, FOLDER)
        os.makedirs(staged)
        for name in names:
            log(f"Converting to {name} ({DESCRIPTIONS[name]})")
            path = os.path.join(staged, FILES[name])
            info = _convert(name, model, path, chosen)
            runner = RUNNERS[name](path)
            score, _ = _score(runner, images, labels, reference, latency_image, repeats)
            report["formats"][name] = {"file": FILES[name], "description": DESCRIPTIONS[name],
                                       "size_bytes": os.path.getsize(path), **score,
                                       "input": _describe(runner, "input"), "output": _describe(runner, "output"),
                                       **info}
        with open(os.path.join(staged, LABELS), "w", encoding="utf-8") as f:
            f.write("\n".join(metadata["class_names"]) + "\n")
        with open(os.path.join(staged, REPORT), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        try:
            os.rename(staged, target)  # atomic; refused when another call wrote formats/ meanwhile
        except OSError:
            raise UserError(f"{target!r} appeared while the formats were written (another export?); "
                            "kept that one") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for line in table(rows(report)).splitlines():
        log(line)
    log(f"Formats: {target}")
    return report


def _describe(runner, which: str) -> dict:
    """Name, dtype and (for integer tensors) quantization of a runner's input or output."""
    name = INPUT if which == "input" else OUTPUT
    if isinstance(runner, TFLiteModel):
        details = runner.input if which == "input" else runner.output
        out = {"name": name, "dtype": np.dtype(details["dtype"]).name}
        scale, zero_point = details["quantization"]
        if scale:
            out["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
        return out
    node = (runner.session.get_inputs() if which == "input" else runner.session.get_outputs())[0]
    dtype = node.type.removeprefix("tensor(").removesuffix(")")  # "tensor(float)"
    return {"name": node.name, "dtype": {"float": "float32", "double": "float64"}.get(dtype, dtype)}


# ---------------------------------------------------------------- reporting


def rows(report: dict) -> list[dict]:
    """One row per artifact, the SavedModel first, with ``COLUMNS``."""
    saved = report["saved_model"]
    out = [{"format": "saved_model", "file": os.path.basename(saved["path"].rstrip("/")) + "/",
            "size_bytes": saved["size_bytes"], "test_accuracy": saved.get("test_accuracy"), "drop": 0.0,
            "agreement": 1.0, "latency_ms": saved["latency_ms"]}]
    for name, entry in report["formats"].items():
        out.append({"format": name, **{key: entry.get(key) for key in COLUMNS[1:]}})
    return out


def table(table_rows: list[dict]) -> str:
    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    header = (f"{'format':<12} {'file':<18} {'size':>10} {'accuracy':>9} {'drop':>7} {'agreement':>9} "
              f"{'latency ms':>10}")
    lines = [header]
    for row in table_rows:
        lines.append(f"{row['format']:<12} {row['file']:<18} {row['size_bytes']:>10,} "
                     f"{fmt(row['test_accuracy'], '.4f'):>9} {fmt(row['drop'], '+.4f'):>7} "
                     f"{fmt(row['agreement'], '.4f'):>9} {fmt(row['latency_ms'], '.3f'):>10}")
    return "\n".join(lines)
