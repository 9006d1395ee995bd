"""TF Serving's request and response formats: REST JSON (row and columnar) and gRPC TensorProtos.

REST (tensorflow.org/tfx/serving/api_rest): ``{"signature_name": ..., "instances": [...]}`` lists one
value per row (or one ``{input: value}`` object per row) and is answered ``{"predictions": [...]}``;
``{"inputs": ...}`` gives whole tensors and is answered ``{"outputs": ...}``.  With several outputs a
row is an object of them; with one, its bare value.
"""

from __future__ import annotations

import itertools

import numpy as np
import orjson

from server.errors import invalid

_PARSE_ERRORS = (ValueError, TypeError, OverflowError, RecursionError)



def parse_json(body: bytes) -> dict:
    # orjson: strict JSON, nesting capped at 1,024 levels, and about twice as fast as json on pixel arrays.
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise invalid(f"Malformed JSON: {str(error).splitlines()[0]}") from None
    if not isinstance(document, dict):
        raise invalid(f"The request body must be a JSON object, got {type(document).__name__}")
    return document


def _is_rectangular(value, shape: tuple[int, ...]) -> bool:
    """Whether nested lists have exactly ``shape`` down to the innermost lists (whose items are not looked at)."""
    level = [value]
    for depth, size in enumerate(shape):
        if not all(type(item) is list and len(item) == size for item in level):
            return False
        if depth < len(shape) - 1:
            level = list(itertools.chain.from_iterable(level))
    return True


def _as_float_array(value, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if isinstance(value, dict) and "b64" in value:
        raise invalid(f"{where}: b64 values are for DT_STRING inputs; images is DT_FLOAT")
    if shape is not None and type(value) is list and value and _is_rectangular(value, (len(value), *shape)):
        # The common case, twice as fast as np.asarray on nested lists: the shape is checked, the numbers are
        # read in one pass.  Anything odd inside falls through to np.asarray and its error.
        chain = itertools.chain.from_iterable
        flat = value
        for _ in shape:
            flat = chain(flat)
        try:
            return np.fromiter(flat, np.float32, len(value) * int(np.prod(shape))).reshape(len(value), *shape)
        except (TypeError, ValueError):
            pass
    try:
        array = np.asarray(value, dtype=np.float32)
    except _PARSE_ERRORS as error:
        raise invalid(f"{where}: expected numbers in a rectangular array ({str(error).splitlines()[0]})") from None
    return array


def _unwrap(value, input_name: str, where: str):
    """``{input_name: value}`` -> value; a bare value stays as it is."""
    if isinstance(value, dict):
        if set(value) != {input_name}:
            raise invalid(f"{where}: this model has one input, {input_name!r}; got keys {sorted(value)[:5]}")
        return value[input_name]
    return value


def parse_predict(document: dict, input_name: str, max_instances: int,
                  shape: tuple[int, ...] | None = None) -> tuple[str | None, np.ndarray, bool]:
    """(signature name, the input as float32, whether the columnar format was used).  ``shape``, the model's
    (H, W, C), lets a well-formed request take the fast path."""
    signature = document.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise invalid("signature_name must be a string")
    unknown = set(document) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise invalid(f"Unknown key(s) {sorted(unknown)[:5]}; a predict request has signature_name and "
                      "instances or inputs")
    if ("instances" in document) == ("inputs" in document):
        raise invalid('The request must have either "instances" (row format) or "inputs" (columnar format)')
    if "instances" in document:
        rows = document["instances"]
        if not isinstance(rows, list):
            raise invalid('"instances" must be a list, one entry per image')
        if len(rows) > max_instances:
            raise invalid(f"{len(rows)} instances in one request; the limit is {max_instances}")
        array = _as_float_array([_unwrap(row, input_name, "instances") for row in rows], "instances", shape)
        return signature, array, False
    array = _as_float_array(_unwrap(document["inputs"], input_name, "inputs"), "inputs", shape)
    if array.ndim >= 1 and len(array) > max_instances:
        raise invalid(f"{len(array)} images in one request; the limit is {max_instances}")
    return signature, array, True


def _jsonable(value: np.ndarray):
    if value.dtype.kind in "SO":
        flat = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.ravel()]
        return np.array(flat, dtype=object).reshape(value.shape).tolist()
    return value.tolist()


def format_predict(outputs: dict[str, np.ndarray], columnar: bool) -> dict:
    """``{"predictions": [...]}`` (row) or ``{"outputs": ...}`` (columnar), as TF Serving answers."""
    names = sorted(outputs)
    if columnar:
        if len(names) == 1:
            return {"outputs": _jsonable(outputs[names[0]])}
        return {"outputs": {name: _jsonable(outputs[name]) for name in names}}
    columns = {name: _jsonable(outputs[name]) for name in names}
    count = len(next(iter(columns.values()))) if columns else 0
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{name: columns[name][i] for name in names} for i in range(count)]}


# --- gRPC ----------------------------------------------------------------------------------------------

def from_tensor_proto(proto, where: str) -> np.ndarray:
    """A TensorProto as float32 (any real number type is accepted and converted)."""
    import tensorflow as tf

    try:
        array = tf.make_ndarray(proto)
    except Exception as error:  # malformed protos: wrong content length, unknown dtype
        raise invalid(f"{where}: not a valid tensor ({str(error).splitlines()[0] if str(error) else 'malformed'})") \
            from None
    if array.dtype.kind not in "fiu":
        raise invalid(f"{where}: expected DT_FLOAT (or another number type), got {array.dtype}")
    return array.astype(np.float32, copy=False)


def to_tensor_proto(value: np.ndarray):
    import tensorflow as tf

    return tf.make_tensor_proto(value)
