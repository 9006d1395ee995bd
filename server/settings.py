"""Every limit and default of the model server, in one place.

The names follow TF Serving's flags where it has one (``--rest_api_port``, ``--port``,
``--enable_batching``, ``max_batch_size``, ``batch_timeout_micros``, ``max_enqueued_batches``,
``--file_system_poll_wait_seconds``); the limits TF Serving leaves to a proxy in front of it (body size,
images per request, a deadline) are ours, so the server is safe to put on a network as it is.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"             # loopback unless asked: a server is put on a network on purpose
    rest_port: int = 8501               # TF Serving's REST port
    grpc_port: int = 8500               # TF Serving's gRPC port
    versions: str = "latest"            # latest | all | N,M  (TF Serving's model_version_policy)
    poll_seconds: float = 1.0           # how often the base folder is looked at for new versions
    # Dynamic batching: concurrent requests to one model are merged into one call.
    batching: bool = True
    max_batch_size: int = 64            # rows in one merged call
    batch_timeout_ms: float = 2.0       # how long the first request of a batch waits for company
    max_enqueued_batches: int = 64      # beyond this many waiting batches a request is refused (503)
    batch_threads: int = 0              # batches of one model run at once (num_batch_threads); 0: one per core
    unbatched_threads: int = 8          # --no-batching: requests that run at once, one image call each
    # TensorFlow's thread pools (TF Serving's --tensorflow_intra_op_parallelism / _inter_op_): one thread per
    # kernel, so each core runs whole batches and no kernel waits on a core the HTTP front end is using.
    intra_op_threads: int = 1
    inter_op_threads: int = 0           # 0: TensorFlow's default (one per core)
    # Limits on what one request may ask.
    max_body_bytes: int = 32 * 1024 * 1024
    max_instances: int = 1024           # rows (images) in one :predict request
    max_images: int = 16                # files in one :classify upload
    request_timeout_s: float = 30.0     # a request not answered by then gets 504 / DEADLINE_EXCEEDED
    top_k: int = 5                      # classes :classify answers by default
    shutdown_grace_s: float = 10.0      # SIGTERM: in-flight requests get this long to finish
    warmup: bool = True                 # run a version once before it serves (TF Serving's --enable_model_warmup)
    grpc_options: tuple = ()            # extra gRPC server options (--grpc_channel_arguments)
    signature_method_name_check: bool = False  # Classify/Regress only on signatures whose method says so
    config_poll_seconds: float = 0.0    # --model_config_file_poll_wait_seconds; 0: read once
    monitoring_path: str | None = None  # another path for the Prometheus page (--monitoring_config_file)

    @property
    def max_queued_rows(self) -> int:
        return self.max_batch_size * self.max_enqueued_batches

    @property
    def batch_thread_count(self) -> int:
        """Batch threads per model in one server process.  One per core in each of the --workers processes
        too: one gRPC client's requests all reach one worker (one connection), which then needs every core."""
        return self.batch_threads or len(os.sched_getaffinity(0))


DEFAULTS = Settings()
