"""Built-in sources: scikit-learn's digits, MNIST / Fashion-MNIST, CIFAR-10.

Each looks for local files first (so the toolkit works offline), then falls
back to Keras' downloader, and when neither works says where files may go.
"""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np

from core.errors import UserError

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
ENV_DATA_DIR = "CNN_CLASSROOM_DATA"


def keras_cache_dir() -> str:
    """Where Keras keeps downloaded datasets (``$KERAS_HOME/datasets``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")


def digits():
    """scikit-learn's 1,797 8x8 handwritten digits, scaled from 0-16 to 0-255."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return [str(i) for i in range(10)], (images, data.target), None


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError) as error:  # cut-off downloads, non-gzip files named .gz
        raise UserError(f"{path} cannot be read ({type(error).__name__}: {error}); delete it and fetch it again") \
            from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated inside its header")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise UserError(f"{path} does not match its header: header says {dims} = {int(np.prod(dims))} values, "
                        f"the file holds {array.size}")
    return array.reshape(dims)


def _find_idx(directory: str):
    paths = {}
    for key, stem in IDX_FILES.items():
        for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
            if os.path.isfile(os.path.join(directory, candidate)):
                paths[key] = os.path.join(directory, candidate)
                break
        else:
            return None
    return paths


def _not_found(name: str, searched: list[str], error: Exception | None) -> UserError:
    why = f" (download failed: {type(error).__name__})" if error else ""
    return UserError(
        f"No local copy of {name} and it could not be downloaded{why}. Searched: {', '.join(searched)}. "
        f"Put the files in one of these places, pass --data-dir DIR, or set {ENV_DATA_DIR}=DIR"
        + (" (Debian: apt-get install dataset-fashion-mnist)" if name == "fashion_mnist" else "")
    )


def _offline() -> bool:
    return os.environ.get("CNN_CLASSROOM_OFFLINE", "") not in ("", "0")


def idx_dataset(name: str, data_dir: str | None):
    """MNIST or Fashion-MNIST from IDX files: --data-dir, $CNN_CLASSROOM_DATA, Debian's
    package, Keras' cache, else a Keras download."""
    keras_sub = {"fashion_mnist": "fashion-mnist", "mnist": "mnist"}[name]
    candidates = [d for d in (data_dir, os.environ.get(ENV_DATA_DIR)) if d]
    candidates = [p for d in candidates for p in (os.path.join(d, keras_sub), d)]
    if name == "fashion_mnist":
        candidates.append(DEBIAN_FASHION_DIR)
    candidates.append(os.path.join(keras_cache_dir(), keras_sub))
    for directory in candidates:
        paths = _find_idx(directory) if os.path.isdir(directory) else None
        if paths:
            arrays = {key: read_idx(path) for key, path in paths.items()}
            break
    else:
        arrays = _keras_download(name, candidates)
    classes = FASHION_CLASSES if name == "fashion_mnist" else [str(i) for i in range(10)]
    train = (arrays["train_images"][..., None], arrays["train_labels"])
    test = (arrays["test_images"][..., None], arrays["test_labels"])
    return classes, train, test


def _keras_download(name: str, searched: list[str]):
    npz = os.path.join(keras_cache_dir(), "mnist.npz")
    if name == "mnist" and os.path.isfile(npz):
        with np.load(npz, allow_pickle=False) as f:
            return {"train_images": f["x_train"], "train_labels": f["y_train"],
                    "test_images": f["x_test"], "test_labels": f["y_test"]}
    if _offline():
        raise _not_found(name, searched + ([npz] if name == "mnist" else []), None)
    import keras

    loader = keras.datasets.fashion_mnist if name == "fashion_mnist" else keras.datasets.mnist
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    except Exception as error:  # network errors come in many types
        raise _not_found(name, searched, error) from None
    return {"train_images": x_train, "train_labels": y_train, "test_images": x_test, "test_labels": y_test}


def _read_cifar_batch(path: str):
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # noqa: S301 - the CIFAR format is a pickle
    data = batch[b"data"] if b"data" in batch else batch["data"]
    labels = batch[b"labels"] if b"labels" in batch else batch["labels"]
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels)


def cifar10(data_dir: str | None):
    """CIFAR-10's python batches from --data-dir, $CNN_CLASSROOM_DATA or Keras' cache, else a Keras download.

    The CIFAR files are Python pickles: only point this at copies you trust
    (Keras' own loader reads them the same way).
    """
    roots = [d for d in (data_dir, os.environ.get(ENV_DATA_DIR)) if d]
    roots += [os.path.join(keras_cache_dir(), "cifar-10-batches-py-target"), keras_cache_dir()]
    candidates = [os.path.join(r, "cifar-10-batches-py") for r in roots] + roots
    for directory in candidates:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        if all(os.path.isfile(os.path.join(directory, n)) for n in names):
            parts = [_read_cifar_batch(os.path.join(directory, n)) for n in names]
            train = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]))
            return CIFAR10_CLASSES, train, parts[5]
    if _offline():
        raise _not_found("cifar10", candidates, None)
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:
        raise _not_found("cifar10", candidates, error) from None
    return CIFAR10_CLASSES, (x_train, y_train), (x_test, y_test)
