"""TFLite (float32, float16, int8) and ONNX formats of a trained model against its SavedModel: file size,
test accuracy, drop, top-1 agreement and batch-1 latency, one table per model.

    .venv/bin/python bench/bench_formats.py                                        # LeNet-5 on digits
    .venv/bin/python bench/bench_formats.py --dataset fashion_mnist --epochs 3
    .venv/bin/python bench/bench_formats.py --model resnet20 --dataset fashion_mnist --epochs 3
    .venv/bin/python bench/bench_formats.py --export saved_models/NAME[/VERSION]    # an export of yours

A model is trained as ``train.py --export-formats all`` would (train.py's
defaults plus the flags given) in a temporary folder that is deleted
afterwards; ``--export`` takes an existing export instead and converts it
(its run directory must still exist, for the test split; an export that
already has ``formats/`` is read, not converted again).  Every format is
scored on the run's whole test split through its own runtime; latency is the
median of ``--repeats`` single-image calls.  Results are merged by
``MODEL-DATASET`` into bench/results/formats.json (or ``--json``), so runs of
several models build one table.  It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from machine import machine_info

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "formats.json")


def from_training(args) -> tuple[str, dict, dict]:
    """(label, report, what ran) for a fresh run trained and converted in a temporary folder."""
    from exports import formats
    from training.run import train

    work = tempfile.mkdtemp(prefix="bench-formats-")
    try:
        config = {"model": args.model, "dataset": args.dataset, "epochs": args.epochs, "verbose": 0,
                  "runs_dir": os.path.join(work, "runs"), "export_dir": os.path.join(work, "saved_models"),
                  "export_formats": list(formats.FORMATS)}
        started = time.time()
        metrics = train(config, log=lambda *_: None)  # the table is printed once, below
        with open(os.path.join(metrics["export_path"], formats.FOLDER, formats.REPORT)) as f:
            report = json.load(f)
        ran = {"model": args.model, "dataset": args.dataset, "epochs": args.epochs,
               "epochs_run": metrics["epochs_run"], "seconds": round(time.time() - started, 1),
               "command": f"train.py --model {args.model} --dataset {args.dataset} --epochs {args.epochs} "
                          "--export-formats all"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return f"{args.model}-{args.dataset}", report, ran


def from_export(args) -> tuple[str, dict, dict]:
    """(label, report, what ran) for an existing export; converted unless it has formats/ already."""
    from exports import formats
    from exports.load import read_metadata
    from training.export_formats import resolve_source, run_split

    version_dir, metadata = read_metadata(resolve_source(args.export))
    report_path = os.path.join(version_dir, formats.FOLDER, formats.REPORT)
    if os.path.isfile(report_path):
        with open(report_path) as f:
            report = json.load(f)
    else:
        data = run_split(version_dir, metadata)
        report = formats.export_formats(version_dir, "all", test=data.arrays["test"],
                                        calibration=data.arrays["train"][0], repeats=args.repeats)
    ran = {"model": metadata.get("model"), "dataset": metadata.get("dataset"), "export": version_dir,
           "command": f"train.py export {version_dir} --formats all"}
    return f"{metadata.get('model')}-{metadata.get('dataset')}", report, ran


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--export", help="convert this export (saved_models/NAME[/VERSION]) instead of training")
    parser.add_argument("--repeats", type=int, default=100, help="batch-1 calls per median latency (--export)")
    parser.add_argument("--json", default=DEFAULT_OUT, help="results file; entries are merged by MODEL-DATASET")
    args = parser.parse_args(argv)

    from training.quiet import import_tensorflow

    import_tensorflow()
    from exports import formats

    label, report, ran = from_export(args) if args.export else from_training(args)
    results = {}
    if os.path.isfile(args.json):
        with open(args.json) as f:
            results = json.load(f).get("results", {})
    results[label] = {"ran": ran, "rows": formats.rows(report), "report": report}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"machine": machine_info(), "results": results}, f, indent=2)
    print(f"{label}: {report['metadata']['test_images']} test images")
    print(formats.table(formats.rows(report)))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
