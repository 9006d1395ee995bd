"""Small real-data fixtures shared by the tests: digit images on disk."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def digit_images(n_per_class: int, size: int = 24, classes=range(10)):
    """Real sklearn digits as uint8 grey arrays upscaled to ``size``, with labels."""
    data = load_digits()
    images, labels = [], []
    for label in classes:
        for image in data.images[data.target == label][:n_per_class]:
            pixels = np.round(image * (255.0 / 16.0)).astype(np.uint8)
            images.append(np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)))
            labels.append(label)
    return images, labels


def write_digit_folder(root, n_per_class: int = 12, classes=("0", "1", "2"), formats=("png", "jpg")):
    """A class-per-folder dataset of real digit images in several file formats."""
    images, labels = digit_images(n_per_class, classes=[int(c) for c in classes])
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(root, str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image).save(os.path.join(folder, f"img{i}.{formats[i % len(formats)]}"))
    return root


def run_cli(script: str, *args, env=None, timeout=300):
    """Runs one of the project's scripts in a fresh interpreter."""
    full_env = {**os.environ, "CNN_CLASSROOM_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def crafted_keras_file(model, folder, *, module: str, class_name: str) -> str:
    """``model`` saved as ``folder/crafted.keras`` with its second layer renamed to ``module.class_name``:
    a file that names code Keras must refuse to import."""
    import json
    import zipfile

    plain, crafted = os.path.join(folder, "plain.keras"), os.path.join(folder, "crafted.keras")
    model.save(plain)
    with zipfile.ZipFile(plain) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1].update(module=module, class_name=class_name)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return crafted
