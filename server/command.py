"""``python train.py serve``: every export under the base folder on TF Serving's REST and gRPC ports.

    python train.py serve                                   # saved_models/, REST :8501, gRPC :8500
    python train.py serve saved_models/lenet5-digits --rest-port 9001 --grpc-port 9000 --versions all

Start-up: find the models, load the wanted version(s) of each, print one summary, then serve until
SIGTERM or Ctrl-C, which stop taking new requests and let those in flight finish (``--shutdown-grace``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from core.errors import UserError
from server.settings import DEFAULTS, Settings


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    parser = argparse.ArgumentParser(
        prog="train.py serve", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve exports with TF Serving's REST and gRPC APIs, batched and hot-swapped, with a page "
                    "to drop an image on at http://HOST:REST_PORT/.")
    parser.add_argument("bases", nargs="*", default=["saved_models"], metavar="MODEL_BASE",
                        help="a model folder (saved_models/NAME) or a folder of them; new versions are picked up")
    net = parser.add_argument_group("Network")
    net.add_argument("--host", default=d.host, help="address to listen on (0.0.0.0 puts it on the network)")
    net.add_argument("--rest-port", type=int, default=d.rest_port, help="REST API port (TF Serving's 8501)")
    net.add_argument("--grpc-port", type=int, default=d.grpc_port, help="gRPC API port (TF Serving's 8500)")
    models = parser.add_argument_group("Models")
    models.add_argument("--versions", default=d.versions, help="latest, all, or version numbers such as 1,3")
    models.add_argument("--poll-seconds", type=float, default=d.poll_seconds,
                        help="how often the folders are looked at for new versions")
    batching = parser.add_argument_group("Batching")
    batching.add_argument("--batching", action=argparse.BooleanOptionalAction, default=d.batching,
                          help="merge concurrent requests to a model into one call (TF Serving's --enable_batching)")
    batching.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="rows in one merged call")
    batching.add_argument("--batch-timeout-ms", type=float, default=d.batch_timeout_ms,
                          help="how long a batch's first request waits for others")
    batching.add_argument("--max-enqueued-batches", type=int, default=d.max_enqueued_batches,
                          help="batches allowed to wait; more requests are refused with 503")
    batching.add_argument("--batch-threads", type=int, default=d.batch_threads,
                          help="batches of one model that run at once in each process (TF Serving's "
                               "num_batch_threads); 0: one per core")
    threads = parser.add_argument_group("TensorFlow threads")
    threads.add_argument("--intra-op-threads", type=int, default=d.intra_op_threads,
                         help="threads one kernel may use (TF Serving's --tensorflow_intra_op_parallelism); 1 lets "
                              "each core run whole batches, 0 is TensorFlow's default of all cores")
    threads.add_argument("--inter-op-threads", type=int, default=d.inter_op_threads,
                         help="kernels that may run at once (--tensorflow_inter_op_parallelism); 0: one per core")
    net.add_argument("--workers", type=int, default=1,
                     help="server processes sharing the ports (SO_REUSEPORT), each with its own copy of the models "
                          "and batching queue: 2 puts HTTP parsing on both cores of a 2-core machine")
    limits = parser.add_argument_group("Limits")
    limits.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2**20,
                        help="largest request body (REST) or message (gRPC)")
    limits.add_argument("--max-instances", type=int, default=d.max_instances, help="images in one :predict")
    limits.add_argument("--max-images", type=int, default=d.max_images, help="files in one :classify upload")
    limits.add_argument("--request-timeout", type=float, default=d.request_timeout_s,
                        help="seconds before a request is answered 504 / DEADLINE_EXCEEDED")
    limits.add_argument("--shutdown-grace", type=float, default=d.shutdown_grace_s,
                        help="seconds in-flight requests get to finish after SIGTERM")
    return parser


def settings_from(args) -> Settings:
    positive = {"--workers": args.workers, "--max-batch-size": args.max_batch_size,
                "--max-enqueued-batches": args.max_enqueued_batches,
                "--max-instances": args.max_instances, "--max-images": args.max_images,
                "--max-body-mb": args.max_body_mb, "--request-timeout": args.request_timeout,
                "--poll-seconds": args.poll_seconds}
    for flag, value in positive.items():
        if not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    if args.batch_timeout_ms < 0 or args.shutdown_grace < 0:
        raise UserError("--batch-timeout-ms and --shutdown-grace cannot be negative")
    for flag, value in (("--batch-threads", args.batch_threads), ("--intra-op-threads", args.intra_op_threads),
                        ("--inter-op-threads", args.inter_op_threads)):
        if value < 0:
            raise UserError(f"{flag} cannot be negative (0 means one per core), got {value}")
    for flag, port in (("--rest-port", args.rest_port), ("--grpc-port", args.grpc_port)):
        if not 0 <= port <= 65535:
            raise UserError(f"{flag} {port} is not a port number (0-65535)")
    return dataclasses.replace(
        DEFAULTS, host=args.host, rest_port=args.rest_port, grpc_port=args.grpc_port, versions=args.versions,
        poll_seconds=args.poll_seconds, batching=args.batching, max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms, max_enqueued_batches=args.max_enqueued_batches,
        batch_threads=args.batch_threads, intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
        max_body_bytes=int(args.max_body_mb * 2**20), max_instances=args.max_instances, max_images=args.max_images,
        request_timeout_s=args.request_timeout, shutdown_grace_s=args.shutdown_grace)


WORKER = "CNN_SERVE_WORKER"        # set in the processes of --workers N: their index
READY = "CNN_SERVE_READY"          # a file a worker writes once it serves


def bind(host: str, port: int, flag: str, *, shared: bool = False) -> socket.socket:
    """The REST socket, bound before anything loads, so a taken port is one clear line at once.  ``shared``:
    the --workers processes bind the same port with SO_REUSEPORT and the kernel spreads connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off only on sockets that say they are TCP,
    # and with it on, a keep-alive response written in two parts waits 40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UserError(f"Cannot listen on {host}:{port} ({error.strerror}); pick another port with {flag}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def summary(manager, settings: Settings, rest_port: int, grpc_port: int) -> list[str]:
    lines = []
    for name, model in sorted(manager.models.items()):
        for status in model.statuses():
            servable = status.servable
            shape = "x".join(map(str, servable.input_shape)) if servable else "-"
            detail = f"input {shape}, {len(servable.class_names)} classes" if servable else status.error
            lines.append(f"  {name} version {status.version}: {status.state} ({detail})")
    batching = (f"on (up to {settings.max_batch_size} rows, {settings.batch_timeout_ms:g} ms, "
                f"{settings.batch_thread_count} at once)" if settings.batching else "off")
    return [f"Serving {len(manager.models)} model(s) from {', '.join(manager.bases)} (versions: {settings.versions}):",
            *lines,
            f"REST  http://{settings.host}:{rest_port}/v1/models/NAME   page http://{settings.host}:{rest_port}/",
            f"gRPC  {settings.host}:{grpc_port}   batching {batching}",
            f"Limits: body {settings.max_body_bytes / 2**20:g} MiB, {settings.max_instances} instances, "
            f"{settings.max_images} images a request, {settings.request_timeout_s:g} s timeout. "
            "Ctrl-C or SIGTERM stops."]


def settle_heap() -> None:
    """One full collection, then what survives is frozen out of the collector's sight (``gc.freeze``).

    TensorFlow and the loaded models are some 400,000 objects.  Unfrozen, every full collection walks them
    all: about 200 ms holding the GIL, set off every few hundred requests by the lists a JSON body parses
    into, and every request in flight waits.  Redone after each version loads or unloads, so a dropped
    version's objects are not kept frozen and are collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def configure_tensorflow(settings: Settings) -> None:
    """TensorFlow's thread pools, set before the first model loads (they cannot change afterwards)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(settings.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(settings.inter_op_threads)


async def serve(settings: Settings, bases: list[str]) -> None:
    import uvicorn

    from server.grpc_api import build_server
    from server.metrics import Metrics
    from server.models import Manager, parse_policy
    from server.rest import build_app
    from server.servable import loader
    from server.service import Service

    worker = os.environ.get(WORKER)
    policy = parse_policy(settings.versions)
    rest_socket = bind(settings.host, settings.rest_port, "--rest-port", shared=worker is not None)
    configure_tensorflow(settings)
    metrics = Metrics()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=settings.unbatched_threads,
                                                     thread_name_prefix="predict")

    def on_change(name, version, state, error):
        if name != "*":
            metrics.version_state(name, version, state)
            if state in ("AVAILABLE", "END"):
                settle_heap()
        if error or state in ("AVAILABLE", "END") and name != "*" and worker in (None, "0"):
            print(f"[serve] {name} version {version}: {state}{' - ' + error if error else ''}", file=sys.stderr,
                  flush=True)

    manager = Manager(bases, policy, loader(settings, executor, on_batch=metrics.batch), on_change)
    manager.poll()
    if not manager.models:
        raise UserError(f"No exports found under {', '.join(bases)}; train one first (python train.py) or name a "
                        "model folder such as saved_models/lenet5-digits")
    service = Service(manager, settings)
    grpc_server = build_server(service, metrics, settings.max_body_bytes, shared=worker is not None)
    try:
        grpc_port = grpc_server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    except RuntimeError:
        grpc_port = 0
    if not grpc_port:
        raise UserError(f"Cannot listen on {settings.host}:{settings.grpc_port} for gRPC; pick another port with "
                        "--grpc-port")
    await grpc_server.start()
    rest_port = rest_socket.getsockname()[1]
    if worker in (None, "0"):
        for line in summary(manager, settings, rest_port, grpc_port):
            print(line, flush=True)
    if os.environ.get(READY):
        with open(os.environ[READY], "w") as f:
            f.write(f"{rest_port} {grpc_port}\n")
    manager.start_polling(settings.poll_seconds)
    config = uvicorn.Config(build_app(service, metrics), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=settings.shutdown_grace_s, http="httptools",
                            proxy_headers=False, backlog=2048)
    try:
        # uvicorn stops on SIGTERM/SIGINT after the HTTP requests in flight finish; gRPC then gets its grace.
        await uvicorn.Server(config).serve(sockets=[rest_socket])
    finally:
        await grpc_server.stop(settings.shutdown_grace_s)
        manager.stop()
        executor.shutdown(wait=False, cancel_futures=True)
        if worker is None:
            print("Stopped.", flush=True)


def supervise(argv: list[str], workers: int) -> int:
    """--workers N: N server processes on the same ports.  The first starts alone, so a bad flag or a taken
    port is said once; the rest follow when it serves.  SIGTERM and Ctrl-C reach every worker, and each
    finishes its requests in flight.  Metrics are summed over the workers (prometheus-client's
    multiprocess mode, in a folder removed at the end)."""
    metrics_dir = tempfile.mkdtemp(prefix="serve-metrics-")
    processes: list[subprocess.Popen] = []
    stopping = False

    def forward(signum, frame):
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        for index in range(workers):
            ready = os.path.join(metrics_dir, f"ready-{index}")
            env = {**os.environ, WORKER: str(index), READY: ready, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
            # The same command line again (train.py serve ...), as a worker.
            processes.append(subprocess.Popen([sys.executable, os.path.abspath(sys.argv[0]), "serve", *argv], env=env))
            while not os.path.exists(ready) and not stopping:
                if processes[-1].poll() is not None:  # it could not start: the others stop too
                    forward(signal.SIGTERM, None)
                    for process in processes:
                        process.wait()
                    return processes[-1].returncode or 1
                time.sleep(0.1)
        if not stopping:
            print(f"{workers} workers serving.", flush=True)
        codes = [process.wait() for process in processes]
        print("Stopped.", flush=True)
        return 0 if stopping or not any(codes) else max(codes)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    if args.workers > 1 and WORKER not in os.environ:
        return supervise(argv, args.workers)
    # uvicorn puts its own handlers in place while it serves and raises the signal again afterwards: this one
    # takes that second delivery, so the gRPC server still gets its graceful stop.
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        asyncio.run(serve(settings, args.bases))
    except KeyboardInterrupt:
        pass
    return 0

