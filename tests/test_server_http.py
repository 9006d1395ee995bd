"""The model server end to end: a real ``train.py serve`` process, called as applications call TF Serving —
Google's ``tensorflow-serving-api`` gRPC stub, a plain HTTP client, file uploads — and attacked with
malformed and hostile requests.  Load loops are bounded in count and time."""

from __future__ import annotations

import io
import json
import os
import re
import random
import shutil
import signal
import struct
import threading
import time
import zlib

import grpc
import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from tests.helpers import run_cli
from tests.serverutil import http_client, serving, train_digits_export

MODEL, SWAP = "lenet5-digits", "swap-digits"


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    model_dir = train_digits_export(str(root))
    base = root / "base"
    base.mkdir()
    shutil.copytree(model_dir, base / MODEL)
    shutil.copytree(model_dir, base / SWAP)  # the hot-swap test adds versions to this one only
    return root


@pytest.fixture(scope="module")
def server(export_root):
    with serving([export_root / "base"], "--poll-seconds", "0.2", "--max-body-mb", "1", "--max-instances", "512",
                 log_dir=str(export_root), ready_model=MODEL) as running:
        yield running


@pytest.fixture(scope="module")
def test_images(export_root):
    """The digits test split (the default run's), written as PNG files."""
    import imagesets

    data = imagesets.load("digits", seed=0)
    images, _ = data.arrays["test"]
    folder = export_root / "test-images"
    folder.mkdir(exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:03d}.png"
        Image.fromarray(image[..., 0]).save(path)
        paths.append(str(path))
    return paths, np.asarray(images, np.float32)


def grpc_stubs(target):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    return channel, prediction_service_pb2_grpc.PredictionServiceStub(channel), \
        model_service_pb2_grpc.ModelServiceStub(channel)


def grpc_predict(stub, images, model=MODEL, **spec):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = spec.get("signature_name", "serving_default")
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.float32))
    return stub.Predict(request, timeout=30)


def test_status_and_metadata_have_tf_servings_documented_shape(server):
    status = httpx.get(f"{server.url}/v1/models/{MODEL}").json()
    assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}
    assert httpx.get(f"{server.url}/v1/models/{MODEL}/versions/1").json() == status
    missing = httpx.get(f"{server.url}/v1/models/{MODEL}/versions/7")
    assert missing.status_code == 404 and "version 7" in missing.json()["error"]
    unknown = httpx.get(f"{server.url}/v1/models/nope")
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}

    meta = httpx.get(f"{server.url}/v1/models/{MODEL}/metadata").json()
    assert meta["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    images = signature["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert {k: v["dtype"] for k, v in signature["outputs"].items()} == {
        "probabilities": "DT_FLOAT", "class_ids": "DT_INT64", "classes": "DT_STRING"}

    _, _, models = grpc_stubs(server.grpc_target)
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    answer = models.GetModelStatus(request, timeout=10)
    assert [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state))
            for s in answer.model_version_status] == [(1, "AVAILABLE")]


def test_every_test_image_gets_predict_pys_top1_over_rest_grpc_and_upload(server, export_root, test_images):
    paths, pixels = test_images
    printed = run_cli("predict.py", str(export_root / "base" / MODEL), *paths, "--json", "--top-k", "1")
    assert printed.returncode == 0, printed.stderr
    expected = [p["top"][0]["class"] for p in json.loads(printed.stdout)["predictions"]]
    assert len(expected) == len(paths) > 300

    client = http_client(server, timeout=60)
    rows = client.post(f"/v1/models/{MODEL}:predict", json={"instances": pixels.astype(int).tolist()})
    assert rows.status_code == 200, rows.text
    assert [p["classes"] for p in rows.json()["predictions"]] == expected
    assert set(rows.json()["predictions"][0]) == {"probabilities", "class_ids", "classes"}

    columns = client.post(f"/v1/models/{MODEL}/versions/1:predict",
                          json={"signature_name": "serving_default", "inputs": {"images": pixels.tolist()}})
    assert columns.status_code == 200, columns.text
    assert columns.json()["outputs"]["classes"] == expected
    np.testing.assert_allclose(columns.json()["outputs"]["probabilities"],
                               [p["probabilities"] for p in rows.json()["predictions"]], atol=1e-6)

    _, predictions, _ = grpc_stubs(server.grpc_target)
    import tensorflow as tf

    answer = grpc_predict(predictions, pixels)
    assert answer.model_spec.name == MODEL and answer.model_spec.version.value == 1
    assert [c.decode() for c in tf.make_ndarray(answer.outputs["classes"])] == expected
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["probabilities"]),
                               columns.json()["outputs"]["probabilities"], atol=1e-6)

    uploaded = []
    for start in range(0, len(paths), 16):
        files = [("file", (os.path.basename(p), open(p, "rb").read(), "image/png")) for p in paths[start:start + 16]]
        answer = client.post(f"/v1/models/{MODEL}:classify", files=files, params={"top_k": 1})
        assert answer.status_code == 200, answer.text
        uploaded += [p["top"][0]["class"] for p in answer.json()["predictions"]]
    assert uploaded == expected


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose pixels are missing: a decompression bomb's
    first bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def hostile_requests(rng: random.Random, n: int):
    """``n`` (method, path, kwargs) requests that are wrong in one way each: malformed or fuzzed JSON, wrong
    keys, types, shapes and values, unknown models, versions and signatures, bodies over the limit, and
    uploads that are truncated, oversized, empty, too many or not images."""
    good = [[[[rng.randrange(256)] for _ in range(8)] for _ in range(8)]]
    good_json = json.dumps({"instances": good}).encode()
    png = io.BytesIO()
    Image.fromarray(np.uint8(np.arange(64).reshape(8, 8))).save(png, format="PNG")
    png = png.getvalue()
    predict = f"/v1/models/{MODEL}:predict"
    makers = [
        lambda: ("POST", predict, {"content": good_json[:rng.randrange(1, len(good_json) - 1)]}),     # truncated
        lambda: ("POST", predict, {"content": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))}),
        lambda: ("POST", predict, {"content": good_json.replace(b"[", rng.choice([b"{", b"(", b"[["]))
                                   if rng.random() < 0.5 else good_json.replace(b"]", b"", 1)}),
        lambda: ("POST", predict, {"json": rng.choice([[], 3, "x", None, [good]])}),                  # not an object
        lambda: ("POST", predict, {"json": {}}),
        lambda: ("POST", predict, {"json": {"instances": good, "inputs": good}}),
        lambda: ("POST", predict, {"json": {"instances": good, "extra": 1}}),
        lambda: ("POST", predict, {"json": {"instances": rng.choice([good[0], "abc", {"x": 1}, 5, None])}}),
        lambda: ("POST", predict, {"json": {"instances": [[[["a"]] * 8] * 8]}}),                     # strings
        lambda: ("POST", predict, {"json": {"instances": [[[[0]] * 8] * 7]}}),                       # wrong shape
        lambda: ("POST", predict, {"json": {"instances": [[[[0, 0, 0]] * 8] * 8]}}),                 # channels
        lambda: ("POST", predict, {"json": {"instances": [[[[0]] * 8] * 8, [[[0]] * 8] * 9]}}),      # ragged
        lambda: ("POST", predict, {"json": {"instances": []}}),
        lambda: ("POST", predict, {"json": {"instances": [{"b64": "AAAA"}]}}),
        lambda: ("POST", predict, {"json": {"instances": [{"pixels": good[0]}]}}),                   # wrong input
        lambda: ("POST", predict, {"json": {"inputs": {"images": good, "other": good}}}),
        lambda: ("POST", predict, {"json": {"instances": good, "signature_name": rng.choice(
            ["nope", 5, "__saved_model_init_op"])}}),
        lambda: ("POST", predict, {"json": {"instances": [[[[0]] * 8] * 8] * 600}}),                 # > max_instances
        lambda: ("POST", predict, {"content": b"[" * 100_000 + b"]" * 100_000}),                     # deep nesting
        lambda: ("POST", predict, {"content": b'{"instances": [' + b"1e999," * 10 + b"1]}"}),
        lambda: ("POST", predict, {"content": b" " * (1024 * 1024 + 10)}),                           # > 1 MiB body
        lambda: ("POST", "/v1/models/nope:predict", {"json": {"instances": good}}),
        lambda: ("POST", f"/v1/models/{MODEL}/versions/99:predict", {"json": {"instances": good}}),
        lambda: ("POST", f"/v1/models/{MODEL}:explode", {"json": {"instances": good}}),
        lambda: ("GET", f"/v1/models/{MODEL}:predict", {}),
        lambda: ("GET", f"/v1/models/{MODEL}/versions/abc", {}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"files": [("file", ("a.png", png[:rng.randrange(8, 40)]))]}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"files": [("file", ("a.txt", b"not an image at all"))]}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"files": [("file", ("e.png", b""))]}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"files": [("file", ("bomb.png", _png_header(
            rng.choice([20_000, 60_000]), rng.choice([20_000, 60_000]))))]}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"files": [("file", ("p.png", png))] * 17}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"files": [("file", ("big.png", b"\0" * (1024 * 1024 + 1)))]}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"json": {"instances": good}}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"content": b"--x\r\nbroken", "headers": {
            "content-type": "multipart/form-data; boundary=x"}}),
        lambda: ("POST", f"/v1/models/{MODEL}:classify", {"files": [("file", ("p.png", png))],
                                                           "params": {"top_k": rng.choice(["0", "-1", "x"])}}),
    ]
    for _ in range(n):
        yield rng.choice(makers)()


def rss(server) -> int:
    return psutil.Process(server.process.pid).memory_info().rss


def test_a_thousand_hostile_requests_get_4xx_and_the_server_stays_up_with_flat_memory(server):
    client = http_client(server)
    rng = random.Random(0)
    statuses, memory = [], {}
    deadline = time.monotonic() + 240
    for i, (method, path, kwargs) in enumerate(hostile_requests(rng, 1000)):
        answer = client.request(method, path, **kwargs)
        statuses.append(answer.status_code)
        assert 400 <= answer.status_code < 500, (method, path, {k: str(v)[:80] for k, v in kwargs.items()},
                                                 answer.status_code, answer.text[:300])
        assert answer.json().get("error") and "\n" not in answer.json()["error"], answer.text[:300]
        if i + 1 in (100, 1000):
            memory[i + 1] = rss(server)
        assert time.monotonic() < deadline, f"only {i} requests in the time allowed"
    assert server.alive()
    assert client.get(f"/v1/models/{MODEL}").status_code == 200
    assert {400, 404, 413} <= set(statuses)  # bad requests, unknown models and oversized bodies all came
    growth = memory[1000] - memory[100]
    print(f"server RSS after 100 hostile requests {memory[100] / 2**20:.1f} MiB, after 1000 "
          f"{memory[1000] / 2**20:.1f} MiB")
    assert growth < 40 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over 900 hostile requests"


def test_hostile_grpc_requests_get_client_errors(server):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    _, predictions, _ = grpc_stubs(server.grpc_target)
    good = np.zeros((1, 8, 8, 1), np.float32)

    def request(model=MODEL, inputs=None, signature="serving_default", version=None, label=None):
        r = predict_pb2.PredictRequest()
        r.model_spec.name = model
        r.model_spec.signature_name = signature
        if version is not None:
            r.model_spec.version.value = version
        if label is not None:
            r.model_spec.version_label = label
        for key, value in (inputs if inputs is not None else {"images": tf.make_tensor_proto(good)}).items():
            r.inputs[key].CopyFrom(value)
        return r

    broken = tf.make_tensor_proto(good)
    broken.tensor_content = broken.tensor_content[:-3]
    cases = {
        "unknown model": (request(model="nope"), grpc.StatusCode.NOT_FOUND),
        "unknown version": (request(version=42), grpc.StatusCode.NOT_FOUND),
        "unknown version label": (request(label="stable"), grpc.StatusCode.NOT_FOUND),
        "unknown signature": (request(signature="nope"), grpc.StatusCode.FAILED_PRECONDITION),
        "strings": (request(inputs={"images": tf.make_tensor_proto([[b"a"]])}), grpc.StatusCode.INVALID_ARGUMENT),
        "wrong shape": (request(inputs={"images": tf.make_tensor_proto(np.zeros((2, 8, 8), np.float32))}),
                        grpc.StatusCode.INVALID_ARGUMENT),
        "wrong input": (request(inputs={"pixels": tf.make_tensor_proto(good)}), grpc.StatusCode.INVALID_ARGUMENT),
        "truncated tensor": (request(inputs={"images": broken}), grpc.StatusCode.INVALID_ARGUMENT),
        "no model name": (request(model=""), grpc.StatusCode.INVALID_ARGUMENT),
    }
    for what, (message, code) in cases.items():
        with pytest.raises(grpc.RpcError) as raised:
            predictions.Predict(message, timeout=10)
        assert raised.value.code() == code, (what, raised.value.code(), raised.value.details())
    # Over the message limit (1 MiB here): refused by gRPC itself, and the server goes on.
    with pytest.raises(grpc.RpcError) as raised:
        grpc_predict(predictions, np.zeros((4096, 8, 8, 1), np.float32))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_predict(predictions, good).model_spec.version.value == 1


def test_prometheus_metrics_count_requests_errors_and_batches(server):
    httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": [[[[0]] * 8] * 8] * 3})
    httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": [1]})
    text = httpx.get(f"{server.url}/monitoring/prometheus/metrics").text
    assert f'serving_requests_total{{api="rest",code="OK",method="predict",model="{MODEL}"}}' in text
    assert f'serving_requests_total{{api="rest",code="INVALID_ARGUMENT",method="predict",model="{MODEL}"}}' in text
    assert 'serving_request_latency_seconds_bucket{api="rest",le="0.005",method="predict"}' in text
    assert f'serving_batch_size_count{{model="{MODEL}"}}' in text
    assert f'serving_model_version_state{{model="{MODEL}",state="AVAILABLE",version="1"}} 1.0' in text


def test_a_new_version_is_served_within_seconds_while_16_clients_send_and_none_fails(server, export_root):
    import keras

    import zoo  # noqa: F401  (registers the zoo's layers for loading model.keras)
    from exports.export import export_savedmodel

    _, predictions, _ = grpc_stubs(server.grpc_target)
    image = np.random.default_rng(0).integers(0, 256, (1, 8, 8, 1)).astype(np.float32)
    stop, lock = threading.Event(), threading.Lock()
    failures, versions_seen, counts = [], [], {"rest": 0, "grpc": 0}

    def rest_client():
        with http_client(server) as client:
            for _ in range(5000):
                if stop.is_set():
                    return
                answer = client.post(f"/v1/models/{SWAP}:predict", json={"instances": image.tolist()})
                with lock:
                    counts["rest"] += 1
                    if answer.status_code != 200:
                        failures.append(("rest", answer.status_code, answer.text[:200]))

    def grpc_client():
        for _ in range(5000):
            if stop.is_set():
                return
            try:
                answer = grpc_predict(predictions, image, model=SWAP)
                with lock:
                    counts["grpc"] += 1
                    versions_seen.append((time.monotonic(), answer.model_spec.version.value))
            except grpc.RpcError as error:
                with lock:
                    failures.append(("grpc", error.code(), error.details()))

    threads = [threading.Thread(target=rest_client) for _ in range(8)] + \
              [threading.Thread(target=grpc_client) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        model_dir = export_root / "base" / SWAP
        model = keras.models.load_model(model_dir / "1" / "assets" / "model.keras")
        written = export_savedmodel(model, str(export_root / "base"), SWAP, class_names=[str(i) for i in range(10)])
        exported_at = time.monotonic()
        assert written.endswith(os.sep + "2")
        deadline = exported_at + 90
        while time.monotonic() < deadline:
            with lock:
                if any(v == 2 for _, v in versions_seen):
                    break
            time.sleep(0.1)
        time.sleep(1)  # requests go on after the swap too
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    first_v2 = min((t for t, v in versions_seen if v == 2), default=None)
    assert first_v2 is not None, "version 2 was never served"
    print(f"version 2 served {first_v2 - exported_at:.2f} s after its export; "
          f"{counts['rest']} REST and {counts['grpc']} gRPC requests, {len(failures)} failed")
    assert failures == []
    assert min(counts.values()) > 16
    assert all(v == 2 for t, v in versions_seen if t > first_v2 + 2.0)  # the old version is gone
    status = httpx.get(f"{server.url}/v1/models/{SWAP}").json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in status] == [("2", "AVAILABLE"), ("1", "END")]


def test_a_version_that_fails_to_load_is_reported_and_the_previous_keeps_serving(server, export_root):
    model_dir = export_root / "base" / SWAP
    staging = model_dir / ".staging-broken"
    shutil.copytree(model_dir / "1", staging)
    (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    os.rename(staging, model_dir / "3")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/v1/models/{SWAP}/versions/3")
        if status.status_code == 200 and status.json()["model_version_status"][0]["state"] == "END":
            break
        time.sleep(0.2)
    entry = status.json()["model_version_status"][0]
    assert entry["state"] == "END" and entry["status"]["error_code"] != "OK" and entry["status"]["error_message"]
    answer = httpx.post(f"{server.url}/v1/models/{SWAP}:predict", json={"instances": [[[[0]] * 8] * 8]})
    assert answer.status_code == 200
    served = httpx.get(f"{server.url}/v1/models/{SWAP}").json()["model_version_status"]
    assert ("2", "AVAILABLE") in [(s["version"], s["state"]) for s in served]


def test_sigterm_lets_the_requests_in_flight_finish(export_root):
    # A batch of 64 rows that one-row requests cannot fill waits out its 8 s timeout: requests are held in flight by
    # the batcher itself, not by how fast this machine is, when SIGTERM comes.  A request that finds itself alone
    # runs at once, so four are sent at once (again, if each was answered alone): once one is held, the others
    # join its batch.
    with serving([export_root / "base" / MODEL], "--max-batch-size", "64", "--batch-timeout-ms", "8000",
                 "--shutdown-grace", "30",
                 log_dir=str(export_root), ready_model=MODEL) as running:
        results, senders = [], []

        def send():
            results.append(httpx.post(f"{running.url}/v1/models/{MODEL}:predict", timeout=120,
                                      json={"instances": [[[[0]] * 8] * 8]}))

        def start(count: int):
            together = threading.Barrier(count)  # released at once, so that they overlap at the server

            def sender():
                together.wait(10)
                send()

            for _ in range(count):
                senders.append(threading.Thread(target=sender))
                senders[-1].start()

        def in_flight() -> int:
            text = httpx.get(f"{running.url}/monitoring/prometheus/metrics").text
            return int(float(re.search(r"^serving_requests_in_flight (\S+)$", text, re.M).group(1)))

        deadline = time.monotonic() + 60
        while in_flight() < 4:  # up to four out at once; one answered alone is replaced by another
            assert time.monotonic() < deadline and len(senders) < 40, "four requests were never in flight together"
            if len(senders) == len(results):  # all answered, each alone: send four more at once
                start(4)
            time.sleep(0.05)
        running.process.send_signal(signal.SIGTERM)
        for sender in senders:
            sender.join(timeout=90)
        code = running.process.wait(timeout=60)
        assert len(results) == len(senders) and [r.status_code for r in results] == [200] * len(senders)
        assert all(len(r.json()["predictions"]) == 1 for r in results)
        assert code == 0, running.output()[-2000:]
        assert "Stopped." in running.output()


def test_two_workers_share_the_ports_sum_their_metrics_and_stop_together(export_root):
    with serving([export_root / "base" / MODEL], "--workers", "2", log_dir=str(export_root),
                 ready_model=MODEL) as running:
        deadline = time.monotonic() + 120
        while "2 workers serving." not in running.output():
            assert running.alive() and time.monotonic() < deadline, running.output()[-2000:]
            time.sleep(0.2)
        workers = psutil.Process(running.process.pid).children()
        assert len(workers) == 2
        for _ in range(40):  # a new connection each time: the kernel spreads them over both workers
            assert httpx.post(f"{running.url}/v1/models/{MODEL}:predict",
                              json={"instances": [[[[0]] * 8] * 8]}).status_code == 200
        text = httpx.get(f"{running.url}/monitoring/prometheus/metrics").text
        assert f'serving_requests_total{{api="rest",code="OK",method="predict",model="{MODEL}"}} 40.0' in text
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=60) == 0
        assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)


def test_serve_errors_are_one_line(tmp_path, export_root):
    # A version folder and a bad --versions are refused by the functions test_server.py checks directly.
    missing = run_cli("train.py", "serve", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: Model folder")
    assert len(missing.stderr.strip().splitlines()) == 1
    empty = run_cli("train.py", "serve", str(tmp_path))
    assert empty.returncode == 2 and "No exports found" in empty.stderr
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = run_cli("train.py", "serve", str(export_root / "base"), "--rest-port", str(port))
    assert busy.returncode == 2 and f"Cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr + missing.stderr + empty.stderr
