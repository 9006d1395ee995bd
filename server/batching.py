"""Dynamic batching: concurrent requests to one model merged into one call, then split back.

TF Serving's ``--enable_batching`` in miniature.  A few worker threads per model version (TF Serving's
``num_batch_threads``) take turns at gathering: the one whose turn it is takes the first waiting request,
waits up to ``timeout_s`` for others until ``max_batch_size`` rows are gathered, then runs the model once on
all of them and hands each caller its own rows, while the next thread gathers.  Under load batches fill
without waiting at all, and with one thread per core and single-threaded kernels (``train.py serve``'s
default), each core runs whole batches of its own instead of every kernel being split over cores that the
HTTP front end also needs.  A caller gets a ``concurrent.futures.Future`` (wrap it
with ``asyncio.wrap_future`` in a server).  ``Unbatched`` has the same interface and runs every request on
its own, for ``--no-batching``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import threading
import time
from typing import Callable

import numpy as np

from server.errors import ServingError

Outputs = dict[str, np.ndarray]
Rows = "np.ndarray | dict[str, np.ndarray]"  # one array, or a signature's inputs that share their first dimension
_STOP = object()


def count_rows(rows) -> int:
    return len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)


def merge_rows(parts: list):
    if isinstance(parts[0], dict):
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return np.concatenate(parts)


@dataclasses.dataclass
class _Task:
    rows: object  # Rows
    future: concurrent.futures.Future

    def __len__(self) -> int:
        return count_rows(self.rows)


def split_outputs(outputs: Outputs, sizes: list[int]) -> list[Outputs]:
    """The merged call's outputs cut back into one dict per request, in order."""
    offsets = np.cumsum([0, *sizes])
    return [{name: value[start:end] for name, value in outputs.items()}
            for start, end in zip(offsets[:-1], offsets[1:])]


class Batcher:
    """Merges the rows of concurrent ``submit`` calls into calls of ``run`` of at most ``max_batch_size`` rows.

    Args:
        run: the model: a (N, ...) array in, a dict of (N, ...) arrays out.
        max_batch_size: rows in one merged call (a single larger request runs on its own).
        timeout_s: how long the first request of a batch waits for others.
        max_queued_rows: rows allowed to wait; past it ``submit`` refuses with UNAVAILABLE.
        on_batch: called with each merged call's row count (metrics).
        threads: batches that may run at once.
    """

    def __init__(self, run: Callable[[np.ndarray], Outputs], *, max_batch_size: int, timeout_s: float,
                 max_queued_rows: int, on_batch: Callable[[int], None] | None = None, name: str = "model",
                 threads: int = 1):
        self._run, self._max, self._timeout = run, max_batch_size, timeout_s
        self._max_queued, self._on_batch, self._name = max_queued_rows, on_batch, name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued_rows = 0
        # A lone request does not wait for company (below); these say whether it is alone.
        self._unanswered = 0  # requests submitted and not yet answered: queued, gathering or running
        self._last_size = 1   # requests in the last batch gathered
        self._closed = False
        # Whoever holds _turn gathers the next batch; _carry and _stopped belong to it.
        self._turn = threading.Lock()
        self._carry: _Task | None = None
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"batcher-{name}-{i}", daemon=True)
                         for i in range(max(1, threads))]
        for thread in self._threads:
            thread.start()

    def submit(self, rows: np.ndarray) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                # The version was unloaded between the request finding it and submitting: run it anyway,
                # so a swap never fails a request.
                threading.Thread(target=self._run_alone, args=(_Task(rows, future),), daemon=True).start()
                return future
            if self._queued_rows and self._queued_rows + count_rows(rows) > self._max_queued:  # a big one alone may wait
                raise ServingError("UNAVAILABLE", f"The batching queue of {self._name} is full "
                                                  f"({self._queued_rows} rows waiting); retry shortly")
            self._queued_rows += count_rows(rows)
            self._unanswered += 1
            self._queue.put(_Task(rows, future))
        future.add_done_callback(self._answered)
        return future

    def _answered(self, future) -> None:
        with self._lock:
            self._unanswered -= 1

    def close(self) -> None:
        """Runs what is queued, then stops the worker thread."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    # --- the worker threads ---------------------------------------------------------------------------

    def _next(self, timeout: float | None):
        if self._carry is not None:
            task, self._carry = self._carry, None
            return task
        try:
            return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _gather(self, first: _Task) -> tuple[list[_Task], bool]:
        tasks, rows, stop = [first], len(first), False
        deadline = time.monotonic() + self._timeout
        # TF Serving's batcher always waits up to the timeout; here a request that is the only one out, after a
        # batch of one, runs at once: at one client at a time the wait bought nothing and cost several times the
        # request (bench_serve.py's concurrency-1 rows, batching on against off). Under load the last batch held
        # several requests and the wait stays, so merging is as before.
        alone = self._unanswered <= 1 and self._last_size <= 1
        while rows < self._max:
            task = self._next(0 if alone else deadline - time.monotonic())
            if task is None:
                break
            if task is _STOP:
                stop = True
                break
            if rows + len(task) > self._max:
                self._carry = task  # starts the next batch
                break
            tasks.append(task)
            rows += len(task)
        return tasks, stop

    def _work(self) -> None:
        while True:
            with self._turn:
                if self._stopped and self._carry is None:
                    return  # _STOP comes after everything queued before close(): all of it has run
                first = self._next(None)
                if first is _STOP:
                    self._stopped = True
                    continue
                tasks, stopped = self._gather(first)
                self._last_size = len(tasks)
                self._stopped = self._stopped or stopped
            self._run_batch(tasks)

    def _run_batch(self, tasks: list[_Task]) -> None:
        with self._lock:
            self._queued_rows -= sum(len(t) for t in tasks)
        tasks = [t for t in tasks if t.future.set_running_or_notify_cancel()]
        if not tasks:
            return
        try:
            rows = tasks[0].rows if len(tasks) == 1 else merge_rows([t.rows for t in tasks])
            outputs = self._run(rows)
            if self._on_batch:
                self._on_batch(count_rows(rows))
        except BaseException as error:  # every waiting caller hears of it; the worker lives on
            for task in tasks:
                task.future.set_exception(error)
            return
        sizes = [len(t) for t in tasks]
        if len(tasks) > 1 and any(np.ndim(v) == 0 or len(v) != sum(sizes) for v in outputs.values()):
            # An output without a row per input row (a count, a model-wide constant) cannot be cut back
            # into requests: each runs on its own, and gets exactly what an unbatched call gives.
            for task in tasks:
                self._run_alone(task, started=True)
            return
        for task, part in zip(tasks, split_outputs(outputs, sizes)):
            task.future.set_result(part)

    def _run_alone(self, task: _Task, started: bool = False) -> None:
        if not started and not task.future.set_running_or_notify_cancel():
            return
        try:
            task.future.set_result(self._run(task.rows))
        except BaseException as error:
            task.future.set_exception(error)


class Unbatched:
    """``--no-batching``: each request is its own call, on a shared pool of threads."""

    def __init__(self, run: Callable[[np.ndarray], Outputs], *, executor: concurrent.futures.Executor,
                 on_batch: Callable[[int], None] | None = None):
        self._run, self._executor, self._on_batch = run, executor, on_batch

    def _call(self, rows: np.ndarray) -> Outputs:
        outputs = self._run(rows)
        if self._on_batch:
            self._on_batch(count_rows(rows))
        return outputs

    def submit(self, rows: np.ndarray) -> concurrent.futures.Future:
        return self._executor.submit(self._call, rows)

    def close(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass
