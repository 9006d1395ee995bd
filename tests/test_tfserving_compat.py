"""``train.py serve`` held to TensorFlow Serving's own integration test.

A port of ``tensorflow_serving/model_servers/tensorflow_model_server_test.py``: the same models (TF Serving's
half_plus_two / half_plus_three, built here by tests/tfserving_models.py), the same command-line flags, the
same requests through Google's ``tensorflow-serving-api`` gRPC stubs and plain HTTP, and the answers and error
messages ``tensorflow_model_server`` gives.  The expected error texts are TF Serving's, quoted from its source
(``basic_manager.cc``, ``manager.h``, ``get_model_status_impl.cc``, ``get_model_metadata_impl.cc``,
``predict_util.cc``, ``http_rest_api_handler.cc``, ``json_tensor.cc``, ``model_service_impl.cc``).

The models are built once per module and first checked without any server (y = 0.5x + 2, and + 3), so a model
bug never passes for a server bug.  One server runs per distinct set of flags, started lazily by a
module-scoped fixture and stopped at the end of the module, as TF Serving's test keeps one per argument set.
Every wait is bounded.

Deliberately left out of the port: the Unix-socket, TF Lite, profiler, tf_text, MirroredStrategy and Keras 2
``tf.keras.Sequential`` cases (nothing here serves them), and ``--grpc_channel_arguments``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
import httpx
import pytest

from tests import tfserving_models
from tests.helpers import ROOT
from tests.serverutil import Server, free_port, http_client

RPC_TIMEOUT = 20.0  # TF Serving's test uses 20 s for every RPC
START_TIMEOUT = 180.0  # TensorFlow's start-up in a child process, on two shared cores
CHANGE_TIMEOUT = 60.0  # a config reload, a config-file poll, a new version on disk
VERSION = tfserving_models.VERSION  # 123
MISSING = "intentionally_missing_model"

PREDICT, CLASSIFY, REGRESS = "tensorflow/serving/predict", "tensorflow/serving/classify", "tensorflow/serving/regress"
TF1_METHODS = {"serving_default": PREDICT, "classify_x_to_y": CLASSIFY, "regress_x_to_y": REGRESS,
               "regress_x_to_y2": REGRESS, "regress_x2_to_y3": REGRESS, "classify_x2_to_y3": CLASSIFY}
TF2_METHODS = {name: PREDICT for name in TF1_METHODS}  # tf.saved_model.save writes every signature as predict


# --------------------------------------------------------------------------------------------------------------
# TF Serving's API, imported lazily: importing tensorflow_serving imports TensorFlow.

def apis():
    from tensorflow.core.example import example_pb2
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                         inference_pb2, model_management_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc, regression_pb2)

    return dict(example=example_pb2, types=types_pb2, classification=classification_pb2,
                metadata=get_model_metadata_pb2, status=get_model_status_pb2, inference=inference_pb2,
                management=model_management_pb2, model_grpc=model_service_pb2_grpc, predict=predict_pb2,
                prediction_grpc=prediction_service_pb2_grpc, regression=regression_pb2)


def serialized_example(x: float) -> bytes:
    example = apis()["example"].Example()
    example.features.feature["x"].float_list.value.extend([x])
    return example.SerializeToString()


def signature_def_map(model_base):
    """The serve MetaGraphDef's signature_def map, read from ``saved_model.pb``, as TF Serving's GetModelMetadata
    returns it (every entry, ``__saved_model_init_op`` included)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(model_base, tfserving_models.VERSION_DIR, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    (meta_graph,) = [m for m in saved_model.meta_graphs if "serve" in m.meta_info_def.tags]
    result = apis()["metadata"].SignatureDefMap()
    for name, signature in meta_graph.signature_def.items():
        result.signature_def[name].CopyFrom(signature)
    return result


def rest_metadata(model_name: str, model_base) -> dict:
    """The JSON TF Serving's ``GET /v1/models/NAME/metadata`` answers (http_rest_api_util.cc ToJsonString: proto
    field names kept, fields without presence always printed, int64 as strings)."""
    from google.protobuf import json_format

    signatures = json_format.MessageToDict(signature_def_map(model_base), always_print_fields_with_no_presence=True,
                                           preserving_proto_field_name=True)
    return {"model_spec": {"name": model_name, "signature_name": "", "version": str(VERSION)},
            "metadata": {"signature_def": signatures}}


# --------------------------------------------------------------------------------------------------------------
# The server, started as TF Serving's test starts tensorflow_model_server.

class Served:
    """A running ``train.py serve`` with TF Serving's flags, and its clients."""

    def __init__(self, server: Server, base=None):
        a = apis()
        self.server, self.base = server, base
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.prediction = a["prediction_grpc"].PredictionServiceStub(self.channel)
        self.model_service = a["model_grpc"].ModelServiceStub(self.channel)
        self.http = http_client(server, timeout=RPC_TIMEOUT)

    def log_tail(self) -> str:
        return self.server.output()[-3000:]

    def close(self):
        self.http.close()
        self.channel.close()


def command(grpc_port: int, rest_port: int, *flags: str) -> list[str]:
    return [sys.executable, "train.py", "serve", f"--port={grpc_port}", f"--rest_api_port={rest_port}", *flags]


def child_env() -> dict:
    return {**os.environ, "CNN_CLASSROOM_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def wait_ready(server: Server, ready_models, timeout: float = START_TIMEOUT):
    """As TF Serving's WaitForServerReady: a Predict for a model that is not there must be answered (TF Serving
    loads its models before it opens its ports); then every model in ``ready_models`` must answer its REST
    status with 200."""
    a = apis()
    deadline = time.monotonic() + timeout
    request = a["predict"].PredictRequest()
    request.model_spec.name = MISSING
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = a["prediction_grpc"].PredictionServiceStub(channel)
        while True:
            assert server.alive(), f"the server exited:\n{server.output()[-3000:]}"
            answered = False
            try:
                stub.Predict(request, timeout=2)
                answered = True
            except grpc.RpcError as error:
                answered = error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if answered:
                try:
                    with http_client(server, timeout=5) as http:
                        if all(http.get(f"/v1/models/{name}").status_code == 200 for name in ready_models):
                            return
                except httpx.TransportError:  # the REST port may open after the gRPC one
                    pass
            assert time.monotonic() < deadline, f"the server was not ready in {timeout:.0f} s:\n" \
                                                f"{server.output()[-3000:]}"
            time.sleep(0.25)


def stop(process: subprocess.Popen):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@contextlib.contextmanager
def tf_serving(*flags: str, log_dir, ready_models=("default",), base=None):
    """``train.py serve --port=P --rest_api_port=R FLAGS`` on ports picked here, until ``ready_models`` answer;
    SIGTERM at the end."""
    grpc_port, rest_port = free_port(), free_port()
    log = os.path.join(str(log_dir), f"serve-{rest_port}.log")
    with open(log, "w") as out:
        process = subprocess.Popen(command(grpc_port, rest_port, *flags), stdout=out, stderr=subprocess.STDOUT,
                                   cwd=ROOT, env=child_env())
    server = Server(process, rest_port, grpc_port, log)
    served = None
    try:
        wait_ready(server, ready_models)
        served = Served(server, base)
        yield served
    finally:
        if served is not None:
            served.close()
        stop(process)


def config_text(*models: tuple[str, str]) -> str:
    """A ModelServerConfig in text format, laid out as TF Serving's good_model_config.txt."""
    entries = ",\n".join(f'  config: {{\n    name: "{name}",\n    base_path: "{path}",\n'
                         f'    model_platform: "tensorflow"\n  }}' for name, path in models)
    return f"model_config_list: {{\n\n{entries}\n\n}}\n"


def write_atomically(path, text: str):
    """Replace a config file in one step, so a polling server never reads half of it."""
    temporary = f"{path}.writing"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)


# --------------------------------------------------------------------------------------------------------------
# Fixtures: the models once per module, one server per set of flags.

@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tfserving")


@pytest.fixture(scope="module")
def models(root):
    built = root / "models"
    return {"tf1": tfserving_models.half_plus_two_tf1(built / "saved_model_half_plus_two_cpu"),
            "tf1_three": tfserving_models.half_plus_three_tf1(built / "saved_model_half_plus_three"),
            "tf2": tfserving_models.half_plus_two_tf2(built / "saved_model_half_plus_two_tf2_cpu")}


@pytest.fixture(scope="module")
def tf1_server(root, models):
    with tf_serving("--model_name=default", f"--model_base_path={models['tf1']}", log_dir=root,
                    base=models["tf1"]) as served:
        yield served


@pytest.fixture(scope="module")
def tf2_server(root, models):
    with tf_serving("--model_name=default", f"--model_base_path={models['tf2']}", log_dir=root,
                    base=models["tf2"]) as served:
        yield served


@pytest.fixture(scope="module", params=["tf1", "tf2"])
def half_plus_two(request):
    """The TF1 and the TF2 half_plus_two, each served alone as ``default``."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="module")
def good_config_server(root, models):
    """TF Serving's good_model_config.txt: half_plus_two and half_plus_three."""
    config = root / "good_model_config.conf"
    config.write_text(config_text(("half_plus_two", models["tf1"]), ("half_plus_three", models["tf1_three"])))
    with tf_serving(f"--model_config_file={config}", log_dir=root,
                    ready_models=("half_plus_two", "half_plus_three")) as served:
        yield served


@pytest.fixture(scope="module")
def batching_server(root, models):
    parameters = root / "batching_config.txt"
    parameters.write_text("max_batch_size { value: 128 }\n"
                          "batch_timeout_micros { value: 0 }\n"
                          "max_enqueued_batches { value: 1000000 }\n"
                          "num_batch_threads { value: 2 }\n"
                          "allowed_batch_sizes: 1\nallowed_batch_sizes: 2\nallowed_batch_sizes: 8\n"
                          "allowed_batch_sizes: 32\nallowed_batch_sizes: 128\n")
    with tf_serving("--model_name=default", f"--model_base_path={models['tf1']}", "--enable_batching",
                    f"--batching_parameters_file={parameters}", log_dir=root, base=models["tf1"]) as served:
        yield served


@pytest.fixture(scope="module")
def prometheus_server(root, models):
    monitoring = root / "monitoring_config.txt"  # TF Serving's testdata/monitoring_config.txt
    monitoring.write_text('prometheus_config: {\n  enable: true,\n  path: "/monitoring/prometheus/metrics"\n}\n')
    with tf_serving("--model_name=default", f"--model_base_path={models['tf1']}",
                    f"--monitoring_config_file={monitoring}", log_dir=root) as served:
        yield served


@contextlib.contextmanager
def _config_file_server(root, models, name: str, *flags: str):
    """A server of half_plus_two from a config file of its own, which a test may rewrite (``served.config``)."""
    config = root / f"{name}.txt"
    write_atomically(config, config_text(("half_plus_two", models["tf1"])))
    with tf_serving(f"--model_config_file={config}", *flags, log_dir=root,
                    ready_models=("half_plus_two",)) as served:
        served.config = config
        yield served


@pytest.fixture(scope="module")
def polled_config_server(root, models):
    with _config_file_server(root, models, "polled_model_config", "--model_config_file_poll_wait_seconds=1") as served:
        yield served


@pytest.fixture(scope="module")
def unpolled_config_server(root, models):
    with _config_file_server(root, models, "unpolled_model_config",
                             "--model_config_file_poll_wait_seconds=0") as served:
        yield served


@pytest.fixture(scope="module")
def reload_config_server(root, models):
    with _config_file_server(root, models, "reloaded_model_config") as served:
        yield served


@pytest.fixture(scope="module")
def new_version_server(root, models):
    """half_plus_two from a base of its own, so that a test can add a version to it."""
    base = root / "versioned_half_plus_two"
    shutil.copytree(models["tf1"], base)
    with tf_serving("--model_name=default", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
                    log_dir=root, base=str(base)) as served:
        yield served


@pytest.fixture(scope="module")
def saved_model_save_server(root):
    """TF Serving's test_tf_saved_model_save and test_tf_saved_model_save_multiple_signatures models, served
    from one config file."""
    import tensorflow as tf

    first = root / "tf_saved_model_save"
    module = tf.train.Checkpoint()
    module.v1, module.v2 = tf.Variable(3.0), tf.Variable(2.0)
    module.f = tf.function(lambda x: {"y": module.v1 * module.v2 * x})
    tf.saved_model.save(module, str(first / tfserving_models.VERSION_DIR),
                        signatures=module.f.get_concrete_function(tf.TensorSpec(None, tf.float32)))

    second = root / "tf_saved_model_save_multiple_signatures"
    module = tf.train.Checkpoint()
    module.f = tf.function(lambda x: {"y": 1.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    module.g = tf.function(lambda x: {"y": 2.0}, input_signature=[tf.TensorSpec(None, tf.float32)])
    tf.saved_model.save(module, str(second / tfserving_models.VERSION_DIR),
                        signatures={"serving_default": module.f, "custom_signature_key": module.g})

    config = root / "saved_model_save_config.txt"
    config.write_text(config_text(("tf_saved_model_save", first), ("multiple_signatures", second)))
    with tf_serving(f"--model_config_file={config}", log_dir=root,
                    ready_models=("tf_saved_model_save", "multiple_signatures")) as served:
        yield served


# --------------------------------------------------------------------------------------------------------------
# Requests as TF Serving's test makes them.

def predict_request(*, model_name="default", signature_name="serving_default", version=None, input_key="x",
                    x=2.0, output_filter=("y",)):
    """TF Serving's PredictRequest: one float, shape [1]."""
    a = apis()
    request = a["predict"].PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs[input_key].dtype = a["types"].DT_FLOAT
    request.inputs[input_key].float_val.append(x)
    request.inputs[input_key].tensor_shape.dim.add().size = 1
    request.output_filter.extend(output_filter)
    return request


def predict(served: Served, *, specify_output=True, output_filter=None, strict=True, **fields):
    """Predict as TF Serving's VerifyPredictRequest sends it; ``strict``: a failed RPC fails the test (with its
    code and details) rather than raising grpc.RpcError."""
    if output_filter is None:
        output_filter = ("y",) if specify_output else ()
    request = predict_request(output_filter=output_filter, **fields)
    if not strict:
        return request, served.prediction.Predict(request, RPC_TIMEOUT)
    return request, ok(served.prediction.Predict, request)


def verify_predict(served: Served, expected_output: float, expected_version: int = VERSION, *,
                   model_name="default", specify_output=True, signature_name="serving_default"):
    """TF Serving's VerifyPredictRequest: x = [2.0] (shape [1]) in, y out as one float_val."""
    types = apis()["types"]
    request, result = predict(served, model_name=model_name, signature_name=signature_name,
                              specify_output=specify_output)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types.DT_FLOAT
    assert len(result.outputs["y"].float_val) == 1  # AsProtoField: float_val, not tensor_content
    assert result.outputs["y"].float_val[0] == expected_output
    verify_model_spec(result.model_spec, model_name, signature_name, expected_version)


def verify_model_spec(model_spec, name: str, signature_name: str, version: int):
    assert model_spec.name == name
    assert model_spec.signature_name == signature_name
    assert model_spec.version.value == version


def ok(call, request):
    """An RPC that must succeed; its failure is reported as one line, code and details."""
    try:
        return call(request, RPC_TIMEOUT)
    except grpc.RpcError as error:
        pytest.fail(f"{type(request).__name__} failed: {error.code().name}: {error.details()}", pytrace=False)


def rpc_error(call, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, RPC_TIMEOUT)
    return caught.value


def expect_error(error: grpc.RpcError, code: grpc.StatusCode, details: str):
    assert (error.code(), error.details()) == (code, details), \
        f"got {error.code().name}: {error.details()!r}; TF Serving answers {code.name}: {details!r}"


def expect_json(response, status: int, body):
    """A REST answer: its status and its JSON body, exactly."""
    got = f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:500]}"
    assert response.status_code == status, got
    assert response.json() == body, got


def wait_until(condition, what: str, served: Served, timeout: float = CHANGE_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        assert served.server.alive(), f"the server exited while waiting for {what}:\n{served.log_tail()}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s\n{served.log_tail()}"
        time.sleep(0.25)


def serves(served: Served, model_name: str, expected_output: float) -> bool:
    try:
        _, result = predict(served, model_name=model_name, strict=False)
    except grpc.RpcError:
        return False
    return list(result.outputs["y"].float_val) == [expected_output]


def not_found(served: Served, model_name: str) -> bool:
    try:
        predict(served, model_name=model_name, strict=False)
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.NOT_FOUND
    return False


# --------------------------------------------------------------------------------------------------------------
# The models, without any server.

@pytest.mark.parametrize("name", ["tf1", "tf1_three", "tf2"])
def test_models_are_laid_out_as_tf_servings_testdata(models, name):
    version = os.path.join(models[name], "00000123")
    assert os.listdir(models[name]) == ["00000123"]
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    assert os.path.isdir(os.path.join(version, "variables"))
    with open(os.path.join(version, "assets", "foo.txt")) as f:
        assert f.read() == "asset-file-contents"


@pytest.mark.parametrize("name", ["tf1", "tf1_three", "tf2"])
def test_models_have_tf_servings_signatures(models, name):
    methods = TF2_METHODS if name == "tf2" else TF1_METHODS
    signatures = signature_def_map(models[name]).signature_def
    served = {key: signatures[key].method_name for key in signatures if key != "__saved_model_init_op"}
    assert served == methods
    assert set(signatures["serving_default"].inputs) == {"x"}
    assert set(signatures["serving_default"].outputs) == {"y"}
    for key in methods:
        if key != "serving_default":
            assert set(signatures[key].inputs) == {"inputs"}
            assert set(signatures[key].outputs) == ({"scores"} if key.startswith("classify") else {"outputs"})


@pytest.mark.parametrize("name, b", [("tf1", 2.0), ("tf1_three", 3.0), ("tf2", 2.0)])
def test_models_compute_half_plus_b_without_a_server(models, name, b):
    """y = 0.5x + b through every signature, loaded with tf.saved_model.load: any failure here is the model's."""
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(models[name], "00000123"))
    tf1 = name.startswith("tf1")
    column = (lambda values: tf.constant([[v] for v in values])) if tf1 else tf.constant  # x:0 is [-1, 1] in TF1
    x = [2.0, 3.0, 4.0]
    examples = tf.constant([serialized_example(v) for v in x])
    expected = np.array([0.5 * v + b for v in x], np.float32)
    calls = {"serving_default": (dict(x=column(x)), "y", expected),
             "regress_x_to_y": (dict(inputs=examples), "outputs", expected),
             "classify_x_to_y": (dict(inputs=examples), "scores", expected),
             "regress_x_to_y2": (dict(inputs=examples), "outputs", np.array([0.5 * v + 3 for v in x], np.float32)),
             "regress_x2_to_y3": (dict(inputs=column(x)), "outputs", np.array([0.5 * v + 3 for v in x], np.float32)),
             "classify_x2_to_y3": (dict(inputs=column(x)), "scores", np.array([0.5 * v + 3 for v in x], np.float32))}
    for signature, (inputs, output, want) in calls.items():
        got = loaded.signatures[signature](**inputs)
        assert set(got) == {output}, signature
        np.testing.assert_array_equal(np.reshape(got[output].numpy(), -1), want, err_msg=signature)


# --------------------------------------------------------------------------------------------------------------
# ModelService.GetModelStatus and PredictionService.GetModelMetadata over gRPC.

def test_get_model_status(half_plus_two):
    a = apis()
    request = a["status"].GetModelStatusRequest()
    request.model_spec.name = "default"
    result = ok(half_plus_two.model_service.GetModelStatus, request)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    assert result.model_version_status[0].state == a["status"].ModelVersionStatus.AVAILABLE
    assert result.model_version_status[0].status.error_code == 0  # OK
    assert result.model_version_status[0].status.error_message == ""


def test_get_model_status_of_a_missing_model_or_version_is_not_found(half_plus_two):
    a = apis()
    request = a["status"].GetModelStatusRequest()
    request.model_spec.name = MISSING
    error = rpc_error(half_plus_two.model_service.GetModelStatus, request)
    expect_error(error, grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {MISSING}")
    request.model_spec.name = "default"
    request.model_spec.version.value = 999
    error = rpc_error(half_plus_two.model_service.GetModelStatus, request)
    expect_error(error, grpc.StatusCode.NOT_FOUND, "Could not find version 999 of model default")


def test_get_model_metadata(half_plus_two):
    a = apis()
    request = a["metadata"].GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = ok(half_plus_two.prediction.GetModelMetadata, request)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == 123
    assert list(result.metadata) == ["signature_def"]
    signatures = a["metadata"].SignatureDefMap()
    assert result.metadata["signature_def"].Unpack(signatures)
    assert signatures == signature_def_map(half_plus_two.base)


def test_get_model_metadata_needs_a_metadata_field(half_plus_two):
    request = apis()["metadata"].GetModelMetadataRequest()
    request.model_spec.name = "default"
    error = rpc_error(half_plus_two.prediction.GetModelMetadata, request)
    expect_error(error, grpc.StatusCode.INVALID_ARGUMENT,
                 "GetModelMetadataRequest must specify at least one metadata_field")
    request.metadata_field.append("signature_def")
    request.model_spec.name = MISSING
    error = rpc_error(half_plus_two.prediction.GetModelMetadata, request)
    expect_error(error, grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({MISSING})")


# --------------------------------------------------------------------------------------------------------------
# PredictionService.Predict over gRPC.

def test_predict(half_plus_two):
    """TF Serving's _TestPredict: with output_filter ["y"] and without; x is fed as shape [1] even where the TF1
    signature says [-1, 1] (TF Serving's session feeds do not check static shapes)."""
    verify_predict(half_plus_two, expected_output=3.0)
    verify_predict(half_plus_two, expected_output=3.0, specify_output=False)


def test_predict_without_signature_name_answers_for_serving_default(half_plus_two):
    _, result = predict(half_plus_two, signature_name="")
    assert list(result.outputs["y"].float_val) == [3.0]
    verify_model_spec(result.model_spec, "default", "serving_default", VERSION)


def test_predict_a_specific_version(half_plus_two):
    _, result = predict(half_plus_two, version=123)
    assert list(result.outputs["y"].float_val) == [3.0]
    verify_model_spec(result.model_spec, "default", "serving_default", VERSION)
    error = rpc_error(half_plus_two.prediction.Predict, predict_request(version=999))
    expect_error(error, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(default, 999)")


def test_predict_with_a_signature_name(half_plus_two):
    """Predict runs any signature of the SavedModel, classify and regress ones included."""
    a = apis()
    _, result = predict(half_plus_two, signature_name="regress_x2_to_y3", input_key="inputs", output_filter=[])
    assert list(result.outputs) == ["outputs"]
    assert list(result.outputs["outputs"].float_val) == [4.0]
    verify_model_spec(result.model_spec, "default", "regress_x2_to_y3", VERSION)

    request = a["predict"].PredictRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    request.inputs["inputs"].dtype = a["types"].DT_STRING
    request.inputs["inputs"].string_val.append(serialized_example(2.0))
    request.inputs["inputs"].tensor_shape.dim.add().size = 1
    result = ok(half_plus_two.prediction.Predict, request)
    assert list(result.outputs) == ["scores"]
    assert list(result.outputs["scores"].float_val) == [3.0]
    assert [d.size for d in result.outputs["scores"].tensor_shape.dim] == [1, 1]
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", VERSION)


def test_predict_errors_are_tf_servings(half_plus_two):
    cases = [
        (predict_request(model_name=MISSING), grpc.StatusCode.NOT_FOUND,
         f"Servable not found for request: Latest({MISSING})"),
        (predict_request(signature_name="nope"), grpc.StatusCode.FAILED_PRECONDITION,
         'Serving signature key "nope" not found.'),
        (predict_request(output_filter=("z",)), grpc.StatusCode.INVALID_ARGUMENT,
         "output tensor alias not found in signature: z Outputs expected to be in the set {y}."),
        (predict_request(input_key="q"), grpc.StatusCode.INVALID_ARGUMENT,
         "input tensor alias not found in signature: q. Inputs expected to be in the set {x}."),
    ]
    for request, code, details in cases:
        error = rpc_error(half_plus_two.prediction.Predict, request)
        expect_error(error, code, details)


# --------------------------------------------------------------------------------------------------------------
# Classify, Regress and MultiInference over gRPC: tf.Examples through the parsing signatures.

def test_classify(half_plus_two):
    a = apis()
    request = a["classification"].ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = ok(half_plus_two.prediction.Classify, request)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    assert result.result.classifications[0].classes[0].label == ""  # no "classes" output
    verify_model_spec(result.model_spec, "default", "classify_x_to_y", VERSION)


def test_regress(half_plus_two):
    a = apis()
    request = a["regression"].RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = ok(half_plus_two.prediction.Regress, request)
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    verify_model_spec(result.model_spec, "default", "regress_x_to_y", VERSION)


def test_multi_inference(half_plus_two):
    a = apis()
    request = a["inference"].MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([2.0])
    result = ok(half_plus_two.prediction.MultiInference, request)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for i in range(2):
        verify_model_spec(result.results[i].model_spec, "default", request.tasks[i].model_spec.signature_name,
                          VERSION)


# --------------------------------------------------------------------------------------------------------------
# The REST API.

def test_predict_rest(half_plus_two):
    response = half_plus_two.http.post("/v1/models/default:predict", json={"instances": [2.0, 3.0, 4.0]})
    expect_json(response, 200, {"predictions": [3.0, 3.5, 4.0]})


def test_predict_columnar_rest(half_plus_two):
    response = half_plus_two.http.post("/v1/models/default:predict", json={"inputs": [2.0, 3.0, 4.0]})
    expect_json(response, 200, {"outputs": [3.0, 3.5, 4.0]})


def test_classify_rest(half_plus_two):
    response = half_plus_two.http.post("/v1/models/default:classify",
                                       json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    expect_json(response, 200, {"results": [[["", 3.0]]]})


def test_regress_rest(half_plus_two):
    response = half_plus_two.http.post("/v1/models/default:regress",
                                       json={"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    expect_json(response, 200, {"results": [3.0]})


STATUS_JSON = {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                         "status": {"error_code": "OK", "error_message": ""}}]}


def test_get_status_rest(half_plus_two):
    response = half_plus_two.http.get("/v1/models/default")
    expect_json(response, 200, STATUS_JSON)


def test_get_model_metadata_rest(half_plus_two):
    response = half_plus_two.http.get("/v1/models/default/metadata")
    expect_json(response, 200, rest_metadata("default", half_plus_two.base))


def test_rest_with_a_version_in_the_path(half_plus_two):
    http = half_plus_two.http
    response = http.post("/v1/models/default/versions/123:predict", json={"instances": [2.0, 3.0, 4.0]})
    expect_json(response, 200, {"predictions": [3.0, 3.5, 4.0]})
    response = http.get("/v1/models/default/versions/123")
    expect_json(response, 200, STATUS_JSON)
    response = http.get("/v1/models/default/versions/123/metadata")
    expect_json(response, 200, rest_metadata("default", half_plus_two.base))


def test_rest_errors_are_tf_servings(half_plus_two):
    """TF Serving's REST errors: {"error": MESSAGE}, NOT_FOUND as 404, INVALID_ARGUMENT and FAILED_PRECONDITION
    as 400."""
    http = half_plus_two.http
    cases = [
        (http.post(f"/v1/models/{MISSING}:predict", json={"instances": [2.0]}), 404,
         f"Servable not found for request: Latest({MISSING})"),
        (http.post("/v1/models/default/versions/999:predict", json={"instances": [2.0]}), 404,
         "Servable not found for request: Specific(default, 999)"),
        (http.get(f"/v1/models/{MISSING}"), 404, f"Could not find any versions of model {MISSING}"),
        (http.get("/v1/models/default/versions/999"), 404, "Could not find version 999 of model default"),
        (http.get(f"/v1/models/{MISSING}/metadata"), 404, f"Servable not found for request: Latest({MISSING})"),
        (http.post("/v1/models/default:predict", json={"signature_name": "nope", "instances": [2.0]}), 400,
         'Serving signature name: "nope" not found in signature def'),
    ]
    for response, status, message in cases:
        expect_json(response, status, {"error": message})


# --------------------------------------------------------------------------------------------------------------
# A model config file: two models, a bad file, the file polled or not, and HandleReloadConfigRequest.

def test_good_model_config(good_config_server):
    verify_predict(good_config_server, model_name="half_plus_two", expected_output=3.0)
    verify_predict(good_config_server, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    verify_predict(good_config_server, model_name="half_plus_three", expected_output=4.0)
    verify_predict(good_config_server, model_name="half_plus_three", expected_output=4.0, specify_output=False)


def test_rest_quick_example_from_tensorflow_org(good_config_server):
    """tensorflow.org/tfx/serving/docker, verbatim: POST {"instances": [1.0, 2.0, 5.0]}."""
    response = good_config_server.http.post("/v1/models/half_plus_two:predict",
                                            content=b'{"instances": [1.0, 2.0, 5.0]}')
    expect_json(response, 200, {"predictions": [2.5, 3.0, 4.5]})


def test_bad_model_config(root):
    """TF Serving's bad_model_config.txt: the server says why on stderr and exits."""
    config = root / "bad_model_config.txt"
    config.write_text("improperly formatted file")
    process = subprocess.Popen(command(free_port(), free_port(), f"--model_config_file={config}"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=child_env())
    try:
        _, stderr = process.communicate(timeout=START_TIMEOUT)
    finally:
        stop(process)
    stderr = stderr.decode("utf-8", "replace")
    assert process.returncode != 0, stderr[-3000:]
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in stderr, stderr[-3000:]
    assert f"Invalid protobuf file: '{config}'" in stderr, stderr[-3000:]


def test_model_config_reload(polled_config_server, models):
    """TF Serving's testModelConfigReload: the config file is polled (--model_config_file_poll_wait_seconds=1);
    rewritten to half_plus_three alone, the server loads it and lets half_plus_two go."""
    served = polled_config_server
    verify_predict(served, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    write_atomically(served.config, config_text(("half_plus_three", models["tf1_three"])))
    wait_until(lambda: serves(served, "half_plus_three", 4.0), "half_plus_three served after the poll", served)
    verify_predict(served, model_name="half_plus_three", expected_output=4.0, specify_output=False)
    wait_until(lambda: not_found(served, "half_plus_two"), "half_plus_two unloaded after the poll", served)


def test_model_config_reload_with_zero_poll_period(unpolled_config_server, models):
    """TF Serving's testModelConfigReloadWithZeroPollPeriod: with a poll period of 0 the file is read once."""
    served = unpolled_config_server
    verify_predict(served, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    write_atomically(served.config, config_text(("half_plus_three", models["tf1_three"])))
    time.sleep(2)  # the original waits poll period + 1 s
    verify_predict(served, model_name="half_plus_two", expected_output=3.0, specify_output=False)
    assert not_found(served, "half_plus_three")


def test_handle_reload_config_request(reload_config_server, models):
    """ModelService.HandleReloadConfigRequest: answers once the new models are available (ServerCore::ReloadConfig
    waits for them); models left out are unloaded; only a model_config_list is accepted."""
    a = apis()
    served = reload_config_server

    def reload(*entries):
        request = a["management"].ReloadConfigRequest()
        for name, path in entries:
            entry = request.config.model_config_list.config.add()
            entry.name, entry.base_path, entry.model_platform = name, str(path), "tensorflow"
        return ok(served.model_service.HandleReloadConfigRequest, request)

    verify_predict(served, model_name="half_plus_two", expected_output=3.0)
    response = reload(("half_plus_two", models["tf1"]), ("half_plus_three", models["tf1_three"]))
    assert (response.status.error_code, response.status.error_message) == (0, "")
    verify_predict(served, model_name="half_plus_three", expected_output=4.0)  # at once: no wait
    verify_predict(served, model_name="half_plus_two", expected_output=3.0)

    response = reload(("half_plus_three", models["tf1_three"]))
    assert response.status.error_code == 0
    verify_predict(served, model_name="half_plus_three", expected_output=4.0)
    wait_until(lambda: not_found(served, "half_plus_two"), "half_plus_two unloaded after the reload", served)

    request = a["management"].ReloadConfigRequest()
    request.config.custom_model_config.type_url = "type.googleapis.com/google.protobuf.Empty"
    error = rpc_error(served.model_service.HandleReloadConfigRequest, request)
    expect_error(
        error, grpc.StatusCode.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently "
        "supported")
    verify_predict(served, model_name="half_plus_three", expected_output=4.0)


def test_a_new_version_is_served_and_the_old_one_unloaded(new_version_server):
    """The file system is polled (--file_system_poll_wait_seconds=1); TF Serving's default version policy serves
    the latest version only: 00000124 appears, is loaded, then 123 is unloaded (state END)."""
    a = apis()
    served = new_version_server
    staging = os.path.join(os.path.dirname(served.base), "staging-00000124")
    shutil.copytree(os.path.join(served.base, "00000123"), staging)
    os.rename(staging, os.path.join(served.base, "00000124"))  # appears whole

    def states():
        request = a["status"].GetModelStatusRequest()
        request.model_spec.name = "default"
        result = ok(served.model_service.GetModelStatus, request)
        return {s.version: a["status"].ModelVersionStatus.State.Name(s.state) for s in result.model_version_status}

    wait_until(lambda: states().get(124) == "AVAILABLE", "version 124 available", served)
    verify_predict(served, expected_output=3.0, expected_version=124)
    wait_until(lambda: states() == {123: "END", 124: "AVAILABLE"}, "version 123 unloaded", served)
    error = rpc_error(served.prediction.Predict, predict_request(version=123))
    expect_error(error, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(default, 123)")


# --------------------------------------------------------------------------------------------------------------
# Batching, Prometheus, and SavedModels written by tf.saved_model.save.

def test_predict_with_batching(batching_server):
    """TF Serving's testPredictBatching (--enable_batching --batching_parameters_file); then concurrent
    requests, each answered with its own row."""
    verify_predict(batching_server, expected_output=3.0)
    verify_predict(batching_server, expected_output=3.0, specify_output=False)

    def one(x):
        _, result = predict(batching_server, x=float(x))
        return list(result.outputs["y"].float_val)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(16)))
    assert answers == [[0.5 * x + 2.0] for x in range(16)]


def test_prometheus_endpoint(prometheus_server):
    """--monitoring_config_file with prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }."""
    verify_predict(prometheus_server, expected_output=3.0)
    response = prometheus_server.http.get("/monitoring/prometheus/metrics")
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in response.text


def test_tf_saved_model_save(saved_model_save_server):
    """TF Serving's test_tf_saved_model_save: y = v1 * v2 * x with a signature of unknown rank."""
    verify_predict(saved_model_save_server, model_name="tf_saved_model_save", expected_output=12.0,
                   specify_output=False)


def test_tf_saved_model_save_multiple_signatures(saved_model_save_server):
    verify_predict(saved_model_save_server, model_name="multiple_signatures", expected_output=2.0,
                   signature_name="custom_signature_key")
    verify_predict(saved_model_save_server, model_name="multiple_signatures", expected_output=1.0)

