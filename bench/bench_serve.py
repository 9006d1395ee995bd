"""The model server under load: predictions/s and p50/p99 latency over REST and gRPC, batching on and off,
beside the in-process batched ``LoadedExport.predict`` on the same images, in one run.

    .venv/bin/python bench/bench_serve.py --quick   # 4 s a cell, ~8 minutes
    .venv/bin/python bench/bench_serve.py --full    # 10 s a cell

Three exports: the default digits run (LeNet-5 on 8x8 digits, ``train.py --epochs 3``), where a request
costs far more than the model, and ResNet-20 and ResNet-56 at 32x32x3 assembled as ``train.py`` does (random
weights: they do not change the time), where the model's arithmetic weighs more and more against the cost of
a request (reading 3,072 numbers from JSON).  Each request carries one image, as an
application classifying one photo would.  Both loads come from load generators written in C, so that the
server, not they, limits each cell: REST from wrk (Debian's ``wrk``: keep-alive HTTP/1.1
connections, one per concurrent client), gRPC from h2load (Debian's ``nghttp2-client``: HTTP/2, one connection
per concurrent client with one stream each, as wrk), which POSTs a PredictRequest serialized once, in its 5-byte
gRPC frame, to ``/tensorflow.serving.PredictionService/Predict`` with ``content-type: application/grpc`` and
``te: trailers``.  h2load counts any HTTP 200 as a success, while gRPC puts its status in the trailers, which
h2load does not read; so before each server's gRPC cells one call of the same bytes through grpcio must come
back OK with the outputs, and each cell counts as failed every h2load success that the server's own counter
``serving_requests_total{api="grpc",code="OK"}`` did not grow by.  At concurrency 64 gRPC is measured a second
way too, 64 streams over one connection (``_one_connection``), as one grpcio channel would send them.  Beside
each cell: the cores the server kept busy (its CPU seconds and its workers', over the cell's wall time) and
the cores the load generator took.  Server and load generator share this machine's cores, as they would on a
laptop: the ratios, not the absolute numbers, are what carry to another machine.

Beside them, the model alone as the server runs it (its TensorFlow threads and batch threads, in a
process of its own), in batches and one image a call: their ratio is the most batching can gain,
whatever the HTTP around it.  The in-process rate is measured right before and after each server's
cells, and each cell's ratio is to the mean of those two, since this machine's speed drifts within minutes.

Memory: the server's RSS and peak RSS (VmHWM) after 1,000 requests and after 50,000, and before and after
1,000 hostile requests (the test suite's fuzzer).  It compares; it asserts nothing.
Writes JSON (default bench/results/serve_{quick,full}.json).  Needs Debian's wrk and nghttp2-client
(``apt-get install wrk nghttp2-client``) and says so when either is missing.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import machine_info, parse_size  # noqa: E402

SETTINGS = {"quick": {"seconds": 4, "inprocess_seconds": 3}, "full": {"seconds": 10, "inprocess_seconds": 6}}
CONCURRENCY = (1, 8, 64)
BATCH = 64


def status_lines(pid: int) -> dict:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    found = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                found[{"VmRSS": "rss_mib", "VmHWM": "peak_rss_mib"}[key]] = round(int(value.split()[0]) / 1024, 1)
    return found


# --- exports ---------------------------------------------------------------------------------------------

def digits_export(root: str) -> str:
    result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--epochs", "3", "--runs-dir",
                             os.path.join(root, "runs"), "--export-dir", os.path.join(root, "digits")],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        sys.exit(f"error: training the digits export failed: {result.stderr.strip().splitlines()[-1:]}")
    return os.path.join(root, "digits", "lenet5-digits")


def zoo_export(root: str, name: str, shape=(32, 32, 3)) -> str:
    import zoo
    from core.model import assemble, inference_model, preprocessing_layer
    from exports.export import export_savedmodel

    network = zoo.build(name, input_shape=shape, num_classes=10)
    model = inference_model(assemble(network, shape, preprocessing=preprocessing_layer("rescale")))
    export_savedmodel(model, os.path.join(root, "zoo"), name, class_names=[str(i) for i in range(10)])
    return os.path.join(root, "zoo", name)


# --- the load generators ----------------------------------------------------------------------------------

WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body}", "rb"); wrk.body = f:read("*all"); f:close()
"""


def parse_wrk(text: str) -> dict:
    def ms(value, unit):
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    latency = {f"p{p}_ms": ms(*re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M).groups()) for p in (50, 99)}
    total = int(re.search(r"(\d+) requests in", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    failed = (int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"predictions_per_s": rate, **latency, "requests": total, "failed": failed}


def children_cpu_seconds() -> float:
    """User and system CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(command: list[str], name: str) -> tuple[str, float]:
    """Runs a load generator to its end: its output, and the CPU seconds it took (no other child of this
    process ends meanwhile: the server runs on, the other subprocesses are not run at the same time)."""
    before = children_cpu_seconds()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{name} failed: {(result.stderr or result.stdout).strip()[-500:]}")
    return result.stdout, children_cpu_seconds() - before


def wrk(url: str, body_file: str, concurrency: int, seconds: float, folder: str) -> dict:
    script = os.path.join(folder, "post.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT.format(body=body_file))
    text, cpu = run_load(["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{seconds}s", "--latency",
                          "--timeout", "30s", "-s", script, url], "wrk")
    return {**parse_wrk(text), "load_cpu_seconds": cpu}


GRPC_PREDICT = "/tensorflow.serving.PredictionService/Predict"


def grpc_payload(model: str, images) -> bytes:
    """A PredictRequest for ``model`` of ``images``, serialized once, as grpcio would send it."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.float32))
    return request.SerializeToString()


def grpc_frame(payload: bytes) -> bytes:
    """gRPC's length-prefixed message: a compressed flag (0), the length as 4 big-endian bytes, the message."""
    return b"\0" + struct.pack(">I", len(payload)) + payload


def check_grpc(target: str, payload: bytes, rows: int) -> None:
    """One call of exactly the bytes h2load sends, through grpcio: it must come back OK, with ``rows`` rows in
    every output (h2load itself cannot see a gRPC status)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(GRPC_PREDICT, request_serializer=None,
                                   response_deserializer=predict_pb2.PredictResponse.FromString)
        response = call(payload, timeout=30)  # raises grpc.RpcError unless the status is OK
    shapes = {key: [d.size for d in value.tensor_shape.dim] for key, value in response.outputs.items()}
    if not shapes or any(not shape or shape[0] != rows for shape in shapes.values()):
        raise RuntimeError(f"the gRPC check call came back without {rows} row(s) in its outputs: {shapes}")


def grpc_answered(url: str, model: str) -> dict:
    """The server's count of gRPC Predict calls to ``model``, by status code (its Prometheus counter)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/monitoring/prometheus/metrics", timeout=30) as answer:
        text = answer.read().decode()
    codes: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (sample.name == "serving_requests_total" and labels.get("api") == "grpc"
                    and labels.get("method") == "predict" and labels.get("model") == model):
                codes[labels["code"]] = codes.get(labels["code"], 0) + int(sample.value)
    return codes


def parse_h2load(text: str, log_file: str) -> dict:
    """h2load's counts, its rate over the run, and p50/p99 from its per-request log (the HTTP 200 rows)."""
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", text)
    if counts is None:
        raise RuntimeError(f"h2load printed no request counts: {text.strip()[-500:]}")
    total, started, done, succeeded, failed, errored, timeout = map(int, counts.groups())
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    not_2xx = sum(map(int, status.groups()[1:])) if status else 0
    elapsed = re.search(r"finished in ([\d.]+)(us|ms|s),", text)
    seconds = float(elapsed.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[elapsed.group(2)]
    latencies = []
    with open(log_file) as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1] == "200":
                latencies.append(int(fields[2]) / 1e3)
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))] if ordered else None  # noqa
    return {"predictions_per_s": succeeded / seconds, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "requests": succeeded, "failed": failed + errored + timeout + not_2xx,
            "h2load": {"started": started, "done": done, "succeeded": succeeded, "seconds": seconds}}


def h2load(server, model: str, frame_file: str, connections: int, streams: int, seconds: float,
           folder: str) -> dict:
    """``connections`` HTTP/2 connections of ``streams`` concurrent Predict calls each, for ``seconds``; a call
    h2load took for a success that the server did not count as OK is a failure."""
    log_file = os.path.join(folder, "h2load.log")
    if os.path.exists(log_file):
        os.remove(log_file)
    before = grpc_answered(server.url, model)
    text, cpu = run_load(["h2load", "-t", "1", "-c", str(connections), "-m", str(streams), "-D", f"{seconds:g}",
                          "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", frame_file,
                          "--log-file", log_file, f"http://127.0.0.1:{server.grpc}{GRPC_PREDICT}"], "h2load")
    cell = parse_h2load(text, log_file)
    after = grpc_answered(server.url, model)
    delta = {code: after.get(code, 0) - before.get(code, 0) for code in set(before) | set(after)}
    delta = {code: n for code, n in delta.items() if n}
    ok = delta.get("OK", 0)
    # Every call h2load saw answered was counted by the server before its answer left; the server may count a
    # few more OK (calls still in flight when h2load stopped, at most started - done).
    real = min(cell["requests"], ok)
    cell["failed"] += cell["requests"] - real
    cell["requests"], cell["predictions_per_s"] = real, real / cell["h2load"]["seconds"]
    cell["h2load"]["server_counted"] = delta
    return {**cell, "load_cpu_seconds": cpu}


# --- the server -----------------------------------------------------------------------------------------

class Server:
    def __init__(self, model_dir: str, *flags: str):
        from tests.serverutil import free_port

        self.rest, self.grpc = free_port(), free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-serve-", suffix=".log")
        self.process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "serve", model_dir,
                                         "--rest-port", str(self.rest), "--grpc-port", str(self.grpc), *flags],
                                        stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.rest}"
        # Ready when the summary is out (with --workers, when every worker serves).
        ready = "workers serving." if "--workers" in flags else "Limits:"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if ready in open(self.log.name, errors="replace").read():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.25)
        raise RuntimeError(f"the server did not start: {open(self.log.name, errors='replace').read()[-1000:]}")

    def cpu_seconds(self) -> float:
        """CPU seconds of the server and its worker processes (--workers)."""
        import psutil

        process = psutil.Process(self.process.pid)
        return sum(t.user + t.system for t in (p.cpu_times() for p in [process, *process.children()]))

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def measure(server, api, name, body_file, frame_file, concurrency, seconds, folder, in_process_rate, key,
            one_connection=False) -> dict:
    """One cell: ``concurrency`` clients of ``api`` for ``seconds`` (gRPC: each on its own connection, or with
    ``one_connection`` all as streams of one), beside the in-process rate and the cores used, printed."""
    busy, began = server.cpu_seconds(), time.perf_counter()
    if api == "rest":
        cell = wrk(f"{server.url}/v1/models/{name}:predict", body_file, concurrency, seconds, folder)
    else:
        connections, streams = (1, concurrency) if one_connection else (concurrency, 1)
        cell = h2load(server, name, frame_file, connections, streams, seconds, folder)
        cell["connections"], cell["streams_per_connection"] = connections, streams
    wall = time.perf_counter() - began
    # Cores the server kept busy (one event loop for HTTP, TensorFlow's threads for the model), and the load
    # generator's: CPU seconds over the cell's wall time, start-up and connecting included.
    cell["server_cores_busy"] = round((server.cpu_seconds() - busy) / wall, 2)
    cell["load_cores_busy"] = round(cell.pop("load_cpu_seconds") / wall, 2)
    cell["vs_in_process"] = cell["predictions_per_s"] / in_process_rate
    print(f"  {key:45} {cell['predictions_per_s']:8.0f}/s  p50 {cell['p50_ms']:.2f} ms  p99 {cell['p99_ms']:.2f} ms  "
          f"({cell['vs_in_process']:.2f}x in-process; cores busy: server {cell['server_cores_busy']:.2f}, "
          f"{'wrk' if api == 'rest' else 'h2load'} {cell['load_cores_busy']:.2f}; {cell['failed']} failed)", flush=True)
    return cell


_EXPORTS: dict = {}


def in_process(model_dir: str, images, seconds: float) -> dict:
    from exports.load import load_export

    if model_dir not in _EXPORTS:
        _EXPORTS[model_dir] = load_export(model_dir)
    export = _EXPORTS[model_dir]
    export.predict(images[:BATCH], batch_size=BATCH)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        export.predict(images, batch_size=BATCH)
        count += len(images)
    return {"predictions_per_s": count / (time.perf_counter() - start), "batch_size": BATCH}


def _images_per_second(call, threads: int, seconds: float) -> float:
    import threading

    counts, stop = [], time.perf_counter() + seconds

    def caller(offset):
        done = 0
        while time.perf_counter() < stop:
            done += call(offset + done)
        counts.append(done)

    start = time.perf_counter()
    callers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def batching_ceiling(model_dir: str, seconds: float) -> dict:
    """The model alone, as the server runs it (its TensorFlow threads, one batch thread per core; with
    --no-batching, ``unbatched_threads`` calls of one image at once), in a process of its own: images/s in
    batches of BATCH and one at a time.  Their ratio is the most batching can gain, whatever the HTTP around."""
    result = subprocess.run([sys.executable, __file__, "--ceiling", model_dir, str(seconds)], capture_output=True,
                            text=True, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(f"ceiling measurement failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ceiling(model_dir: str, seconds: float) -> dict:
    import numpy as np

    from server.command import configure_tensorflow
    from server.settings import DEFAULTS
    from exports.load import load_export

    configure_tensorflow(DEFAULTS)
    export = load_export(model_dir)
    images = np.random.default_rng(0).integers(0, 256, (BATCH * 4, *export.input_shape)).astype(np.float32)

    def batched(i):
        start = (i % 4) * BATCH
        export.predict(images[start:start + BATCH], batch_size=BATCH)
        return BATCH

    def one(i):
        export.predict(images[i % len(images)][None], batch_size=1)
        return 1

    batched(0), one(0)
    rates = {"batched_per_s": _images_per_second(batched, DEFAULTS.batch_thread_count, seconds),
             "one_at_a_time_per_s": _images_per_second(one, DEFAULTS.unbatched_threads, seconds),
             "batch_threads": DEFAULTS.batch_thread_count, "unbatched_threads": DEFAULTS.unbatched_threads,
             "intra_op_threads": DEFAULTS.intra_op_threads}
    rates["ratio"] = rates["batched_per_s"] / rates["one_at_a_time_per_s"]
    return rates


def memory_rows(model_dir: str, body_file: str, folder: str) -> dict:
    """RSS after 1,000 and 50,000 requests, then around 1,000 hostile ones."""
    import random

    from tests.serverutil import http_client
    from tests.test_server_http import hostile_requests

    # The limits the test suite's fuzzer is written for: bodies over 1 MiB and over 512 images are hostile.
    server = Server(model_dir, "--max-body-mb", "1", "--max-instances", "512")
    try:
        body = open(body_file, "rb").read()
        name = os.path.basename(model_dir)
        with http_client(server) as client:
            for _ in range(1000):
                client.post(f"/v1/models/{name}:predict", content=body, headers={"content-type": "application/json"})
        rows = {"after_1000": status_lines(server.process.pid)}
        sent, url = 1000, f"{server.url}/v1/models/{name}:predict"
        while sent < 50_000:
            sent += wrk(url, body_file, 64, 5, folder)["requests"]
        rows[f"after_{sent}"] = status_lines(server.process.pid)
        with http_client(server) as client:
            codes = [client.request(m, p.replace("lenet5-digits", name), **k).status_code
                     for m, p, k in hostile_requests(random.Random(1), 1000)]
        rows["after_1000_hostile_more"] = status_lines(server.process.pid)
        rows["hostile_status_codes"] = sorted(set(codes))
        return rows
    finally:
        server.stop()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--ceiling"]:
        print(json.dumps(_ceiling(argv[1], float(argv[2]))))
        return 0
    _, mode, out = parse_size("serve", __doc__, argv, quick="4 s a cell", full="10 s a cell")
    missing = [(tool, package, use) for tool, package, use in (("wrk", "wrk", "the REST load"),
                                                               ("h2load", "nghttp2-client", "the gRPC load"))
               if shutil.which(tool) is None]
    if missing:
        sys.exit("error: bench_serve.py needs " + " and ".join(f"{tool} (Debian's {package}) for {use}"
                                                              for tool, package, use in missing)
                 + f"; on Debian or Ubuntu, `sudo apt-get install {' '.join(p for _, p, _ in missing)}` brings "
                 + ("it" if len(missing) == 1 else "them"))
    s = SETTINGS[mode]
    import numpy as np

    folder = tempfile.mkdtemp(prefix="bench-serve-")
    results = {}
    try:
        exports = {"lenet5-digits (8x8x1)": digits_export(folder), "resnet20 (32x32x3)": zoo_export(folder, "resnet20"),
                   "resnet56 (32x32x3)": zoo_export(folder, "resnet56")}
        for label, model_dir in exports.items():
            name = os.path.basename(model_dir)
            from exports.load import read_metadata

            shape = tuple(read_metadata(model_dir)[1]["input_shape"])
            images = np.random.default_rng(0).integers(0, 256, (512, *shape)).astype(np.float32)
            body_file, frame_file = os.path.join(folder, f"{name}.json"), os.path.join(folder, f"{name}.grpc")
            with open(body_file, "w") as f:
                json.dump({"instances": images[:1].astype(int).tolist()}, f)
            payload = grpc_payload(name, images[:1])
            with open(frame_file, "wb") as f:
                f.write(grpc_frame(payload))
            row, in_process_rates = {}, []
            configurations = [("batching_on", ["--batching"], CONCURRENCY),
                              ("batching_off", ["--no-batching"], CONCURRENCY),
                              ("batching_on", ["--workers", "2"], (64,))]
            for config, flags, concurrencies in configurations:
                # The in-process rate right before and after each server's cells, and each cell compared with
                # their mean: this machine's speed drifts by a quarter within minutes.
                before = in_process(model_dir, images, s["inprocess_seconds"])["predictions_per_s"]
                print(f"{label}: in-process batched predict {before:.0f}/s", flush=True)
                server = Server(model_dir, *flags)
                keys = []
                try:
                    check_grpc(f"127.0.0.1:{server.grpc}", payload, rows=1)
                    cells = [(api, c, False) for api in ("rest", "grpc") for c in concurrencies]
                    for api, concurrency, one_connection in cells + [("grpc", max(concurrencies), True)]:
                        key = (f"{api}_{config}_c{concurrency}" + ("_workers2" if "--workers" in flags else "")
                               + ("_one_connection" if one_connection else ""))
                        row[key] = measure(server, api, name, body_file, frame_file, concurrency, s["seconds"],
                                           folder, before, key, one_connection)
                        keys.append(key)
                finally:
                    server.stop()
                after = in_process(model_dir, images, s["inprocess_seconds"])["predictions_per_s"]
                in_process_rates += [before, after]
                for key in keys:
                    row[key]["in_process_per_s"] = (before + after) / 2
                    row[key]["vs_in_process"] = row[key]["predictions_per_s"] / row[key]["in_process_per_s"]
            row["in_process_batched"] = {"predictions_per_s": sum(in_process_rates) / len(in_process_rates),
                                         "each_measurement": in_process_rates, "batch_size": BATCH}
            ceiling = batching_ceiling(model_dir, s["inprocess_seconds"])
            row["batching_ceiling"] = ceiling
            print(f"{label}: the model as the server runs it: {ceiling['batched_per_s']:.0f}/s in batches of {BATCH}, "
                  f"{ceiling['one_at_a_time_per_s']:.0f}/s one image a call; {ceiling['ratio']:.2f}x, the most "
                  "batching can gain", flush=True)
            for api in ("rest", "grpc"):
                on, off = row[f"{api}_batching_on_c64"], row[f"{api}_batching_off_c64"]
                row[f"{api}_c64_batching_on_vs_off"] = on["predictions_per_s"] / off["predictions_per_s"]
            results[label] = row
        results["memory (lenet5-digits, REST, batching on)"] = memory_rows(
            exports["lenet5-digits (8x8x1)"], os.path.join(folder, "lenet5-digits.json"), folder)
        print(json.dumps(results["memory (lenet5-digits, REST, batching on)"]), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"mode": mode, "settings": {**s, "concurrency": list(CONCURRENCY), "images_per_request": 1,
                                              "rest_load": "wrk -t1 -c N",
                                              "grpc_load": "h2load -t1 -c N -m 1 (_one_connection: -c 1 -m N), "
                                                           "successes checked against serving_requests_total"},
                   "machine": machine_info(), "results": results}, f, indent=2)
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
