"""Peak memory of a run: does it grow with the data set?  One epoch of ``train.py`` per case.

    .venv/bin/python bench/bench_memory.py --quick   # 1,500 and 6,000 images at 128x128 (~10 min on 2 cores)
    .venv/bin/python bench/bench_memory.py --full    # also 20,000 at 224x224
    .venv/bin/python bench/bench_memory.py --code /tmp/old-checkout   # another checkout's train.py, to compare
    .venv/bin/python bench/bench_memory.py --case 20000 224 --cold-only  # one case, one run
    .venv/bin/python bench/bench_memory.py --kinds tfds transfer  # the other two kinds of run (~10 min)

Each case writes a class-per-folder tree of JPEG files, random 160x160
crops of scikit-learn's two sample photographs (each crop from a random
place, every other one mirrored; four classes: the two photographs, upright
and upside down), and runs ``train.py`` on it for one epoch of a small model
(lenet5_modern, read at the case's size) in a child process, twice:

* cold: a fresh image cache, so the run decodes every file and writes it;
* warm: the same cache again, the way a rerun, a resumed run or a search
  trial loads the folder.

and, beside them on the same files, the same model trained for one epoch
the way Keras' guides do it (``keras``): ``image_dataset_from_directory``
(70% of the files, as ``train.py`` trains on 70% after its validation and
test shares) into ``model.fit``, then an evaluation of the other 30%.

That is the ``folder`` kind of case; ``--kinds`` picks others beside it or instead:

* ``tfds``: the same crops as a TFDS dataset with train and test splits
  (JPEG records, a fifth of them test), built here by ``local_tfds.py`` into
  a temporary ``data_dir`` since nothing downloads, and trained on as
  ``--dataset tfds:bench_photos --data-dir DIR``: cold, each split is
  streamed from its records into the image cache; warm, read from it.
* ``transfer``: the folder again under a frozen backbone (MobileNetV2 at
  the case's size, from a local weights file of random weights: nothing
  downloads, and ImageNet's would take the same memory), with the feature
  cache: its features of every split are computed once, to a file on disk,
  for the linear probe and the head, which trains for ``--epochs 1`` (at
  least ``--min-phase-steps`` steps, the default) on them.  Cold only: the
  features are computed afresh in every run, so a warm run would differ from
  the cold one only in decoding the folder, which the folder kind measures.

No Keras run stands beside these two.

The peak resident memory of each child is its ``ru_maxrss`` (``os.wait4``).
"Done when" (issue 14), for each kind: from the smallest to the second case,
the peak grows by less than half of one decoded copy of the extra images; a
copy of the data in memory would grow it by at least one copy (for
``transfer``, the extra images' float32 features, larger still, are given
beside it).  Writes JSON: bench/results/memory_{quick,full}.json for the
folder alone, else memory_<kinds>_{quick,full}.json (``--json`` overrides),
with the folder's cases and verdict at the top level, where they always
were, and each other kind's under its name.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import machine_info, parse_size  # noqa: E402

CASES = {"quick": [(1500, 128), (6000, 128)], "full": [(1500, 128), (6000, 128), (20000, 224)]}
KINDS = ("folder", "tfds", "transfer")
CROP = 160  # the files' side: larger than 128, so reading them resizes, as with real photos
CLASSES = ("china", "china_flipped", "flower", "flower_flipped")
MODEL, BATCH = "lenet5_modern", 64
BACKBONE = "mobilenet_v2"  # the transfer kind's: the README's example backbone
TEST_SHARE = 5  # the tfds kind's test split is 1/5 of its images: the share train.py carves from a folder
CACHE_ENV = "CNN_CLASSROOM_CACHE_DIR"  # imagesets.cache.CACHE_ENV; not imported, so --code may predate it


def photo_crops(count: int, crop: int = CROP):
    """``crop_at(i) -> (uint8 pixels, class index)`` for the i-th of ``count`` crops.

    Each crop comes from a random place of one of scikit-learn's two sample
    photographs, every other one mirrored; the classes are the photographs,
    upright and upside down (``CLASSES``).  A function of ``i`` alone, so
    threads can share it.
    """
    import numpy as np
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    corners = [rng.integers(0, [photos[i % 4 // 2].shape[0] - crop, photos[i % 4 // 2].shape[1] - crop])
               for i in range(count)]

    def crop_at(i):
        top, left = corners[i]
        pixels = photos[i % 4 // 2][top:top + crop, left:left + crop]
        pixels = pixels[::-1] if i % 2 else pixels  # upside down: the second class of each photograph
        pixels = pixels[:, ::-1] if (i // 4) % 2 else pixels
        return np.ascontiguousarray(pixels), i % 4

    return crop_at


def write_folder(root: str, count: int, crop: int = CROP) -> float:
    """``count`` JPEG crops in four class folders; returns their megabytes on disk."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    crop_at = photo_crops(count, crop)

    def write(i):
        pixels, label = crop_at(i)
        Image.fromarray(pixels).save(os.path.join(root, CLASSES[label], f"{i:06d}.jpg"), quality=90)

    for name in CLASSES:
        os.makedirs(os.path.join(root, name), exist_ok=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # PIL encodes outside the GIL
        list(pool.map(write, range(count)))
    return _megabytes(root)


def write_tfds(data_dir: str, count: int, crop: int = CROP) -> tuple[str, float]:
    """The same crops as a prepared TFDS dataset under ``data_dir``; returns its name and its records' megabytes."""
    from local_tfds import prepare

    test = count // TEST_SHARE
    name = prepare(data_dir, photo_crops(count, crop), train=count - test, test=test, size=crop, class_names=CLASSES)
    return name, _megabytes(os.path.join(data_dir, name))


def _megabytes(root: str) -> float:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs) / 1e6


def write_backbone(path: str, size: int) -> int:
    """``BACKBONE``'s weights at ``size`` x ``size`` written to ``path`` (random: nothing downloads here, and
    memory does not depend on their values); returns the bytes of one image's float32 features under it."""
    import math

    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import transfer

    backbone = transfer.load_backbone(BACKBONE, input_shape=(size, size, 3), weights=None)
    backbone.features.save_weights(path)
    return math.prod(backbone.feature_shape) * 4


def peak_rss(command: list[str], cwd: str, env: dict) -> dict:
    """Runs ``command``; its peak RSS in MB (ru_maxrss of that child alone), seconds and exit status."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    result = {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(time.perf_counter() - start, 1),
              "returncode": child.returncode}
    if child.returncode != 0:
        result["output_tail"] = output.decode("utf-8", "replace")[-3000:]
    return result


# The same model on the same files, the way Keras' guides train from a folder: streamed by
# image_dataset_from_directory, 70% to fit for an epoch, 30% evaluated.  argv: folder size model [width].
KERAS_RUN = """
import sys
sys.path.insert(0, ".")
import keras
import zoo
folder, size, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
options = {"width": float(sys.argv[4])} if len(sys.argv) > 4 else {}
train, held_out = keras.utils.image_dataset_from_directory(
    folder, image_size=(size, size), batch_size=%d, label_mode="categorical", validation_split=0.3,
    subset="both", seed=0, verbose=False)
network = zoo.build(name, input_shape=(size, size, 3), num_classes=len(train.class_names), **options)
inputs = keras.Input((size, size, 3))
model = keras.Model(inputs, network(keras.layers.Rescaling(1 / 255)(inputs)))
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(train, epochs=1, verbose=0)
model.evaluate(held_out, verbose=0)
""" % BATCH


def run_case(work: str, count: int, size: int, code: str, runs=("cold", "warm", "keras"), model=(MODEL,),
             kind: str = "folder") -> dict:
    folder, cache, runs_dir = (os.path.join(work, name) for name in ("photos", "cache", "runs"))
    if kind == "tfds":
        data_dir = os.path.join(work, "tfds")
        name, megabytes = write_tfds(data_dir, count)
        data = ["--dataset", f"tfds:{name}", "--data-dir", data_dir]
    else:
        megabytes = write_folder(folder, count)
        data = ["--dataset", f"folder:{folder}"]
    network = ["--model", *model]
    if kind == "transfer":
        # A weights file, not --weights none: with random weights by name, train.py trains the architecture
        # from scratch instead of transferring.
        weights = os.path.join(work, f"{BACKBONE}.weights.h5")
        per_image = write_backbone(weights, size)
        network = ["--backbone", BACKBONE, "--weights", weights, "--feature-cache"]
        runs = ("cold",)  # its features are computed afresh each run: a warm run differs only in decoding
    env = {**os.environ, CACHE_ENV: cache, "CNN_CLASSROOM_OFFLINE": "1"}
    command = [sys.executable, "train.py", *data, *network,
               "--image-size", str(size), str(size), "--channels", "3", "--epochs", "1", "--batch-size", str(BATCH),
               "--runs-dir", runs_dir, "--no-export", "--verbose", "0"]
    width = model[2:3]  # ("--width", W) -> (W,)
    keras_command = [sys.executable, "-c", KERAS_RUN, folder, str(size), model[0], *width]
    case = {"kind": kind, "files": count, "size": size, "file_megabytes": round(megabytes, 1),
            "decoded_megabytes": round(count * size * size * 3 / 1e6, 1)}
    if kind == "transfer":
        case["feature_megabytes"] = round(count * per_image / 1e6, 1)
    for name in runs:
        if name == "keras" and kind != "folder":
            continue  # the Keras way stands beside the folder kind only
        shutil.rmtree(runs_dir, ignore_errors=True)  # a new run each time, not a resumed one
        case[name] = peak_rss(keras_command if name == "keras" else command + ["--run-name", name], code, env)
        print(f"  {kind}: {count} images at {size}x{size}, {name}: {case[name]}", flush=True)
    cached = os.path.join(cache, "images")
    case["cache_megabytes"] = round(_megabytes(cached), 1) if os.path.isdir(cached) else 0.0
    return case


def verdict(cases: list[dict]) -> dict:
    """Issue 14's test: the peak grows by less than half a decoded copy of the extra images."""
    if len(cases) < 2 or cases[0]["size"] != cases[1]["size"]:
        return {"done": None, "why": "needs two cases of one image size"}
    small, large = cases[0], cases[1]
    extra = (large["files"] - small["files"]) * large["size"] ** 2 * 3 / 1e6
    growth = {name: round(large[name]["peak_rss_mb"] - small[name]["peak_rss_mb"], 1)
              for name in ("cold", "warm", "keras") if name in small and name in large}
    limit = extra / 2
    result = {"extra_decoded_megabytes": round(extra, 1), "limit_megabytes": round(limit, 1), "growth_mb": growth,
              "done": all(value < limit for name, value in growth.items() if name != "keras")}
    if "feature_megabytes" in large:  # what the feature cache would add held in memory: more than the images
        result["extra_feature_megabytes"] = round(large["feature_megabytes"] - small["feature_megabytes"], 1)
    return result


def output_name(kinds, mode: str) -> str:
    """memory_quick.json for the folder kind alone, as before the other kinds; else the kinds in the name."""
    stem = "memory" if list(kinds) == ["folder"] else "memory_" + "_".join(kinds)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"{stem}_{mode}.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=["folder"],
                        help="which kinds of run: folder (default), tfds, transfer; any but folder alone write "
                             "memory_<kinds>_{quick,full}.json unless --json says otherwise")
    parser.add_argument("--code", default=ROOT, help="the checkout whose train.py runs (default: this one)")
    parser.add_argument("--case", nargs=2, type=int, action="append", metavar=("FILES", "SIZE"),
                        help="run these cases instead of the mode's (repeatable)")
    parser.add_argument("--cold-only", action="store_true", help="skip the second (warm-cache) run of each case")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras run beside each folder case")
    parser.add_argument("--model", default=MODEL, help="the zoo model trained (folder and tfds kinds)")
    parser.add_argument("--width", type=float, help="its width multiplier (default: the model's own)")
    args, mode, output = parse_size("memory", __doc__, argv, quick="1,500 and 6,000 images at 128x128",
                                    full="also 20,000 at 224x224", parser=parser)
    kinds = [kind for kind in KINDS if kind in args.kinds]  # one order, whatever the command line's
    output = args.json or output_name(kinds, mode)
    runs = ("cold",) if args.cold_only else ("cold", "warm")
    runs += () if args.no_keras else ("keras",)
    model = (args.model, *(["--width", str(args.width)] if args.width else []))
    cases = {}
    for kind in kinds:
        cases[kind] = []
        for count, size in args.case or CASES[mode]:
            work = tempfile.mkdtemp(prefix=f"bench-memory-{kind}-{count}-")
            try:
                cases[kind].append(run_case(work, count, size, os.path.abspath(args.code), runs, model, kind))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    result = {"mode": mode, "kinds": kinds, "model": args.model, "width": args.width, "epochs": 1,
              "batch_size": BATCH, "code": os.path.abspath(args.code)}
    if "folder" in cases:  # where readers of memory_quick.json have always found them
        result.update(cases=cases["folder"], done_when=verdict(cases["folder"]))
    for kind in ("tfds", "transfer"):
        if kind in cases:
            result[kind] = {**({"backbone": BACKBONE, "weights": "random, from a local file"}
                               if kind == "transfer" else {}),
                            "cases": cases[kind], "done_when": verdict(cases[kind])}
    result["machine"] = machine_info()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    for kind in kinds:
        for case in cases[kind]:
            peaks = ", ".join(f"{case[run]['peak_rss_mb']} MB {run} ({case[run]['seconds']} s)"
                              for run in runs if run in case)
            print(f"{kind}: {case['files']:>6} images at {case['size']}x{case['size']} "
                  f"({case['decoded_megabytes']} MB decoded): peak RSS {peaks}")
        done = verdict(cases[kind])
        if done["done"] is not None:
            features = (f", {done['extra_feature_megabytes']} MB of their features"
                        if "extra_feature_megabytes" in done else "")
            print(f"{kind}: growth {done['growth_mb']} MB for {done['extra_decoded_megabytes']} MB of extra decoded "
                  f"images{features} (limit {done['limit_megabytes']} MB): {'done' if done['done'] else 'NOT done'}")
    print(f"Wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
