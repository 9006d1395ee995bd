"""Training throughput of the zoo's ResNet-50 against keras.applications.ResNet50, as
a ratio measured in one run, and the FLOP/s each achieves against this machine's
measured float32 matrix-multiply peak.

    .venv/bin/python bench/bench_throughput.py --quick   # 64x64 inputs, a few rounds (~1 min on 2 cores)
    .venv/bin/python bench/bench_throughput.py --full    # 224x224, the ImageNet size

Both models get the same random batch, optimizer (SGD, momentum 0.9) and loss,
and are timed in interleaved rounds (A, B, A, B, ...), so load from other
processes falls on both; the ratio is the median over rounds of the per-round
ratios.  The zoo has no MobileNet: keras.applications.MobileNetV2 is timed in
the same rounds for scale, beside the zoo's ResNet-20 at the same input size,
and the table says so rather than pairing it with something it is not.  Each zoo
ResNet is also timed with Keras' own batch-norm layer in place of the zoo's
(which trains with TensorFlow's fused kernel where that is faster), the same
network and weights otherwise.

FLOPs per image are TensorFlow's profiler count for one forward pass (a
multiply-add is two FLOPs); a training step is counted as three forward
passes (forward, and two matrix products per layer backward), the usual
estimate.  The peak is the best of several float32 ``tf.matmul`` runs of
2048x2048 matrices.  Writes JSON (default bench/results/throughput_{quick,full}.json).
It compares; it asserts nothing.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import machine_info, parse_size  # noqa: E402

SETTINGS = {
    "quick": {"size": 64, "batch": 16, "rounds": 4, "steps": 2},
    "full": {"size": 224, "batch": 32, "rounds": 6, "steps": 3},
}


def builders(size: int, classes: int = 10) -> dict:
    import keras

    import zoo

    shape = (size, size, 3)
    return {
        "zoo resnet50": lambda: zoo.build("resnet50", input_shape=shape, num_classes=classes),
        "keras.applications.ResNet50": lambda: keras.applications.ResNet50(weights=None, input_shape=shape,
                                                                            classes=classes),
        "keras.applications.MobileNetV2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=shape,
                                                                                  classes=classes),
        "zoo resnet20": lambda: zoo.build("resnet20", input_shape=shape, num_classes=classes),
        KERAS_KERNEL.format("resnet50"): lambda: keras_batch_norm(zoo.build("resnet50", input_shape=shape,
                                                                            num_classes=classes)),
        KERAS_KERNEL.format("resnet20"): lambda: keras_batch_norm(zoo.build("resnet20", input_shape=shape,
                                                                            num_classes=classes)),
    }


KERAS_KERNEL = "zoo {}, Keras' batch-norm kernel"


def keras_batch_norm(model):
    """``model`` with each of the zoo's batch-norm layers (TensorFlow's fused kernel in training, where it pays)
    replaced by Keras' own, the same weights: what the zoo trained with before."""
    import keras

    def clone(layer):
        kind = keras.layers.BatchNormalization if isinstance(layer, keras.layers.BatchNormalization) else type(layer)
        return kind.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


PAIRS = [("zoo resnet50", "keras.applications.ResNet50"), ("zoo resnet20", "keras.applications.MobileNetV2"),
         ("zoo resnet50", KERAS_KERNEL.format("resnet50")), ("zoo resnet20", KERAS_KERNEL.format("resnet20"))]


def forward_flops(model, size: int) -> float:
    """FLOPs of one image's forward pass, from TensorFlow's profiler on the traced graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.profiler import model_analyzer, option_builder

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, size, size, 3), tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
    options = options.with_empty_output().build()
    return float(model_analyzer.profile(graph=graph, options=options).total_float_ops)


def matmul_peak(n: int = 2048, repeats: int = 8) -> float:
    """Best float32 matrix-multiply FLOP/s of several runs."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    step = tf.function(lambda a, b: tf.matmul(a, b))
    step(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def main(argv=None) -> int:
    _, mode, out = parse_size("throughput", __doc__, argv, quick="64x64, 4 rounds", full="224x224, 6 rounds")
    s = SETTINGS[mode]

    import keras
    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 1, (s["batch"], s["size"], s["size"], 3)).astype(np.float32))
    y = tf.constant(keras.utils.to_categorical(rng.integers(0, 10, s["batch"]), 10))
    models, flops = {}, {}
    for name, build in builders(s["size"]).items():
        model = build()
        flops[name] = forward_flops(model, s["size"])
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
        model.train_on_batch(x, y)  # traces the step
        models[name] = model
    peak = matmul_peak()

    per_round = {name: [] for name in models}
    for round_index in range(s["rounds"]):
        names = list(models) if round_index % 2 == 0 else list(reversed(models))
        for name in names:
            start = time.perf_counter()
            for _ in range(s["steps"]):
                models[name].train_on_batch(x, y)
            per_round[name].append(s["batch"] * s["steps"] / (time.perf_counter() - start))

    results = {}
    for name, rates in per_round.items():
        rate = statistics.median(rates)
        achieved = rate * 3 * flops[name]
        results[name] = {"images_per_second": rate, "per_round": rates, "forward_gflops_per_image": flops[name] / 1e9,
                         "parameters": int(models[name].count_params()), "achieved_gflops": achieved / 1e9,
                         "fraction_of_matmul_peak": achieved / peak}
    ratios = {f"{a} / {b}": statistics.median(ra / rb for ra, rb in zip(per_round[a], per_round[b]))
              for a, b in PAIRS}

    print(f"Training throughput at {s['size']}x{s['size']}x3, batch {s['batch']}, median of {s['rounds']} "
          f"interleaved rounds; float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"{'model':<32} {'params':>11} {'GFLOPs/img':>10} {'images/s':>9} {'GFLOP/s':>8} {'of peak':>8}")
    for name, r in results.items():
        print(f"{name:<32} {r['parameters']:>11,} {r['forward_gflops_per_image']:>10.3f} "
              f"{r['images_per_second']:>9.1f} {r['achieved_gflops']:>8.1f} {r['fraction_of_matmul_peak']:>8.0%}")
    for pair, ratio in ratios.items():
        print(f"  {pair}: {ratio:.2f}x")
    print("  (the zoo has no MobileNet; zoo resnet20 / MobileNetV2 compares a small zoo model with it, "
          "not like with like)")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"mode": mode, "settings": s, "machine": machine_info(), "matmul_peak_gflops": peak / 1e9,
                   "results": results, "ratios": ratios,
                   "note": "zoo has no MobileNet; MobileNetV2 timed beside zoo resnet20 for scale"}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
