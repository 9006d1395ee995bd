"""One audit, in the order it happens: load, copies, unusable images, labels, balance, what to leave out."""

from __future__ import annotations

import os
import time

import numpy as np

import imagesets
from audit import confident, duplicates, probabilities, quality
from core.errors import UserError
from core.rows import concatenate
from imagesets.copies import file_hash
from training.recipes import load_backbone

SELF_SIZE = (32, 32)  # the self-trained network's input when --image-size does not say


def load(config: dict, backbone=None):
    """The dataset at the size the features take, split exactly as ``train.py`` splits it (same seed and shares)."""
    size = tuple(config["image_size"] or (backbone.input_shape[:2] if backbone else SELF_SIZE))
    channels = backbone.input_shape[2] if backbone else config["channels"]
    return imagesets.load(config["dataset"], data_dir=config["data_dir"], image_size=size, channels=channels,
                          val_fraction=config["val_fraction"], test_fraction=config["test_fraction"],
                          seed=config["seed"])


def dataset_root(spec: str) -> str | None:
    kind, _, arg = spec.partition(":")
    return os.path.expanduser(arg) if kind == "folder" and arg else None


def rows_of(data):
    """Every image of every split as one array (a view, for a folder), with labels, splits and file names.

    Names are relative to the dataset folder; other sources have no files, so
    an image is named by its split and row, "test/123"."""
    root = dataset_root(data.name)
    splits = [split for split in imagesets.SPLITS if len(data.arrays[split][1])]
    images = concatenate([data.arrays[split][0] for split in splits])
    labels = np.concatenate([data.arrays[split][1] for split in splits]).astype(np.int64)
    where = [split for split in splits for _ in range(len(data.arrays[split][1]))]
    if data.files is not None:
        paths = [path for split in splits for path in data.files[split]]
        names = [os.path.relpath(path, root) for path in paths]
    else:
        paths = None
        names = [f"{split}/{i}" for split in splits for i in range(len(data.arrays[split][1]))]
    return images, labels, where, names, paths


def check_classes(data, labels: np.ndarray) -> None:
    counts = np.bincount(labels, minlength=data.num_classes)
    thin = [data.class_names[i] for i in np.flatnonzero(counts < 2)]
    if thin:
        raise UserError(f"Class{'es' if len(thin) > 1 else ''} {', '.join(map(repr, thin))} "
                        f"{'have' if len(thin) > 1 else 'has'} fewer than 2 usable images; the audit's "
                        "cross-validation needs at least 2 a class (add images or remove the folder)")


def class_balance(data, labels: np.ndarray) -> dict:
    counts = np.bincount(labels, minlength=data.num_classes)
    weights = len(labels) / (data.num_classes * np.maximum(counts, 1))
    ratio = float(counts.max() / max(counts.min(), 1))
    return {"counts": {name: int(c) for name, c in zip(data.class_names, counts)},
            "largest_over_smallest": round(ratio, 2),
            "class_weight": {name: round(float(w), 3) for name, w in zip(data.class_names, weights)},
            "advice": "train with --class-weight balanced" if ratio >= 1.5 else "balanced enough"}


def to_leave_out(label_issues, copy_groups, image_issues, where) -> list[dict]:
    """The files ``train.py --exclude`` leaves out: doubtful labels, unusable images, and all but one image of
    each group of copies (the one kept is in the training split where one is, and not a doubtful label)."""
    reasons = {}
    for item in image_issues:
        reasons.setdefault(item["index"], f"image: {item['issue']}")
    for item in label_issues:
        reasons.setdefault(item["index"], f"label: given {item['given']}, suggested {item['suggested']}")
    for group in copy_groups:
        members = group["members"]
        keep = sorted(members, key=lambda i: (i in reasons, where[i] != "train", i))[0]
        for i in members:
            if i != keep:
                reasons.setdefault(i, f"{group['kind']} copy of another image kept")
    return [{"index": i, "reason": reason} for i, reason in sorted(reasons.items())]


def audit(config: dict, *, folds: int = 5, epochs: int = probabilities.SELF_EPOCHS,
          threshold: float = confident.THRESHOLD, log=print, **copy_thresholds) -> dict:
    """Audits ``config["dataset"]`` (a training configuration: dataset, image size, split, backbone); returns the
    findings as the JSON records them.  Reads the dataset; writes nothing."""
    started = time.time()
    backbone = load_backbone(config) if config["backbone"] else None
    data = load(config, backbone)
    images, labels, where, names, paths = rows_of(data)
    check_classes(data, labels)
    log(f"Auditing {config['dataset']}: {len(labels)} images in {data.num_classes} classes "
        f"({', '.join(f'{n} {s}' for s, n in data.counts().items())})")
    splits = probabilities.folds_for(labels, folds, config["seed"])
    if backbone is not None:
        predicted = probabilities.with_backbone(backbone, images, labels, data.num_classes, splits, log=log)
    else:
        log(f"Features: {probabilities.SELF_MODEL} trained on the folder, once per fold "
            "(no pretrained weights; --backbone NAME uses a pretrained network's)")
        predicted = probabilities.self_trained(images, labels, data.num_classes, splits, epochs=epochs,
                                               seed=config["seed"], log=log)
    found_labels = confident.label_issues(labels, predicted.probabilities, threshold=threshold)
    names_of = data.class_names
    label_issues = [{"index": issue.index, "file": names[issue.index], "given": names_of[issue.given],
                     "suggested": names_of[issue.suggested], "score": round(issue.score, 5),
                     "split": where[issue.index]} for issue in found_labels]
    hashes = [file_hash(p) for p in paths] if paths else [""] * len(labels)
    # A network trained on the folder puts a class's images close together: its features would pair them.
    features = predicted.features if backbone is not None else None
    copy_groups = duplicates.groups(images, hashes, features, **copy_thresholds)
    dupes = [{"files": [names[i] for i in g["members"]], "kind": g["kind"],
              "labels": [names_of[labels[i]] for i in g["members"]], "splits": [where[i] for i in g["members"]],
              "across_classes": len({int(labels[i]) for i in g["members"]}) > 1, "members": g["members"]}
             for g in copy_groups]
    leaks = [{key: group[key] for key in ("files", "kind", "splits", "labels")}
             for group in dupes if len(set(group["splits"])) > 1]
    image_issues = [{"index": i, "file": names[i], "issue": issue} for i, issue in quality.issues(images, paths)]
    root = dataset_root(config["dataset"])
    for path, reason in data.skipped:
        image_issues.append({"index": None, "file": os.path.relpath(path, root) if root else path,
                             "issue": f"not used: {reason}"})
    leave_out = to_leave_out(label_issues, copy_groups, [i for i in image_issues if i["index"] is not None], where)
    return {
        "dataset": config["dataset"], "root": root, "images": int(len(labels)), "class_names": data.class_names,
        "counts": data.counts(), "image_size": list(images.shape[1:]), "features": predicted.source,
        "settings": {"folds": len(splits), "epochs": epochs if backbone is None else None,
                     "label_threshold": threshold, "seed": config["seed"], "val_fraction": config["val_fraction"],
                     "test_fraction": config["test_fraction"],
                     "near_copies": {"hash_distance": copy_thresholds.get("hash_distance", duplicates.HASH_DISTANCE),
                                     "same_picture": duplicates.SAME_PICTURE,
                                     "registered": duplicates.REGISTERED,
                                     "similarity": (copy_thresholds.get("similarity", duplicates.SIMILARITY)
                                                    if backbone is not None else None)}},
        "out_of_sample_accuracy": round(float(np.mean(predicted.probabilities.argmax(1) == labels)), 4),
        "label_issues": label_issues, "duplicates": dupes, "leaks": leaks, "image_issues": image_issues,
        "class_balance": class_balance(data, labels),
        "exclude": [{"file": names[item["index"]], "reason": item["reason"]} for item in leave_out],
        "seconds": round(time.time() - started, 1),
        "_images": images,  # for the report's pictures; not written to the JSON
    }
