"""Perceptual hashes through imagehash (Buchner's library): near copies that survive re-encoding and resizing.

``phash`` is the DCT hash (Zauner 2010): the image shrunk to 32x32 grey, the
8x8 lowest frequencies of its discrete cosine transform, each bit whether a
frequency is above their median.  Re-encoding, resizing and a change of
brightness move few bits; another photo moves about half of the 64.

Checked with ImageHash 4.3.2.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.rows import batches

BITS = 64


def phashes(images) -> np.ndarray:
    """(N, 64) bool: each uint8 image's (H, W, C) perceptual hash bits."""
    import imagehash

    out = np.zeros((len(images), BITS), bool)
    i = 0
    for chunk in batches(images):  # a folder's images are read from disk a chunk at a time
        for array in chunk:
            picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
            out[i] = imagehash.phash(picture).hash.reshape(-1)
            i += 1
    return out


def distances(bits_a: np.ndarray, bits_b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances between two sets of hash bits, as a matrix product."""
    a, b = bits_a.astype(np.float32), bits_b.astype(np.float32)
    same = a @ b.T + (1 - a) @ (1 - b).T
    return np.rint(BITS - same).astype(np.int32)
