"""Folder datasets: one sub-folder per class, images of any format, size and mode.

    photos/cat/1.jpg  photos/dog/a.png ...            -> stratified, seeded split
    photos/train/cat/...  photos/val/...  photos/test/...  -> the given splits

Every file is decoded once, up front, by its content (not its extension), so a
bad file is reported before training instead of failing mid-epoch.  Files are
decoded by a thread pool, large JPEGs at a reduced scale (``images._draft_jpeg``),
with a progress line on stderr when the scan takes more than a second.  The
decoded images go to an on-disk cache (``imagesets.cache``) that later loads
read instead of decoding again, and a split's images are rows of that cache
read on demand (``imagesets.diskarray``), so a folder need not fit in memory.
Every file under the folder is accounted for: used, skipped with the reason it
is not a usable image, or ignored (OS and tool litter, files outside class
folders).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from core.errors import UserError
from core.progress import Progress
from core.rows import take
from imagesets import cache, copies, perceptual
from imagesets.images import is_hidden, list_images, load_image, problem

SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}


def _class_dirs(path: str) -> list[str]:
    return sorted(d for d in os.listdir(path) if not is_hidden(d) and os.path.isdir(os.path.join(path, d)))


def check_folder(path: str) -> None:
    if not os.path.exists(path):
        raise UserError(f"Dataset folder {path!r} does not exist")
    if not os.path.isdir(path):
        raise UserError(f"Dataset path {path!r} is a file; expected a folder with one sub-folder per class")


def _decode_all(files, size, channels, store, title="Reading images") -> dict:
    """Decodes ``files``, handing each usable image to ``store(i, array)``.

    Returns ``{"errors": [each file's skip reason or None], "hashes": [each
    usable file's [bytes hash, pixels hash, perceptual hashes] or None]}``
    (``imagesets.copies``, ``imagesets.perceptual.key``): the scan's cheap
    checks for copies cost one more read of a file the decoder has just read,
    and the hashing of the decoded image (0.25 to 0.5 s of CPU per 1,000
    images).  Decoded by a thread pool: PIL releases the GIL
    while it decodes, so the files are decoded in parallel.  Each image is
    stored as soon as it is decoded, so the scan holds a few images, not the
    folder.  Progress is shown as they finish.
    """
    def decode(index, path):
        try:
            array = load_image(path, size, channels)
        except Exception as error:  # PIL raises many types for bad files
            return problem(error), None
        store(index, array)  # outside the try: a full disk is not a bad image
        return None, [copies.file_hash(path), copies.pixel_hash(array), perceptual.key(array)]

    progress = Progress(len(files), label=title)
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
    try:
        futures = [pool.submit(decode, index, path) for index, path in enumerate(files)]
        for future in as_completed(futures):
            progress.update(skipped=int(future.result()[0] is not None))
    finally:
        # On Ctrl-C, drop the files not started yet instead of decoding the rest of the folder first.
        pool.shutdown(wait=True, cancel_futures=True)
    progress.close()
    results = [future.result() for future in futures]
    return {"errors": [error for error, _ in results], "hashes": [hashes for _, hashes in results]}


def _hashes_of(files, pixels, errors, hashes=None) -> list:
    """The scan's hashes for a cache entry written before the scan kept them (all of them read once more) or
    before it kept perceptual hashes (those hashed from the cached pixels); not kept."""
    if isinstance(hashes, list) and len(hashes) == len(files):
        return [h if h is None or len(h) == 3 else [*h[:2], perceptual.key(pixels[i])] for i, h in enumerate(hashes)]
    return [None if error else [copies.file_hash(path), copies.pixel_hash(pixels[i]), perceptual.key(pixels[i])]
            for i, (path, error) in enumerate(zip(files, errors))]


def _decoded(files, size, channels, title):
    """(pixels of every file, row i for file i; every file's skip reason or None; every file's hashes), decoded
    once.

    The pixels come from the folder's image cache (``imagesets.cache``),
    written by the first load; when the cache cannot be written, they are
    decoded into memory as before, with a note saying why.
    """
    row_shape = (size[0], size[1], channels)
    try:
        pixels, meta = cache.load_or_build_rows(cache.source_key(files, row_shape), len(files), row_shape,
                                                lambda store: _decode_all(files, size, channels, store, title))
        return pixels, meta["errors"], _hashes_of(files, pixels, meta["errors"], meta.get("hashes"))
    except OSError as error:
        print(f"Note: cannot write the image cache under {cache.cache_root()!r} ({error}); holding the images "
              f"in memory instead (set {cache.CACHE_ENV} to a writable folder)", file=sys.stderr)
    pixels = np.zeros((len(files), *row_shape), np.uint8)

    def store(index, array):
        pixels[index] = array

    decoded = _decode_all(files, size, channels, store, title)
    return pixels, decoded["errors"], decoded["hashes"]


def _list_split(root: str, class_names: list[str]):
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(root, name)
        if os.path.isdir(class_dir):
            found = list_images(class_dir)
            files += found
            labels += [label] * len(found)
    return files, labels


@dataclasses.dataclass
class Scan:
    """What the scan knows of each used file besides its pixels: its path and hashes, split by split, and
    the files ``--exclude`` left out."""

    root: str
    files: dict[str, list[str]]
    hashes: dict[str, list]
    excluded: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def groups(self) -> dict[str, np.ndarray]:
        """Each split's rows' groups of copies and near copies (``imagesets.copies.group_ids``,
        ``imagesets.perceptual.near_pairs``): what the toolkit's split keeps on one side."""
        return {split: copies.group_ids([h[0] for h in hashes], [h[1] for h in hashes],
                                        pairs=perceptual.near_pairs([h[2] for h in hashes]))
                for split, hashes in self.hashes.items()}

    def checks(self, files: dict[str, list[str]], arrays: dict, *, given_split: bool, dataset: str) -> dict:
        """The cheap checks over the splits as carved (``imagesets.copies.cheap_checks``)."""
        hash_of = {path: h for split in self.files for path, h in zip(self.files[split], self.hashes[split])}
        listed = [(path, split, label) for split in files for path, label in zip(files[split], arrays[split][1])]
        ids = copies.group_ids([hash_of[p][0] for p, _, _ in listed], [hash_of[p][1] for p, _, _ in listed])
        return copies.cheap_checks([os.path.relpath(p, self.root) for p, _, _ in listed],
                                   np.array([label for _, _, label in listed]), [s for _, s, _ in listed], ids,
                                   given_split=given_split, dataset=dataset)


def excluded_paths(root: str, paths) -> dict[str, str]:
    """``{absolute path: why}`` for ``paths`` (relative to ``root``, or absolute)."""
    found = {}
    for path, reason in paths:
        full = path if os.path.isabs(path) else os.path.join(root, path)
        found[os.path.normpath(os.path.abspath(full))] = reason
    return found


def _read_splits(listed, size, channels, skipped, title, exclude=None):
    """(images, labels, files, hashes) per split, the images rows of the decoded files; skipped files appended
    in order; the files ``exclude`` names ({absolute path: reason}) left out, as (path, reason)."""
    files = [path for split_files, _ in listed.values() for path in split_files]
    pixels, errors, hashes = _decoded(files, size, channels, title)
    arrays, position, excluded = {}, 0, []
    exclude = exclude or {}
    for split, (split_files, labels) in listed.items():
        rows, kept, kept_files, kept_hashes = [], [], [], []
        for path, label in zip(split_files, labels):
            reason = exclude.get(os.path.normpath(os.path.abspath(path)))
            if errors[position]:
                skipped.append((path, errors[position]))
            elif reason is not None:
                excluded.append((path, reason))
            else:
                rows.append(position)
                kept.append(label)
                kept_files.append(path)
                kept_hashes.append(hashes[position])
            position += 1
        arrays[split] = (take(pixels, np.asarray(rows, np.int64)), np.asarray(kept, np.int64), kept_files,
                         kept_hashes)
    return arrays, excluded


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


def folder(path: str, *, image_size: tuple[int, int], channels: int, exclude=()):
    """Reads a class-per-folder tree.

    Args:
        exclude: (path, reason) pairs of files to leave out (``--exclude``),
            paths relative to ``path`` or absolute; they are still decoded
            into the image cache, so leaving files out does not decode the
            folder again.

    Returns:
        (class_names, train, test_or_None, val_or_None, skipped, ignored, scan):
        the splits as (images, labels); ``skipped`` and ``ignored`` are (path,
        reason) lists of files not used as images and files not looked at;
        ``scan`` (a ``Scan``) each used file's path and hashes.
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
    listed = {"train": _list_split(train_root, class_names)}
    for split in ("val", "test"):
        if split_roots["train"] and split_roots[split]:
            extra = set(_class_dirs(split_roots[split])) - set(class_names)
            if extra:
                raise UserError(f"{split_roots[split]!r} has classes that train/ lacks: {', '.join(sorted(extra))}")
            listed[split] = _list_split(split_roots[split], class_names)
    read = {file for files, _ in listed.values() for file in files}
    skipped: list[tuple[str, str]] = []
    splits, excluded = _read_splits(listed, image_size, channels, skipped, title=f"Reading {path}",
                                    exclude=excluded_paths(path, exclude))
    scan = Scan(path, {split: part[2] for split, part in splits.items()},
                {split: part[3] for split, part in splits.items()}, excluded)
    splits = {split: part[:2] for split, part in splits.items()}
    train = splits["train"]
    if len(train[1]) == 0:
        raise UserError(f"Dataset folder {train_root!r} holds no readable images "
                        f"({len(listed['train'][0])} files skipped)")
    missing = [name for i, name in enumerate(class_names) if not np.any(train[1] == i)]
    if missing:
        raise UserError(f"Class folders with no readable images in {train_root!r}: {', '.join(missing)}; "
                        "add images or remove these folders")
    return (class_names, train, splits.get("test"), splits.get("val"), skipped, ignored_files(path, read), scan)
