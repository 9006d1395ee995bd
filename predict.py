"""Classify image files with an exported model.

    python predict.py saved_models/lenet5-digits photo.png more/ --top-k 3
    python predict.py saved_models/lenet5-digits/2 images/ --json

The export may be a version folder or a model folder (its newest version is
used).  Images of any size and colour mode are converted exactly as the
training data was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def collect_files(paths: list[str]) -> list[str]:
    from imagesets.images import list_images
    from training.errors import UserError

    files = []
    for path in paths:
        if os.path.isdir(path):
            files += list_images(path)
        elif os.path.isfile(path):
            files.append(path)
        else:
            raise UserError(f"Image path {path!r} does not exist")
    if not files:
        raise UserError(f"No files found in {', '.join(paths)}")
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Print the top-k classes of images with an exported SavedModel.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("export", help="saved_models/<name> (newest version) or saved_models/<name>/<version>")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--tta", choices=("none", "flip", "ten_crop"), default="none",
                        help="average over mirrored views or AlexNet's ten crops (mirroring only when the "
                             "model was trained with flips)")
    args = parser.parse_args(argv)

    from training.errors import UserError
    from training.quiet import import_tensorflow

    import_tensorflow()
    try:
        import numpy as np

        from imagesets.images import load_image, problem
        from serving.load import load_export

        if args.top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {args.top_k}")
        files = collect_files(args.images)
        export = load_export(args.export)
        height, width, channels = export.input_shape
        images, used, skipped = [], [], []
        for path in files:
            try:
                images.append(load_image(path, (height, width), channels))
                used.append(path)
            except Exception as error:  # unreadable files are reported, not fatal
                skipped.append({"path": path, "reason": problem(error)})
        if not images:
            raise UserError(f"None of the {len(files)} files is a readable image")
        from augment import predict_tta

        probabilities = predict_tta(export, np.stack(images).astype(np.float32), args.tta,
                                    flips=export.metadata.get("flips", True))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    k = min(args.top_k, len(export.class_names))
    results = []
    for path, probs in zip(used, probabilities):
        order = np.argsort(-probs)[:k]
        results.append({"path": path, "top": [{"class": export.class_names[i], "probability": float(probs[i])}
                                             for i in order]})
    if args.json:
        print(json.dumps({"export": export.path, "predictions": results, "skipped": skipped}, indent=2))
    else:
        for result in results:
            tops = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in result["top"])
            print(f"{result['path']}: {tops}")
        for item in skipped:
            print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
