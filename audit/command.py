"""``python train.py audit DATASET``: the command line of the audit (``audit.run``)."""

from __future__ import annotations

import os

from training import config as config_module

# The defaults the flags show, named here so that ``train.py audit --help`` answers without TensorFlow starting;
# tests/test_audit.py checks each against the module that owns it.
SELF_EPOCHS = 8         # audit.probabilities.SELF_EPOCHS
THRESHOLD = 0.05        # audit.confident.THRESHOLD
HASH_DISTANCE = 8       # audit.duplicates.HASH_DISTANCE
SIMILARITY = 0.97       # audit.duplicates.SIMILARITY


def build_parser():
    """``train.py audit``: the training flags (dataset, image size, split, --backbone) and an Audit group."""
    parser = config_module.build_parser()
    parser.prog = "train.py audit"
    parser.description = ("Audit a dataset before trusting it: likely mislabeled images (confident learning on "
                          "K-fold out-of-sample probabilities), exact and near copies, copies across the "
                          "train/val/test split train.py saves, unusable images and class balance. Writes a report "
                          "page and a JSON that `train.py --exclude` reads; never changes a file.")
    group = parser.add_argument_group("Audit")
    group.add_argument("target", nargs="?", metavar="DATASET", help="the dataset (as --dataset): folder:PATH, ...")
    group.add_argument("--json", metavar="FILE", help="also write the findings here (always in the run directory)")
    group.add_argument("--folds", type=int, default=5, help="K of the K-fold out-of-sample probabilities")
    group.add_argument("--audit-epochs", type=int, default=SELF_EPOCHS,
                       help="epochs of each fold's network, without --backbone")
    group.add_argument("--label-threshold", type=float, default=THRESHOLD,
                       help="report a label flagged by confident learning only when its out-of-sample probability "
                            "is below this (1: all that cleanlab flags)")
    group.add_argument("--hash-distance", type=int, default=HASH_DISTANCE,
                       help="near copies: at most this many of the perceptual hashes' 64 bits differ")
    group.add_argument("--similarity", type=float, default=SIMILARITY,
                       help="near copies, with --backbone: features' cosine similarity at least this (with "
                            "thumbnails that correlate)")
    return parser


def main(argv) -> int:
    parser = build_parser()
    config, args = config_module.resolve_config(argv, parser)  # --help has answered and left by now
    from audit import report
    from audit.run import audit

    if args.target:
        config["dataset"] = args.target
    if args.folds < 2:
        parser.error(f"--folds must be at least 2, got {args.folds}")
    name = config["run_name"] or config_module.default_run_name({**config, "model": "audit", "backbone": None})
    folder = os.path.join(config["runs_dir"], "audit", name)
    findings = audit(config, folds=args.folds, epochs=args.audit_epochs, threshold=args.label_threshold,
                     hash_distance=args.hash_distance, similarity=args.similarity)
    os.makedirs(folder, exist_ok=True)
    json_path = report.write_json(findings, os.path.join(folder, "audit.json"))
    if args.json:
        report.write_json(findings, args.json)
    html_path = report.write_html(findings, os.path.join(folder, "report.html"))
    for line in report.summary(findings, json_path, html_path, args.json or json_path):
        print(line)
    return 0
