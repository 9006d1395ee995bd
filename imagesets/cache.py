"""The on-disk cache of a folder's (or a TFDS split's) decoded images, written once and read from then on.

Decoding and resizing photos is the slow part of loading a folder, and
holding the results in memory is what limits its size.  So the first load
decodes every file once into one uint8 file, row ``i`` for listed file
``i``, and every later load (a rerun, a resumed run, each search trial, the
``export`` and ``ensemble`` commands) reads rows from it on demand
(``imagesets.diskarray.DiskImages``).

    $CNN_CLASSROOM_CACHE_DIR, else $XDG_CACHE_HOME/cnn-classroom, else ~/.cache/cnn-classroom
        images/<key>/pixels.u8   N rows of H*W*C bytes
        images/<key>/meta.json   the key, the row shape, why each unusable file was skipped

The key hashes every listed file's path, size and modification time, with the
target size, the channels and the decoder's version, so a changed, added or
removed file (or another --image-size) gives another key, and the old entry
is simply no longer read.  A TFDS split (``imagesets.tfds_source``) keys its
entry by its record files the same way, with its dataset, version and split
(``load_or_build_rows``), and records its labels in the metadata.  An entry is written in a temporary folder and
renamed into place once complete, and it is trusted only when its metadata
matches and its pixel file has every byte, so a crash or Ctrl-C mid-write
never leaves an entry that a later run would believe.  Entries are safe to
delete at any time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time

import PIL

from imagesets.diskarray import DiskImages, write_at

CACHE_ENV = "CNN_CLASSROOM_CACHE_DIR"
# Bump when decoding changes what a file becomes (imagesets.images.load_image), so old entries are not read.
FORMAT = 1
PIXELS, META = "pixels.u8", "meta.json"
PARTIAL = ".partial-"  # in the name of an entry still being written
STALE = ".stale-"  # in the name of an untrusted entry being removed
ABANDONED_AFTER = 24 * 3600  # seconds: a partial entry this old was left by a crash, not a slow writer


def cache_root() -> str:
    """Where cache entries live: $CNN_CLASSROOM_CACHE_DIR, else the user's cache folder (XDG)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "cnn-classroom")


def _stat(path: str):
    try:
        info = os.stat(path)
    except OSError:
        return None, None  # gone since it was listed: decoding will say so, and the key still differs
    return info.st_size, info.st_mtime_ns


def source_key(files: list[str], row_shape, identity=()) -> str:
    """The hash that names the entry for these files decoded to ``row_shape`` (H, W, C); ``identity``:
    anything else (JSON) that changes what the rows hold, e.g. a TFDS split's name and version."""
    listing = [[os.path.abspath(path), *_stat(path)] for path in files]
    text = json.dumps([FORMAT, PIL.__version__, list(row_shape), listing, list(identity)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def entry_dir(key: str) -> str:
    return os.path.join(cache_root(), "images", key)


def trusted(directory: str, key: str, count: int, row_shape) -> dict | None:
    """The entry's metadata (with each row's skip reason under "errors", None for a usable one) if
    ``directory`` holds a complete entry for ``key``."""
    try:
        with open(os.path.join(directory, META), encoding="utf-8") as f:
            meta = json.load(f)
        size = os.path.getsize(os.path.join(directory, PIXELS))
    except (OSError, ValueError):
        return None
    complete = (meta.get("key") == key and meta.get("count") == count and meta.get("row_shape") == list(row_shape)
                and isinstance(meta.get("errors"), list) and len(meta["errors"]) == count
                and size == count * math.prod(row_shape))
    return meta if complete else None


def load_or_build(files: list[str], row_shape, decode) -> tuple[DiskImages, list]:
    """(every file's pixels, every file's skip reason or None), from the cache or decoded into it.

    ``decode(store)`` decodes the files, calling ``store(i, array)`` for each
    usable one (from any thread), and returns the list of skip reasons.

    Raises:
        OSError: the cache cannot be written (read-only or full disk); nothing is left behind.
    """
    pixels, meta = load_or_build_rows(source_key(files, row_shape), len(files), row_shape,
                                      lambda store: {"errors": decode(store)})
    return pixels, meta["errors"]


def load_or_build_rows(key: str, count: int, row_shape, decode) -> tuple[DiskImages, dict]:
    """(``count`` rows of pixels, the entry's metadata) for ``key``, from the cache or written into it.

    ``decode(store)`` calls ``store(i, array)`` for each row it has and returns
    what the metadata records: "errors" (one skip reason or None per row) and
    anything else the source needs again (a TFDS split's labels).
    """
    directory = entry_dir(key)
    meta = trusted(directory, key, count, row_shape)
    if meta is None:
        meta = _build(directory, key, count, tuple(row_shape), decode)
    return DiskImages(os.path.join(directory, PIXELS), row_shape, count=count), meta


def _build(directory: str, key: str, count: int, row_shape: tuple, decode) -> dict:
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    remove_abandoned(parent)
    temp = tempfile.mkdtemp(prefix=key + PARTIAL, dir=parent)
    try:
        recorded = _write_pixels(os.path.join(temp, PIXELS), count, row_shape, decode)
        meta = {**recorded, "key": key, "count": count, "row_shape": list(row_shape), "format": FORMAT}
        _write_meta(os.path.join(temp, META), meta)
        _publish(temp, directory, key, count, row_shape)
    except BaseException:  # Ctrl-C included: the half-written entry goes
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return meta


def remove_abandoned(parent: str, now: float | None = None) -> None:
    """Deletes the partial entries crashed writers left behind (never read, but they take disk)."""
    now = time.time() if now is None else now
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        try:
            old = now - os.path.getmtime(path) > ABANDONED_AFTER
        except OSError:
            continue  # removed meanwhile
        if (PARTIAL in name or STALE in name) and old:
            shutil.rmtree(path, ignore_errors=True)


def _write_pixels(path: str, count: int, row_shape: tuple, decode) -> dict:
    """Decodes into ``path`` at each file's row; flushed to disk before the entry is published."""
    row_bytes = math.prod(row_shape)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, count * row_bytes)  # rows of skipped files stay zeros (and take no disk: a sparse file)

        def store(index, array):
            write_at(fd, array, index * row_bytes)

        recorded = decode(store)
        os.fsync(fd)  # the rename must not reach the disk before the pixels do
    finally:
        os.close(fd)
    return recorded


def _write_meta(path: str, meta: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())


def _publish(temp: str, directory: str, key: str, count: int, row_shape: tuple) -> None:
    """Renames the complete entry into place; an untrusted old one is removed first."""
    if os.path.exists(directory):
        if trusted(directory, key, count, row_shape) is not None:  # another process finished it meanwhile
            shutil.rmtree(temp, ignore_errors=True)
            return
        stale = tempfile.mkdtemp(prefix=key + STALE, dir=os.path.dirname(directory))
        os.rename(directory, os.path.join(stale, "entry"))
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(temp, directory)
    except OSError:
        if trusted(directory, key, count, row_shape) is None:
            raise
        shutil.rmtree(temp, ignore_errors=True)  # lost a race to an identical, complete entry
