"""Faithfulness of the class heatmaps: the deletion curve on Fashion-MNIST, against deleting pixels in random order.

    .venv/bin/python bench/bench_explain.py            # quick: 6,000 training images, 3 epochs, 64 test images
    .venv/bin/python bench/bench_explain.py --full     # 60,000 training images, 5 epochs, 500 test images

For LeNet-5 (as published: scaled tanh, RBF output) and ResNet-20, each trained briefly here, every method's
heatmap ranks the pixels of each test image; the pixels are set to black (Fashion-MNIST's background) in that
order, 5% at a time, and the probability of the class the model gave the intact image is read after each step
(Samek et al. 2017, "Evaluating the visualization of what a deep neural network has learned", IEEE TNNLS; Petsiuk
et al. 2018, RISE, for the name "deletion").  The area under that curve is lower when the heatmap put the
evidence first; "random" deletes in a random order, the baseline a heatmap must beat.  Also per method: seconds
per image and the growth of the process's peak resident memory while it ran (the machine may be shared: the
JSON says what ran it, and the times are wall-clock).

Writes bench/results/explain_{quick,full}.json.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import machine_info, parse_size  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
STEPS = 20  # 5% of the pixels per step


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load(train_count: int, test_count: int):
    from imagesets.builtin import read_idx

    files = {name: os.path.join(FASHION, f"{name}.gz") for name in
             ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    x = read_idx(files["train-images-idx3-ubyte"])[:train_count, ..., None].astype(np.float32)
    y = read_idx(files["train-labels-idx1-ubyte"])[:train_count].astype(np.int64)
    tx = read_idx(files["t10k-images-idx3-ubyte"])[:test_count, ..., None].astype(np.float32)
    ty = read_idx(files["t10k-labels-idx1-ubyte"])[:test_count].astype(np.int64)
    return x, y, tx, ty


def train(name: str, x, y, epochs: int):
    import keras

    import zoo
    from core.batchnorm import PopulationStatistics
    from core.model import assemble, inference_model, preprocessing_layer

    keras.utils.set_random_seed(0)
    model = inference_model(assemble(zoo.build(name, (28, 28, 1), num_classes=10), (28, 28, 1),
                                     preprocessing=preprocessing_layer("rescale")))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    # A few hundred steps leave batch norm's moving averages behind the weights (ResNet-20 scores near chance
    # with them): re-estimate them on clean training batches, as a run does (core.batchnorm, precise BN).
    PopulationStatistics(model).reestimate(x[i:i + 128] for i in range(0, len(x), 128))
    return model, time.perf_counter() - start


def deletion_curves(model, images: np.ndarray, heatmaps: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(N, STEPS + 1): the class's probability after deleting 0%, 5%, ... 100% of the pixels, most salient first."""
    n, height, width = heatmaps.shape
    pixels = height * width
    order = np.argsort(-heatmaps.reshape(n, -1), axis=1, kind="stable")
    curves = np.zeros((n, STEPS + 1), np.float32)
    for step in range(STEPS + 1):
        deleted = images.copy().reshape(n, pixels, -1)
        count = int(round(pixels * step / STEPS))
        np.put_along_axis(deleted, order[:, :count, None], 0.0, axis=1)
        probabilities = np.asarray(model.predict(deleted.reshape(images.shape), batch_size=256, verbose=0))
        curves[:, step] = probabilities[np.arange(n), classes]
    return curves


def main(argv=None) -> int:
    args, mode, out = parse_size("explain", __doc__, argv, quick="6,000 training images, 3 epochs, 64 test images",
                                 full="60,000 training images, 5 epochs, 500 test images")
    import explain

    train_count, epochs, test_count = (60000, 5, 500) if args.full else (6000, 3, 64)
    x, y, tx, ty = load(train_count, test_count)
    rows = []
    for name in ("lenet5", "resnet20"):
        model, seconds = train(name, x, y, epochs)
        probabilities = np.asarray(model.predict(tx, batch_size=256, verbose=0))
        classes = probabilities.argmax(1)
        accuracy = float((classes == ty).mean())
        print(f"{name}: trained {epochs} epochs on {len(x)} images in {seconds:.0f} s, accuracy {accuracy:.3f} "
              f"on the {len(tx)} test images", flush=True)
        methods = {"gradcam": explain.gradcam, "occlusion": explain.occlusion,
                   "integrated_gradients": explain.integrated_gradients,
                   "random": lambda m, images, c: np.random.default_rng(0).random(images.shape[:3], np.float32)}
        for method, function in methods.items():
            function(model, tx[:2], classes[:2])  # warm up: the first call records the graph
            before = peak_rss_mb()
            start = time.perf_counter()
            heatmaps = function(model, tx, classes)
            per_image = (time.perf_counter() - start) / len(tx)
            curves = deletion_curves(model, tx, heatmaps, classes)
            area = float(np.trapezoid(curves.mean(0), dx=1.0 / STEPS))
            blank = int((heatmaps.reshape(len(tx), -1).max(1) <= 0).sum())
            rows.append({"model": name, "method": method, "deletion_auc": round(area, 4),
                         "curve": [round(float(v), 4) for v in curves.mean(0)], "ms_per_image": round(1000 * per_image, 2),
                         "peak_rss_growth_mb": round(peak_rss_mb() - before, 1), "blank_heatmaps": blank,
                         "test_accuracy": round(accuracy, 4), "train_images": len(x), "epochs": epochs,
                         "train_seconds": round(seconds, 1), "test_images": len(tx)})
            print(f"  {method:<22} deletion AUC {area:.3f}  {1000 * per_image:8.1f} ms/image  "
                  f"peak RSS +{rows[-1]['peak_rss_growth_mb']:.0f} MB  blank {blank}", flush=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"benchmark": "explain", "mode": mode, "command": f"python bench/bench_explain.py --{mode}",
                   "machine": machine_info(), "peak_rss_mb": round(peak_rss_mb(), 1),
                   "conditions": args.conditions,
                   "rows": rows}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
