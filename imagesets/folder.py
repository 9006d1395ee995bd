"""Folder datasets: one sub-folder per class, images of any format, size and mode.

    photos/cat/1.jpg  photos/dog/a.png ...            -> stratified, seeded split
    photos/train/cat/...  photos/val/...  photos/test/...  -> the given splits

Every file is decoded once, up front, by its content (not its extension), so a
bad file is reported before training instead of failing mid-epoch.  Every file
under the folder is accounted for: used, skipped with the reason it is not a
usable image, or ignored (OS and tool litter, files outside class folders).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imagesets.images import is_hidden, list_images, load_image, problem
from training.errors import UserError

SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


def _class_dirs(path: str) -> list[str]:
    return sorted(d for d in os.listdir(path) if not is_hidden(d) and os.path.isdir(os.path.join(path, d)))


def check_folder(path: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"Dataset folder {path!r} does not exist")
    if not os.path.isdir(path):
        raise UserError(f"Dataset path {path!r} is a file; expected a folder with one sub-folder per class")


def _decode_all(files, size, channels):
    def decode(path):
        try:
            return load_image(path, size, channels), None
        except Exception as error:  # PIL raises many types for bad files
            return None, problem(error)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(decode, files))


def _read_split(root: str, class_names: list[str], size, channels, skipped, read):
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(root, name)
        if os.path.isdir(class_dir):
            found = list_images(class_dir)
            files += found
            labels += [label] * len(found)
    read.update(files)
    images, kept = [], []
    for path, label, (array, error) in zip(files, labels, _decode_all(files, size, channels)):
        if error:
            skipped.append((path, error))
        else:
            images.append(array)
            kept.append(label)
    shape = (0, size[0], size[1], channels)
    return (np.stack(images) if images else np.zeros(shape, np.uint8)), np.asarray(kept, dtype=np.int64)


def ignored_files(root: str, read: set[str]) -> list[tuple[str, str]]:
    """(path, reason) for every file under ``root`` that was not read as a candidate image."""
    ignored = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        hidden = next((part for part in os.path.relpath(folder, root).split(os.sep) if is_hidden(part)), None)
        for name in sorted(files):
            file = os.path.join(folder, name)
            if file in read:
                continue
            if hidden:
                reason = f"inside hidden or tool folder {hidden!r}"
            elif is_hidden(name):
                reason = "hidden or OS file"
            else:
                reason = "not inside a class folder"
            ignored.append((file, reason))
    return ignored


def folder(path: str, *, image_size: tuple[int, int], channels: int):
    """Reads a class-per-folder tree.

    Returns:
        (class_names, train, test_or_None, val_or_None, skipped, ignored): the
        splits as (images, labels); ``skipped`` and ``ignored`` are (path,
        reason) lists of files not used as images and files not looked at.
    """
    path = os.path.expanduser(path)  # "folder:~/photos" reaches us unexpanded: the shell expands only a leading ~
    check_folder(path)
    split_roots = {split: next((os.path.join(path, d) for d in dirs if os.path.isdir(os.path.join(path, d))), None)
                   for split, dirs in SPLIT_DIRS.items()}
    if not split_roots["train"] and (split_roots["val"] or split_roots["test"]):
        raise UserError(f"Dataset folder {path!r} has val/ or test/ sub-folders but no train/; "
                        "add train/<class>/ folders, or put the class folders directly in it")
    train_root = split_roots["train"] or path
    class_names = _class_dirs(train_root)
    if not class_names:
        raise UserError(f"Dataset folder {train_root!r} has no class sub-folders; expected {train_root}/<class>/<image files>")
    if len(class_names) == 1:
        raise UserError(f"Dataset folder {train_root!r} has only one class ({class_names[0]!r}); "
                        "a classifier needs at least two class sub-folders")
    skipped: list[tuple[str, str]] = []
    read: set[str] = set()
    train = _read_split(train_root, class_names, image_size, channels, skipped, read)
    if len(train[1]) == 0:
        raise UserError(f"Dataset folder {train_root!r} holds no readable images "
                        f"({len(skipped)} files skipped)")
    missing = [name for i, name in enumerate(class_names) if not np.any(train[1] == i)]
    if missing:
        raise UserError(f"Class folders with no readable images in {train_root!r}: {', '.join(missing)}; "
                        "add images or remove these folders")
    others = {}
    for split in ("val", "test"):
        if split_roots["train"] and split_roots[split]:
            extra = set(_class_dirs(split_roots[split])) - set(class_names)
            if extra:
                raise UserError(f"{split_roots[split]!r} has classes that train/ lacks: {', '.join(sorted(extra))}")
            others[split] = _read_split(split_roots[split], class_names, image_size, channels, skipped, read)
    return class_names, train, others.get("test"), others.get("val"), skipped, ignored_files(path, read)
