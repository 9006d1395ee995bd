"""TF Serving's request and response formats: REST JSON (row and columnar) and gRPC TensorProtos.

REST (tensorflow.org/tfx/serving/api_rest): ``{"signature_name": ..., "instances": [...]}`` lists one
value per row (or one ``{input: value}`` object per row) and is answered ``{"predictions": [...]}``;
``{"inputs": ...}`` gives whole tensors and is answered ``{"outputs": ...}``.  With several outputs a
row is an object of them; with one, its bare value.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import math
import re
import struct

import numpy as np
import orjson

from server.errors import invalid
from server.signatures import DEFAULT_SIGNATURE, Signature, TensorSpec, choose, input_spec

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


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _bytes_of(value, where: str):
    """A JSON string (UTF-8) or ``{"b64": ...}`` as bytes; nested lists stay lists."""
    if type(value) is list:
        return [_bytes_of(item, where) for item in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"{where}: the b64 value is not base64") from None
    raise invalid(f"{where}: expected strings or {{\"b64\": ...}} for a DT_STRING input, got "
                  f"{type(value).__name__}")


def to_array(value, spec: TensorSpec, where: str) -> np.ndarray:
    """A JSON value as the tensor ``spec`` declares: numbers, booleans, or strings and b64 for DT_STRING."""
    if spec.is_string:
        try:
            array = np.array(_bytes_of(value, where), dtype=object)
        except ValueError as error:
            raise invalid(f"{where}: expected strings in a rectangular array ({str(error).splitlines()[0]})") \
                from None
        return array
    if _is_b64(value) or (type(value) is list and value and _is_b64(value[0])):
        raise invalid(f"{where}: b64 values are for DT_STRING inputs; {spec.alias} is {spec.dtype_name}")
    if spec.dtype.kind == "f":
        shape = spec.shape[1:] if spec.shape is not None and -1 not in spec.shape[1:] else None
        array = _as_float_array(value, where, shape)
        return array if array.dtype == spec.dtype else array.astype(spec.dtype)
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf" or (spec.dtype.kind != "b" and array.dtype.kind == "b"):
            raise TypeError(f"{array.dtype.kind!r} values")
        return array.astype(spec.dtype)
    except _PARSE_ERRORS as error:
        raise invalid(f"{where}: expected {spec.dtype_name} values in a rectangular array "
                      f"({str(error).splitlines()[0]})") from None


def _only_input(signature: Signature, where: str) -> TensorSpec:
    if len(signature.inputs) != 1:
        raise invalid(f"{where}: signature {signature.name} has {len(signature.inputs)} inputs "
                      f"({', '.join(signature.inputs)}); name each one in an object")
    return next(iter(signature.inputs.values()))


def check_document(document: dict) -> str | None:
    """The predict document's keys checked; its signature_name."""
    signature = document.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise invalid("signature_name must be a string")
    unknown = set(document) - {"signature_name", "instances", "inputs"}
    if unknown:
        raise invalid(f"Unknown key(s) {sorted(unknown)[:5]}; a predict request has signature_name and "
                      "instances or inputs")
    if ("instances" in document) == ("inputs" in document):
        raise invalid('The request must have either "instances" (row format) or "inputs" (columnar format)')
    return signature


def parse_predict(document: dict, signature: Signature, max_instances: int) -> tuple[dict[str, np.ndarray], bool]:
    """(the inputs, each as its signature declares, and whether the columnar format was used)."""
    check_document(document)
    if "instances" in document:
        rows = document["instances"]
        if not isinstance(rows, list):
            raise invalid('"instances" must be a list, one entry per row')
        if len(rows) > max_instances:
            raise invalid(f"{len(rows)} instances in one request; the limit is {max_instances}")
        if rows and all(isinstance(row, dict) and not _is_b64(row) for row in rows):
            names = list(rows[0])
            if any(list(row) != names and set(row) != set(names) for row in rows):
                raise invalid("instances: every instance must name the same inputs")
            return {name: to_array([row[name] for row in rows], input_spec(signature, name, "instances"), "instances")
                    for name in names}, False
        spec = _only_input(signature, "instances")
        return {spec.alias: to_array(rows, spec, "instances")}, False
    value = document["inputs"]
    if isinstance(value, dict) and not _is_b64(value):
        inputs = {name: to_array(part, input_spec(signature, name, "inputs"), "inputs") for name, part in value.items()}
    else:
        spec = _only_input(signature, "inputs")
        inputs = {spec.alias: to_array(value, spec, "inputs")}
    check_row_limit(inputs, max_instances)
    return inputs, True


def check_row_limit(inputs: dict[str, np.ndarray], max_instances: int) -> None:
    """INVALID_ARGUMENT when an input holds more rows than one request may (--max-instances)."""
    for array in inputs.values():
        if array.ndim >= 1 and len(array) > max_instances:
            raise invalid(f"{len(array)} rows in one request; the limit is {max_instances}")


def parse_predict_body(body: bytes, signatures: dict[str, Signature], max_instances: int
                       ) -> tuple[Signature, dict[str, np.ndarray], bool]:
    """(the signature asked for, its inputs, columnar?) of a request body: the fast path for a bare array of
    pixels to a default signature of one image input, else the general one."""
    default = signatures.get(DEFAULT_SIGNATURE)
    image = default.single_image_input() if default is not None else None
    if image is not None:
        fast = parse_pixels(body, image.shape[1:], max_instances)
        if fast is not None:
            array = fast[0] if image.dtype == np.float32 else fast[0].astype(image.dtype)
            return default, {image.alias: array}, fast[1]
    document = parse_json(body)
    signature = choose(signatures, check_document(document), "rest")
    inputs, columnar = parse_predict(document, signature, max_instances)
    return signature, inputs, columnar


def _jsonable(name: str, value: np.ndarray):
    if value.dtype.kind in "SO":
        # TF Serving's rule: an output whose alias ends in _bytes is base64; other strings are text.
        if name.endswith("_bytes"):
            convert = lambda v: {"b64": base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode()}  # noqa: E731
        else:
            convert = lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)  # noqa: E731
        return np.array([convert(v) for v in value.ravel()], dtype=object).reshape(value.shape).tolist()
    return value.tolist()


def format_predict(outputs: dict[str, np.ndarray], columnar: bool) -> dict:
    """``{"predictions": [...]}`` (row) or ``{"outputs": ...}`` (columnar), as TF Serving answers."""
    names = sorted(outputs)
    if columnar:
        if len(names) == 1:
            return {"outputs": _jsonable(names[0], outputs[names[0]])}
        return {"outputs": {name: _jsonable(name, outputs[name]) for name in names}}
    columns = {name: _jsonable(name, outputs[name]) for name in names}
    count = len(next(iter(columns.values()))) if columns else 0
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{name: columns[name][i] for name in names} for i in range(count)]}


# --- tf.Example in JSON (REST :classify and :regress) -----------------------------------------------------

def example_from_json(features, where: str):
    """One tf.Example from ``{"name": value or [values]}``, typed as TF Serving types JSON: strings and b64 are
    bytes_list, a list holding any number with a fraction or exponent is float_list, whole numbers int64_list."""
    from tensorflow.core.example import example_pb2

    if not isinstance(features, dict):
        raise invalid(f"{where}: an example must be a JSON object of features, got {type(features).__name__}")
    example = example_pb2.Example()
    for name, value in features.items():
        values = value if type(value) is list else [value]
        feature = example.features.feature[name]
        if all(isinstance(v, str) or _is_b64(v) for v in values):
            feature.bytes_list.value.extend(_bytes_of(values, f"{where}.{name}"))
        elif all(type(v) is int for v in values):
            try:
                feature.int64_list.value.extend(values)
            except ValueError:
                raise invalid(f"{where}.{name}: integer out of int64's range") from None
        elif all(type(v) in (int, float) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise invalid(f"{where}.{name}: a feature holds numbers or strings, all of one kind; got {value!r:.60}")
    return example


def parse_examples(document: dict, max_instances: int) -> tuple[str | None, list[bytes]]:
    """(signature_name, serialized tf.Examples) of a REST classify or regress body: ``{"signature_name": ...,
    "context": {...}, "examples": [{...}, ...]}``; the context's features are in every example."""
    unknown = set(document) - {"signature_name", "context", "examples"}
    if unknown:
        raise invalid(f"Unknown key(s) {sorted(unknown)[:5]}; a classify or regress request has signature_name, "
                      "context and examples")
    signature = document.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise invalid("signature_name must be a string")
    examples = document.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid('"examples" must be a non-empty list of tf.Examples as JSON objects')
    if len(examples) > max_instances:
        raise invalid(f"{len(examples)} examples in one request; the limit is {max_instances}")
    context = example_from_json(document["context"], "context").SerializeToString() if "context" in document else b""
    # Two serialized protos concatenated parse as one merged message: the example's features win.
    return signature, [context + example_from_json(e, f"examples[{i}]").SerializeToString()
                       for i, e in enumerate(examples)]


def serialized_examples(input_proto) -> list[bytes]:
    """The serialized tf.Examples of a gRPC ``tensorflow.serving.Input`` (a list, or a list with a context)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        context = input_proto.example_list_with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in input_proto.example_list_with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid("Input is empty.")
    return examples


# --- gRPC ----------------------------------------------------------------------------------------------

def from_tensor_proto(proto, spec: TensorSpec, where: str) -> np.ndarray:
    """A TensorProto as the dtype ``spec`` declares; numbers convert among themselves, strings stay bytes."""
    import tensorflow as tf

    try:
        array = tf.make_ndarray(proto)
    except Exception as error:  # malformed protos: wrong content length, unknown dtype
        raise invalid(f"{where}: not a valid tensor ({str(error).splitlines()[0] if str(error) else 'malformed'})") \
            from None
    if spec.is_string != (array.dtype.kind in "SOU"):
        got = "DT_STRING" if array.dtype.kind in "SOU" else f"DT_{array.dtype.name.upper()}"
        raise invalid(f"{where}: expects {spec.dtype_name} but {got} is provided")
    if spec.is_string:
        return array.astype(object)
    return array if array.dtype == spec.dtype else array.astype(spec.dtype)


# numpy dtype kind and size -> the TensorProto field TF Serving fills (its responses use typed fields, as
# tensorflow::Tensor::AsProtoField writes them, and clients such as TF Serving's own test read ``float_val``).
_TYPED_FIELDS = {np.dtype(np.float32): "float_val", np.dtype(np.float64): "double_val",
                 np.dtype(np.int32): "int_val", np.dtype(np.int16): "int_val", np.dtype(np.int8): "int_val",
                 np.dtype(np.uint8): "int_val", np.dtype(np.uint16): "int_val", np.dtype(np.int64): "int64_val",
                 np.dtype(np.uint32): "uint32_val", np.dtype(np.uint64): "uint64_val", np.dtype(np.bool_): "bool_val"}


def to_tensor_proto(value: np.ndarray):
    import tensorflow as tf

    value = np.asarray(value)
    field = _TYPED_FIELDS.get(value.dtype)
    if field is None:  # strings, halves, complex: TensorFlow's own conversion
        return tf.make_tensor_proto(value)
    proto = tf.make_tensor_proto(np.zeros((0,), value.dtype))
    proto.tensor_shape.Clear()
    for size in value.shape:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, field).extend(value.ravel().tolist())
    return proto
