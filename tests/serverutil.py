"""Starting the model server for a test: a real ``train.py serve`` process on 127.0.0.1, on ports the test
picks, stopped at the end; and the small export it serves."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.helpers import ROOT, run_cli


def http_client(server: "Server", timeout: float = 30) -> httpx.Client:
    """An HTTP client as applications use one, with Nagle's algorithm off: httpx writes a request's headers
    and body separately, and without TCP_NODELAY each small request waits out a 40 ms delayed ACK."""
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(base_url=server.url, timeout=timeout, transport=transport)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_digits_export(root, epochs: int = 4) -> str:
    """The default digits run (LeNet-5), shortened, exported to ``root/models/lenet5-digits``."""
    result = run_cli("train.py", "--epochs", str(epochs), "--runs-dir", os.path.join(root, "runs"),
                     "--export-dir", os.path.join(root, "models"), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return os.path.join(root, "models", "lenet5-digits")


class Server:
    def __init__(self, process: subprocess.Popen, rest_port: int, grpc_port: int, log: str):
        self.process, self.rest_port, self.grpc_port, self.log = process, rest_port, grpc_port, log
        self.url = f"http://127.0.0.1:{rest_port}"
        self.grpc_target = f"127.0.0.1:{grpc_port}"

    def output(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def serving(bases, *flags, log_dir, ready_model: str, timeout: float = 120.0):
    """``train.py serve BASES FLAGS`` until the ``ready_model`` answers; SIGTERM and wait at the end."""
    rest_port, grpc_port = free_port(), free_port()
    log = os.path.join(log_dir, f"serve-{rest_port}.log")
    env = {**os.environ, "CNN_CLASSROOM_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), "serve", *map(str, bases),
                                    "--rest-port", str(rest_port), "--grpc-port", str(grpc_port), *flags],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    server = Server(process, rest_port, grpc_port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert server.alive(), f"the server exited:\n{server.output()[-3000:]}"
            try:
                if httpx.get(f"{server.url}/v1/models/{ready_model}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not start:\n{server.output()[-3000:]}"
            time.sleep(0.25)
        yield server
    finally:
        if server.alive():
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
