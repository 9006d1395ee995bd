"""TF Serving's request and response formats: REST JSON (row and columnar) and gRPC TensorProtos.

REST (tensorflow.org/tfx/serving/api_rest): ``{"signature_name": ..., "instances": [...]}`` lists one
value per row (or one ``{input: value}`` object per row) and is answered ``{"predictions": [...]}``;
``{"inputs": ...}`` gives whole tensors and is answered ``{"outputs": ...}``.  With several outputs a
row is an object of them; with one, its bare value.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import struct

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


# --- the fast path: a body that is one rectangular array of numbers ------------------------------------
#
# An application sending pixels sends ``{"instances": [[[[r, g, b], ...], ...], ...]}``: thousands of numbers
# whose nested lists orjson builds, and checking and flattening them costs twice the parse.  Instead the
# body's *skeleton* (the brackets and commas left when numbers and whitespace are deleted) is compared with
# the one an (N, H, W, C) array must have; no number may touch a bracket from outside (``4[`` or ``]4``);
# and the numbers, brackets made spaces, are parsed by orjson as one flat list of N*H*W*C, which also
# checks that each place holds exactly one JSON number.  Anything else (other keys, objects
# per row, another shape, a bad number) takes the general path below and gets its answer or its error there.

_BODY = re.compile(rb'\A\s*\{\s*"(instances|inputs)"\s*:\s*(?=\[)')
_NUMBER_CHARS = b"0123456789.eE+-"
_NUMBERS_AS_ZERO = bytes.maketrans(_NUMBER_CHARS, b"0" * len(_NUMBER_CHARS))
_BRACKETS_AS_SPACE = bytes.maketrans(b"[]", b"  ")


@functools.lru_cache(maxsize=32)
def _row_skeleton(shape: tuple[int, ...]) -> bytes:
    """The skeleton of one (H, W, C) row: ``[[[,,],[,,]],...]``."""
    skeleton = b""
    for size in reversed(shape):
        skeleton = b"[" + b",".join([skeleton] * size) + b"]"
    return skeleton


def parse_pixels(body: bytes, shape: tuple[int, ...], max_instances: int) -> tuple[np.ndarray, bool] | None:
    """(float32 array of (N, *shape), whether columnar) when the body is exactly ``{"instances": ARRAY}`` or
    ``{"inputs": ARRAY}`` with ARRAY an N x shape array of JSON numbers, 1 <= N <= max_instances; else None."""
    head = _BODY.match(body)
    if head is None:
        return None
    end = body.rstrip()
    if not end.endswith(b"}"):
        return None
    array = end[head.end():-1].rstrip()
    compact = array.translate(_NUMBERS_AS_ZERO, b" \t\n\r")  # every number character a 0, no whitespace
    row = _row_skeleton(tuple(shape))
    skeleton = compact.translate(None, b"0")
    rows, extra = divmod(len(skeleton) - 1, len(row) + 1)  # "[" + N rows joined by "," + "]"
    if extra or not 1 <= rows <= max_instances or skeleton != b"[" + b",".join([row] * rows) + b"]":
        return None
    if b"0[" in compact or b"]0" in compact:
        return None
    try:
        numbers = orjson.loads(b"[" + array.translate(_BRACKETS_AS_SPACE) + b"]")
        if len(numbers) != rows * math.prod(shape):
            return None
        # struct packs Python numbers as float32 twice as fast as np.fromiter, rounding as it does; a number
        # past float32's range is an OverflowError here and left to the general path.
        flat = np.frombuffer(struct.pack(f"{len(numbers)}f", *numbers), np.float32)
    except (orjson.JSONDecodeError, struct.error, TypeError, ValueError, OverflowError):
        return None
    return flat.reshape(rows, *shape), head.group(1) == b"inputs"


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


def parse_predict_body(body: bytes, input_name: str, max_instances: int,
                       shape: tuple[int, ...]) -> tuple[str | None, np.ndarray, bool]:
    """``parse_predict`` of a request body: the fast path for a bare array of pixels, else the general one."""
    fast = parse_pixels(body, shape, max_instances)
    if fast is not None:
        return None, fast[0], fast[1]
    return parse_predict(parse_json(body), input_name, max_instances, shape)


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
