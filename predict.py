"""Classify image files with an exported model.

    python predict.py saved_models/lenet5-digits photo.png more/ --top-k 3
    python predict.py saved_models/lenet5-digits/2 images/ --json
    python predict.py saved_models/lenet5-digits/2/formats/model_int8.tflite images/
    python predict.py saved_models/lenet5-digits --format onnx images/
    python predict.py saved_models/lenet5-digits images/ --explain heatmaps/ --json

The work is done by ``training.predictions``; this file reads the command
line and prints.  The export may be a version folder or a model folder (its newest version is
used), or a ``.tflite``/``.onnx`` file written by ``train.py export`` (class
names from the ``labels.txt`` beside it); ``--format NAME`` picks that file of
an export's ``formats/`` folder.  Images of any size and colour mode are
converted exactly as the training data was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The choices are written out, not imported: importing augment or serving loads Keras, and --help should not
# wait for it.  tests/test_exports.py checks they match augment.tta.MODES and exports.formats.FORMATS,
# tests/test_explain.py that EXPLAIN_METHODS matches explain.METHODS.
TTA_MODES = ("none", "flip", "ten_crop", "shift")
FORMATS = ("tflite", "tflite_fp16", "tflite_int8", "onnx")
EXPLAIN_METHODS = ("gradcam", "occlusion", "integrated_gradients")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Print the top-k classes of images with an exported SavedModel "
                                                 "(or its TFLite/ONNX formats).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("export", help="saved_models/<name> (newest version), saved_models/<name>/<version>, "
                                       "or a .tflite/.onnx file with labels.txt beside it")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--format", metavar="NAME",
                        help="run the export's formats/ file of this format instead of the SavedModel: "
                             f"{', '.join(FORMATS)} (see python train.py export)")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="average over mirrored views, AlexNet's ten crops, or one-pixel shifts (mirroring "
                             "only when the model was trained with flips)")
    parser.add_argument("--explain", metavar="DIR",
                        help="write each image's class heatmap for its top class into DIR: NNN-NAME.heatmap.npy "
                             "(the file's height x width, values in [0, 1]) and NNN-NAME.overlay.png (SavedModel "
                             "exports only)")
    parser.add_argument("--explain-method", default="gradcam", choices=EXPLAIN_METHODS,
                        help="gradcam (Grad-CAM), occlusion, or integrated_gradients")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from core.errors import UserError
    from training.quiet import import_tensorflow

    import_tensorflow()
    try:
        from training.predictions import classify

        result = classify(args.export, args.images, format_name=args.format, top_k=args.top_k, tta=args.tta,
                          explain_dir=args.explain, method=args.explain_method)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for prediction in result["predictions"]:
            tops = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in prediction["top"])
            print(f"{prediction['path']}: {tops}")
            if "explanation" in prediction:
                print(f"  heatmap of {prediction['explanation']['class']}: {prediction['explanation']['overlay']}")
        for item in result["skipped"]:
            print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
