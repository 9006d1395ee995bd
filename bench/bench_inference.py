"""Inference from an exported SavedModel against the in-memory Keras model:
batch-1 latency and batch-64 throughput, as ratios measured in one run.

    .venv/bin/python bench/bench_inference.py --quick   # LeNet-5 and ResNet-20, ~30 s
    .venv/bin/python bench/bench_inference.py --full    # more calls per measurement

Each model is assembled as ``train.py`` does (raw pixels in, preprocessing in
the graph), exported with ``exports.export.export_savedmodel`` and loaded back
with ``tf.saved_model.load`` alone, the way a TensorFlow-only consumer would.
Three ways to call it are timed, alternating in rounds:

* the export's ``serving_default`` signature (probabilities, class ids, names);
* ``model(x, training=False)``, the Keras model called eagerly;
* ``model.predict_on_batch(x)``, Keras' compiled predict step.

Batch-1 figures are the median (p50) and 90th percentile latency of single
calls; batch-64 figures are images per second.  Weights are random: they do
not change the time.  Writes JSON (default bench/results/inference_{quick,full}.json).
It compares; it asserts nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import machine_info, parse_size  # noqa: E402

SETTINGS = {"quick": {"rounds": 5, "single_calls": 40, "batch_calls": 4},
            "full": {"rounds": 10, "single_calls": 200, "batch_calls": 10}}
MODELS = {"lenet5_modern": (28, 28, 1), "resnet20": (32, 32, 3)}
BATCH = 64


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv=None) -> int:
    _, mode, out = parse_size("inference", __doc__, argv, quick="5 rounds", full="10 rounds, more calls each")
    s = SETTINGS[mode]

    import keras
    import numpy as np
    import tensorflow as tf

    import zoo
    from exports.export import export_savedmodel
    from core.model import assemble, inference_model, preprocessing_layer

    tf.get_logger().setLevel("ERROR")
    keras.utils.set_random_seed(0)
    work = tempfile.mkdtemp(prefix="bench-inference-")
    results = {}
    try:
        for name, shape in MODELS.items():
            network = zoo.build(name, input_shape=shape, num_classes=10)
            model = inference_model(assemble(network, shape, preprocessing=preprocessing_layer("rescale")))
            path = export_savedmodel(model, work, name, class_names=[str(i) for i in range(10)])
            signature = tf.saved_model.load(path).signatures["serving_default"]
            rng = np.random.default_rng(0)
            one = rng.uniform(0, 255, (1, *shape)).astype(np.float32)
            batch = rng.uniform(0, 255, (BATCH, *shape)).astype(np.float32)
            callers = {
                "SavedModel signature": lambda x: signature(images=tf.constant(x))["probabilities"].numpy(),
                "Keras model(x)": lambda x: model(x, training=False).numpy(),
                "Keras predict_on_batch": lambda x: model.predict_on_batch(x),
            }
            for call in callers.values():  # traces and warms every path
                call(one), call(batch)
            np.testing.assert_allclose(callers["SavedModel signature"](batch), callers["Keras model(x)"](batch),
                                       atol=1e-5)
            latency = {k: [] for k in callers}
            throughput = {k: [] for k in callers}
            for round_index in range(s["rounds"]):
                order = list(callers) if round_index % 2 == 0 else list(reversed(callers))
                for key in order:
                    call = callers[key]
                    for _ in range(s["single_calls"]):
                        start = time.perf_counter()
                        call(one)
                        latency[key].append(time.perf_counter() - start)
                    start = time.perf_counter()
                    for _ in range(s["batch_calls"]):
                        call(batch)
                    throughput[key].append(BATCH * s["batch_calls"] / (time.perf_counter() - start))
            results[name] = {key: {"p50_ms": 1e3 * statistics.median(latency[key]),
                                   "p90_ms": 1e3 * percentile(latency[key], 0.9),
                                   "batch64_images_per_second": statistics.median(throughput[key])}
                             for key in callers}
            base = results[name]["SavedModel signature"]
            for key in callers:
                r = results[name][key]
                r["p50_vs_savedmodel"] = r["p50_ms"] / base["p50_ms"]
                r["throughput_vs_savedmodel"] = r["batch64_images_per_second"] / base["batch64_images_per_second"]
            keras.backend.clear_session()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"Inference on this machine, median over {s['rounds']} alternating rounds (random weights)")
    print(f"{'model':<14} {'caller':<24} {'batch-1 p50 ms':>14} {'p90 ms':>7} {'batch-64 img/s':>15} "
          f"{'p50 vs export':>14}")
    for name, by_caller in results.items():
        for key, r in by_caller.items():
            print(f"{name:<14} {key:<24} {r['p50_ms']:>14.2f} {r['p90_ms']:>7.2f} "
                  f"{r['batch64_images_per_second']:>15,.0f} {r['p50_vs_savedmodel']:>13.2f}x")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"mode": mode, "settings": s, "machine": machine_info(), "results": results}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
