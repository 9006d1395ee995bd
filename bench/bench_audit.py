"""The audit (`train.py audit`) on folders with planted faults: precision and recall of each detector, time and
peak memory.

Each scenario writes a folder of real images (scikit-learn's digits, Fashion-MNIST from Debian's
dataset-fashion-mnist) as PNG files, plants faults whose truth it keeps, runs the audit with its defaults in a
child process (offline: no pretrained weights) and scores what it reported:

* labels flipped at 5% and 10%, uniformly (any other class) or between similar classes (a shirt filed as a
  T-shirt, a 7 as a 1);
* exact copies (the same bytes) and near copies (resized, re-encoded as JPEG, cropped to 90%, brightened),
  within a class and under another class, and copies of training images in the test split (leaks) of a folder
  that gives its own train/ and test/;
* a few unusable images: constant, too dark, too bright, a truncated file, a file that is not an image.

    python bench/bench_audit.py            # --quick: every scenario once (about 10 minutes on 2 cores)
    python bench/bench_audit.py --full     # also Fashion-MNIST at 10,000 images
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageEnhance

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from machine import machine_info, parse_size  # noqa: E402

FASHION_NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
# Classes a person (and a model) mixes up: where a "similar" flip sends a label.
SIMILAR = {"fashion": {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 5, 9: 7, 3: 0, 1: 3, 8: 2},
           "digits": {1: 7, 7: 1, 3: 8, 8: 3, 4: 9, 9: 4, 5: 6, 6: 5, 0: 6, 2: 3}}


def source(name: str, count: int | None, seed: int):
    from imagesets import builtin

    if name == "digits":
        names, (x, y), _ = builtin.digits()
        return [str(i) for i in range(10)], x[..., 0], y.astype(int)
    _, (x, y), _ = builtin.idx_dataset("fashion_mnist", None)
    index = np.random.default_rng(seed).choice(len(y), count, replace=False)
    return FASHION_NAMES, x[index].reshape(count, 28, 28), y[index].astype(int)


def flip(labels, rate, kind, dataset, rng):
    """Labels with ``rate`` of them changed; the indices changed."""
    chosen = rng.choice(len(labels), int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    for i in chosen:
        if kind == "similar":
            noisy[i] = SIMILAR[dataset][int(labels[i])]
        else:
            noisy[i] = (labels[i] + rng.integers(1, 10)) % 10
    return noisy, set(chosen.tolist())


def near_copy(image: Image.Image, how: str) -> Image.Image:
    w, h = image.size
    if how == "resized":
        return image.resize((w * 3 // 2, h * 3 // 2), Image.Resampling.BICUBIC)
    if how == "cropped":
        box = (round(w * 0.05), round(h * 0.05), round(w * 0.95), round(h * 0.95))
        return image.crop(box).resize((w, h), Image.Resampling.BICUBIC)
    if how == "brightened":
        return ImageEnhance.Brightness(image).enhance(1.25)
    return image  # "jpeg": re-encoded when saved


def write(root, names, images, labels, files=None):
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(root, names[label])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, files[i] if files else f"img{i:05d}.png")
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def plant_copies(root, names, paths, labels, rng, *, per_kind: int, split_dir: str | None = None):
    """Exact and near copies of some of ``paths``: within the class, under another class, and (``split_dir``)
    into that split's folder.  Returns the planted pairs as (original, copy, kind, where) with relative paths."""
    planted = []
    picks = rng.choice(len(paths), per_kind * 5 * (3 if split_dir else 2), replace=False).tolist()
    wheres = ["within", "across_classes"] + (["across_split"] if split_dir else [])
    for where in wheres:
        for how in ("exact", "resized", "jpeg", "cropped", "brightened"):
            for _ in range(per_kind):
                i = picks.pop()
                label = int(labels[i])
                target = label if where != "across_classes" else (label + 1 + int(rng.integers(9))) % 10
                base = os.path.join(root, split_dir) if where == "across_split" else os.path.dirname(
                    os.path.dirname(paths[i]))
                folder = os.path.join(base, names[target])
                os.makedirs(folder, exist_ok=True)
                ext = "jpg" if how == "jpeg" else "png"
                copy = os.path.join(folder, f"copy_{how}_{where}_{i}.{ext}")
                if how == "exact":
                    shutil.copyfile(paths[i], copy)
                else:
                    with Image.open(paths[i]) as image:
                        near_copy(image.convert("L"), how).save(copy, **({"quality": 75} if ext == "jpg" else {}))
                planted.append((os.path.relpath(paths[i], root), os.path.relpath(copy, root), how, where))
    return planted


def plant_unusable(root, names, size):
    folder = os.path.join(root, names[0])
    made = {}
    rng = np.random.default_rng(size)
    for name, value in (("constant", 128), ("dark", 4), ("bright", 250)):
        pixels = np.full((size, size), value, np.uint8)
        if name != "constant":  # not quite constant: dark and bright, not flat, and not copies of each other
            pixels = np.clip(value + rng.integers(-4, 6, (size, size)), 0, 255).astype(np.uint8)
        path = os.path.join(folder, f"unusable_{name}.png")
        Image.fromarray(pixels).save(path)
        made[os.path.relpath(path, root)] = name
    truncated = os.path.join(folder, "unusable_truncated.png")
    with open(os.path.join(folder, os.listdir(folder)[0]), "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    made[os.path.relpath(truncated, root)] = "truncated"
    text = os.path.join(folder, "unusable_notes.png")
    with open(text, "w") as f:
        f.write("a note saved with an image's name")
    made[os.path.relpath(text, root)] = "not an image"
    return made


def run_audit(root, workdir, extra=()):
    """The audit with its defaults in a child process; (findings, seconds, peak resident MB of the child)."""
    out = os.path.join(workdir, "audit.json")
    script = ("import resource, sys, json; sys.argv = sys.argv[:1]; import train; "
              f"code = train.main(['audit', 'folder:{root}', '--runs-dir', {os.path.join(workdir, 'runs')!r}, "
              f"'--json', {out!r}, *{list(extra)!r}]); "
              "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
    env = {**os.environ, "CNN_CLASSROOM_CACHE_DIR": os.path.join(workdir, "cache"), "CNN_CLASSROOM_OFFLINE": "1"}
    started = time.time()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.time() - started
    if done.returncode:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    peak = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_KB"))
    with open(out) as f:
        return json.load(f), round(seconds, 1), round(peak / 1024, 1), done.stdout


def precision_recall(found: set, truth: set) -> dict:
    hit = len(found & truth)
    return {"reported": len(found), "planted": len(truth), "found": hit,
            "precision": round(hit / len(found), 4) if found else None,
            "recall": round(hit / len(truth), 4) if truth else None}


def label_scenario(dataset, count, rate, kind, seed=0):
    names, images, labels = source(dataset, count, seed)
    rng = np.random.default_rng(seed)
    noisy, flipped = flip(labels, rate, kind, dataset, rng)
    with tempfile.TemporaryDirectory() as work:
        root = os.path.join(work, "folder")
        paths = write(root, names, images, noisy)
        findings, seconds, peak, _ = run_audit(root, work)
    truth = {os.path.relpath(paths[i], root) for i in flipped}
    found = {item["file"] for item in findings["label_issues"]}
    return {"scenario": f"{dataset} {len(labels)} images, {rate:.0%} of labels flipped {kind}",
            "dataset": dataset, "images": len(labels), "flip_rate": rate, "flip_kind": kind,
            "label_issues": precision_recall(found, truth), "seconds": seconds, "peak_mb": peak,
            "out_of_sample_accuracy": findings["out_of_sample_accuracy"], "features": findings["features"]}


def copies_scenario(count, per_kind, seed=0):
    """Fashion-MNIST in train/ and test/ folders, with copies, leaks and unusable images planted."""
    names, images, labels = source("fashion", count, seed)
    rng = np.random.default_rng(seed + 1)
    test = rng.random(len(labels)) < 0.2
    with tempfile.TemporaryDirectory() as work:
        root = os.path.join(work, "folder")
        train_paths = write(os.path.join(root, "train"), names, images[~test], labels[~test])
        write(os.path.join(root, "test"), names, images[test], labels[test])
        planted = plant_copies(root, names, train_paths, labels[~test], rng, per_kind=per_kind, split_dir="test")
        unusable = plant_unusable(os.path.join(root, "train"), names, 28)
        unusable = {os.path.join("train", path): what for path, what in unusable.items()}
        before = {path: os.path.getmtime(os.path.join(root, path)) for path in unusable}
        findings, seconds, peak, _ = run_audit(root, work)
        unchanged = all(os.path.getmtime(os.path.join(root, path)) == t for path, t in before.items())
    pairs = set()
    for group in findings["duplicates"]:
        files = sorted(group["files"])
        pairs |= {(a, b) for k, a in enumerate(files) for b in files[k + 1:]}
    planted_pairs = {tuple(sorted((a, b))): (how, where) for a, b, how, where in planted}
    exact = {p for p, (how, _) in planted_pairs.items() if how == "exact"}
    near = {p for p, (how, _) in planted_pairs.items() if how != "exact"}
    per_how = {how: precision_recall(pairs & {p for p, (h, _) in planted_pairs.items() if h == how},
                                     {p for p, (h, _) in planted_pairs.items() if h == how})["recall"]
               for how in ("exact", "resized", "jpeg", "cropped", "brightened")}
    leak_pairs = {p for p, (_, where) in planted_pairs.items() if where == "across_split"}
    leaked = set()
    for group in findings["leaks"]:
        files = sorted(group["files"])
        leaked |= {(a, b) for k, a in enumerate(files) for b in files[k + 1:]}
    issues = {item["file"] for item in findings["image_issues"]}
    return {"scenario": f"fashion {count} images in train/ and test/, {len(planted)} copies planted "
                        f"({per_kind} of each kind and place), {len(unusable)} unusable files",
            "images": findings["images"], "exact_copies": precision_recall(pairs & exact, exact),
            "near_copies": precision_recall(pairs & near, near), "recall_by_kind": per_how,
            "reported_pairs": len(pairs), "false_pairs": len(pairs - set(planted_pairs)),
            "false_pair_share": round(len(pairs - set(planted_pairs)) / max(len(pairs), 1), 4),
            "leaks": precision_recall(leaked & leak_pairs, leak_pairs),
            "unusable": precision_recall(issues & set(unusable), set(unusable)),
            "unusable_reported": len(issues), "label_issues_reported": len(findings["label_issues"]),
            "missed_pairs": sorted(set(planted_pairs) - pairs)[:20], "false_pairs_listed": sorted(pairs - set(planted_pairs))[:20],
            "files_unchanged": unchanged, "seconds": seconds, "peak_mb": peak}


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies-only", action="store_true",
                        help="rerun the copies scenario only, keeping the label rows of the results file (the label "
                             "findings do not depend on the copy detectors' thresholds)")
    args, mode, path = parse_size("audit", __doc__, argv, quick="every scenario once",
                                  full="also Fashion-MNIST at 10,000 images", parser=parser)
    if args.copies_only:
        with open(path) as f:
            result = json.load(f)
        result["copies"] = copies_scenario(2000, per_kind=4)
        result["copies_machine"] = machine_info()
        result["copies_command"] = "python bench/bench_audit.py --copies-only"
        print(json.dumps(result["copies"]))
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        return 0
    rows = [label_scenario("digits", None, 0.10, "uniform"), label_scenario("digits", None, 0.05, "similar"),
            label_scenario("fashion", 5000, 0.10, "uniform"), label_scenario("fashion", 2500, 0.10, "uniform"),
            label_scenario("fashion", 5000, 0.05, "similar")]
    if args.full:
        rows.append(label_scenario("fashion", 10000, 0.10, "uniform"))
    for row in rows:
        print(json.dumps(row), flush=True)
    copies = copies_scenario(2000, per_kind=4)
    print(json.dumps(copies), flush=True)
    result = {"benchmark": "audit", "mode": mode, "machine": machine_info(),
              "conditions": args.conditions,
              "command": f"python bench/bench_audit.py{' --full' if args.full else ''}",
              "labels": rows, "copies": copies}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
