"""Reading a folder of JPEG files: this toolkit's loader against
``keras.utils.image_dataset_from_directory``, first pass and cached, as ratios.

    .venv/bin/python bench/bench_input.py --quick   # 2,000 small files + 120 phone photos (~2 min)
    .venv/bin/python bench/bench_input.py --full    # 10,000 small files + 400 phone photos
    .venv/bin/python bench/bench_input.py --cases photos   # one case only

Two folders, each read by both readers in the same run:

* ``fashion``: real Fashion-MNIST images (digits when it is not on disk),
  upscaled to 64x64 (``--full``: 128x128) and written as RGB JPEGs in ten
  class folders, read at that size.
* ``photos``: phone-camera-sized JPEGs, 4032x3024 at quality 90, cut from
  scikit-learn's two sample photographs (upscaled once, then a different
  crop, and every other one mirrored, per file) in two class folders, read
  at 224x224: the size a pretrained backbone wants.

Both readers resize to the same size, give batches of 64, and are read to
the end.  Keras' batches are float32; ours are uint8, as ``train.py`` hands
them to the network, whose graph casts them (a float32 copy in the pipeline
would be four times the bytes to write and move):

* first pass: ours is ``imagesets.load("folder:...")`` (decodes every file once,
  up front, with a thread pool, large JPEGs at a reduced scale, into its image
  cache on disk, a fresh one each repeat) plus one pass of the training
  pipeline over all images; Keras' is one pass of its dataset,
  which decodes as it goes.  The files were just written, so they come from
  the OS page cache, not the disk: this measures decoding, not the drive.
* cached: a second pass.  Ours reads the decoded uint8 rows from its cache
  file (``imagesets.diskarray``; from the OS page cache when memory allows);
  Keras' dataset gets ``.cache()`` (in memory, filled by a first pass, not timed).

The decode floor: the same files through the loader's own decode (``imagesets.images.load_image``: the
reduced-scale JPEG decode and resize) on a thread per core, nothing kept: the first pass's ratio to it
is what the loader adds around the decode.

The process's CPU time over each first pass (all its threads) is recorded
too: on a machine shared with other work, the wall-clock ratio depends on
how much of the CPUs each reader's threads win, and CPU time per image does
not.

Each measurement is repeated, alternating the two readers, and the median is
reported.  Writes JSON (default bench/results/input_{quick,full}.json).  It
compares; it asserts nothing.
"""

from __future__ import annotations

import argparse
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

SETTINGS = {
    "quick": {"fashion": {"files": 2000, "size": 64}, "photos": {"files": 120, "size": 224}, "repeats": 2},
    "full": {"fashion": {"files": 10000, "size": 128}, "photos": {"files": 400, "size": 224}, "repeats": 3},
}
BATCH = 64
PHOTO = (4032, 3024)  # a 12-megapixel phone camera's JPEG, width x height


def write_jpegs(root: str, count: int, size: int) -> str:
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


def write_photos(root: str, count: int, size: int) -> str:
    """``count`` phone-sized JPEGs from scikit-learn's two sample photographs, each a different crop.

    ``size`` is unused (the photos are always 4032x3024); it keeps the writers interchangeable.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    del size
    margin = (PHOTO[0] // 10, PHOTO[1] // 10)
    # Upscaled once per photograph, a tenth larger than a photo, so each file can be a different window of it.
    bases = [np.asarray(Image.fromarray(image).resize((PHOTO[0] + margin[0], PHOTO[1] + margin[1]),
                                                      Image.Resampling.BICUBIC))
             for image in load_sample_images().images]
    names = ["china", "flower"]
    rng = np.random.default_rng(0)
    offsets = rng.integers(0, [margin[1] + 1, margin[0] + 1], size=(count, 2))

    def write(i):
        top, left = offsets[i]
        pixels = bases[i % 2][top:top + PHOTO[1], left:left + PHOTO[0]]
        if (i // 2) % 2:
            pixels = pixels[:, ::-1]
        folder = os.path.join(root, names[i % 2])
        Image.fromarray(np.ascontiguousarray(pixels)).save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)

    for name in names:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # PIL encodes outside the GIL
        list(pool.map(write, range(count)))
    return "sklearn sample photos"


def drain(dataset) -> int:
    seen = 0
    for images, _ in dataset:
        seen += int(images.shape[0])
    return seen


def ours(root: str, size: int):
    import numpy as np

    import imagesets
    from core.rows import concatenate
    from imagesets.cache import CACHE_ENV
    from training.pipeline import make_pipeline

    # A fresh image cache each time, so the first pass decodes every file, as a new folder's first load does.
    os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="cache-", dir=os.path.dirname(root))
    start, cpu = time.perf_counter(), time.process_time()
    data = imagesets.load(f"folder:{root}", image_size=(size, size), channels=3)
    images = concatenate([data.arrays[s][0] for s in ("train", "val", "test")])  # a view of the cache's rows
    labels = np.concatenate([data.arrays[s][1] for s in ("train", "val", "test")])
    # uint8 batches, as training takes them (``training.data``): the network casts them in its own graph.
    pipeline = make_pipeline(images, labels, data.num_classes, batch_size=BATCH, shuffle=True, seed=0, cast=False)
    count = drain(pipeline)
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    drain(pipeline)
    return count, first, first_cpu, time.perf_counter() - start


def decode_floor(root: str, size: int):
    """The decode alone: every file through ``imagesets.images.load_image`` (the reduced-scale JPEG decode and
    resize the loader uses) on a thread pool of one thread per core, the pixels dropped.  What the first pass
    cannot beat: the loader's own cost is what it adds on top of this."""
    from concurrent.futures import ThreadPoolExecutor

    from imagesets.images import load_image

    files = sorted(os.path.join(folder, f) for folder, _, fs in os.walk(root) for f in fs)
    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        count = sum(1 for _ in pool.map(lambda path: load_image(path, (size, size), 3).shape, files))
    return count, time.perf_counter() - start, time.process_time() - cpu, None


def keras_reader(root: str, size: int):
    import keras

    def dataset():
        return keras.utils.image_dataset_from_directory(root, image_size=(size, size), batch_size=BATCH,
                                                        label_mode="categorical", shuffle=True, seed=0,
                                                        verbose=False)

    start, cpu = time.perf_counter(), time.process_time()
    count = drain(dataset())
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    cached = dataset().cache()
    drain(cached)
    start = time.perf_counter()
    drain(cached)
    return count, first, first_cpu, time.perf_counter() - start


CASES = {"fashion": write_jpegs, "photos": write_photos}


def run_case(name: str, files: int, size: int, repeats: int) -> dict:
    work = tempfile.mkdtemp(prefix=f"bench-input-{name}-")
    try:
        root = os.path.join(work, name)
        source = CASES[name](root, files, size)
        megabytes = sum(os.path.getsize(os.path.join(folder, f)) for folder, _, fs in os.walk(root) for f in fs) / 1e6
        readers = {"ours": ours, "keras": keras_reader, "decode_floor": decode_floor}
        times = {reader: {"first": [], "cached": []} for reader in readers}
        cpu = {reader: [] for reader in readers}  # process CPU seconds (all threads) of each first pass
        for repeat in range(repeats):
            order = list(readers) if repeat % 2 == 0 else list(reversed(readers))
            for reader in order:
                count, first, first_cpu, cached = readers[reader](root, size)
                assert count == files, (reader, count)
                times[reader]["first"].append(first)
                cpu[reader].append(first_cpu)
                if cached is not None:
                    times[reader]["cached"].append(cached)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rates = {reader: {kind: files / statistics.median(values) for kind, values in kinds.items() if values}
             for reader, kinds in times.items()}
    ratios = {kind: rates["ours"][kind] / rates["keras"][kind] for kind in ("first", "cached")}
    ratios["first_vs_decode_floor"] = rates["ours"]["first"] / rates["decode_floor"]["first"]
    cpu_ms = {reader: 1000 * statistics.median(values) / files for reader, values in cpu.items()}
    return {"files": files, "size": size, "source": source, "megabytes": round(megabytes, 1), "seconds": times,
            "images_per_second": rates, "ratios": ratios, "first_pass_cpu_seconds": cpu,
            "first_pass_cpu_ms_per_image": cpu_ms}


def report(name: str, case: dict, repeats: int) -> str:
    rates, ratios = case["images_per_second"], case["ratios"]
    read = "4032x3024 RGB" if name == "photos" else f"{case['size']}x{case['size']} RGB"
    return "\n".join([
        (f"{name}: {case['files']} JPEG files ({case['source']}, {read}, {case['megabytes']} MB) read at "
         f"{case['size']}x{case['size']}, batches of {BATCH}, median of {repeats} alternating repeats"),
        f"{'reader':<40} {'first pass img/s':>17} {'cached img/s':>13}",
        f"{'imagesets.load(folder:) + pipeline':<40} {rates['ours']['first']:>17,.0f} {rates['ours']['cached']:>13,.0f}",
        (f"{'keras.utils.image_dataset_from_directory':<40} {rates['keras']['first']:>17,.0f} "
         f"{rates['keras']['cached']:>13,.0f}"),
        f"{'ratio (ours / keras)':<40} {ratios['first']:>16.2f}x {ratios['cached']:>12.2f}x",
        f"{'decode alone (load_image, thread per core)':<40} {rates['decode_floor']['first']:>17,.0f}",
        f"{'ratio (ours / decode alone)':<40} {ratios['first_vs_decode_floor']:>16.2f}x",
        (f"first pass CPU time (all threads), ms/image: ours {case['first_pass_cpu_ms_per_image']['ours']:.2f}, "
         f"keras {case['first_pass_cpu_ms_per_image']['keras']:.2f}, "
         f"decode alone {case['first_pass_cpu_ms_per_image']['decode_floor']:.2f}"),
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", choices=list(CASES), default=list(CASES),
                        help="folders to read (default: both)")
    parser.add_argument("--repeats", type=int, help="alternating repeats per case (default: 2 quick, 3 full)")
    args, mode, out = parse_size("input", __doc__, argv, parser=parser,
                                 quick="2,000 files at 64x64 and 120 phone photos",
                                 full="10,000 files at 128x128 and 400 phone photos")
    s = {**SETTINGS[mode], **({"repeats": args.repeats} if args.repeats else {})}

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    cases = {}
    for name in args.cases:
        cases[name] = run_case(name, s[name]["files"], s[name]["size"], s["repeats"])
        print(report(name, cases[name], s["repeats"]), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"mode": mode, "repeats": s["repeats"], "machine": machine_info(), "cases": cases}, f, indent=2)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
