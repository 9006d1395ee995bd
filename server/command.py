"""``python train.py serve``: every export under the base folder on TF Serving's REST and gRPC ports.

    python train.py serve                                   # saved_models/, REST :8501, gRPC :8500
    python train.py serve saved_models/lenet5-digits --rest-port 9001 --grpc-port 9000 --versions all
    python train.py serve --port=8500 --rest_api_port=8501 --model_name=half_plus_two \
        --model_base_path=/models/half_plus_two             # TF Serving's command line, unchanged
    python train.py serve --model_config_file=models.config --model_config_file_poll_wait_seconds=60

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
    parser.add_argument("bases", nargs="*", metavar="MODEL_BASE",
                        help="a model folder (saved_models/NAME) or a folder of them; new models and versions are "
                             "picked up (default: saved_models)")
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
    tfs = parser.add_argument_group(
        "TF Serving's flags", "tensorflow_model_server's own names and meanings, so a deployment switches by "
        "changing the command; --port and --rest_api_port are --grpc-port and --rest-port")
    tfs.add_argument("--port", dest="grpc_port", type=int, help=argparse.SUPPRESS)
    tfs.add_argument("--rest_api_port", dest="rest_port", type=int, help=argparse.SUPPRESS)
    tfs.add_argument("--model_name", default="default", help="the name of the model at --model_base_path")
    tfs.add_argument("--model_base_path", help="one model's folder of numbered versions, served as --model_name")
    tfs.add_argument("--model_config_file", help="a ModelServerConfig text proto: several models, each with its "
                                                 "model_version_policy and version_labels")
    tfs.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0.0,
                     help="re-read --model_config_file this often and apply changes (0: read once)")
    tfs.add_argument("--file_system_poll_wait_seconds", dest="poll_seconds", type=float, help=argparse.SUPPRESS)
    tfs.add_argument("--enable_batching", dest="batching", type=flag_value, nargs="?", const=True,
                     help=argparse.SUPPRESS)
    tfs.add_argument("--batching_parameters_file", help="a BatchingParameters text proto (max_batch_size, "
                                                        "batch_timeout_micros, max_enqueued_batches, "
                                                        "num_batch_threads)")
    tfs.add_argument("--rest_api_timeout_in_ms", type=int, help="the request deadline in ms (--request-timeout)")
    tfs.add_argument("--enable_model_warmup", type=flag_value, nargs="?", const=True, default=d.warmup,
                     help="replay assets.extra/tf_serving_warmup_requests before a version serves")
    tfs.add_argument("--enable_signature_method_name_check", type=flag_value, nargs="?", const=True,
                     default=d.signature_method_name_check,
                     help="Classify and Regress only signatures whose method_name is classify or regress (TF2 "
                          "writes every signature as predict, so this is off by default, as in TF Serving)")
    tfs.add_argument("--grpc_channel_arguments", default="",
                     help="gRPC server options as key=value pairs, comma-separated")
    tfs.add_argument("--tensorflow_intra_op_parallelism", dest="intra_op_threads", type=int, help=argparse.SUPPRESS)
    tfs.add_argument("--tensorflow_inter_op_parallelism", dest="inter_op_threads", type=int, help=argparse.SUPPRESS)
    tfs.add_argument("--monitoring_config_file", help="a MonitoringConfig text proto; its prometheus_config path "
                                                      "is served beside /monitoring/prometheus/metrics")
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


def flag_value(text: str) -> bool:
    """A boolean flag's value as TF Serving's command line writes it (--enable_batching=false)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def apply_tf_serving_flags(args) -> None:
    """TF Serving's spellings onto ours: a flag given either way wins over the default."""
    d = DEFAULTS
    for dest, default in (("grpc_port", d.grpc_port), ("rest_port", d.rest_port), ("poll_seconds", d.poll_seconds),
                          ("batching", d.batching), ("intra_op_threads", d.intra_op_threads),
                          ("inter_op_threads", d.inter_op_threads)):
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    if args.rest_api_timeout_in_ms is not None:
        if args.rest_api_timeout_in_ms <= 0:
            raise UserError(f"--rest_api_timeout_in_ms must be positive, got {args.rest_api_timeout_in_ms}")
        args.request_timeout = args.rest_api_timeout_in_ms / 1000.0
    if args.batching_parameters_file:
        from server.config import read_batching_parameters

        parameters, unused = read_batching_parameters(args.batching_parameters_file)
        if parameters.max_batch_size is not None:
            args.max_batch_size = parameters.max_batch_size
        if parameters.batch_timeout_micros is not None:
            args.batch_timeout_ms = parameters.batch_timeout_micros / 1000.0
        if parameters.max_enqueued_batches is not None:
            args.max_enqueued_batches = parameters.max_enqueued_batches
        if parameters.num_batch_threads is not None:
            args.batch_threads = parameters.num_batch_threads
        if unused:
            print(f"[serve] {args.batching_parameters_file}: {', '.join(unused)} accepted without effect here",
                  file=sys.stderr, flush=True)
    given = [flag for flag, value in (("MODEL_BASE folders", args.bases), ("--model_base_path", args.model_base_path))
             if value]
    if args.model_config_file and given:
        raise UserError(f"--model_config_file lists the models; drop {' and '.join(given)}")
    if args.model_base_path and args.bases:
        raise UserError("Give either MODEL_BASE folders or --model_name with --model_base_path, not both")


def monitoring_path(args) -> str | None:
    """The Prometheus path a --monitoring_config_file asks for (TF Serving's MonitoringConfig text proto)."""
    if not args.monitoring_config_file:
        return None
    try:
        with open(args.monitoring_config_file, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise UserError(f"--monitoring_config_file: cannot read {args.monitoring_config_file!r} "
                        f"({error.strerror})") from None
    import re

    found = re.search(r'path\s*:\s*"([^"]+)"', text)
    return found.group(1) if found else None


def grpc_options(text: str) -> list[tuple[str, object]]:
    options = []
    for pair in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--grpc_channel_arguments: expected key=value pairs, got {pair!r}")
        options.append((key, int(value) if value.lstrip("-").isdigit() else value))
    return options


def settings_from(args) -> Settings:
    apply_tf_serving_flags(args)
    positive = {"--workers": args.workers, "--max-batch-size": args.max_batch_size,
                "--max-enqueued-batches": args.max_enqueued_batches,
                "--max-instances": args.max_instances, "--max-images": args.max_images,
                "--max-body-mb": args.max_body_mb, "--request-timeout": args.request_timeout}
    for flag, value in positive.items():
        if not value > 0:
            raise UserError(f"{flag} must be positive, got {value}")
    if args.poll_seconds < 0 or args.model_config_file_poll_wait_seconds < 0:
        raise UserError("--poll-seconds and --model_config_file_poll_wait_seconds cannot be negative (0: look once)")
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
        request_timeout_s=args.request_timeout, shutdown_grace_s=args.shutdown_grace,
        warmup=args.enable_model_warmup, signature_method_name_check=args.enable_signature_method_name_check, grpc_options=tuple(grpc_options(args.grpc_channel_arguments)),
        config_poll_seconds=args.model_config_file_poll_wait_seconds, monitoring_path=monitoring_path(args))


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


@dataclasses.dataclass
class ModelList:
    """Where the models come from: folders looked through on every poll, or TF Serving's model list (one
    --model_base_path, or a --model_config_file that can be reloaded)."""
    description: str
    bases: list[str]
    sources: object = None        # () -> {name: ModelSource}, for a model list
    config_file: str | None = None


def model_list(args) -> ModelList:
    from server.config import missing_base_paths, read_model_config, sources_of
    from server.models import ModelSource, parse_policy

    if args.model_config_file:
        sources = sources_of(read_model_config(args.model_config_file))
        missing = missing_base_paths(sources)
        if missing:
            raise UserError(f"--model_config_file {args.model_config_file!r}: no such base_path for "
                            f"{', '.join(missing)}")
        return ModelList(args.model_config_file, [], lambda: sources, args.model_config_file)
    if args.model_base_path:
        if not os.path.isdir(args.model_base_path):
            raise UserError(f"--model_base_path {args.model_base_path!r} is not a folder")
        source = ModelSource(args.model_base_path, parse_policy(args.versions))
        return ModelList(args.model_base_path, [], lambda: {args.model_name: source})
    bases = args.bases or ["saved_models"]
    return ModelList(", ".join(bases), bases)


def summary(manager, settings: Settings, rest_port: int, grpc_port: int, where: str) -> list[str]:
    lines = []
    for name, model in sorted(manager.models.items()):
        if not model.statuses():
            lines.append(f"  {name}: no versions in {model.folder} yet; watching it")
        for status in model.statuses():
            servable = status.servable
            if servable is None:
                detail = status.error
            elif servable.extras:
                detail = (f"input {'x'.join(map(str, servable.input_shape))}, {len(servable.class_names)} classes")
            else:
                detail = "signatures " + ", ".join(sorted(servable.signatures))
            lines.append(f"  {name} version {status.version}: {status.state} ({detail})")
    batching = (f"on (up to {settings.max_batch_size} rows, {settings.batch_timeout_ms:g} ms, "
                f"{settings.batch_thread_count} at once)" if settings.batching else "off")
    return [f"Serving {len(manager.models)} model(s) from {where}:",
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


def config_reloader(manager, settings: Settings):
    """ModelServerConfig -> the manager's new model list (HandleReloadConfigRequest)."""
    from server.config import missing_base_paths, sources_of
    from server.errors import invalid

    def reload(config) -> None:
        if config.WhichOneof("config") != "model_config_list":
            raise invalid("ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
                          "is currently supported")
        try:
            sources = sources_of(config)
        except UserError as error:
            raise invalid(str(error)) from None
        missing = missing_base_paths(sources)
        if missing:
            raise invalid(f"No such base_path for {', '.join(missing)}")
        manager.reconfigure(lambda: sources)

    return reload


def watch_config_file(manager, reload, path: str, seconds: float) -> None:
    """--model_config_file_poll_wait_seconds: the file read again, and applied when its text changed."""
    from server.config import read_model_config

    last = [read_model_config(path).SerializeToString()]

    def look():
        try:
            config = read_model_config(path)
        except UserError as error:  # half written, or a typo: keep serving what was configured
            raise RuntimeError(str(error)) from None
        if config.SerializeToString() != last[0]:
            reload(config)
            last[0] = config.SerializeToString()
            print(f"[serve] {path}: new model list applied ({', '.join(sorted(manager.models))})",
                  file=sys.stderr, flush=True)

    manager.every(seconds, look, "config-file")


async def serve(settings: Settings, models: ModelList) -> None:
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
    try:  # a start-up refused after the bind (no exports, the gRPC port taken) leaves no port bound here
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

        manager = Manager(models.bases, policy, loader(settings, executor, on_batch=metrics.batch), on_change,
                          sources=models.sources)
        manager.poll()
        if not manager.models:
            raise UserError(f"No exports found under {models.description}; train one first (python train.py) or name a "
                            "model folder such as saved_models/lenet5-digits")
        reload = config_reloader(manager, settings) if models.sources is not None else None
        service = Service(manager, settings, reload)
        grpc_server = build_server(service, metrics, settings.max_body_bytes, shared=worker is not None,
                                   options=settings.grpc_options)
        try:
            grpc_port = grpc_server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
        except RuntimeError:
            grpc_port = 0
        if not grpc_port:
            raise UserError(f"Cannot listen on {settings.host}:{settings.grpc_port} for gRPC; pick another port with "
                            "--grpc-port")
        await grpc_server.start()
    except BaseException:
        rest_socket.close()
        raise
    rest_port = rest_socket.getsockname()[1]
    if worker in (None, "0"):
        for line in summary(manager, settings, rest_port, grpc_port, models.description):
            print(line, flush=True)
    if os.environ.get(READY):
        with open(os.environ[READY], "w") as f:
            f.write(f"{rest_port} {grpc_port}\n")
    if settings.poll_seconds > 0:  # 0: the folders were looked at once, at start-up (TF Serving's meaning)
        manager.start_polling(settings.poll_seconds)
    if models.config_file and settings.config_poll_seconds > 0:
        watch_config_file(manager, reload, models.config_file, settings.config_poll_seconds)
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
    models = model_list(args)
    if args.workers > 1 and WORKER not in os.environ:
        return supervise(argv, args.workers)
    # uvicorn puts its own handlers in place while it serves and raises the signal again afterwards: this one
    # takes that second delivery, so the gRPC server still gets its graceful stop.
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        asyncio.run(serve(settings, models))
    except KeyboardInterrupt:
        pass
    return 0

