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
from server.signatures import DEFAULT_SIGNATURE, Signature, check_inputs, choose, read_saved_model, signatures_of

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

    def __init__(self, name: str, version: int, path: str, call, defs, queue_factory, *, tf1: bool = False):
        self.name, self.version, self.path, self.tf1 = name, version, path, tf1
        self.signature_defs = defs
        self.signatures = signatures_of(defs)
        self.extras = read_extras(path, self.signatures)
        self._call = call  # (signature name, {alias: array}) -> {alias: array}
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
    def signature(self, name: str | None, api: str = "predict") -> Signature:
        return choose(self.signatures, name, api)

    def run(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of a signature, with each input converted to the dtype the signature declares."""
        import tensorflow as tf

        spec = self.signatures[signature]
        converted = {alias: value if spec.inputs[alias].is_string or value.dtype == spec.inputs[alias].dtype
                     else value.astype(spec.inputs[alias].dtype) for alias, value in inputs.items()}
        try:
            return self._call(signature, converted)
        except (tf.errors.InvalidArgumentError, ValueError, TypeError) as error:
            # The model refused the values (a shape its graph checks, a tf.Example it cannot parse): the caller's.
            raise invalid(_first_line(error)) from None

    def submit(self, signature: Signature, inputs: dict[str, np.ndarray]):
        check_inputs(signature, inputs, shapes=not self.tf1)
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


def function_caller(version_dir: str, signatures: dict[str, Signature]):
    """A TF2 SavedModel's signatures, as the functions ``tf.saved_model.load`` gives (a Keras export, a
    ``tf.saved_model.save`` module, this toolkit's exports)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(version_dir, tags=["serve"])
    functions = {name: loaded.signatures[name] for name in signatures if name in loaded.signatures}

    def call(signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        function = functions.get(signature)
        if function is None:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{signature}" not found.')
        tensors = {alias: tf.constant(value, tf.string if value.dtype == object else None)
                   for alias, value in inputs.items()}
        return {alias: value.numpy() for alias, value in function(**tensors).items()}

    call.loaded = loaded  # the functions' variables live on it
    return call


def session_caller(version_dir: str, defs):
    """A TF1 SavedModel run as TF Serving runs it: loaded into a session of its own graph (its main op and
    assets included), each signature fed and fetched by tensor name, with no shape check before the graph's
    own (``core.compat.run_session_unchecked``)."""
    import tensorflow as tf

    from core import compat

    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads())
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        tf.compat.v1.saved_model.loader.load(session, ["serve"], version_dir)
    tensors = {name: ({alias: graph.get_tensor_by_name(info.name) for alias, info in d.inputs.items()},
                      {alias: graph.get_tensor_by_name(info.name) for alias, info in d.outputs.items()})
               for name, d in defs.signature_def.items() if not name.startswith("__")}

    def call(signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds, fetches = tensors[signature]
        names = list(fetches)
        values = compat.run_session_unchecked(session, [fetches[n] for n in names],
                                              {feeds[alias]: value for alias, value in inputs.items()})
        return dict(zip(names, values))

    call.session = session
    return call


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
        try:
            defs, tf1 = read_saved_model(version_dir)
            call = session_caller(version_dir, defs) if tf1 else function_caller(version_dir, signatures_of(defs))
        except Exception as error:
            raise RuntimeError(f"Could not load SavedModel {version_dir!r}: {_first_line(error)}") from None
        servable = Servable(name, version, version_dir, call, defs, queue_factory, tf1=tf1)
        if settings.warmup:
            servable.warm_up()
        return servable

    return load
