"""Retraining reaches a running server: the same ``train.py`` command run twice while ``train.py serve`` answers
16 clients is served as version 2 of the same model within seconds, and no request fails."""

from __future__ import annotations

import os
import threading
import time

import grpc
import numpy as np
import pytest

from tests.helpers import run_cli
from tests.serverutil import serving

CLIENTS = 16
MAX_SECONDS = 400  # every loop below is bounded in time


def _train(root) -> str:
    result = run_cli("train.py", "--epochs", "1", "--runs-dir", os.path.join(root, "runs"),
                     "--export-dir", os.path.join(root, "models"), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_the_same_command_twice_under_load_becomes_version_2_with_no_failed_request(tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    first = _train(tmp_path)
    assert "version 1" in first
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lenet5-digits"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.float32)))
    seen: dict[int, int] = {}
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(target: str) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    version = stub.Predict(request, timeout=30).model_spec.version.value
                    with lock:
                        seen[version] = seen.get(version, 0) + 1
                except grpc.RpcError as error:
                    with lock:
                        failures.append(f"{error.code()}: {error.details()}")
                time.sleep(0.02)  # 16 clients at ~50 requests/s each leave the cores to the training

    with serving([tmp_path / "models"], "--poll-seconds", "0.5", log_dir=str(tmp_path),
                 ready_model="lenet5-digits") as server:
        threads = [threading.Thread(target=client, args=(server.grpc_target,)) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            second = _train(tmp_path)  # the same command: runs/lenet5-digits-2, saved_models/lenet5-digits/2
            assert "lenet5-digits/2" in second and "version 2" in second, second[-1500:]
            exported = time.monotonic()
            deadline = exported + 60
            while seen.get(2, 0) < CLIENTS and time.monotonic() < deadline:
                time.sleep(0.1)
            swapped_after = time.monotonic() - exported
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
    assert failures == []
    assert seen.get(1, 0) > 0 and seen.get(2, 0) >= CLIENTS, seen
    assert swapped_after < 30, f"version 2 served {swapped_after:.1f} s after the export"
    assert sorted(os.listdir(tmp_path / "models")) == ["lenet5-digits"]
    assert sorted(os.listdir(tmp_path / "runs")) == ["lenet5-digits", "lenet5-digits-2"]
