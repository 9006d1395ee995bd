"""Writes examples/: the files the README's and the guides' commands name, so that each command runs as copied.

    python tools/make_examples.py          # (re)writes examples/ from its real sources

Everything is real data that ships with the project's dependencies or Debian, cut small:

- ``examples/digits/``: ten of scikit-learn's handwritten digits, one a class, as PNG (``3.png`` is a 3), scaled
  from 8x8 to 32x32 so a person can see them; ``instances.json``, ``3.png`` as TF Serving's REST API takes it
  (``{"instances": [8x8x1 raw pixels]}``, what ``lenet5-digits`` reads).
- ``examples/fashion/``: one Fashion-MNIST test image a class (Debian's ``dataset-fashion-mnist``), named by class.
- ``examples/photos/``: a folder dataset, one sub-folder per class, of 96x96 JPEG crops of scikit-learn's two
  sample photographs (a temple in China, a flower): what ``train.py audit`` and ``--dataset folder:`` read.
- ``examples/half_plus_two/00000123/``: TF Serving's test model (y = 0.5x + 2), built as
  ``tests/tfserving_models.py`` builds it, for the guide's ``tensorflow_model_server`` command line.

The files are committed; this script is how they were made, and runs again if one is lost.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist/t10k"  # Debian's dataset-fashion-mnist
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle_boot")
# Each class of examples/photos: a sample photograph and the (top, left, side) squares cut from it.
PHOTO_CROPS = {
    "flower": ("flower.jpg", [(40, 120, 300), (60, 200, 260), (100, 150, 240), (20, 60, 380), (80, 260, 220),
                              (140, 100, 280), (0, 180, 330), (120, 220, 200)]),
    "temple": ("china.jpg", [(0, 100, 300), (40, 200, 260), (80, 60, 240), (20, 300, 320), (100, 160, 220),
                             (10, 10, 400), (60, 340, 280), (150, 120, 250)]),
}


def digits(folder: str) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)  # as imagesets.builtin.digits scales them
    os.makedirs(folder)
    for label in range(10):
        first = int(np.flatnonzero(data.target == label)[0])
        Image.fromarray(pixels[first]).resize((32, 32), Image.NEAREST).save(os.path.join(folder, f"{label}.png"))
        if label == 3:
            with open(os.path.join(folder, "instances.json"), "w") as f:
                json.dump({"instances": [pixels[first][..., None].astype(float).tolist()]}, f)


def fashion(folder: str) -> None:
    from PIL import Image

    with gzip.open(FASHION_MNIST + "-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST + "-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    os.makedirs(folder)
    for label, name in enumerate(FASHION_CLASSES):
        Image.fromarray(images[int(np.flatnonzero(labels == label)[0])]).save(os.path.join(folder, f"{name}.png"))


def photos(folder: str) -> None:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    for name, (photo, squares) in PHOTO_CROPS.items():
        image = Image.fromarray(load_sample_image(photo))
        os.makedirs(os.path.join(folder, name))
        for i, (top, left, side) in enumerate(squares):
            crop = image.crop((left, top, left + side, top + side)).resize((96, 96), Image.BILINEAR)
            crop.save(os.path.join(folder, name, f"{name}_{i}.jpg"), quality=85)


def half_plus_two(folder: str) -> None:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from tfserving_models import half_plus_two_tf2

    half_plus_two_tf2(folder)


PARTS = {"digits": digits, "fashion": fashion, "photos": photos, "half_plus_two": half_plus_two}


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name, write in PARTS.items():
        folder = os.path.join(EXAMPLES, name)
        shutil.rmtree(folder, ignore_errors=True)
        write(folder)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
        print(f"examples/{name}: {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
