"""One loaded version of one model: its signatures, a batching queue per signature, and the call that runs it.

Any SavedModel loads, TF1 or TF2, a Keras ``model.export()`` artifact or a ``tf.saved_model.save`` module:
``tf.saved_model.load`` gives each SignatureDef as a function of its input aliases.  This toolkit's own exports
carry ``assets/metadata.json`` (class names, input size, the run's test accuracy); those become the servable's
``extras`` for the page and the image upload, and their absence never stops a model from loading.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from server.batching import Batcher, Unbatched
from server.errors import ServingError, invalid
from server.signatures import (DEFAULT_SIGNATURE, Signature, check_inputs, choose, read_signature_defs,
                               signatures_of)

IMAGE_INPUT = "images"    # the one input of this toolkit's exports' signature (exports.export)
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")  # TF Serving's warm-up records


@dataclasses.dataclass(frozen=True)
class ImageExtras:
    """What this toolkit's exports add: the classes, the image size, the run's metadata."""
    class_names: list[str]
    input_shape: tuple[int, int, int]
    metadata: dict


def read_extras(version_dir: str, signatures: dict[str, Signature]) -> ImageExtras | None:
    """The export's metadata when it is one of this toolkit's image classifiers, else None."""
    try:
        with open(os.path.join(version_dir, "assets", "metadata.json"), encoding="utf-8") as f:
            metadata = json.load(f)
        class_names, shape = [str(c) for c in metadata["class_names"]], tuple(int(d) for d in metadata["input_shape"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    default = signatures.get(DEFAULT_SIGNATURE)
    if default is None or set(default.inputs) != {IMAGE_INPUT} or "probabilities" not in default.outputs \
            or len(shape) != 3:
        return None
    return ImageExtras(class_names, shape, metadata)


def rows_in(inputs: dict[str, np.ndarray]) -> int | None:
    """The batch size shared by every input, or None when they do not share one (then the request runs alone)."""
    sizes = {value.shape[0] if value.ndim else None for value in inputs.values()}
    return sizes.pop() if len(sizes) == 1 and None not in sizes else None


class Servable:
    """A version ready to serve: ``submit`` queues a request for one signature and returns a Future of its
    outputs (a dict of arrays)."""

    def __init__(self, name: str, version: int, path: str, loaded, defs, queue_factory):
        self.name, self.version, self.path = name, version, path
        self.signature_defs = defs
        self.signatures = signatures_of(defs)
        self.extras = read_extras(path, self.signatures)
        self._loaded = loaded  # the signatures' variables live on it
        self._functions = {name: loaded.signatures[name] for name in self.signatures if name in loaded.signatures}
        self._queue_factory = queue_factory
        self._queues: dict[str, object] = {}
        self._closed = False

    # --- what the toolkit's page and upload read ----------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return self.extras.class_names if self.extras else []

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.extras.input_shape if self.extras else None

    @property
    def metadata(self) -> dict:
        return self.extras.metadata if self.extras else {}

    # --- running -----------------------------------------------------------------------------------------
    def signature(self, name: str | None) -> Signature:
        return choose(self.signatures, name)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of a signature, with each input converted to the dtype the signature declares."""
        import tensorflow as tf

        spec = self.signatures[signature]
        function = self._functions.get(signature)
        if function is None:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.')
        tensors = {}
        for alias, value in inputs.items():
            want = spec.inputs[alias]
            tensors[alias] = tf.constant(value, tf.string) if want.is_string else \
                tf.constant(value if value.dtype == want.dtype else value.astype(want.dtype))
        try:
            outputs = function(**tensors)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            # The model refused the values (a shape its graph checks, a tf.Example it cannot parse): the caller's.
            raise invalid(_first_line(error)) from None
        return {alias: value.numpy() for alias, value in outputs.items()}

    def submit(self, signature: Signature, inputs: dict[str, np.ndarray]):
        check_inputs(signature, inputs)
        rows = rows_in(inputs)
        if rows == 0:
            raise invalid("The request has no rows (the first dimension of its inputs is 0)")
        # Inputs without a shared first dimension cannot be merged with other requests: they run alone.
        return self._queue(signature, batched=rows is not None and signature.batchable).submit(inputs)

    def _queue(self, signature: Signature, batched: bool):
        key = (signature.name, batched)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues.setdefault(key, self._queue_factory(self, signature, batched))
        return queue

    def warm_up(self) -> int:
        """Runs the version once before it takes requests, so the first caller pays no tracing: TF Serving's
        ``assets.extra/tf_serving_warmup_requests`` when the export has them, else a blank image for this
        toolkit's image exports.  Returns the calls made."""
        records = os.path.join(self.path, WARMUP_FILE)
        if os.path.isfile(records):
            from server.warmup import replay

            return replay(self, records)
        if self.extras:
            self.run(DEFAULT_SIGNATURE, {IMAGE_INPUT: np.zeros((1, *self.extras.input_shape), np.float32)})
            return 1
        return 0

    def close(self) -> None:
        self._closed = True
        for queue in list(self._queues.values()):
            queue.close()


def _first_line(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def loader(settings, executor, on_batch=None):
    """A function (name, version folder, version) -> a warmed-up Servable, for the Manager."""

    def queue_factory(servable: Servable, signature: Signature, batched: bool):
        run = lambda inputs: servable.run(signature.name, inputs)  # noqa: E731
        count = (lambda n: on_batch(servable.name, n)) if on_batch else None
        if not settings.batching or not batched:
            return Unbatched(run, executor=executor, on_batch=count)
        return Batcher(run, max_batch_size=settings.max_batch_size,
                       timeout_s=settings.batch_timeout_ms / 1000.0, max_queued_rows=settings.max_queued_rows,
                       on_batch=count, name=f"{servable.name}/{servable.version}/{signature.name}",
                       threads=settings.batch_thread_count)

    def load(name: str, version_dir: str, version: int) -> Servable:
        import tensorflow as tf

        try:
            defs = read_signature_defs(version_dir)
            loaded = tf.saved_model.load(version_dir, tags=["serve"])
        except Exception as error:
            raise RuntimeError(f"Could not load SavedModel {version_dir!r}: {_first_line(error)}") from None
        servable = Servable(name, version, version_dir, loaded, defs, queue_factory)
        if settings.warmup:
            servable.warm_up()
        return servable

    return load
