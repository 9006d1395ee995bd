"""Benchmark of the augmentation package (a benchmark, not a test: it asserts
nothing about time).

(a) Training throughput of the CIFAR ResNet-20 (``zoo.build("resnet20")``) on
    32x32x3 images, batch 128, with no augmentation and with each policy, the
    augmentation running inside the training step as ``core.model``
    assembles it.  Configurations are timed in many short interleaved rounds
    (in a rotating order), so load from other processes spreads over all of
    them instead of biasing one.  A policy's cost is the median over rounds
    of its step time relative to the no-augmentation step of the same round,
    minus one; the augmentation layer alone is also timed, a less noisy view
    of the same cost on a shared machine.
(b) Throughput of our batched layers against a per-image NumPy/PIL
    implementation of the same operations, as a ratio.

Images are Fashion-MNIST resized to 32x32 and repeated to three channels
(random pixels when it is not on disk); nothing is downloaded.

    .venv/bin/python bench/bench_augment.py            # --quick, a minute or two
    .venv/bin/python bench/bench_augment.py --full --json bench/results/augment_full.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from machine import machine_info  # noqa: E402
from PIL import Image  # noqa: E402

import augment  # noqa: E402
from augment.reference import pil_op  # noqa: E402
import zoo  # noqa: E402
from core.model import assemble  # noqa: E402

SHAPE = (32, 32, 3)
# The "before" reference: Keras' geometric layers stacked, as train.py used to.
REFERENCE = "flip+translate+rotate"
SETTINGS = {
    "quick": {"warmup": 3, "rounds": 10, "steps": 2, "layer_batches": 10},
    "full": {"warmup": 5, "rounds": 30, "steps": 3, "layer_batches": 40},
}


# ---------------------------------------------------------------- data

def cifar_shaped(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, source): Fashion-MNIST made 32x32x3, else random pixels."""
    try:
        import imagesets

        images, labels = imagesets.load("fashion_mnist").arrays["train"]
        images = tf.image.resize(images[:count].astype(np.float32), SHAPE[:2]).numpy()
        images = np.repeat(np.clip(np.round(images), 0, 255), 3, axis=-1)
        return images.astype(np.float32), labels[:count].astype(np.int32), "fashion_mnist 28x28 -> 32x32x3"
    except Exception as error:  # any loader failure: the benchmark still runs
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, size=(count, *SHAPE)).astype(np.float32)
        return images, rng.integers(0, 10, size=count).astype(np.int32), f"random pixels ({error})"


# ---------------------------------------------------------------- (a) training step

def training_model(spec: str, model_name: str) -> keras.Model:
    network = zoo.build(model_name, input_shape=SHAPE, num_classes=10)
    augmentation = augment.policy(spec, input_shape=SHAPE, seed=0)
    model = assemble(network, SHAPE, preprocessing=keras.layers.Rescaling(1 / 255.0, name="preprocessing"),
                     augmentation=augmentation)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
    return model


def time_steps(model, batches, steps: int) -> float:
    """Seconds per training step over ``steps`` steps."""
    start = time.perf_counter()
    for step in range(steps):
        images, labels = batches[step % len(batches)]
        model.train_on_batch(images, labels)
    return (time.perf_counter() - start) / steps


def time_layer(layer, batch, repeats: int) -> float:
    """Median seconds of one training-mode call of ``layer`` on ``batch``."""
    call = tf.function(lambda x: layer(x, training=True))
    call(batch).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(batch).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_training(specs, model_name, batch_size, settings, images, labels):
    batches = [(tf.constant(images[i:i + batch_size]), tf.constant(labels[i:i + batch_size]))
               for i in range(0, len(images) - batch_size + 1, batch_size)]
    models = {}
    for spec in specs:
        print(f"  building {spec} ...", flush=True)
        models[spec] = training_model(spec, model_name)
        time_steps(models[spec], batches, settings["warmup"])
    rounds = {spec: [] for spec in specs}
    for index in range(settings["rounds"]):
        order = specs[index % len(specs):] + specs[:index % len(specs)]
        for spec in order:
            rounds[spec].append(time_steps(models[spec], batches, settings["steps"]))
        if (index + 1) % 5 == 0 or index + 1 == settings["rounds"]:
            print(f"  round {index + 1}/{settings['rounds']} done", flush=True)

    base = statistics.median(rounds["none"])
    results = []
    for spec in specs:
        step = statistics.median(rounds[spec])
        # Paired with the same round's 'none' step, so slow drifts in machine load cancel.
        relative = statistics.median(t / b for t, b in zip(rounds[spec], rounds["none"]))
        layer = models[spec].get_layer("augmentation") if spec != "none" else None
        alone = time_layer(layer, batches[0][0], 10 * settings["layer_batches"] // 4) if layer else 0.0
        results.append({
            "policy": spec,
            "layers": [l.name for l in layer.layers] if layer else [],
            "step_ms": 1000 * step,
            "step_ms_min": 1000 * min(rounds[spec]),
            "images_per_s": batch_size / step,
            "cost_pct": 100 * (relative - 1.0),
            # Load from other processes only ever adds time, so best-of-rounds is a second view.
            "cost_pct_best": 100 * (min(rounds[spec]) / min(rounds["none"]) - 1.0),
            "layer_ms": 1000 * alone,
            "layer_pct": 100 * alone / base,
            "rounds_ms": [1000 * t for t in rounds[spec]],
        })
    return results


# ---------------------------------------------------------------- (b) per-image reference

def np_standard(batch, rng, pad=4):
    out = np.empty_like(batch)
    height, width = batch.shape[1:3]
    for i, image in enumerate(batch):
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
        top, left = rng.integers(0, 2 * pad + 1, size=2)
        crop = padded[top:top + height, left:left + width]
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def np_erasing(batch, rng, probability=0.5, area=(0.02, 0.4), aspect=(0.3, 1 / 0.3)):
    out = batch.copy()
    height, width = batch.shape[1:3]
    for image in out:
        if rng.random() >= probability:
            continue
        target = rng.uniform(*area) * height * width
        ratio = np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1])))
        box_h = int(np.clip(round(np.sqrt(target * ratio)), 1, height))
        box_w = int(np.clip(round(np.sqrt(target / ratio)), 1, width))
        top, left = rng.integers(0, height - box_h + 1), rng.integers(0, width - box_w + 1)
        image[top:top + box_h, left:left + box_w] = rng.uniform(0, 255, size=(box_h, box_w, image.shape[-1]))
    return out


def np_pca(batch, rng, std=0.1):
    values, vectors = np.asarray(augment.layers.IMAGENET_EIGENVALUES), np.asarray(augment.layers.IMAGENET_EIGENVECTORS)
    out = np.empty_like(batch)
    for i, image in enumerate(batch):
        shift = 255.0 * vectors @ (rng.normal(0.0, std, size=3) * values)
        out[i] = np.clip(image + shift, 0, 255)
    return out




def pil_randaugment(batch, rng, num_ops=2, level=9.0):
    """Per-image PIL RandAugment, the way torchvision/timm pipelines run it."""
    out = np.empty_like(batch)
    names = augment.randaugment.OPS
    for i, image in enumerate(batch):
        picture = Image.fromarray(image.astype(np.uint8))
        for name in rng.choice(names, size=num_ops):
            picture = pil_op(picture, name, level, rng.choice((-1.0, 1.0)))
        out[i] = np.asarray(picture, dtype=np.float32)
    return out


def time_numpy(function, batch, repeats: int) -> float:
    rng = np.random.default_rng(0)
    function(batch, rng)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(batch, rng)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_layers(batch, settings):
    repeats = settings["layer_batches"]
    cases = [
        ("standard (pad 4 + crop + flip)", augment.policy("standard", input_shape=SHAPE, seed=0), np_standard),
        ("random erasing p=0.5", augment.RandomErasing(seed=0), np_erasing),
        ("PCA colour jitter", augment.PCAColorJitter(seed=0), np_pca),
        ("RandAugment N=2 M=9", augment.RandAugment(2, 9, seed=0), pil_randaugment),
    ]
    results = []
    for name, layer, reference in cases:
        ours, theirs = time_layer(layer, batch, repeats), time_numpy(reference, np.asarray(batch), repeats)
        results.append({"operation": name, "ours_images_per_s": len(batch) / ours,
                         "per_image_images_per_s": len(batch) / theirs, "speedup": theirs / ours})
        print(f"  {name}: done", flush=True)
    keras_randaugment = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.9, seed=0)
    keras_time = time_layer(keras_randaugment, batch, repeats)
    ours_time = len(batch) / results[-1]["ours_images_per_s"]
    results.append({"operation": "keras.layers.RandAugment N=2 (one op list per batch)",
                    "ours_images_per_s": len(batch) / ours_time, "per_image_images_per_s": None,
                    "keras_images_per_s": len(batch) / keras_time, "speedup_vs_keras": keras_time / ours_time})
    return results


# ---------------------------------------------------------------- report

def print_report(report):
    machine = report["machine"]
    print(f"\nMachine: {machine['cpu_count']}-core CPU ({machine['processor']}), TensorFlow {machine['tensorflow']}, "
          f"Keras {machine['keras']}; load average {machine['load_before']} before, {machine['load_after']} after")
    print(f"Data: {report['data']}; model {report['model']}, batch {report['batch_size']}, "
          f"{report['settings']['rounds']} rounds x {report['settings']['steps']} steps per configuration\n")
    print(f"{'policy':24} {'step ms':>8} {'best ms':>8} {'img/s':>7} {'cost':>8} {'cost best':>10} "
          f"{'layer ms':>9} {'layer %':>8}")
    for row in report["training"]:
        print(f"{row['policy']:24} {row['step_ms']:8.1f} {row['step_ms_min']:8.1f} {row['images_per_s']:7.1f} "
              f"{row['cost_pct']:+7.1f}% {row['cost_pct_best']:+9.1f}% {row['layer_ms']:9.2f} {row['layer_pct']:7.2f}%")
    print("  step ms / img/s: median step; cost: median over rounds of step / same round's 'none' step, minus 1;\n"
          "  cost best: best step vs best 'none' step; layer: the augmentation layer alone, as % of the 'none' step")
    print(f"\n{'operation (batch of 128)':52} {'ours img/s':>11} {'per-image':>10} {'ratio':>7}")
    for row in report["layers"]:
        if row.get("per_image_images_per_s"):
            print(f"{row['operation']:52} {row['ours_images_per_s']:11.0f} {row['per_image_images_per_s']:10.0f} "
                  f"{row['speedup']:6.1f}x")
        else:
            print(f"{row['operation']:52} {row['ours_images_per_s']:11.0f} {row['keras_images_per_s']:10.0f} "
                  f"{row['speedup_vs_keras']:6.1f}x  (vs Keras)")
    print("  per-image: a NumPy (crop, erasing, PCA) or PIL (RandAugment) loop over the batch doing the same ops")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick", help="a minute or two (default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="more rounds, steadier numbers")
    parser.set_defaults(mode="quick")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "augment.json"), help="result file")
    parser.add_argument("--model", default="resnet20", help="zoo model (default resnet20)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--policies", default=f"light,standard,strong,{REFERENCE}",
                        help="comma-separated specs timed against 'none'")
    args = parser.parse_args(argv)
    settings = SETTINGS[args.mode]
    keras.utils.set_random_seed(0)

    specs = ["none"] + [spec.strip() for spec in args.policies.split(",") if spec.strip() and spec.strip() != "none"]
    images, labels, source = cifar_shaped(4 * args.batch_size)
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    print(f"(a) training steps: {', '.join(specs)}", flush=True)
    training = bench_training(specs, args.model, args.batch_size, settings, images, labels)
    print("(b) layers vs per-image NumPy/PIL", flush=True)
    layers = bench_layers(tf.constant(images[:args.batch_size]), settings)
    report = {
        "machine": {**machine_info(), "platform": platform.platform(),
                    "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()]},
        "mode": args.mode, "settings": settings, "model": args.model, "batch_size": args.batch_size,
        "data": source, "seconds": round(time.perf_counter() - started, 1),
        "training": training, "layers": layers,
    }
    print_report(report)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
