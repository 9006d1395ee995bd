"""Perceptual hashes through imagehash (Buchner's library): near copies that survive re-encoding and resizing.

``phash`` is the DCT hash (Zauner 2010): the image shrunk to 32x32 grey, the
8x8 lowest frequencies of its discrete cosine transform, each bit whether a
frequency is above their median.  ``dhash`` is the difference hash (Krawetz
2013): the image shrunk to 9x8 grey, each bit whether a pixel is brighter
than its right-hand neighbour.  Re-encoding, resizing and a change of
brightness move few bits of either; another photo moves about half of the 64.

Two users, one code:

* **every folder scan** (``imagesets.folder``) hashes each decoded image once
  (``key``: both hashes of the whole image and of its centre, kept in the
  image cache's metadata) and groups near copies (``near_pairs``) so that
  the toolkit's split keeps each group on one side;
* **the audit** (``audit.duplicates``) compares every pair's ``phashes``
  (``distances``) together with thumbnails and, for cropped copies, a
  registration of one image's centre on the other.

The scan's rules are tight on purpose: on small, look-alike images (8x8
digits, Fashion-MNIST) one hash alone within 8 bits pairs different
pictures, and pairs chain into groups (union-find), so a loose rule would
merge dozens of a class's images into one group that the split must keep
whole.  Measured on 2,060 Fashion-MNIST images at 32x32 with 48 planted near
copies (``bench/bench_audit.py``'s): ``SCAN_RULES`` paired every resized and
re-encoded copy, 10 of 12 brightened and 9 of 12 cropped (to 93%) ones, with
23 pairs of different pictures, and the largest group held 7 images; among
scikit-learn's 1,797 digits, 64 pairs of different pictures (a plain "1" is
much like another), largest group 9.  On 32x32 tiles of scikit-learn's two
photographs, it paired 8 of 10 copies (2 of 4 crops).  The audit looks
further.

Checked with ImageHash 4.3.2.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.rows import batches

BITS = 64
HEX = BITS // 4
# What the scan hashes of each image: the whole, and its centre (this share of each side), where a copy cropped
# by about that much has its whole.
VIEWS = {"whole": 1.0, "centre": 0.9}
HASHES = ("phash", "dhash")
SHRINK = 64  # pixels a side: the scan hashes a larger image from a copy this size
# Pairs the scan groups: (view of one image, view of the other, at most this many of the phash's bits differ, of
# the dhash's).  The dhash's fine gradients move more than the phash's low frequencies where a photo has texture
# (a re-encoded or resized copy of a 32x32 photo: 2 and 7-8 bits), and under a crop.
SCAN_RULES = (("whole", "whole", 4, 4), ("whole", "whole", 2, 8), ("centre", "whole", 4, 8))


def _picture(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def phashes(images) -> np.ndarray:
    """(N, 64) bool: each uint8 image's (H, W, C) perceptual hash bits."""
    import imagehash

    out = np.zeros((len(images), BITS), bool)
    i = 0
    for chunk in batches(images):  # a folder's images are read from disk a chunk at a time
        for array in chunk:
            out[i] = imagehash.phash(_picture(array)).hash.reshape(-1)
            i += 1
    return out


def distances(bits_a: np.ndarray, bits_b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances between two sets of hash bits, as a matrix product."""
    a, b = bits_a.astype(np.float32), bits_b.astype(np.float32)
    same = a @ b.T + (1 - a) @ (1 - b).T
    return np.rint(BITS - same).astype(np.int32)


def key(array: np.ndarray) -> str:
    """One decoded uint8 image's (H, W, C) hashes for the scan: each view's phash and dhash, as one hex string.

    What it adds to a folder scan, measured on 1,000 JPEG crops of scikit-learn's photographs (one core of an
    AMD EPYC, family 26 model 2): 0.25 s of CPU per 1,000 images decoded at 32x32, 0.5 s at 224x224 (this
    shrinks a larger image to 64x64 first), beside the 5 to 7 s the scan of those 1,000 files took; the scan's
    thread pool spreads it over the cores.  ``near_pairs`` then takes 15-25 ms per 1,000 images, at every load,
    cached or not."""
    import imagehash

    picture = _picture(array).convert("L")
    if max(picture.size) > SHRINK:  # hashed from a small copy: hashing shrinks it anyway, four times over
        picture = picture.resize((SHRINK, SHRINK), Image.Resampling.BILINEAR)
    width, height = picture.size
    parts = []
    for share in VIEWS.values():
        view = picture
        if share < 1:
            margin = (1 - share) / 2
            box = (width * margin, height * margin, width * (1 - margin), height * (1 - margin))
            view = picture.resize((width, height), Image.Resampling.BILINEAR, box=box)
        parts += [str(imagehash.phash(view)), str(imagehash.dhash(view))]
    return "".join(parts)


def words(keys: list[str]) -> dict[tuple[str, str], np.ndarray]:
    """{(view, hash): (N,) uint64} from ``key`` strings; an empty key (a file the scan could not hash) is all
    zeros, and ``near_pairs`` leaves it out."""
    found = {}
    for v, view in enumerate(VIEWS):
        for h, name in enumerate(HASHES):
            start = (v * len(HASHES) + h) * HEX
            found[view, name] = np.array([int(k[start:start + HEX], 16) if k else 0 for k in keys], np.uint64)
    return found


def _within(a: np.ndarray, b: np.ndarray, radius: int, chunk: int = 4096) -> np.ndarray:
    """(M, 2) index pairs (i of ``a``, j of ``b``) of 64-bit words at most ``radius`` bits apart.

    Not every pair is compared: split into radius + 1 blocks of bits, two
    words that differ in at most ``radius`` bits agree on at least one block
    (pigeonhole), so only words that share a block's value are (Norouzi et
    al. 2012, multi-index hashing).  The work grows with the pairs that share
    a block, not with the square of the folder."""
    found = []
    edges = np.linspace(0, BITS, radius + 2).astype(int)
    for low, high in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << int(high - low)) - 1)
        block_b = (b >> np.uint64(low)) & mask
        order = np.argsort(block_b, kind="stable")
        sorted_b = block_b[order]
        for start in range(0, len(a), chunk):  # bounded memory: a chunk of rows' candidates at a time
            block_a = (a[start:start + chunk] >> np.uint64(low)) & mask
            first = np.searchsorted(sorted_b, block_a, "left")
            counts = np.searchsorted(sorted_b, block_a, "right") - first
            i = np.repeat(np.arange(start, start + len(block_a)), counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            j = order[np.repeat(first, counts) + offsets]
            close = np.bitwise_count(a[i] ^ b[j]) <= radius
            found.append(np.stack([i[close], j[close]], axis=1))
    return np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), np.int64)


def near_pairs(keys: list[str], rules=SCAN_RULES) -> list[tuple[int, int]]:
    """The scan's near copies: index pairs (i < j) of ``keys`` (``key`` strings) that one of ``rules`` pairs."""
    hashed = words(keys)
    usable = np.array([bool(k) for k in keys])
    pairs = set()
    for view_a, view_b, phash_radius, dhash_radius in rules:
        candidates = _within(hashed[view_a, "phash"], hashed[view_b, "phash"], phash_radius)
        i, j = candidates[:, 0], candidates[:, 1]
        close = (np.bitwise_count(hashed[view_a, "dhash"][i] ^ hashed[view_b, "dhash"][j]) <= dhash_radius)
        close &= (i != j) & usable[i] & usable[j]  # an image's centre is close to its own whole
        pairs |= {(int(min(x, y)), int(max(x, y))) for x, y in zip(i[close], j[close])}
    return sorted(pairs)
