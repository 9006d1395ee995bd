"""What the transfer fast path saves: the head phase with cached backbone features
against the same phase running the frozen backbone every step.

    python bench/bench_feature_cache.py [--backbone mobilenet_v2] [--size 96] [--epochs 10]

Both runs use the same folder (real digit images written as PNG files), seed
and head; the table shows seconds for the head phase and test accuracy side by
side, and the ratio.  Writes JSON (default bench/results/feature_cache.json).
It compares; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import machine_info  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--size", type=int, default=96, help="input size (pixels)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=40, help="images per class (10 classes)")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "feature_cache.json"))
    args = parser.parse_args(argv)

    from helpers import write_digit_folder
    from training.run import train

    work = tempfile.mkdtemp(prefix="bench-cache-")
    folder = write_digit_folder(os.path.join(work, "digits"), n_per_class=args.per_class,
                                classes=tuple(str(i) for i in range(10)))
    results = {}
    for name, cache in (("cached features", True), ("backbone every step", False)):
        run = train({"dataset": f"folder:{folder}", "backbone": args.backbone, "weights": "none",
                     "image_size": [args.size, args.size], "epochs": args.epochs, "patience": 0, "verbose": 0,
                     "feature_cache": cache, "export": False, "runs_dir": os.path.join(work, "runs"),
                     "run_name": "cache" if cache else "plain"}, log=lambda *_: None)
        results[name] = {"seconds": run["train_seconds_this_session"], "test_accuracy": run["test_accuracy"]}
    ratio = results["backbone every step"]["seconds"] / results["cached features"]["seconds"]
    print(f"{args.backbone} at {args.size}x{args.size}, {args.per_class * 10} images, {args.epochs} head epochs")
    for name, r in results.items():
        print(f"  {name:<20} {r['seconds']:>7.1f} s   test accuracy {r['test_accuracy']:.4f}")
    print(f"  speed-up: {ratio:.1f}x")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"args": vars(args), "results": results, "speedup": ratio,
                   "machine": machine_info()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
