"""The scan's cheap checks for copies: files with the same bytes, and images with the same pixels.

Every folder load hashes each file's bytes (SHA-256) while it decodes it, and
the decoded image's pixels at the run's size; both go into the image cache's
metadata, so a later load reads them instead of hashing again.  Two files
with the same bytes, or that decode to the same pixels (one photo saved as PNG
and as BMP), are one *group of copies*; that is what every folder run reports
in one line and records in its ``metrics.json``: copies under two labels, and
copies across a train/val/test split that the folder gives.

The split (``imagesets.base.stratified_split``) keeps each group on one side,
with the near copies the scan's perceptual hashes join to it (re-encoded,
resized, brightened, slightly cropped; ``imagesets.perceptual``), so that a
copy does not test what its twin trained.  The scan's hashing is tight, and
cheap: ``python train.py audit`` looks further (thumbnails, registration,
backbone features) and reports what it finds.
"""

from __future__ import annotations

import hashlib

import numpy as np

AUDIT_HINT = "python train.py audit {dataset}"


def file_hash(path: str) -> str:
    """SHA-256 of the file's bytes, hex (empty for a file that cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return ""
    return digest.hexdigest()


def pixel_hash(array: np.ndarray) -> str:
    """A hash of the decoded pixels: equal for files that decode to the same image at the run's size."""
    return hashlib.sha256(np.ascontiguousarray(array, np.uint8).tobytes()).hexdigest()[:32]


def group_ids(*keys: list[str], pairs=()) -> np.ndarray:
    """One group id per item: items sharing any non-empty key (in any of the ``keys`` lists), or joined by one of
    ``pairs`` (index pairs, e.g. ``imagesets.perceptual.near_pairs``), share a group.

    Union-find over the items; a group's id is its smallest item's index, so
    an item alone in its group has its own index as its id.
    """
    count = len(keys[0]) if keys else 0
    parent = np.arange(count)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i, j):
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)

    for key_list in keys:
        first = {}
        for i, key in enumerate(key_list):
            if not key:
                continue
            if key in first:
                join(i, first[key])
            else:
                first[key] = i
    for i, j in pairs:
        join(i, j)
    return np.array([root(i) for i in range(count)], dtype=np.int64)


def copy_groups(ids: np.ndarray) -> list[np.ndarray]:
    """The groups of two or more items, each as the sorted indices of its items."""
    ids = np.asarray(ids)
    found = {}
    for i, group in enumerate(ids.tolist()):
        found.setdefault(group, []).append(i)
    return [np.array(members) for members in found.values() if len(members) > 1]


def cheap_checks(files: list[str], labels: np.ndarray, splits: list[str], ids: np.ndarray, *, given_split: bool,
                 dataset: str) -> dict:
    """What the scan found about copies, for the run's line and its metrics.json.

    Args:
        files: every used file; labels and splits the same length.
        ids: each file's group (``group_ids``).
        given_split: whether the folder gave its own train/val/test folders
            (the toolkit's own split keeps each group on one side).
    """
    groups = copy_groups(ids)
    labels = np.asarray(labels)
    across_classes = [g for g in groups if len(set(labels[g].tolist())) > 1]
    across_split = [g for g in groups if len({splits[i] for i in g}) > 1]

    def listed(chosen):
        return [{"files": [files[i] for i in g], "splits": [splits[i] for i in g],
                 "labels": [int(labels[i]) for i in g]} for g in chosen]

    return {"exact_copy_groups": len(groups), "files_in_copy_groups": int(sum(len(g) for g in groups)),
            "copies_across_classes": len(across_classes), "copies_across_split": len(across_split),
            "split": ("given by the folder" if given_split
                      else "the toolkit's, each group of copies and near copies on one side"),
            "groups_across_classes": listed(across_classes), "groups_across_split": listed(across_split),
            "audit": AUDIT_HINT.format(dataset=dataset)}


def line(checks: dict) -> str:
    """The one line every folder run prints about copies."""
    if not checks["exact_copy_groups"]:
        return f"Copies: no exact copies among the files (near copies and wrong labels: {checks['audit']})"
    groups = checks["exact_copy_groups"]
    parts = [f"{groups} group{'s' if groups > 1 else ''} of exact copies ({checks['files_in_copy_groups']} files)"]
    if checks["copies_across_classes"]:
        parts.append(f"{checks['copies_across_classes']} under two or more labels")
    if checks["copies_across_split"]:
        parts.append(f"{checks['copies_across_split']} across train/val/test (inflating the test score)")
    elif checks["split"].startswith("the toolkit"):
        parts.append("each kept on one side of the split")
    return f"Copies: {', '.join(parts)}; see {checks['audit']}"
