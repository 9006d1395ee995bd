"""Does transfer learning pay off?  A proof on real data, offline.

ImageNet weights cannot be downloaded here, so the backbone is one this
toolkit trains itself:

1. pretrain a zoo model on classes 0-4 of a real dataset (Fashion-MNIST:
   T-shirt, trouser, pullover, dress, coat; or digits 0-4 with --tiny),
   written to disk as PNG files, and export it;
2. fine-tune that export as a backbone (``train.py --backbone saved_models/...``)
   on a small folder of the *other* classes (5-9: sandal, shirt, sneaker, bag,
   ankle boot), a few images per class;
3. train the same architecture from scratch on the same folder, same split;
4. compare test accuracy on held-out images of classes 5-9.

    python bench/bench_transfer.py            # Fashion-MNIST, ~5 minutes on 2 CPU cores
    python bench/bench_transfer.py --small    # Fashion-MNIST with LeNet-5, under a minute (what the test runs)
    python bench/bench_transfer.py --tiny     # digits, seconds

Prints a table and writes JSON (``--json``, default bench/results/transfer.json).
It compares; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SETTINGS = {
    # dataset, pretrain images per class, target train images per class, test images per class,
    # model, input size, pretrain epochs, head epochs, fine-tune epochs, scratch epochs
    "tiny": dict(dataset="digits", pretrain_per_class=150, target_per_class=5, test_per_class=30,
                 model="lenet5_modern", pretrain_epochs=8, head_epochs=60, finetune_epochs=20, scratch_epochs=80),
    "small": dict(dataset="fashion_mnist", pretrain_per_class=300, target_per_class=10, test_per_class=100,
                  model="resnet20", width=0.5, pretrain_epochs=10, head_epochs=20, finetune_epochs=10,
                  scratch_epochs=30),
    "quick": dict(dataset="fashion_mnist", pretrain_per_class=2000, target_per_class=20, test_per_class=200,
                  model="resnet20", pretrain_epochs=6, head_epochs=20, finetune_epochs=15, scratch_epochs=35),
}


def write_folder(root, images, labels, class_names):
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(root, class_names[label])
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
            os.path.join(folder, f"{index:05d}.png"))


def take(images, labels, classes, per_class, rng):
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
    return images[chosen], labels[chosen]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="digits, LeNet-5, seconds")
    size.add_argument("--small", action="store_true", help="Fashion-MNIST, LeNet-5, under a minute (the test's)")
    size.add_argument("--quick", action="store_true", help="Fashion-MNIST (default)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "transfer.json"))
    parser.add_argument("--workdir", help="keep the folders and runs here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "small" if args.small else "quick"
    s = SETTINGS[mode]

    import imagesets
    from training.run import train

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-transfer-")
    rng = np.random.default_rng(args.seed)
    source = imagesets.load(s["dataset"], test_fraction=0.3, val_fraction=0.0, seed=args.seed)
    names = [str(n).replace("/", "-") for n in source.class_names]
    x, y = source.arrays["train"]
    x_test, y_test = source.arrays["test"]
    write_folder(os.path.join(workdir, "pretrain"), *take(x, y, range(5), s["pretrain_per_class"], rng), names)
    target = os.path.join(workdir, "target")
    write_folder(os.path.join(target, "train"), *take(x, y, range(5, 10), s["target_per_class"], rng), names)
    write_folder(os.path.join(target, "test"), *take(x_test, y_test, range(5, 10), s["test_per_class"], rng), names)

    common = dict(runs_dir=os.path.join(workdir, "runs"), export_dir=os.path.join(workdir, "saved_models"),
                  verbose=0, seed=args.seed, patience=0, batch_size=32, val_fraction=0.2)
    shape = dict(image_size=list(source.input_shape[:2]), channels=source.input_shape[2])
    results = {}
    started = time.time()
    width = {"width": s["width"]} if "width" in s else {}
    pre = train({**common, **shape, **width, "dataset": f"folder:{workdir}/pretrain", "model": s["model"],
                 "epochs": s["pretrain_epochs"], "run_name": "pretrain"}, log=lambda *_: None)
    results["pretrain"] = {"test_accuracy_classes_0_4": pre["test_accuracy"],
                           "seconds": round(time.time() - started, 1)}
    export = os.path.dirname(pre["export_path"])
    for name, extra in (
            ("transfer", {"backbone": export, "weights": "none", "epochs": s["head_epochs"], "lr": 1e-2,
                          "finetune_lr": 1e-3,
                          "finetune_epochs": s["finetune_epochs"], "augment": "light", "flips": False}),
            ("scratch", {"model": s["model"], "epochs": s["scratch_epochs"], "augment": "light", "flips": False,
                         **shape, **width})):
        t0 = time.time()
        run = train({**common, "dataset": f"folder:{target}", "run_name": name, **extra}, log=lambda *_: None)
        results[name] = {"test_accuracy": run["test_accuracy"], "epochs": run["epochs_run"],
                         "seconds": round(time.time() - t0, 1), "train_images": run["counts"]["train"],
                         "test_images": run["counts"]["test"]}
    results["gain"] = results["transfer"]["test_accuracy"] - results["scratch"]["test_accuracy"]
    report = {"mode": mode, "settings": s, "results": results, "workdir": workdir,
              "machine": {"cpus": os.cpu_count(), "processor": platform.machine(), "python": platform.python_version()}}
    print(f"{'':<10} {'test acc':>9} {'epochs':>7} {'seconds':>8}   ({s['dataset']}, {s['model']}, "
          f"{s['target_per_class']} training images per class)")
    for name in ("transfer", "scratch"):
        r = results[name]
        print(f"{name:<10} {r['test_accuracy']:>9.4f} {r['epochs']:>7} {r['seconds']:>8}")
    print(f"gain: {results['gain']:+.4f} (pretraining on classes 0-4: "
          f"{results['pretrain']['test_accuracy_classes_0_4']:.4f}, {results['pretrain']['seconds']} s)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
