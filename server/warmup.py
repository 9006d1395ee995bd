"""TF Serving's model warm-up: ``assets.extra/tf_serving_warmup_requests``, a TFRecord file of
``PredictionLog`` records, replayed against a version before it takes requests (``--enable_model_warmup``),
so the first real caller does not pay for tracing and allocation."""

from __future__ import annotations

import numpy as np

from server.signatures import choose
from server.tensors import from_tensor_proto, serialized_examples

MAX_RECORDS = 1000  # TF Serving's limit on warm-up records


def replay(servable, path: str) -> int:
    """Runs each predict, classify and regress record of the file once; returns how many ran.  A record the
    version cannot answer fails its load, as in TF Serving: a broken warm-up file is a broken export."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    for raw in tf.data.TFRecordDataset(path).take(MAX_RECORDS):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw.numpy())
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            request = log.predict_log.request
            signature = choose(servable.signatures, request.model_spec.signature_name or None)
            inputs = {alias: from_tensor_proto(proto, signature.inputs[alias], alias)
                      for alias, proto in request.inputs.items()}
        elif kind in ("classify_log", "regress_log"):
            request = getattr(log, kind).request
            signature = choose(servable.signatures, request.model_spec.signature_name or None)
            inputs = {"inputs": np.array(serialized_examples(request.input), dtype=object)}
        else:
            raise ValueError(f"warm-up record {count + 1} is a {kind}, which warm-up does not replay")
        servable.run(signature.name, inputs)
        count += 1
    return count
