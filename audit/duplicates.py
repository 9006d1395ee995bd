"""Copies: exact (same bytes or same pixels) and near (perceptual hash, or backbone features with pixels).

A pair of images is a near copy when either

* their perceptual hashes (``audit.perceptual``) differ in at most
  ``HASH_DISTANCE`` of 64 bits and their grey 16x16 thumbnails, each minus
  its mean, correlate at least ``SAME_PICTURE`` (re-encoded, resized,
  brightened copies);
* one's centre (``ZOOM`` of each side) as a thumbnail correlates with the
  other's thumbnail at least ``CROP_CORRELATION``, with hashes at most
  ``CROP_HASH_DISTANCE`` apart (slightly cropped copies, which move a hash
  and a thumbnail more); or
* with a pretrained ``--backbone``, their features' cosine similarity is at
  least ``SIMILARITY``, their thumbnails correlate at least
  ``THUMB_CORRELATION`` and their hashes differ in at most
  ``CROP_HASH_DISTANCE`` bits.  The features of the network the audit trains
  on the folder itself put a class's images close together, so without a
  backbone they are not used here.

Each test alone pairs different pictures: two Fashion-MNIST images of a
class hash within 8 bits of each other and their 16x16 thumbnails correlate
at up to 0.994 (2,000 images); the thresholds are where no pair of those
2,000 passed and at least 95% of the benchmark's planted copies did
(``bench/bench_audit.py``).

Pairs join into groups (union-find); a group is "exact" when all its images
share bytes or pixels, "near" otherwise.  A group whose images sit in more
than one split is a *leak*: the same picture trains and then tests.
"""

from __future__ import annotations

import numpy as np

from audit.perceptual import distances, phashes
from core.rows import batches
from imagesets.copies import group_ids, pixel_hash

HASH_DISTANCE = 8
SAME_PICTURE = 0.995
ZOOM = 0.9
CROP_CORRELATION = 0.996
CROP_HASH_DISTANCE = 20
SIMILARITY = 0.97
THUMB_CORRELATION = 0.95
THUMB = 16
CHUNK = 1024


def thumbnails(images, zoom: float = 1.0) -> np.ndarray:
    """(N, 256) grey 16x16 thumbnails of each image's centre (``zoom`` of each side), each minus its mean, of unit
    length (a constant image is all zeros)."""
    import tensorflow as tf

    out = []
    for chunk in batches(images):
        grey = np.asarray(chunk, np.float32).mean(axis=-1, keepdims=True)
        if zoom < 1:
            grey = tf.image.central_crop(grey, zoom)
        small = tf.image.resize(grey, (THUMB, THUMB), antialias=True).numpy().reshape(len(chunk), -1)
        small -= small.mean(axis=1, keepdims=True)
        out.append(small / np.maximum(np.linalg.norm(small, axis=1, keepdims=True), 1e-6))
    return np.concatenate(out) if out else np.zeros((0, THUMB * THUMB), np.float32)


def near_pairs(bits: np.ndarray, features: np.ndarray | None, thumbs: np.ndarray, zoomed: np.ndarray, *,
               hash_distance: int = HASH_DISTANCE, similarity: float = SIMILARITY,
               thumb_correlation: float = THUMB_CORRELATION) -> list[tuple[int, int]]:
    """Every near-copy pair (i < j), compared a chunk of rows against all later rows at a time."""
    pairs = []
    flat = thumbs.std(axis=1) < 1e-6  # constant images: no picture to compare, the quality check reports them
    for start in range(0, len(bits), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(bits)))
        hashed = distances(bits[rows], bits)
        correlation = thumbs[rows] @ thumbs.T
        close = (hashed <= hash_distance) & (correlation >= SAME_PICTURE)
        cropped = (zoomed[rows] @ thumbs.T >= CROP_CORRELATION) | (thumbs[rows] @ zoomed.T >= CROP_CORRELATION)
        close |= cropped & (hashed <= CROP_HASH_DISTANCE)
        if features is not None:
            close |= ((features[rows] @ features.T >= similarity) & (correlation >= thumb_correlation)
                      & (hashed <= CROP_HASH_DISTANCE))
        close &= np.arange(len(bits))[None, :] > rows[:, None]
        close[flat[rows]] = False
        close[:, flat] = False
        for i, j in zip(*np.nonzero(close)):
            pairs.append((int(rows[i]), int(j)))
    return pairs


def groups(images, file_hashes: list[str], features: np.ndarray | None, **thresholds) -> list[dict]:
    """Groups of copies: {"members": indices, "kind": "exact" | "near"}."""
    pixels = [pixel_hash(row) for chunk in batches(images) for row in chunk]
    exact = group_ids(file_hashes, pixels)
    bits = phashes(images)
    pairs = near_pairs(bits, features, thumbnails(images), thumbnails(images, ZOOM), **thresholds)
    parent = exact.copy()

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    found = {}
    for i in range(len(parent)):
        found.setdefault(root(i), []).append(i)
    result = []
    for members in found.values():
        if len(members) > 1:
            kind = "exact" if len({int(exact[m]) for m in members}) == 1 else "near"
            result.append({"members": members, "kind": kind})
    return sorted(result, key=lambda g: (g["kind"] != "exact", g["members"][0]))
