"""The contract every data source fulfils, and the stratified split."""

from __future__ import annotations

import dataclasses

import numpy as np

from core.rows import CHUNK, on_disk, reader, take

SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class ImageSet:
    """Images as uint8 arrays (N, H, W, C) with raw 0-255 pixels, and integer labels.

    A folder source's images are ``DiskImages``: rows of its on-disk cache,
    read when indexed (``imagesets.diskarray``).  Code that reads them a
    batch at a time (``core.rows``) works on both kinds.

    Attributes:
        name: the dataset spec it came from, e.g. "digits" or "folder:photos".
        class_names: label i is ``class_names[i]``.
        arrays: split name -> (images, labels).
        skipped: (path, reason) for every file a folder source could not use.
        ignored: (path, reason) for the files a folder source did not look at
            (OS litter, hidden folders, files outside class folders); None for
            sources that are not folders.
        files: split name -> the file of each row (folder sources; None otherwise).
        checks: what the scan found about copies (``imagesets.copies.cheap_checks``; folders only).
        excluded: (path, reason) for the files left out by ``--exclude``.
    """

    name: str
    class_names: list[str]
    arrays: dict[str, tuple[np.ndarray, np.ndarray]]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    ignored: list[tuple[str, str]] | None = None
    files: dict[str, list[str]] | None = None
    checks: dict | None = None
    excluded: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.arrays["train"][0].shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, int]:
        return {split: int(len(self.arrays[split][1])) for split in SPLITS}

    def manifest(self) -> dict:
        """What was used, skipped and ignored, with counts that add up to the files seen (folders)."""
        per_class = {name: {split: int(np.sum(self.arrays[split][1] == label)) for split in SPLITS}
                     for label, name in enumerate(self.class_names)}
        used = sum(self.counts().values())
        ignored = self.ignored or []
        seen = used + len(self.skipped) + len(ignored) + len(self.excluded)
        return {
            "dataset": self.name,
            "files_seen": seen if self.ignored is not None else None,
            "used": used, "skipped": len(self.skipped), "ignored": len(ignored), "excluded": len(self.excluded),
            "classes": per_class,
            "skipped_files": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "ignored_files": [{"path": path, "reason": reason} for path, reason in ignored],
            "excluded_files": [{"path": path, "reason": reason} for path, reason in self.excluded],
            "copies": self.checks,
        }

    def dataset(self, split: str):
        """An unbatched ``tf.data.Dataset`` of (uint8 image, int32 label) for ``split``."""
        import tensorflow as tf

        images, labels = self.arrays[split]
        if not on_disk(images):
            return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
        # Read by index a batch at a time, then handed out one by one: the split never sits in memory.
        index = tf.data.Dataset.from_tensor_slices(np.arange(len(labels), dtype=np.int64))
        return index.batch(CHUNK).map(reader(images, labels)).unbatch()

    @property
    def train(self):
        return self.dataset("train")

    @property
    def val(self):
        return self.dataset("val")

    @property
    def test(self):
        return self.dataset("test")


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int,
                     groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Splits indices per class, so every split keeps every class it can.

    ``fractions`` maps split names (other than "train") to shares of each class;
    "train" gets the rest.  A class with at least one image per split gets at
    least one image in every split, which matters for the 5-images-a-class
    folders of a first transfer-learning project.  Seeded, so a rerun sees the
    same split.

    ``groups`` (one id per item, ``imagesets.copies.group_ids``: a folder's
    exact copies and the near copies its scan's perceptual hashes join) keeps
    each group on one side: a group is split as one item, of the class of its
    first member, so a copy never lands in training with its twin in the test
    split.  Without groups of two or more, the split is the same as
    without ``groups``.
    """
    labels = np.asarray(labels)
    if groups is not None:
        groups = np.asarray(groups)
        first = np.flatnonzero(groups == np.arange(len(groups)))  # each group's first member stands for it
        if len(first) < len(groups):
            chosen = stratified_split(labels[first], fractions, seed)
            member = {int(g): name for name, index in chosen.items() for g in first[index]}
            return {name: np.flatnonzero([member[int(g)] == name for g in groups]) for name in chosen}
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in ("train", *fractions)}
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        rng.shuffle(index)
        start = 0
        can_spare = len(index) > len(fractions)
        for name, share in fractions.items():
            take = int(round(len(index) * share))
            if can_spare and share > 0:
                take = max(take, 1)
            take = min(take, len(index) - start - 1)  # leave at least one to train on
            parts[name].append(index[start:start + take])
            start += take
        parts["train"].append(index[start:])
    return {name: np.sort(np.concatenate(chunks)) if chunks else np.array([], dtype=int)
            for name, chunks in parts.items()}


def from_arrays(name, class_names, train, test=None, val=None, *, val_fraction, test_fraction, seed, skipped=(),
                ignored=None, scan=None):
    """Builds an ImageSet, carving whichever of val/test the source lacks out of train.

    ``scan`` (a folder's ``imagesets.folder.Scan``) gives each row's file and
    group of copies: the carved splits keep each group on one side, and the
    ImageSet knows each row's file and what the cheap checks found.
    """
    images, labels = train
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    carve = {}
    if test is None:
        carve["test"] = test_fraction
    if val is None:
        carve["val"] = val_fraction
    train_groups = None
    if scan is not None:
        train_groups = scan.groups["train"]
    parts = stratified_split(labels, carve, seed, groups=train_groups)
    arrays = {split: (take(images, index), labels[index]) for split, index in parts.items()}
    files = None
    if scan is not None:
        files = {split: [scan.files["train"][i] for i in index] for split, index in parts.items()}
    for split, given in (("val", val), ("test", test)):
        if given is not None:
            arrays[split] = (given[0], np.asarray(given[1]).astype(np.int64).reshape(-1))
            if scan is not None:
                files[split] = list(scan.files[split])
    data = ImageSet(name, list(class_names), arrays, list(skipped), None if ignored is None else list(ignored),
                    files=files)
    if scan is not None:
        data.checks = scan.checks(files, arrays, given_split=bool(set(scan.files) - {"train"}), dataset=name)
        data.excluded = list(scan.excluded)
    return data
