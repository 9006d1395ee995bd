"""One loaded version of one model: its signature, its batching queue and the call that runs it."""

from __future__ import annotations

import os

import numpy as np

from server.batching import Batcher, Unbatched
from server.errors import invalid
from exports.load import load_export

INPUT = "images"          # the one input of our exports' signature (exports.export)
SIGNATURE = "serving_default"


def signature_defs(version_dir: str):
    """The SavedModel's ``SignatureDefMap``, read from ``saved_model.pb`` as TF Serving reports it."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    from tensorflow_serving.apis import get_model_metadata_pb2

    defs = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in saved.meta_graphs[0].signature_def.items():
        defs.signature_def[name].CopyFrom(signature)
    return defs


class Servable:
    """A version ready to serve: ``predict`` queues rows for the model and returns a Future of its outputs."""

    def __init__(self, name: str, version: int, export, defs, queue_factory):
        self.name, self.version, self.export, self.signature_defs = name, version, export, defs
        self.input_shape = tuple(int(d) for d in export.input_shape)
        self.class_names = list(export.class_names)
        self.metadata = dict(export.metadata)
        self.output_names = sorted(defs.signature_def[SIGNATURE].outputs)
        self._queue = queue_factory(self)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """One call of the SavedModel's serving signature on a (N, H, W, C) float32 batch."""
        import tensorflow as tf

        outputs = self.export.signature(**{INPUT: tf.constant(images, tf.float32)})
        return {name: value.numpy() for name, value in outputs.items()}

    def check_signature(self, signature_name: str | None) -> str:
        name = signature_name or SIGNATURE
        if name not in self.signature_defs.signature_def or name.startswith("__"):
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        return name

    def check_input(self, images: np.ndarray) -> np.ndarray:
        expected = (-1, *self.input_shape)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise invalid(f"{INPUT}: expected shape {list(expected)} (N images of "
                          f"{'x'.join(map(str, self.input_shape))}), got {list(images.shape)}")
        if len(images) == 0:
            raise invalid(f"{INPUT}: no images in the request")
        return images

    def predict(self, images: np.ndarray):
        return self._queue.submit(self.check_input(images))

    def close(self) -> None:
        self._queue.close()


def loader(settings, executor, on_batch=None):
    """A function (name, version folder, version) -> a warmed-up Servable, for the Manager."""

    def queue_factory(servable):
        count = (lambda n: on_batch(servable.name, n)) if on_batch else None
        if not settings.batching:
            return Unbatched(servable.run, executor=executor, on_batch=count)
        return Batcher(servable.run, max_batch_size=settings.max_batch_size,
                       timeout_s=settings.batch_timeout_ms / 1000.0, max_queued_rows=settings.max_queued_rows,
                       on_batch=count, name=f"{servable.name}/{servable.version}",
                       threads=settings.batch_thread_count)

    def load(name: str, version_dir: str, version: int) -> Servable:
        export = load_export(version_dir)
        servable = Servable(name, version, export, signature_defs(version_dir), queue_factory)
        servable.run(np.zeros((1, *servable.input_shape), np.float32))  # warm-up: the first request pays nothing
        return servable

    return load
