"""A SavedModel's signatures as TF Serving reads them: names, dtypes, shapes and method, from ``saved_model.pb``.

A servable is its SignatureDefs, not an image classifier: every request is checked against the signature it
names (input aliases, dtypes, known dimensions) before it reaches TensorFlow, and the REST and gRPC parsers
convert JSON and TensorProtos to the dtype each input declares.  Nothing here loads the model.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from server.errors import ServingError, invalid

DEFAULT_SIGNATURE = "serving_default"
PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
SERVE_TAG = "serve"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its alias, dtype and shape (``None`` for an unknown rank, ``-1``
    for an unknown dimension)."""
    alias: str
    dtype_name: str             # "DT_FLOAT", as TF Serving words it in errors
    dtype: np.dtype             # numpy's; ``object`` holds DT_STRING's bytes
    shape: tuple[int, ...] | None

    @property
    def is_string(self) -> bool:
        return self.dtype_name == "DT_STRING"

    def describe(self) -> str:
        dims = "unknown rank" if self.shape is None else "[" + ",".join(map(str, self.shape)) + "]"
        return f"{self.alias} ({self.dtype_name} {dims})"

    def check(self, value: np.ndarray) -> None:
        """INVALID_ARGUMENT when ``value`` cannot be this tensor: another rank or a known dimension differs."""
        if self.shape is None:
            return
        if value.ndim != len(self.shape) or any(want not in (-1, got) for want, got in zip(self.shape, value.shape)):
            raise invalid(f"{self.alias}: expected shape {list(self.shape)} (-1: any size), got {list(value.shape)}")


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    method: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @property
    def batchable(self) -> bool:
        """Whether requests can be merged along the first dimension: every input and output declares it
        unknown (TF Serving's batching needs the same)."""
        return all(t.shape is not None and len(t.shape) >= 1 and t.shape[0] == -1
                   for t in (*self.inputs.values(), *self.outputs.values()))

    def single_image_input(self) -> TensorSpec | None:
        """The input of a signature whose one input is a batch of fully sized float arrays (an image model):
        requests to it may take the REST parser's fast path."""
        if len(self.inputs) != 1:
            return None
        spec = next(iter(self.inputs.values()))
        if spec.dtype.kind != "f" or spec.shape is None or len(spec.shape) < 2 or spec.shape[0] != -1 \
                or min(spec.shape[1:]) < 1:
            return None
        return spec


def _spec(alias: str, info) -> TensorSpec:
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2

    dtype = tf.dtypes.as_dtype(info.dtype)
    numpy_dtype = np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(alias, types_pb2.DataType.Name(info.dtype), numpy_dtype, shape)


def read_signature_defs(version_dir: str):
    """The ``SignatureDefMap`` of the SavedModel's ``serve`` graph, as TF Serving's GetModelMetadata gives it."""
    return read_saved_model(version_dir)[0]


def read_saved_model(version_dir: str):
    """(the ``SignatureDefMap``, whether it is a TF1 SavedModel: a graph with no TF2 object graph)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    graphs = [g for g in saved.meta_graphs if SERVE_TAG in g.meta_info_def.tags] or list(saved.meta_graphs[:1])
    if not graphs:
        raise ValueError(f"{version_dir}: saved_model.pb has no MetaGraph")
    defs = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in graphs[0].signature_def.items():
        defs.signature_def[name].CopyFrom(signature)
    return defs, not graphs[0].object_graph_def.nodes


def signatures_of(defs) -> dict[str, Signature]:
    """The callable signatures (TF's internal ``__saved_model_init_op`` is left out)."""
    return {name: Signature(name, d.method_name or PREDICT,
                            {k: _spec(k, v) for k, v in sorted(d.inputs.items())},
                            {k: _spec(k, v) for k, v in sorted(d.outputs.items())})
            for name, d in defs.signature_def.items() if not name.startswith("__")}


# An unknown signature as TF Serving words it, by where the request came in: gRPC Predict, REST, and the
# tf.Example calls (Classify, Regress, MultiInference).
UNKNOWN_SIGNATURE = {
    "predict": ("FAILED_PRECONDITION", 'Serving signature key "{}" not found.'),
    "rest": ("INVALID_ARGUMENT", 'Serving signature name: "{}" not found in signature def'),
    "examples": ("INVALID_ARGUMENT", "No signature was found with the name: {}"),
}


def choose(signatures: dict[str, Signature], name: str | None, api: str = "predict") -> Signature:
    """The signature a request names (``serving_default`` when it names none), or TF Serving's error."""
    wanted = name or DEFAULT_SIGNATURE
    if wanted not in signatures:
        code, message = UNKNOWN_SIGNATURE[api]
        raise ServingError(code, message.format(wanted))
    return signatures[wanted]


def check_method(signature: Signature, method: str, what: str) -> None:
    if signature.method != method:
        raise invalid(f"Expected {what} signature method_name to be {method}. Was: {signature.method}")


def input_spec(signature: Signature, alias: str, where: str = "") -> TensorSpec:
    """The input ``alias`` of the signature, or TF Serving's INVALID_ARGUMENT for an alias it does not have
    (``where`` prefixes the REST body's part that named it)."""
    try:
        return signature.inputs[alias]
    except KeyError:
        raise invalid(f"{where + ': ' if where else ''}input tensor alias not found in signature: {alias}. Inputs "
                      f"expected to be in the set {{{','.join(signature.inputs)}}}.") from None


def check_inputs(signature: Signature, inputs: dict[str, np.ndarray], shapes: bool = True) -> None:
    """TF Serving's checks of a request's input aliases against the signature's; then, with ``shapes``, each
    tensor's shape (TF Serving leaves that to the graph: a TF1 graph takes a ``[3]`` feed for a ``[-1, 1]``
    input, and a TF2 function refuses it, less readably than this)."""
    for alias in sorted(inputs):
        input_spec(signature, alias)
    missing = sorted(set(signature.inputs) - set(inputs))
    if missing:
        raise invalid(f"Request inputs do not match required inputs for model `{signature.name}`. Send extra: {{}}. "
                      f"Missing but required: {{{','.join(missing)}}}.")
    if shapes:
        for alias, value in inputs.items():
            signature.inputs[alias].check(value)
