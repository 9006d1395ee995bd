"""TFLite (float32, float16, int8) and ONNX formats of a real export: files, runtimes, scores, atomic writing,
and predict.py on each file.

One short LeNet-5 run (the classic one, with its RBF output) on scikit-learn's
digits with ``export_formats`` is shared by every test; each format is run in its own runtime (LiteRT/TFLite's
interpreter, onnxruntime) and compared with the SavedModel.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, write_digit_folder

import train as train_cli
import zoo
from core import compat
from core.errors import UserError
from exports import formats
from exports.load import load_export
from training import run as training_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(metrics, test images, test labels) of a 6-epoch digits run exported with every format.

    Six epochs, not fewer: by then the RBF's logits are spread as a trained LeNet-5's are, and rounding them
    to int8 costs 1.4 points (2 epochs: 0.3), so the int8 test below can tell whether they were kept float.
    """
    base = tmp_path_factory.mktemp("formats")
    config = {"epochs": 6, "verbose": 0, "patience": 0, "runs_dir": str(base / "runs"),
              "export_dir": str(base / "saved_models"), "export_formats": list(formats.FORMATS)}
    metrics = training_run.train(config, log=lambda *_: None)
    data = training_run.load_data({**training_run.DEFAULTS, **config})
    return metrics, *data.arrays["test"]


def read_json(*parts):
    return json.loads(Path(*parts).read_text(encoding="utf-8"))


def fresh_copy(metrics, tmp_path) -> str:
    """The run's export without its formats/, as a new export version to write formats into."""
    target = tmp_path / "saved_models" / "copy" / "1"
    shutil.copytree(metrics["export_path"], target, ignore=shutil.ignore_patterns(formats.FOLDER))
    return str(target)


def test_training_writes_every_format_with_labels_and_report(trained):
    metrics, _, labels = trained
    folder = os.path.join(metrics["export_path"], formats.FOLDER)
    assert sorted(os.listdir(folder)) == sorted([*formats.FILES.values(), "labels.txt", "report.json"])
    assert not [d for d in os.listdir(metrics["export_path"]) if d.startswith(".")]  # no staging left
    assert Path(folder, "labels.txt").read_text().splitlines() == [str(i) for i in range(10)]

    report = read_json(folder, "report.json")
    saved = report["saved_model"]
    # The SavedModel is scored on the same test split the run reported.
    assert saved["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert saved["size_bytes"] > 0 and saved["latency_ms"] > 0
    assert list(report["formats"]) == list(formats.FORMATS)
    for name, entry in report["formats"].items():
        assert entry["file"] == formats.FILES[name]
        assert entry["size_bytes"] == os.path.getsize(os.path.join(folder, entry["file"]))
        assert entry["drop"] == pytest.approx(saved["test_accuracy"] - entry["test_accuracy"])
        assert 0 <= entry["agreement"] <= 1 and entry["latency_ms"] > 0 and entry["runtime"]
        assert entry["input"]["name"] == "images" and entry["output"] == {"name": "probabilities",
                                                                          "dtype": "float32"}
    assert report["metadata"]["test_images"] == len(labels) and report["metadata"]["flips"] is False
    # Quantization shrinks the file: float16 about half, int8 about a quarter of float32.
    sizes = {name: entry["size_bytes"] for name, entry in report["formats"].items()}
    assert sizes["tflite_int8"] < sizes["tflite_fp16"] < sizes["tflite"]

    rows = formats.rows(report)
    assert [row["format"] for row in rows] == ["saved_model", *formats.FORMATS]
    assert all(set(row) == set(formats.COLUMNS) for row in rows)
    text = formats.table(rows)
    assert text.splitlines()[0].split()[:2] == ["format", "file"] and len(text.splitlines()) == 6


def test_each_format_runs_in_its_own_runtime_and_agrees_with_the_savedmodel(trained):
    metrics, images, labels = trained
    images = images.astype(np.float32)
    reference = load_export(metrics["export_path"]).predict(images)
    folder = os.path.join(metrics["export_path"], formats.FOLDER)
    accuracy = np.mean(reference.argmax(1) == labels)
    for name in formats.FORMATS:
        loaded = formats.load_format(os.path.join(folder, formats.FILES[name]))
        assert loaded.class_names == [str(i) for i in range(10)] and loaded.input_shape == (8, 8, 1)
        probabilities = loaded.predict(images)
        assert probabilities.shape == reference.shape
        if name == "tflite_int8":
            assert np.mean(probabilities.argmax(1) == reference.argmax(1)) >= 0.9
            assert abs(np.mean(probabilities.argmax(1) == labels) - accuracy) <= 0.05
        else:
            np.testing.assert_allclose(probabilities, reference, atol=1e-2 if name == "tflite_fp16" else 1e-4)
    runtimes = {type(formats.load_format(os.path.join(folder, f)).runner).__name__ for f in formats.FILES.values()}
    assert runtimes == {"TFLiteModel", "OnnxModel"}


def test_tflite_files_hold_builtin_ops_only_and_int8_is_integer(trained):
    metrics, _, _ = trained
    folder = os.path.join(metrics["export_path"], formats.FOLDER)
    report = read_json(folder, "report.json")
    for name in ("tflite", "tflite_fp16", "tflite_int8"):
        ops, _ = formats.tflite_ops(os.path.join(folder, formats.FILES[name]))
        assert ops and not [op for op in ops if op.startswith("CUSTOM")], (name, ops)  # no Flex/custom op
        assert "CONV_2D" in ops and "SOFTMAX" in ops
        assert report["formats"][name]["ops"] == ops
    int8 = report["formats"]["tflite_int8"]
    # Raw uint8 pixels go straight in: the digits span 0-255, so the input scale is 1 and the zero point 0.
    assert int8["input"] == {"name": "images", "dtype": "uint8", "quantization": {"scale": 1.0, "zero_point": 0}}
    assert int8["calibration_images"] == 300
    # Convolutions, subsampling and squashing compute in int8 (the RBF output is the next test's).
    assert not {"CONV_2D", "AVERAGE_POOL_2D", "TANH"} & set(int8["float_ops"])
    _, fp32_float_ops = formats.tflite_ops(os.path.join(folder, "model.tflite"))
    assert "CONV_2D" in fp32_float_ops


def test_classic_lenet5_int8_keeps_its_rbf_output_float_and_loses_at_most_a_point(trained):
    """The RBF's logits span about 200 while a digit's two best classes are a few apart: rounded to int8
    (a step of 0.8) they cost this run 1.4 points.  Its ops and the softmax stay float32, builtin ops."""
    metrics, _, _ = trained
    folder = os.path.join(metrics["export_path"], formats.FOLDER)
    report = read_json(folder, "report.json")
    int8 = report["formats"]["tflite_int8"]
    assert int8["float_layers"] == ["rbf"]
    nodes = compat.tflite_nodes(os.path.join(folder, formats.FILES["tflite_int8"]))
    assert not [op for op, _, _ in nodes if op.startswith("CUSTOM")]

    def in_rbf(outputs):
        return any(part.split("_")[0] == "rbf" for name in outputs for part in name.split("/"))

    rbf = {op for op, outputs, _ in nodes if in_rbf(outputs)}
    assert {"FULLY_CONNECTED", "SUB", "ADD", "SQUARE"} <= rbf
    assert all(computes_float for _, outputs, computes_float in nodes if in_rbf(outputs))
    floating = {op for op, outputs, computes_float in nodes if computes_float and not in_rbf(outputs)}
    assert floating == {"SOFTMAX"}  # the softmax reads the float logits; everything before the RBF is int8
    assert [op for op, outputs, computes_float in nodes if op == "FULLY_CONNECTED" and not computes_float]  # F6
    # Float32 probabilities out; about a third of the float32 file.
    assert int8["output"]["dtype"] == "float32"
    assert int8["size_bytes"] <= 0.35 * report["formats"]["tflite"]["size_bytes"]
    assert int8["drop"] <= 0.01 and int8["agreement"] >= 0.98


def test_only_models_with_an_rbf_output_keep_layers_float_in_int8():
    assert formats.float_layers(zoo.build("lenet5", (28, 28, 1), 10)) == ["rbf"]
    assert formats.float_layers(zoo.build("lenet5", (28, 28, 1), 10, output="dense")) == []
    assert formats.float_layers(zoo.build("lenet5_modern", (28, 28, 1), 10)) == []
    assert formats.float_layers(zoo.build("resnet20", (32, 32, 3), 10)) == []


def test_onnx_keeps_the_signature_names(trained):
    import onnxruntime

    metrics, _, _ = trained
    session = onnxruntime.InferenceSession(os.path.join(metrics["export_path"], formats.FOLDER, "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    report = read_json(metrics["export_path"], formats.FOLDER, "report.json")
    assert report["formats"]["onnx"]["opset"] >= 13


def test_formats_are_written_once_per_version(trained):
    metrics, images, labels = trained
    report_path = os.path.join(metrics["export_path"], formats.FOLDER, "report.json")
    before = Path(report_path).read_text()
    with pytest.raises(UserError, match="already exists"):
        formats.export_formats(metrics["export_path"], ["tflite"], test=(images, labels), calibration=images)
    assert Path(report_path).read_text() == before


def test_a_failure_mid_export_leaves_no_formats_folder(trained, tmp_path, monkeypatch):
    metrics, images, labels = trained
    version = fresh_copy(metrics, tmp_path)
    # A staging folder of a process that died mid-export (pid far above any live one) is cleared.
    dead = os.path.join(version, f".tmp-export-{socket.gethostname()}-999999999-abc")
    os.makedirs(os.path.join(dead, "formats"))
    real_convert = formats._convert

    def crash_on_onnx(name, *args):
        if name == "onnx":
            raise RuntimeError("simulated crash while converting")
        return real_convert(name, *args)

    monkeypatch.setattr(formats, "_convert", crash_on_onnx)
    with pytest.raises(RuntimeError, match="simulated"):  # the float32 file was written before the crash
        formats.export_formats(version, ["tflite", "onnx"], test=(images, labels), calibration=images, repeats=3)
    assert sorted(os.listdir(version)) == ["assets", "fingerprint.pb", "saved_model.pb", "variables"]


def test_export_command_reloads_the_runs_split(trained, tmp_path, capsys):
    from training import export_formats as export_command

    metrics, _, _ = trained
    version = fresh_copy(metrics, tmp_path)
    assert export_command.main([version, "--formats", "tflite_fp16", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    assert "tflite_fp16" in out and "saved_model" in out
    report = read_json(version, "formats", "report.json")
    assert list(report["formats"]) == ["tflite_fp16"]
    assert report["metadata"]["test_images"] == metrics["test_samples"]
    # A run directory names its export; this one already has formats/.
    with pytest.raises(UserError, match="already exists"):
        export_command.main([metrics["run_dir"], "--formats", "tflite"])


@pytest.mark.parametrize("argv, message", [
    (["--formats", "tflite,tflite_int4"], "Unknown export format 'tflite_int4'; valid: tflite, tflite_fp16"),
    (["--formats", ","], "No export format given"),
    (["--repeats", "0"], "--repeats must be at least 1"),
])
def test_export_command_refuses_bad_arguments(trained, argv, message):
    from training import export_formats as export_command

    metrics, _, _ = trained
    with pytest.raises(UserError, match=message):
        export_command.main([metrics["export_path"], *argv])


def test_export_command_refuses_what_is_not_an_export_or_run(trained, tmp_path, capsys):
    from training import export_formats as export_command

    metrics, _, _ = trained
    with pytest.raises(UserError, match="does not exist"):
        export_command.main([str(tmp_path / "nowhere")])
    unfinished = tmp_path / "runs" / "half"
    unfinished.mkdir(parents=True)
    (unfinished / "config.json").write_text("{}")
    with pytest.raises(UserError, match="has not finished"):
        export_command.main([str(unfinished)])
    version = fresh_copy(metrics, tmp_path)
    meta_path = os.path.join(version, "assets", "metadata.json")
    Path(meta_path).write_text(json.dumps({**read_json(meta_path), "run_dir": str(tmp_path / "gone")}))
    with pytest.raises(UserError, match="is gone or has no config.json"):
        export_command.main([version, "--formats", "tflite"])
    # The same through train.py's main (in this process: a child would only add TensorFlow's start-up): one line,
    # exit code 2.
    assert train_cli.main(["export", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: Export")


def test_train_refuses_bad_formats_before_training(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert train_cli.main(["--export-formats", "tflite,bogus", "--runs-dir", runs]) == 2
    assert "Unknown export format 'bogus'; valid: tflite, tflite_fp16, tflite_int8, onnx" in capsys.readouterr().err
    assert train_cli.main(["--export-formats", "tflite", "--no-export", "--runs-dir", runs]) == 2
    assert "drop --no-export" in capsys.readouterr().err
    assert not os.path.exists(runs)  # nothing trained


def test_a_missing_onnx_extra_is_one_line_naming_it(monkeypatch, trained):
    metrics, _, _ = trained
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'cnn-classroom\[onnx\]'"):
        formats.require_runtimes(["tflite", "onnx"])
    formats.require_runtimes(["tflite"])  # TFLite needs only TensorFlow
    with pytest.raises(UserError, match=r"needs onnxruntime: pip install 'cnn-classroom\[onnx\]'"):
        formats.load_format(os.path.join(metrics["export_path"], "formats", "model.onnx"))


def test_load_format_errors(trained, tmp_path):
    metrics, _, _ = trained
    alone = tmp_path / "model.tflite"
    shutil.copy(os.path.join(metrics["export_path"], "formats", "model.tflite"), alone)
    with pytest.raises(UserError, match="No labels.txt next to"):
        formats.load_format(str(alone))
    for suffix, runtime in ((".tflite", "TFLite"), (".onnx", "ONNX")):
        (tmp_path / f"garbage{suffix}").write_bytes(b"<html>not a model</html>")
        with pytest.raises(UserError, match=f"Could not load {runtime} model"):
            formats.load_format(str(tmp_path / f"garbage{suffix}"))
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(UserError, match="not a .tflite or .onnx model"):
        formats.load_format(str(tmp_path / "weights.h5"))
    with pytest.raises(UserError, match="has no formats/model.onnx"):
        formats.load_format(fresh_copy(metrics, tmp_path), "onnx")
    with pytest.raises(UserError, match="Unknown export format 'int8'"):
        formats.load_format(metrics["export_path"], "int8")


def test_predict_gives_the_savedmodels_answers_with_tflite_and_onnx(trained, tmp_path, capsys):
    import predict as predict_cli

    metrics, _, _ = trained
    images = write_digit_folder(tmp_path / "digits", n_per_class=2, classes=[str(i) for i in range(10)])
    export = metrics["export_path"]

    def answers(result):
        assert set(result) == {"export", "predictions", "skipped"}
        return {p["path"]: p["top"] for p in result["predictions"]}

    def in_process(*args):  # predict.py's main without a new interpreter (TensorFlow is loaded already)
        assert predict_cli.main([*args, str(images), "--json", "--top-k", "3"]) == 0
        return answers(json.loads(capsys.readouterr().out))

    reference = in_process(export)
    done = run_cli("predict.py", os.path.join(export, "formats", "model.tflite"), str(images), "--json",
                   "--top-k", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["export"].endswith("model.tflite")
    tflite = answers(json.loads(done.stdout))
    onnx = in_process(export, "--format", "onnx")
    assert len(reference) == 20
    for found in (tflite, onnx):
        assert found.keys() == reference.keys()
        for path, top in found.items():
            assert [t["class"] for t in top] == [t["class"] for t in reference[path]]
            np.testing.assert_allclose([t["probability"] for t in top],
                                       [t["probability"] for t in reference[path]], atol=1e-4)
    assert predict_cli.main([export, "--format", "int4", str(images)]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown export format 'int4'; valid: tflite")
