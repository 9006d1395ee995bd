"""Copies: exact (same bytes or same pixels) and near (perceptual hash, registration, or backbone features).

A pair of images is a near copy when either

* their perceptual hashes (``imagesets.perceptual``) differ in at most
  ``HASH_DISTANCE`` of 64 bits and their grey 16x16 thumbnails, each minus
  its mean, correlate at least ``SAME_PICTURE`` (re-encoded, resized,
  brightened copies);
* one image's centre (or the whole), scaled to the other, correlates with
  it at least ``REGISTERED`` (slightly cropped copies, and brightened ones
  whose hash moved further: ``register``); or
* with a pretrained ``--backbone``, their features' cosine similarity is at
  least ``SIMILARITY``, their thumbnails correlate at least
  ``THUMB_CORRELATION`` and their hashes differ in at most
  ``FEATURE_HASH_DISTANCE`` bits.  The features of the network the audit
  trains on the folder itself put a class's images close together, so
  without a backbone they are not used here.

Each test alone pairs different pictures: two Fashion-MNIST images of a
class hash within 8 bits of each other and their 16x16 thumbnails correlate
at up to 0.994 (2,000 images); the thresholds are where no pair of those
2,000 passed and every one of the benchmark's planted copies did
(``bench/bench_audit.py``).

Pairs join into groups (union-find); a group is "exact" when all its images
share bytes or pixels, "near" otherwise.  A group whose images sit in more
than one split is a *leak*: the same picture trains and then tests.
"""

from __future__ import annotations

import numpy as np

from core.rows import batches
from imagesets.copies import group_ids, pixel_hash
from imagesets.perceptual import distances, phashes

HASH_DISTANCE = 8
SAME_PICTURE = 0.995
SIMILARITY = 0.97
THUMB_CORRELATION = 0.95
FEATURE_HASH_DISTANCE = 20
THUMB = 16
CHUNK = 1024
# Cropped copies.  A crop scaled back to the original's size is the original's centre enlarged, so a fixed
# thumbnail of each misses it, and so did one fixed zoom: the benchmark's cropped copies (5% off each side of 28
# pixels, which rounds to 93% of a side) correlated at as little as 0.9956 with the centre at the one zoom the
# detector tried (94%), where pairs of different Fashion-MNIST pictures reached 0.9939, too close for one
# threshold.  So the zoom is searched: first coarsely at 16x16 for every pair (a candidate when one image's
# centre at one of ``ZOOMS`` correlates at least ``CANDIDATE`` with the other), then finely (``FINE_ZOOMS``)
# for the candidates only, at the most pixels both hold (``register``): there the copies correlated at 0.997
# or more, and different pictures at 0.994 at most.  Crops are looked for about the centre, keeping 80% of
# each side or more; a crop from one corner is not (with a pretrained backbone, its features may pair it).
REGISTER_SIDE = 32  # pixels a side of the grey image the centres are cut from
ZOOMS = (0.97, 0.94, 0.91, 0.88, 0.85, 0.82)
CANDIDATE = 0.98
FINE_ZOOMS = tuple(round(1 - step / 100, 2) for step in range(21))  # 1.00, 0.99, ..., 0.80
REGISTERED = 0.995


def _unit(rows: np.ndarray) -> np.ndarray:
    """Rows flattened, each minus its mean, of unit length (a constant row is all zeros)."""
    rows = rows.reshape(len(rows), -1).astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def pictures(images) -> tuple[np.ndarray, np.ndarray]:
    """(the (N, 256) unit 16x16 thumbnails, the (N, 32, 32, 1) grey images the centres are cut from), in one
    pass over the images (a folder's are read from disk a chunk at a time); 5 KB an image."""
    import tensorflow as tf

    thumbs, greys = [], []
    for chunk in batches(images):
        grey = np.asarray(chunk, np.float32).mean(axis=-1, keepdims=True)
        thumbs.append(_unit(tf.image.resize(grey, (THUMB, THUMB), antialias=True).numpy()))
        greys.append(tf.image.resize(grey, (REGISTER_SIDE, REGISTER_SIDE), antialias=True).numpy())
    if not thumbs:
        return np.zeros((0, THUMB * THUMB), np.float32), np.zeros((0, REGISTER_SIDE, REGISTER_SIDE, 1), np.float32)
    return np.concatenate(thumbs), np.concatenate(greys)


def centres(greys, index, zooms, size: int) -> np.ndarray:
    """(len(index), len(zooms), size * size): each image's centre (``zoom`` of each side) scaled to size x size,
    unit rows (bilinear, so a zoom need not fall on whole pixels)."""
    import tensorflow as tf

    index = np.asarray(index, np.int32)
    margins = (1 - np.asarray(zooms, np.float32)) / 2
    boxes = np.tile(np.stack([margins, margins, 1 - margins, 1 - margins], axis=1), (len(index), 1))
    cut = tf.image.crop_and_resize(greys, boxes, np.repeat(index, len(zooms)), (size, size)).numpy()
    return _unit(cut).reshape(len(index), len(zooms), size * size)


def register(greys, pairs: np.ndarray) -> np.ndarray:
    """For each pair (i, j), the best correlation of one image's centre with the other whole, over
    ``FINE_ZOOMS`` and both ways round.

    Each zoom is compared at the pixels the centre holds (a 90% centre of 32
    pixels, at 29): the centre is not enlarged and the other is shrunk to
    it, so neither has detail the other lacks.  Copies of 106-pixel tiles of
    scikit-learn's photographs with 5% cut off each side, read at 32x32,
    then correlated at 0.996 to 0.999 with their originals' centres, where
    comparing both at 32 pixels gave 0.990."""
    import tensorflow as tf

    best = np.full(len(pairs), -1.0, np.float32)
    involved, local = np.unique(pairs, return_inverse=True)  # only the candidates' images are scaled
    greys, local = tf.gather(greys, involved), local.reshape(pairs.shape)
    by_size = {}
    for zoom in FINE_ZOOMS:
        by_size.setdefault(max(THUMB, round(zoom * REGISTER_SIDE)), []).append(zoom)
    for size, zooms in by_size.items():
        wholes = _unit(tf.image.resize(greys, (size, size), antialias=True).numpy())
        for a, b in ((local[:, 0], local[:, 1]), (local[:, 1], local[:, 0])):
            for start in range(0, len(pairs), CHUNK):
                part = slice(start, start + CHUNK)
                cut = centres(greys, a[part], zooms, size)
                best[part] = np.maximum(best[part], np.einsum("pzk,pk->pz", cut, wholes[b[part]]).max(axis=1))
    return best


def near_pairs(bits: np.ndarray, features: np.ndarray | None, thumbs: np.ndarray, greys: np.ndarray, *,
               hash_distance: int = HASH_DISTANCE, similarity: float = SIMILARITY,
               thumb_correlation: float = THUMB_CORRELATION) -> list[tuple[int, int]]:
    """Every near-copy pair (i < j), compared a chunk of rows against all later rows at a time; the candidates
    for a cropped copy are registered at the end."""
    import tensorflow as tf

    if len(bits) < 2:
        return []
    pairs, candidates = [], []
    flat = thumbs.std(axis=1) < 1e-6  # constant images: no picture to compare, the quality check reports them
    greys = tf.constant(greys)
    whole = centres(greys, np.arange(len(bits)), (1.0,), THUMB)[:, 0]
    zoomed = centres(greys, np.arange(len(bits)), ZOOMS, THUMB)
    for start in range(0, len(bits), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(bits)))
        later = np.arange(len(bits))[None, :] > rows[:, None]
        later[flat[rows]] = False
        later[:, flat] = False
        hashed = distances(bits[rows], bits)
        correlation = thumbs[rows] @ thumbs.T
        close = (hashed <= hash_distance) & (correlation >= SAME_PICTURE)
        if features is not None:
            close |= ((features[rows] @ features.T >= similarity) & (correlation >= thumb_correlation)
                      & (hashed <= FEATURE_HASH_DISTANCE))
        close &= later
        pairs += [(int(rows[i]), int(j)) for i, j in zip(*np.nonzero(close))]
        coarse = whole[rows] @ whole.T
        for k in range(len(ZOOMS)):  # either image may be the crop
            coarse = np.maximum(coarse, np.maximum(zoomed[rows, k] @ whole.T, whole[rows] @ zoomed[:, k].T))
        candidates += [(int(rows[i]), int(j)) for i, j in zip(*np.nonzero((coarse >= CANDIDATE) & later & ~close))]
    if candidates:
        candidates = np.array(candidates)
        pairs += [tuple(map(int, pair)) for pair in candidates[register(greys, candidates) >= REGISTERED]]
    return sorted(pairs)


def groups(images, file_hashes: list[str], features: np.ndarray | None, **thresholds) -> list[dict]:
    """Groups of copies: {"members": indices, "kind": "exact" | "near"}."""
    pixels = [pixel_hash(row) for chunk in batches(images) for row in chunk]
    exact = group_ids(file_hashes, pixels)
    thumbs, greys = pictures(images)
    pairs = near_pairs(phashes(images), features, thumbs, greys, **thresholds)
    ids = group_ids(file_hashes, pixels, pairs=pairs)
    found = {}
    for i, group in enumerate(ids.tolist()):
        found.setdefault(group, []).append(i)
    result = []
    for members in found.values():
        if len(members) > 1:
            kind = "exact" if len({int(exact[m]) for m in members}) == 1 else "near"
            result.append({"members": members, "kind": kind})
    return sorted(result, key=lambda g: (g["kind"] != "exact", g["members"][0]))
