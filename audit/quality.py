"""Unusable images: too dark, too bright, nearly constant, blurry, tiny, of an odd shape.

Measured on the decoded image (grey, 0-255) and, for files, the size stored
in the file's header.  "Tiny" and "odd shape" are relative to the folder
itself (a folder of 8x8 digits is not a folder of tiny images): a quarter of
the folder's median side, an aspect ratio beyond 3:1 where the folder's
median is near square.  Blur is the variance of the Laplacian over the
image's own variance (sharp edges give a large one), measured where the
decoded image is at least 32 pixels a side, and reported below a tenth of
the folder's median (a folder of upscaled 8x8 digits is all soft alike).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.rows import batches

DARK, BRIGHT = 15.0, 240.0  # mean grey level
CONSTANT = 3.0  # standard deviation of the grey levels
BLURRY = 0.1  # of the folder's median variance of the Laplacian / variance of the image
ODD_ASPECT = 3.0


def header_size(path: str):
    """(width, height) from the file's header, or None."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # PIL raises many types; the scan already said why such a file was skipped
        return None


def _laplacian_ratio(grey: np.ndarray) -> float:
    lap = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1])
    return float(lap.var() / max(grey.var(), 1e-6) / 16.0)


def issues(images, paths: list[str] | None) -> list[tuple[int, str]]:
    """(index, issue) for every image with one, an image's worst issue only."""
    found = []
    sizes = [header_size(p) for p in paths] if paths else None
    median_side = float(np.median([min(s) for s in sizes if s])) if sizes and any(sizes) else None
    sharpness = [_laplacian_ratio(image) for chunk in batches(images)
                  for image in np.asarray(chunk, np.float32).mean(axis=-1)] if min(images.shape[1:3]) >= 32 else []
    soft = BLURRY * float(np.median(sharpness)) if len(sharpness) >= 20 else 0.0
    index = 0
    for chunk in batches(images):
        grey = np.asarray(chunk, np.float32).mean(axis=-1)
        for image in grey:
            mean, std = float(image.mean()), float(image.std())
            issue = None
            if std < CONSTANT:
                issue = f"nearly constant (grey level {mean:.0f} +/- {std:.1f})"
            elif mean < DARK:
                issue = f"too dark (mean grey level {mean:.0f} of 255)"
            elif mean > BRIGHT:
                issue = f"too bright (mean grey level {mean:.0f} of 255)"
            elif sharpness and sharpness[index] < soft:
                issue = f"blurry (edges {sharpness[index] / (soft / BLURRY):.2f} of the folder's median)"
            if issue is None and sizes and sizes[index] and median_side:
                width, height = sizes[index]
                if min(width, height) < median_side / 4:
                    issue = f"tiny ({width}x{height}; the folder's median side is {median_side:.0f})"
                elif max(width, height) / max(min(width, height), 1) > ODD_ASPECT:
                    issue = f"odd shape ({width}x{height})"
            if issue:
                found.append((index, issue))
            index += 1
    return found
