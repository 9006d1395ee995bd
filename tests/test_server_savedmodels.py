"""Any SavedModel serves by its signatures, as TF Serving serves it: a Keras ``model.export()`` artifact and a
``tf.saved_model.save`` module with a string input, over REST and gRPC, from one ``train.py serve`` process;
and the servable's parts (signatures, batching of dict inputs, warm-up records) called directly."""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import os

import grpc
import httpx
import numpy as np
import pytest

from tests.serverutil import serving


def _keras_export(path: str) -> None:
    import keras

    inputs = keras.Input((3,), name="features")
    outputs = keras.layers.Dense(2, name="dense", kernel_initializer="ones", bias_initializer="zeros")(inputs)
    keras.Model(inputs, outputs).export(path, verbose=False)


def _text_module(path: str) -> None:
    """A module with a float predict signature (half plus two) and a string one, saved as TF2 does."""
    import tensorflow as tf

    class Text(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def half_plus_two(self, x):
            return {"y": x * 0.5 + 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                      tf.TensorSpec([None], tf.int64, name="repeat")])
        def shout(self, text, repeat):
            return {"length": tf.strings.length(text), "shout_bytes": tf.strings.upper(text),
                    "echo": tf.strings.reduce_join(tf.repeat(tf.expand_dims(text, 1), 2, axis=1), axis=1),
                    "repeat": repeat * 2}

    module = Text()
    tf.saved_model.save(module, path, signatures={"serving_default": module.half_plus_two, "shout": module.shout})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("savedmodels")
    _keras_export(str(root / "keras_export" / "1"))
    _text_module(str(root / "text" / "0000007"))  # zero-padded, as TF Serving names versions
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    with serving([models], log_dir=str(tmp_path_factory.mktemp("logs")), ready_model="text") as running:
        yield running


def test_a_keras_export_and_a_module_with_string_inputs_serve_over_rest(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answer = client.post("/v1/models/keras_export:predict", json={"instances": [[1, 2, 3], [0, 0, 1]]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [[6.0, 6.0], [1.0, 1.0]]}
        answer = client.post("/v1/models/text:predict", json={
            "signature_name": "shout", "instances": [{"text": "ab", "repeat": 1}, {"text": {"b64": "eHl6"}, "repeat": 3}]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": [
            {"length": 2, "shout_bytes": {"b64": base64.b64encode(b"AB").decode()}, "echo": "abab", "repeat": 2},
            {"length": 3, "shout_bytes": {"b64": base64.b64encode(b"XYZ").decode()}, "echo": "xyzxyz", "repeat": 6}]}
        columnar = client.post("/v1/models/text/versions/7:predict", json={
            "signature_name": "shout", "inputs": {"text": ["q"], "repeat": [5]}})
        assert columnar.json()["outputs"]["repeat"] == [10] and columnar.json()["outputs"]["echo"] == ["qq"]
        # The model's own signature, its own errors: an input it lacks, a dtype it does not take.
        missing = client.post("/v1/models/text:predict", json={"signature_name": "shout", "inputs": {"text": ["q"]}})
        assert missing.status_code == 400 and "Missing but required: {repeat}" in missing.json()["error"]
        wrong = client.post("/v1/models/text:predict", json={"instances": [{"b64": "AA=="}]})
        assert wrong.status_code == 400 and "b64 values are for DT_STRING inputs" in wrong.json()["error"]
        unknown = client.post("/v1/models/text:predict", json={"signature_name": "nope", "instances": [1.0]})
        assert unknown.status_code == 400 and unknown.json()["error"] == 'Serving signature name: "nope" not found in signature def'
        # Not one of this toolkit's image exports: served, but the image upload and the page leave it out.
        upload = client.post("/v1/models/text:upload", files={"file": ("a.png", b"x")})
        assert upload.status_code == 400 and "not an image classifier" in upload.json()["error"]
        assert client.get("/api/models").json()["models"] == []
        status = client.get("/v1/models/text").json()
        assert status["model_version_status"][0]["version"] == "7"


def test_the_same_models_over_grpc_with_googles_client(server):
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "text"
        request.model_spec.signature_name = "shout"
        request.inputs["text"].CopyFrom(tf.make_tensor_proto([b"hi", "\u00e9".encode()]))
        request.inputs["repeat"].CopyFrom(tf.make_tensor_proto([1, 2], dtype=tf.int64))
        request.output_filter.extend(["length", "shout_bytes"])
        response = stub.Predict(request, timeout=30)
        assert sorted(response.outputs) == ["length", "shout_bytes"]
        assert tf.make_ndarray(response.outputs["length"]).tolist() == [2, 2]
        assert tf.make_ndarray(response.outputs["shout_bytes"]).tolist() == [b"HI", "\u00e9".encode()]
        assert response.model_spec.version.value == 7 and response.model_spec.signature_name == "shout"

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "keras_export"
        request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.array([[1, 1, 1]], np.float64)))  # converted
        assert tf.make_ndarray(stub.Predict(request, timeout=30).outputs["output_0"]).tolist() == [[3.0, 3.0]]

        request.inputs["features"].CopyFrom(tf.make_tensor_proto([b"x"]))
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "DT_FLOAT" in refused.value.details()

        metadata = stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "text"}, metadata_field=["signature_def"]), timeout=30)
        defs = get_model_metadata_pb2.SignatureDefMap()
        metadata.metadata["signature_def"].Unpack(defs)
        assert {"serving_default", "shout"} <= set(defs.signature_def)
        assert set(defs.signature_def["shout"].inputs) == {"text", "repeat"}


def test_concurrent_requests_to_a_signature_of_two_inputs_are_batched_and_answered_row_for_row(models):
    from server.servable import loader
    from server.settings import DEFAULTS

    counted = []
    settings = dataclasses.replace(DEFAULTS, max_batch_size=16, batch_timeout_ms=100)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        load = loader(settings, pool, on_batch=lambda name, rows: counted.append(rows))
        servable = load("text", str(models / "text" / "0000007"), 7)
        signature = servable.signature("shout")
        assert signature.batchable
        requests = [{"text": np.array([f"r{i}".encode()] * (i % 3 + 1), dtype=object),
                     "repeat": np.full(i % 3 + 1, i, np.int64)} for i in range(12)]
        futures = list(pool.map(lambda inputs: servable.submit(signature, inputs), requests))
        for i, future in enumerate(futures):
            outputs = future.result(30)
            assert outputs["repeat"].tolist() == [2 * i] * (i % 3 + 1)
            assert outputs["echo"].tolist() == [f"r{i}r{i}".encode()] * (i % 3 + 1)
        servable.close()
    assert sum(counted) == sum(i % 3 + 1 for i in range(12)) and len(counted) < 12  # merged


def test_warm_up_records_are_replayed_before_a_version_serves(models, tmp_path):
    import shutil

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from server.servable import WARMUP_FILE, loader
    from server.settings import DEFAULTS

    version = tmp_path / "text" / "1"
    shutil.copytree(models / "text" / "0000007", version)
    os.makedirs(version / os.path.dirname(WARMUP_FILE))
    with tf.io.TFRecordWriter(str(version / WARMUP_FILE)) as writer:
        for _ in range(3):
            request = predict_pb2.PredictRequest()
            request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
            writer.write(prediction_log_pb2.PredictionLog(predict_log={"request": request}).SerializeToString())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        servable = loader(DEFAULTS, pool)("text", str(version), 1)
        assert servable.warm_up() == 3
        servable.close()
        # A record the model cannot answer fails the load, as a broken export should.
        with tf.io.TFRecordWriter(str(version / WARMUP_FILE)) as writer:
            request = predict_pb2.PredictRequest()
            request.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
            writer.write(prediction_log_pb2.PredictionLog(predict_log={"request": request}).SerializeToString())
        with pytest.raises(Exception, match="nope"):
            loader(DEFAULTS, pool)("text", str(version), 1)


def test_classify_checks_the_signatures_method_only_when_asked(tmp_path):
    """TF2 writes every signature as predict, so TF Serving classifies with any signature of a tf.Example input
    unless --enable_signature_method_name_check; then only a classify signature."""
    import asyncio

    from tensorflow.core.example import example_pb2

    from server.errors import ServingError
    from server.models import Manager, ModelSource
    from server.servable import loader
    from server.service import Service, Spec
    from server.settings import DEFAULTS
    from tests import tfserving_models

    base = tfserving_models.half_plus_two_tf2(tmp_path / "half_plus_two")
    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(2.0)
    spec = Spec("hp2", signature_name="classify_x_to_y")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for check in (False, True):
            settings = dataclasses.replace(DEFAULTS, signature_method_name_check=check)
            manager = Manager(None, "latest", loader(settings, pool),
                              sources=lambda: {"hp2": ModelSource(str(base))})
            manager.poll()
            service = Service(manager, settings)
            if check:
                with pytest.raises(ServingError, match="Expected classification signature method_name to be "
                                                       "tensorflow/serving/classify. Was: tensorflow/serving/predict"):
                    asyncio.run(service.classify(spec, [example.SerializeToString()]))
            else:
                _, _, results = asyncio.run(service.classify(spec, [example.SerializeToString()]))
                assert results == [[("", 3.0)]]
            manager.stop()
