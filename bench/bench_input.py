"""Reading a folder of JPEG files: this toolkit's loader against
``keras.utils.image_dataset_from_directory``, first pass and cached, as ratios.

    .venv/bin/python bench/bench_input.py --quick   # 2,000 files at 64x64 (~30 s)
    .venv/bin/python bench/bench_input.py --full    # 10,000 files at 128x128

The files are real Fashion-MNIST images (digits when it is not on disk),
upscaled and written as RGB JPEGs in ten class folders.  Both readers resize
to the same size, give float32 batches of 64, and are read to the end:

* first pass: ours is ``imagesets.load("folder:...")`` (decodes every file once,
  up front, with a thread pool) plus one pass of the training pipeline over all
  images; Keras' is one pass of its dataset, which decodes as it goes.  The
  files were just written, so they come from the OS page cache, not the disk:
  this measures decoding, not the drive.
* cached: a second pass.  Ours holds decoded uint8 arrays in memory; Keras'
  dataset gets ``.cache()`` (filled by a first pass, not timed).

Each measurement is repeated, alternating the two readers, and the median is
reported.  Writes JSON (default bench/results/input_{quick,full}.json).  It
compares; it asserts nothing.
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

SETTINGS = {"quick": {"files": 2000, "size": 64, "repeats": 2}, "full": {"files": 10000, "size": 128, "repeats": 3}}
BATCH = 64


def write_jpegs(root: str, count: int, size: int) -> str:
    import numpy as np
    from PIL import Image

    import imagesets

    try:
        images, labels = imagesets.load("fashion_mnist").arrays["train"]
        source = "fashion_mnist"
    except Exception:  # no Fashion-MNIST on disk: scikit-learn's digits, repeated
        images, labels = imagesets.load("digits").arrays["train"]
        source = "digits"
    for i in range(count):
        image = Image.fromarray(images[i % len(images)][..., 0]).resize((size, size), Image.Resampling.BILINEAR)
        folder = os.path.join(root, f"class{labels[i % len(labels)]}")
        os.makedirs(folder, exist_ok=True)
        image.convert("RGB").save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)
    return source


def drain(dataset) -> int:
    seen = 0
    for images, _ in dataset:
        seen += int(images.shape[0])
    return seen


def ours(root: str, size: int):
    import numpy as np

    import imagesets
    from training.pipeline import make_pipeline

    start = time.perf_counter()
    data = imagesets.load(f"folder:{root}", image_size=(size, size), channels=3)
    images = np.concatenate([data.arrays[s][0] for s in ("train", "val", "test")])
    labels = np.concatenate([data.arrays[s][1] for s in ("train", "val", "test")])
    pipeline = make_pipeline(images, labels, data.num_classes, batch_size=BATCH, shuffle=True, seed=0)
    count = drain(pipeline)
    first = time.perf_counter() - start
    start = time.perf_counter()
    drain(pipeline)
    return count, first, time.perf_counter() - start


def keras_reader(root: str, size: int):
    import keras

    def dataset():
        return keras.utils.image_dataset_from_directory(root, image_size=(size, size), batch_size=BATCH,
                                                        label_mode="categorical", shuffle=True, seed=0,
                                                        verbose=False)

    start = time.perf_counter()
    count = drain(dataset())
    first = time.perf_counter() - start
    cached = dataset().cache()
    drain(cached)
    start = time.perf_counter()
    drain(cached)
    return count, first, time.perf_counter() - start


def main(argv=None) -> int:
    _, mode, out = parse_size("input", __doc__, argv, quick="2,000 files at 64x64", full="10,000 files at 128x128")
    s = SETTINGS[mode]

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    work = tempfile.mkdtemp(prefix="bench-input-")
    try:
        root = os.path.join(work, "photos")
        source = write_jpegs(root, s["files"], s["size"])
        times = {"ours": {"first": [], "cached": []}, "keras": {"first": [], "cached": []}}
        readers = {"ours": ours, "keras": keras_reader}
        for repeat in range(s["repeats"]):
            for name in (("ours", "keras") if repeat % 2 == 0 else ("keras", "ours")):
                count, first, cached = readers[name](root, s["size"])
                assert count == s["files"], (name, count)
                times[name]["first"].append(first)
                times[name]["cached"].append(cached)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rates = {name: {kind: s["files"] / statistics.median(values) for kind, values in kinds.items()}
             for name, kinds in times.items()}
    ratios = {kind: rates["ours"][kind] / rates["keras"][kind] for kind in ("first", "cached")}
    print(f"{s['files']} JPEG files ({source}, {s['size']}x{s['size']} RGB), batches of {BATCH}, "
          f"median of {s['repeats']} alternating repeats")
    print(f"{'reader':<40} {'first pass img/s':>17} {'cached img/s':>13}")
    print(f"{'imagesets.load(folder:) + pipeline':<40} {rates['ours']['first']:>17,.0f} "
          f"{rates['ours']['cached']:>13,.0f}")
    print(f"{'keras.utils.image_dataset_from_directory':<40} {rates['keras']['first']:>17,.0f} "
          f"{rates['keras']['cached']:>13,.0f}")
    print(f"{'ratio (ours / keras)':<40} {ratios['first']:>16.2f}x {ratios['cached']:>12.2f}x")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"mode": mode, "settings": s, "source": source, "machine": machine_info(),
                   "seconds": times, "images_per_second": rates, "ratios": ratios}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
