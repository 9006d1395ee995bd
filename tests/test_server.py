"""The model server's parts, called directly: batching, the version source and manager, the request formats
and the calls both front ends share.  The end-to-end tests over real sockets are in test_server_http.py."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from core.errors import UserError
from server.batching import Batcher, Unbatched, split_outputs
from server.errors import ServingError
from server.models import Manager, find_models, parse_policy, wanted_versions
from server.settings import DEFAULTS
from server import tensors
from server.signatures import PREDICT, Signature, TensorSpec
from server.tensors import format_predict, parse_json, parse_pixels
from tests.helpers import ROOT
from tests.test_exports import tiny_model


def image_signatures(shape=None) -> dict[str, Signature]:
    """The signatures of an image model with one float input ``images`` of (N, *shape), or of unknown rank."""
    spec = TensorSpec("images", "DT_FLOAT", np.dtype(np.float32), None if shape is None else (-1, *shape))
    return {"serving_default": Signature("serving_default", PREDICT, {"images": spec}, {})}


def parse_predict(document, input_name, limit, shape=None):
    """(signature name, the images, columnar?) of a document, through the general path."""
    signature = image_signatures(shape)["serving_default"]
    inputs, columnar = tensors.parse_predict(document, signature, limit)
    return document.get("signature_name") or signature.name, inputs[input_name], columnar


def parse_predict_body(body, input_name, limit, shape):
    signature, inputs, columnar = tensors.parse_predict_body(body, image_signatures(shape), limit)
    return signature.name, inputs[input_name], columnar


def model_call(images):
    """A stand-in model with per-row arithmetic, so batching mistakes show as wrong rows."""
    flat = images.reshape(len(images), -1)
    return {"sum": flat.sum(axis=1), "first": flat[:, :2].copy()}


class Counting:
    def __init__(self, delay=0.0):
        self.calls, self.delay = [], delay

    def __call__(self, images):
        self.calls.append(len(images))
        time.sleep(self.delay)
        return model_call(images)


def test_batched_results_are_identical_to_unbatched_and_calls_are_merged():
    run = Counting(delay=0.02)
    batcher = Batcher(run, max_batch_size=16, timeout_s=0.05, max_queued_rows=1000)
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(int(rng.integers(1, 5)), 3, 3, 1)).astype(np.float32) for _ in range(40)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(batcher.submit, requests))
    for rows, future in zip(requests, futures):
        got, want = future.result(timeout=30), model_call(rows)
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    assert sum(run.calls) == sum(len(r) for r in requests)
    assert len(run.calls) < len(requests) and max(run.calls) <= 16  # merged, never past the limit
    batcher.close()
    batcher.join(5)


def test_a_lone_request_runs_at_once_and_company_is_still_waited_for_under_load():
    run = Counting()
    batcher = Batcher(run, max_batch_size=16, timeout_s=60.0, max_queued_rows=1000)  # a minute's wait for company
    for i in range(3):  # one client at a time: nobody else is out, so nobody is waited for
        assert batcher.submit(np.full((1, 1), i, np.float32)).result(10)["sum"].tolist() == [float(i)]
    assert run.calls == [1, 1, 1]
    release, sizes = threading.Event(), []
    slow = Batcher(lambda rows: (sizes.append(len(rows)), release.wait(10), model_call(rows))[2], max_batch_size=4,
                   timeout_s=0.3, max_queued_rows=1000)
    first = slow.submit(np.ones((1, 1), np.float32))  # alone: runs at once, and holds the model
    time.sleep(0.1)
    waiting = [slow.submit(np.ones((1, 1), np.float32)) for _ in range(3)]  # others are out: they wait and merge
    release.set()
    assert [f.result(10)["sum"].tolist() for f in [first, *waiting]] == [[1.0]] * 4
    assert sizes == [1, 3]
    for batcher_ in (batcher, slow):
        batcher_.close()
        batcher_.join(5)


def test_with_two_threads_two_batches_run_at_once_and_closing_stops_both():
    both = threading.Barrier(2, timeout=10)  # passes only when two batches are inside the model together

    def run(images):
        both.wait()
        return model_call(images)

    batcher = Batcher(run, max_batch_size=2, timeout_s=0.0, max_queued_rows=100, threads=2)
    rows = [np.full((2, 1), i, np.float32) for i in range(6)]
    futures = [batcher.submit(r) for r in rows]
    assert [f.result(20)["sum"].tolist() for f in futures] == [[float(i)] * 2 for i in range(6)]
    batcher.close()
    batcher.join(5)
    assert not batcher.alive()


def test_a_request_larger_than_a_batch_runs_alone_and_a_full_queue_refuses():
    release = threading.Event()

    def slow(images):
        release.wait(10)
        return model_call(images)

    batcher = Batcher(slow, max_batch_size=4, timeout_s=0.0, max_queued_rows=8)
    big = batcher.submit(np.ones((10, 2, 2, 1), np.float32))  # over the queue's limit, but alone: accepted
    time.sleep(0.1)
    waiting = [batcher.submit(np.ones((4, 2, 2, 1), np.float32)) for _ in range(2)]
    with pytest.raises(ServingError) as refused:
        batcher.submit(np.ones((1, 2, 2, 1), np.float32))
    assert refused.value.code == "UNAVAILABLE" and refused.value.http_status == 503
    release.set()
    assert big.result(10)["sum"].tolist() == [4.0] * 10
    assert all(w.result(10)["sum"].tolist() == [4.0] * 4 for w in waiting)
    batcher.close()
    batcher.join(5)


def test_closing_runs_what_is_queued_and_later_requests_still_get_answers():
    run = Counting(delay=0.05)
    batcher = Batcher(run, max_batch_size=2, timeout_s=0.0, max_queued_rows=100)
    queued = [batcher.submit(np.full((1, 1), i, np.float32)) for i in range(6)]
    batcher.close()
    late = batcher.submit(np.full((1, 1), 9, np.float32))  # the race of a swap: the version was just dropped
    assert [f.result(10)["sum"].tolist() for f in queued] == [[float(i)] for i in range(6)]
    assert late.result(10)["sum"].tolist() == [9.0]
    batcher.join(5)
    assert not batcher.alive()


def test_a_model_error_reaches_every_caller_of_the_batch_and_the_worker_lives_on():
    def failing(images):
        if (images < 0).any():
            raise ValueError("negative pixels")
        return model_call(images)

    batcher = Batcher(failing, max_batch_size=8, timeout_s=0.05, max_queued_rows=100)
    bad = batcher.submit(-np.ones((1, 1), np.float32))
    with pytest.raises(ValueError):
        bad.result(10)
    assert batcher.submit(np.ones((2, 1), np.float32)).result(10)["sum"].tolist() == [1.0, 1.0]
    batcher.close()


def test_unbatched_runs_each_request_on_its_own():
    run = Counting()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        queue = Unbatched(run, executor=pool)
        futures = [queue.submit(np.ones((n, 1), np.float32)) for n in (1, 2, 3)]
        assert [f.result(10)["sum"].tolist() for f in futures] == [[1.0], [1.0, 1.0], [1.0] * 3]
    assert sorted(run.calls) == [1, 2, 3]


def test_split_outputs_cuts_in_request_order():
    parts = split_outputs({"x": np.arange(6)}, [1, 3, 2])
    assert [p["x"].tolist() for p in parts] == [[0], [1, 2, 3], [4, 5]]


@pytest.mark.parametrize("text, expected", [("latest", "latest"), ("ALL", "all"), ("1,3", frozenset({1, 3}))])
def test_version_policies(text, expected):
    assert parse_policy(text) == expected


@pytest.mark.parametrize("text", ["", "x", "0", "1,-2", "newest"])
def test_a_bad_version_policy_is_a_user_error(text):
    with pytest.raises(UserError, match="--versions"):
        parse_policy(text)


def test_wanted_versions_follow_the_policy():
    assert wanted_versions([1, 2, 5], "latest") == {5}
    assert wanted_versions([1, 2, 5], "all") == {1, 2, 5}
    assert wanted_versions([1, 2, 5], frozenset({2, 7})) == {2}
    assert wanted_versions([], "latest") == set()


def test_rest_formats_parse_and_answer_as_tf_serving_documents():
    image = np.arange(4, dtype=np.float32).reshape(2, 2, 1)
    for document, columnar in (({"instances": [image.tolist()]}, False),
                               ({"instances": [{"images": image.tolist()}]}, False),
                               ({"inputs": [image.tolist()]}, True),
                               ({"inputs": {"images": [image.tolist()]}, "signature_name": "serving_default"}, True)):
        _, array, got_columnar = parse_predict(document, "images", 10)
        assert array.shape == (1, 2, 2, 1) and array.dtype == np.float32 and got_columnar == columnar
    outputs = {"probabilities": np.array([[0.25, 0.75]], np.float32), "class_ids": np.array([1]),
               "classes": np.array([b"cat"], dtype=object)}
    assert format_predict(outputs, False) == {"predictions": [{"class_ids": 1, "classes": "cat",
                                                               "probabilities": [0.25, 0.75]}]}
    assert format_predict(outputs, True) == {"outputs": {"class_ids": [1], "classes": ["cat"],
                                                         "probabilities": [[0.25, 0.75]]}}
    assert format_predict({"scores": np.array([0.5])}, False) == {"predictions": [0.5]}
    assert format_predict({"scores": np.array([0.5])}, True) == {"outputs": [0.5]}


def test_the_fast_path_for_well_formed_pixels_reads_what_numpy_reads():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (5, 4, 3, 2)).tolist()
    images[2][1][0][1] = 17.25  # floats and ints mixed, as JSON clients send them
    for document in ({"instances": images}, {"inputs": {"images": images}}):
        fast = parse_predict(document, "images", 10, (4, 3, 2))[1]
        plain = parse_predict(document, "images", 10)[1]
        np.testing.assert_array_equal(fast, plain)
        assert fast.dtype == np.float32 and fast.shape == (5, 4, 3, 2)
    odd = [[[[0, 0]] * 3] * 4]
    odd[0][1][2] = [0, "x"]
    with pytest.raises(ServingError, match="rectangular"):
        parse_predict({"instances": odd}, "images", 10, (4, 3, 2))
    odd[0][1][2] = [0, [1]]
    with pytest.raises(ServingError, match="rectangular"):
        parse_predict({"instances": odd}, "images", 10, (4, 3, 2))
    wrong = parse_predict({"instances": [[[[0, 0]] * 3] * 5]}, "images", 10, (4, 3, 2))[1]
    assert wrong.shape == (1, 5, 3, 2)  # the shape check that follows says what was expected


def _general(body, shape, limit):
    """What the general path (parse the JSON document, then read it) answers: an array or an error."""
    try:
        return parse_predict(parse_json(body), "images", limit, shape)
    except ServingError as error:
        return str(error)


def _fast_or_general(body, shape, limit):
    try:
        return parse_predict_body(body, "images", limit, shape)
    except ServingError as error:
        return str(error)


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a[0] == b[0] and a[2] == b[2] and a[1].dtype == b[1].dtype and np.array_equal(a[1], b[1])


def test_a_body_of_bare_pixels_is_read_without_nested_lists_and_exactly_as_the_document_is():
    rng = np.random.default_rng(5)
    shape = (3, 2, 3)
    images = rng.integers(0, 256, (2, *shape))
    floats = (images / 7).round(3).tolist()
    floats[1][2][0][1] = -1.5e-3
    bodies = [json.dumps({"instances": images.tolist()}).encode(),
              json.dumps({"inputs": floats}, separators=(",", ":")).encode(),
              b'\n {\t"instances" :' + json.dumps(images[:1].tolist(), indent=2).encode() + b" }\r\n"]
    for body in bodies:
        assert parse_pixels(body, shape, 10) is not None  # the fast path took it
        assert _same(_fast_or_general(body, shape, 10), _general(body, shape, 10))
    # Bodies it must leave to the general path, which answers them (or refuses them) as before.
    for body in (b'{"instances": [[[[1,2,3],[4,5,6]]]]}',                       # another shape
                 b'{"instances": [[[[1,2,3],[4,5,6]],[[1,2,3],[4,5,.6]],[[1,2,3],[4,5,6]]]]}',  # not JSON
                 b'{"instances": [], "signature_name": "serving_default"}',
                 b'{"instances": [{"images": [[[1,2,3],[4,5,6]],[[1,2,3],[4,5,6]],[[1,2,3],[4,5,6]]]}]}',
                 bodies[0] + b"}", bodies[0][:-1]):
        assert parse_pixels(body, shape, 10) is None
        assert _same(_fast_or_general(body, shape, 10), _general(body, shape, 10))
    assert parse_pixels(bodies[0], shape, 1) is None  # two images, one allowed: the general path says so
    moved = b'{"instances": [[0[[, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]], [[12, 13, 14], [15, 16, 17]]]]}'
    assert parse_pixels(moved, shape, 10) is None  # a number outside its brackets, though the skeleton is right
    assert "Malformed JSON" in _fast_or_general(moved, shape, 10)


def test_mutated_pixel_bodies_get_the_same_answer_or_error_from_the_fast_path():
    rng = random.Random(7)
    shape = (2, 2, 3)
    base = json.dumps({"instances": np.arange(24).reshape(2, *shape).tolist()}).encode()
    alphabet = b"[],. 0123456789eE+-{}\":xn"
    fast_taken = 0
    for _ in range(3000):
        body = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(body))
            kind = rng.random()
            if kind < 0.4:
                del body[at]
            elif kind < 0.8:
                body.insert(at, rng.choice(alphabet))
            else:
                body[at] = rng.choice(alphabet)
        body = bytes(body)
        fast_taken += parse_pixels(body, shape, 4) is not None
        assert _same(_fast_or_general(body, shape, 4), _general(body, shape, 4)), body
    assert fast_taken > 100  # many mutations (a digit more or less) are still well-formed pixels


@pytest.mark.parametrize("body, words", [
    (b"{", "Malformed JSON"), (b"[1]", "JSON object"), (b"[" * 50_000, "Malformed JSON"),
    (b'\xff\xfe', "Malformed JSON")])
def test_bad_json_is_a_one_line_invalid_argument(body, words):
    with pytest.raises(ServingError) as raised:
        parse_json(body)
    assert raised.value.code == "INVALID_ARGUMENT" and words in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("document, words", [
    ({}, "either"), ({"instances": [], "inputs": []}, "either"), ({"instances": 3}, "must be a list"),
    ({"instances": [[1], [1, 2]]}, "rectangular"), ({"instances": [["a"]]}, "rectangular"),
    ({"instances": [{"b64": "AA=="}]}, "b64"), ({"instances": [{"x": 1}]}, "alias not found in signature: x"),
    ({"instances": [[0]] * 11}, "limit is 10"), ({"instances": [1], "signature_name": 3}, "must be a string"),
    ({"instances": [1], "extra": 1}, "Unknown key")])
def test_bad_predict_documents_say_what_is_wrong(document, words):
    with pytest.raises(ServingError) as raised:
        parse_predict(document, "images", 10)
    assert raised.value.http_status == 400 and words in str(raised.value)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("server-exports")
    from exports import export_savedmodel

    export_savedmodel(tiny_model(), str(root), "tiny", class_names=["a", "b", "c"])
    return root


def predict(servable, images):
    """A request for the image signature of one of this toolkit's exports: a Future of its outputs."""
    return servable.submit(servable.signature(None), {"images": images})


def start_manager(bases, policy="latest", settings=DEFAULTS):
    from server.servable import loader

    executor = concurrent.futures.ThreadPoolExecutor(2)
    manager = Manager([str(b) for b in bases], parse_policy(policy), loader(settings, executor))
    manager.poll()
    return manager


def test_find_models_takes_model_folders_and_base_folders(exports, tmp_path):
    assert find_models([str(exports)]) == {"tiny": str(exports / "tiny")}
    assert find_models([str(exports / "tiny")]) == {"tiny": str(exports / "tiny")}
    with pytest.raises(UserError, match="one version of a model"):
        find_models([str(exports / "tiny" / "1")])
    with pytest.raises(UserError, match="does not exist"):
        find_models([str(tmp_path / "missing")])


def test_the_manager_swaps_to_a_new_version_and_keeps_the_old_when_one_fails(exports, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(exports, base)
    manager = start_manager([base])
    model = manager.model("tiny")
    assert [(s.version, s.state) for s in model.statuses()] == [(1, "AVAILABLE")]
    first = model.servable()

    shutil.copytree(base / "tiny" / "1", base / "tiny" / ".incoming")
    os.rename(base / "tiny" / ".incoming", base / "tiny" / "2")
    manager.poll()
    assert [(s.version, s.state) for s in model.statuses()] == [(1, "END"), (2, "AVAILABLE")]
    assert model.servable().version == 2
    # A request that took version 1 before the swap is still answered.
    assert predict(first, np.zeros((1, 8, 8, 1), np.float32)).result(10)["probabilities"].shape == (1, 3)

    shutil.copytree(base / "tiny" / "2", base / "tiny" / ".incoming")
    (base / "tiny" / ".incoming" / "saved_model.pb").write_bytes(b"garbage")
    os.rename(base / "tiny" / ".incoming", base / "tiny" / "3")
    manager.poll()
    statuses = {s.version: s for s in model.statuses()}
    assert statuses[3].state == "END" and "Could not load" in statuses[3].error
    assert model.servable().version == 2 and statuses[2].state == "AVAILABLE"
    manager.poll()  # a failed version is not retried until its folder changes
    assert {s.version: s.state for s in model.statuses()}[3] == "END"
    with pytest.raises(ServingError, match="Specific"):
        model.servable(3)
    manager.stop()


def test_a_real_model_batched_gives_the_answers_it_gives_one_image_at_a_time(exports):
    import dataclasses

    settings = dataclasses.replace(DEFAULTS, max_batch_size=8, batch_timeout_ms=50)
    manager = start_manager([exports], settings=settings)
    servable = manager.model("tiny").servable()
    images = np.random.default_rng(2).integers(0, 256, (20, 8, 8, 1)).astype(np.float32)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        futures = list(pool.map(lambda i: predict(servable, images[i:i + 1]), range(20)))
    for i, future in enumerate(futures):
        alone = servable.run("serving_default", {"images": images[i:i + 1]})
        batched = future.result(30)
        np.testing.assert_allclose(batched["probabilities"], alone["probabilities"], rtol=1e-5, atol=1e-6)
        assert batched["classes"].tolist() == alone["classes"].tolist()
    manager.stop()


def test_version_policy_all_serves_every_version(exports, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(exports, base)
    shutil.copytree(base / "tiny" / "1", base / "tiny" / "2")
    manager = start_manager([base / "tiny"], "all")
    assert sorted(manager.model("tiny").available()) == [1, 2]
    manager.stop()
    manager = start_manager([base / "tiny"], "1")
    assert sorted(manager.model("tiny").available()) == [1]
    manager.stop()


def test_classify_decodes_uploads_as_predict_py_does_and_refuses_bad_files(exports):
    from imagesets.images import load_image
    from server.service import Service

    manager = start_manager([exports])
    service = Service(manager, DEFAULTS)
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30, 4), dtype=np.uint8), "RGBA").save(photo, "PNG")
    files = [("photo.png", photo.getvalue())]
    answer = asyncio.run(service.upload("tiny", None, files, top_k=2))
    assert answer["model"] == "tiny" and answer["version"] == 1 and len(answer["predictions"][0]["top"]) == 2
    servable = manager.model("tiny").servable()
    pixels = load_image(io.BytesIO(photo.getvalue()), (8, 8), 1)[None].astype(np.float32)
    expected = servable.run("serving_default", {"images": pixels})["probabilities"][0]
    top = answer["predictions"][0]["top"][0]
    assert top["class"] == ["a", "b", "c"][int(np.argmax(expected))]
    assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-6)
    for bad, words in ((b"", "empty file"), (b"GIF89a broken", "truncated"), (b"hello", "not an image")):
        with pytest.raises(ServingError) as raised:
            asyncio.run(service.upload("tiny", None, [("x.gif", bad)]))
        assert raised.value.http_status == 400 and str(raised.value).startswith("x.gif: ")
    with pytest.raises(ServingError, match="limit is 16"):
        asyncio.run(service.upload("tiny", None, files * 17))
    with pytest.raises(ServingError, match=r"Servable not found for request: Latest\(nope\)"):
        asyncio.run(service.upload("nope", None, files))
    manager.stop()


def test_the_command_line_refuses_bad_settings_in_one_line():
    from server.command import build_parser, settings_from

    parser = build_parser()
    assert settings_from(parser.parse_args([])) == DEFAULTS
    for flags in (["--max-batch-size", "0"], ["--rest-port", "70000"], ["--batch-timeout-ms", "-1"],
                  ["--max-body-mb", "0"], ["--batch-threads", "-1"], ["--intra-op-threads", "-2"]):
        with pytest.raises(UserError):
            settings_from(parser.parse_args(flags))
    assert settings_from(parser.parse_args(["--batch-threads", "3"])).batch_thread_count == 3
    assert settings_from(parser.parse_args([])).batch_thread_count == len(os.sched_getaffinity(0))  # 0: the cores


def test_settling_the_heap_freezes_what_lives_and_collects_the_garbage_first():
    import gc
    import weakref

    from server.command import settle_heap

    class Node:
        pass

    garbage, alive = Node(), Node()
    garbage.self = garbage  # a cycle only the cyclic collector frees
    gone, kept = weakref.ref(garbage), weakref.ref(alive)
    del garbage
    try:
        settle_heap()
        assert gone() is None and kept() is alive
        assert gc.get_freeze_count() > 1000  # pytest, numpy, TensorFlow: out of every later full collection
        frozen = gc.get_freeze_count()
        settle_heap()  # again, as after a version loads: unfrozen, collected, frozen
        assert abs(gc.get_freeze_count() - frozen) < frozen // 10
    finally:
        gc.unfreeze()


def test_tf_servings_flags_map_onto_the_settings(tmp_path):
    from server.command import build_parser, model_list, settings_from

    batching = tmp_path / "batching.txt"
    batching.write_text("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 500 }\n"
                        "num_batch_threads { value: 3 }\nmax_enqueued_batches { value: 7 }\nallowed_batch_sizes: 8\n")
    parser = build_parser()
    settings = settings_from(parser.parse_args([
        "--port=9000", "--rest_api_port=9001", "--rest_api_timeout_in_ms=2500", "--enable_batching=false",
        "--enable_model_warmup=false", "--enable_signature_method_name_check",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x",
        "--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=3",
        "--file_system_poll_wait_seconds=0", f"--batching_parameters_file={batching}"]))
    assert (settings.grpc_port, settings.rest_port, settings.request_timeout_s) == (9000, 9001, 2.5)
    assert (settings.batching, settings.warmup, settings.signature_method_name_check) == (False, False, True)
    assert settings.grpc_options == (("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "x"))
    assert (settings.intra_op_threads, settings.inter_op_threads, settings.poll_seconds) == (2, 3, 0.0)
    assert (settings.max_batch_size, settings.batch_timeout_ms, settings.batch_threads,
            settings.max_enqueued_batches) == (128, 0.5, 3, 7)
    base = tmp_path / "half_plus_two"
    base.mkdir()
    models = model_list(parser.parse_args(["--model_name=hp2", f"--model_base_path={base}", "--versions=all"]))
    assert {name: (s.folder, s.policy) for name, s in models.sources().items()} == {"hp2": (str(base), "all")}
    for flags, words in ((["--grpc_channel_arguments=novalue"], "key=value"),
                         ([f"--batching_parameters_file={tmp_path / 'missing.txt'}"], "cannot read"),
                         (["--model_config_file=x", f"--model_base_path={base}"], "drop --model_base_path"),
                         (["--rest_api_timeout_in_ms=0"], "must be positive")):
        with pytest.raises(UserError, match=words):
            settings_from(parser.parse_args(flags))
    batching.write_text("max_batch_size { value: 128 }\nno_such_field: 1\n")
    with pytest.raises(UserError, match="unknown field 'no_such_field'"):
        settings_from(parser.parse_args([f"--batching_parameters_file={batching}"]))
    with pytest.raises(SystemExit):  # argparse's own one line: a boolean flag takes true or false
        parser.parse_args(["--enable_batching=maybe"])


def test_a_refused_start_up_leaves_its_rest_port_free(tmp_path):
    # The REST port is bound before anything loads, so a taken port is said at once; a start-up refused after
    # that (here: no exports) must let the port go, or the next server in the same process finds it taken.  Two
    # start-ups in one fresh interpreter: this one's TensorFlow may already have thread pools a server would set.
    script = f"""
import socket
from core.errors import UserError
from server import command
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
for _ in range(2):
    try:
        command.main([{str(tmp_path)!r}, "--rest-port", str(port), "--grpc-port", "0"])
    except UserError as error:
        print(error)
with socket.socket() as again:
    again.bind(("127.0.0.1", port))  # OSError if a refused start-up still held it
print("port free")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(lines) == 3 and all(line.startswith("No exports found") for line in lines[:2]), lines
    assert lines[2] == "port free"
