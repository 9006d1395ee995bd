"""``python train.py export SOURCE --formats LIST``: an export in TFLite and ONNX, scored on its run's test split.

    python train.py export runs/lenet5-digits --formats all
    python train.py export saved_models/lenet5-digits/1 --formats tflite,tflite_int8

SOURCE is a run directory (its ``metrics.json`` names the export) or
``saved_models/NAME[/VERSION]``.  The test split is reloaded from the run
directory recorded in the export's metadata (its ``config.json`` holds the
dataset, fractions and seed), so the formats are scored on the images the
run held out, and the int8 file is calibrated on that run's training images.
See ``exports.formats`` for the files written.
"""

from __future__ import annotations

import argparse
import json
import os

from core.errors import UserError
from exports import formats
from exports.load import read_metadata, resolve_export
from training import rundir
from training.config import complete


def resolve_source(source: str) -> str:
    """The export version directory of a run directory or an export folder."""
    metrics_path = os.path.join(source, "metrics.json")
    if os.path.isdir(source) and not os.path.isfile(os.path.join(source, "saved_model.pb")):
        if os.path.isfile(metrics_path):
            try:
                with open(metrics_path, encoding="utf-8") as f:
                    export_path = json.load(f).get("export_path")
            except (OSError, ValueError, AttributeError):
                raise UserError(f"Cannot read {metrics_path!r}") from None
            if not export_path:
                raise UserError(f"Run {source!r} has no export (it ran with --no-export, or on a worker that is "
                                "not the chief); export it by training again without --no-export")
            return resolve_export(export_path)
        if os.path.isfile(os.path.join(source, "config.json")):
            raise UserError(f"Run {source!r} has not finished (no metrics.json), so it has no export yet")
    return resolve_export(source)


def run_split(version_dir: str, metadata: dict):
    """The export's run's data (``imagesets`` result), split exactly as when it trained."""
    run_dir = metadata.get("run_dir")
    config = rundir.read_config(run_dir) if run_dir else None
    if config is None:
        raise UserError(f"The run directory of {version_dir!r} ({run_dir!r}, from assets/metadata.json) is gone or "
                        "has no config.json; its test split scores the formats and its training images calibrate "
                        "int8")
    from training.data import load_data
    from training.recipes import load_backbone

    config = complete(config)
    data = load_data(config, load_backbone(config))
    if list(data.class_names) != list(metadata["class_names"]):
        raise UserError(f"The data of run {run_dir!r} no longer have the export's classes "
                        f"({len(data.class_names)} now, {len(metadata['class_names'])} exported); the test split "
                        "cannot be rebuilt")
    return data


def build_parser() -> argparse.ArgumentParser:
    """``train.py export``'s own parser (it takes no training flags)."""
    parser = argparse.ArgumentParser(
        prog="train.py export",
        description="Convert an export to TFLite (float32, float16, int8) and ONNX, and score each on the run's "
                    "test split against the SavedModel. Writes VERSION/formats/ once.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("source", help="a run directory (runs/NAME) or an export (saved_models/NAME[/VERSION])")
    parser.add_argument("--formats", default="all",
                        help=f"comma-separated: {', '.join(formats.FORMATS)}, or all")
    parser.add_argument("--calibration-images", type=int, default=formats.CALIBRATION_IMAGES,
                        help="training images that calibrate the int8 file")
    parser.add_argument("--repeats", type=int, default=100, help="batch-1 calls timed for each median latency")
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    import transfer  # noqa: F401 - registers a transfer head's layers, for loading an export's model.keras
    names = formats.parse_formats(args.formats)
    formats.require_runtimes(names)
    for flag, value in (("--calibration-images", args.calibration_images), ("--repeats", args.repeats)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")

    version_dir, metadata = read_metadata(resolve_source(args.source))
    formats.unwritten_target(version_dir)  # before the data are loaded; export_formats checks again
    data = run_split(version_dir, metadata)
    formats.export_formats(version_dir, names, test=data.arrays["test"], calibration=data.arrays["train"][0],
                           calibration_images=args.calibration_images, repeats=args.repeats)
    return 0
