"""Tests for imagesets/: every source gives the same ImageSet contract.

Real data and real files only: scikit-learn's digits, written to disk as IDX
files, CIFAR pickle batches, image files of every common format and a tiny
TFDS dataset prepared into a temporary folder.  Nothing downloads: an autouse
fixture sets CNN_CLASSROOM_OFFLINE=1 and points KERAS_HOME at an empty
temporary folder for every test.
"""

import collections
import functools
import gzip
import os
import pickle
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

import imagesets
from imagesets import builtin
from imagesets.builtin import CIFAR10_CLASSES, FASHION_CLASSES, read_idx
from imagesets.images import load_image
from core.errors import UserError


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No source may download, and none may see the user's own caches."""
    keras_home = tmp_path / "keras_home"
    monkeypatch.setenv("CNN_CLASSROOM_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.delenv(builtin.ENV_DATA_DIR, raising=False)
    return keras_home


@functools.cache
def digit_source():
    """scikit-learn's digits as 8x8 uint8 (0-255) images and their labels."""
    data = load_digits()
    return np.round(data.images * (255.0 / 16.0)).astype(np.uint8), data.target.astype(np.int64)


def upscaled(images, size):
    """Digits resized to ``size`` x ``size`` with PIL, as uint8."""
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                     for im in images])


def rows(images, labels):
    """The multiset of (image, label) pairs, to compare splits whatever their order."""
    return collections.Counter((im.tobytes(), int(label)) for im, label in zip(images, labels))


def all_rows(data):
    return sum((rows(*data.arrays[split]) for split in imagesets.SPLITS), collections.Counter())


def one_line_user_error(excinfo):
    message = str(excinfo.value)
    assert isinstance(excinfo.value, UserError)
    assert message and "\n" not in message, message
    return message


# --- digits ------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return imagesets.load("digits", seed=0)


def test_digits_shapes_and_pixels(digits):
    assert digits.name == "digits"
    assert digits.class_names == [str(i) for i in range(10)]
    assert digits.input_shape == (8, 8, 1)
    for split in imagesets.SPLITS:
        images, labels = digits.arrays[split]
        assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
        assert labels.shape == (len(images),) and set(labels) <= set(range(10))
    train = digits.arrays["train"][0]
    assert train.min() == 0 and train.max() == 255  # 0-16 scaled to the full 0-255 range


def test_digits_splits_partition_all_images_per_class(digits):
    source_images, source_labels = digit_source()
    assert sum(digits.counts().values()) == 1797
    # Disjoint and covering: the three splits together are the source, each image once.
    assert all_rows(digits) == rows(source_images[..., None], source_labels)
    for label, total in enumerate(np.bincount(source_labels)):
        per_split = {split: int(np.sum(digits.arrays[split][1] == label)) for split in imagesets.SPLITS}
        assert per_split["test"] == round(total * 0.2)
        assert per_split["val"] == round(total * 0.1)
        assert per_split["train"] == total - per_split["test"] - per_split["val"] > 0


def test_digits_split_is_seeded(digits):
    again = imagesets.load("digits", seed=0)
    other = imagesets.load("digits", seed=1)
    for split in imagesets.SPLITS:
        np.testing.assert_array_equal(again.arrays[split][0], digits.arrays[split][0])
        np.testing.assert_array_equal(again.arrays[split][1], digits.arrays[split][1])
    assert other.counts() == digits.counts()
    assert not np.array_equal(other.arrays["val"][0], digits.arrays["val"][0])
    assert not np.array_equal(other.arrays["test"][0], digits.arrays["test"][0])


def test_digits_tf_data_elements(digits):
    for split in imagesets.SPLITS:
        dataset = getattr(digits, split)
        image_spec, label_spec = dataset.element_spec
        assert (image_spec.dtype, tuple(image_spec.shape)) == (tf.uint8, (8, 8, 1))
        assert (label_spec.dtype, tuple(label_spec.shape)) == (tf.int32, ())
        assert int(dataset.cardinality()) == digits.counts()[split]
    image, label = next(iter(digits.train))
    np.testing.assert_array_equal(image.numpy(), digits.arrays["train"][0][0])
    assert int(label) == digits.arrays["train"][1][0]


def test_digits_resized_and_converted_to_rgb():
    data = imagesets.load("digits", image_size=(16, 12), channels=3)
    assert data.input_shape == (16, 12, 3)
    images = data.arrays["test"][0]
    assert images.dtype == np.uint8 and images.shape[1:] == (16, 12, 3)
    # Grey digits stay grey: the three channels are copies.
    np.testing.assert_array_equal(images[..., 0], images[..., 1])
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    assert images.max() > 200


@pytest.mark.parametrize("fraction", ["val_fraction", "test_fraction"])
@pytest.mark.parametrize("share", [-0.1, 0.9, 1.0])
def test_split_fractions_out_of_range(fraction, share):
    with pytest.raises(UserError) as excinfo:
        imagesets.load("digits", **{fraction: share})
    message = one_line_user_error(excinfo)
    assert fraction in message and str(share) in message


# --- stratified_split ----------------------------------------------------------


def test_stratified_split_keeps_tiny_classes_in_every_split():
    # Three classes of 5, then classes of 1, 2 and 3 images.
    labels = np.array([0] * 5 + [1] * 5 + [2] * 5 + [3] + [4] * 2 + [5] * 3)
    parts = imagesets.stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=0)
    assert set(parts) == {"train", "val", "test"}
    np.testing.assert_array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(len(labels)))

    def count(split, label):
        return int(np.sum(labels[parts[split]] == label))

    for label in (0, 1, 2):
        assert count("val", label) >= 1 and count("test", label) >= 1 and count("train", label) >= 1
    assert (count("train", 3), count("val", 3), count("test", 3)) == (1, 0, 0)
    assert count("train", 4) >= 1 and count("train", 4) + count("val", 4) + count("test", 4) == 2
    assert (count("train", 5), count("val", 5), count("test", 5)) == (1, 1, 1)


def test_stratified_split_shares_and_seed():
    labels = np.repeat(np.arange(4), 100)
    parts = imagesets.stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=7)
    for label in range(4):
        assert [int(np.sum(labels[parts[s]] == label)) for s in ("train", "val", "test")] == [70, 10, 20]
    again = imagesets.stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=7)
    other = imagesets.stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=8)
    for split in parts:
        np.testing.assert_array_equal(again[split], parts[split])
    assert not np.array_equal(other["val"], parts["val"])
    # A zero share takes nothing, even from classes that could spare an image.
    assert len(imagesets.stratified_split(labels, {"val": 0.0}, seed=0)["val"]) == 0


# --- MNIST / Fashion-MNIST from IDX files -------------------------------------------


def idx_bytes(array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(path, array):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(idx_bytes(array))


@functools.cache
def mnist_like():
    """120 training and 40 test digits at MNIST's 28x28."""
    images, labels = digit_source()
    images = upscaled(images[:160], 28)
    return (images[:120], labels[:120].astype(np.uint8)), (images[120:], labels[120:160].astype(np.uint8))


def write_idx_set(directory, naming="gz", offset=0):
    """The four MNIST files in ``directory``: gzipped, raw, or raw with dotted names."""
    os.makedirs(directory, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = mnist_like()
    arrays = {"train_images": np.roll(x_train, offset, axis=0), "train_labels": np.roll(y_train, offset),
              "test_images": np.roll(x_test, offset, axis=0), "test_labels": np.roll(y_test, offset)}
    for key, stem in builtin.IDX_FILES.items():
        name = {"gz": stem + ".gz", "raw": stem, "dotted": stem.replace("-idx", ".idx")}[naming]
        write_idx(os.path.join(directory, name), arrays[key])
    return arrays


def check_idx_set(data, arrays):
    assert data.input_shape == (28, 28, 1)
    assert data.counts()["test"] == len(arrays["test_images"])
    assert data.counts()["train"] + data.counts()["val"] == len(arrays["train_images"])
    np.testing.assert_array_equal(data.arrays["test"][0], arrays["test_images"][..., None])
    np.testing.assert_array_equal(data.arrays["test"][1], arrays["test_labels"])
    train_and_val = rows(*data.arrays["train"]) + rows(*data.arrays["val"])
    assert train_and_val == rows(arrays["train_images"][..., None], arrays["train_labels"])


@pytest.mark.parametrize("name, subdir", [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")])
@pytest.mark.parametrize("naming, nested", [("gz", True), ("raw", False), ("dotted", False)])
def test_idx_files_in_data_dir(tmp_path, name, subdir, naming, nested):
    data_dir = tmp_path / "data"
    arrays = write_idx_set(data_dir / subdir if nested else data_dir, naming)
    data = imagesets.load(name, data_dir=str(data_dir))
    # Our files win over Debian's Fashion-MNIST, which holds 10,000 test images.
    check_idx_set(data, arrays)
    assert data.class_names == (FASHION_CLASSES if name == "fashion_mnist" else [str(i) for i in range(10)])
    assert data.arrays["train"][0].dtype == np.uint8


def test_idx_files_from_env_variable_and_data_dir_first(tmp_path, monkeypatch):
    from_env = write_idx_set(tmp_path / "env", "raw", offset=1)
    monkeypatch.setenv(builtin.ENV_DATA_DIR, str(tmp_path / "env"))
    check_idx_set(imagesets.load("mnist"), from_env)
    from_flag = write_idx_set(tmp_path / "flag" / "mnist", "gz", offset=0)
    check_idx_set(imagesets.load("mnist", data_dir=str(tmp_path / "flag")), from_flag)


def test_idx_dataset_resized_and_converted(tmp_path):
    write_idx_set(tmp_path / "mnist", "gz")
    data = imagesets.load("mnist", data_dir=str(tmp_path), image_size=(14, 14), channels=3)
    assert data.input_shape == (14, 14, 3)
    assert data.arrays["test"][0].shape == (40, 14, 14, 3)


def test_mnist_from_keras_npz(offline):
    (x_train, y_train), (x_test, y_test) = mnist_like()
    os.makedirs(offline / "datasets")
    np.savez(offline / "datasets" / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = imagesets.load("mnist")
    check_idx_set(data, {"train_images": x_train, "train_labels": y_train,
                         "test_images": x_test, "test_labels": y_test})


def test_read_idx_round_trip(tmp_path):
    labels = np.arange(7, dtype=np.uint8)
    images = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
    write_idx(tmp_path / "labels-idx1-ubyte", labels)
    write_idx(tmp_path / "images-idx3-ubyte.gz", images)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "labels-idx1-ubyte")), labels)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "images-idx3-ubyte.gz")), images)


def test_read_idx_rejects_truncated_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100])
    with pytest.raises(UserError) as excinfo:
        read_idx(str(path))
    message = one_line_user_error(excinfo)
    assert "does not match its header" in message and str(path) in message


@pytest.mark.parametrize("start", [b"PK\x03\x04", bytes([0, 0, 0x0D, 3]), b""])
def test_read_idx_rejects_bad_magic_number(tmp_path, start):
    # A zip file, float IDX data, an empty file.
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(start + bytes(100) if start else b"")
    with pytest.raises(UserError) as excinfo:
        read_idx(str(path))
    assert "magic" in one_line_user_error(excinfo)


# An interrupted download leaves a cut gzip stream; a file cut inside its header
# says nothing of its size.  Both should be a UserError, not a traceback.
@pytest.mark.parametrize("case", ["cut_gzip", "cut_header"])
def test_read_idx_rejects_cut_gzip_and_cut_header(tmp_path, case):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    if case == "cut_gzip":
        path = tmp_path / "train-images-idx3-ubyte.gz"
        compressed = gzip.compress(data)
        path.write_bytes(compressed[:len(compressed) // 2])
    else:
        path = tmp_path / "train-images-idx3-ubyte"
        path.write_bytes(data[:10])
    with pytest.raises(UserError):
        read_idx(str(path))


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_offline_without_files_says_where_to_put_them(tmp_path, monkeypatch, name):
    # Debian's Fashion-MNIST may be installed here; point the search at an empty place.
    debian = tmp_path / "no-debian-package"
    monkeypatch.setattr(builtin, "DEBIAN_FASHION_DIR", str(debian))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as excinfo:
        imagesets.load(name, data_dir=str(empty))
    message = one_line_user_error(excinfo)
    assert "--data-dir" in message and builtin.ENV_DATA_DIR in message
    assert str(empty) in message
    if name == "fashion_mnist":
        assert str(debian) in message and "dataset-fashion-mnist" in message
    if name == "mnist":
        assert "mnist.npz" in message


@pytest.mark.skipif(not os.path.isdir(builtin.DEBIAN_FASHION_DIR),
                    reason=f"Debian's dataset-fashion-mnist is not installed ({builtin.DEBIAN_FASHION_DIR})")
def test_fashion_mnist_from_debian_package():
    data = imagesets.load("fashion_mnist")
    assert data.counts() == {"train": 54000, "val": 6000, "test": 10000}
    assert data.input_shape == (28, 28, 1)
    assert data.class_names == FASHION_CLASSES and len(set(data.class_names)) == 10
    for split, per_class in (("train", 5400), ("val", 600), ("test", 1000)):
        np.testing.assert_array_equal(np.bincount(data.arrays[split][1], minlength=10), [per_class] * 10)
    test_images = read_idx(os.path.join(builtin.DEBIAN_FASHION_DIR, "t10k-images-idx3-ubyte.gz"))
    np.testing.assert_array_equal(data.arrays["test"][0][..., 0], test_images)
    assert data.arrays["train"][0].max() == 255


# --- CIFAR-10 from python pickle batches ---------------------------------------------


@functools.cache
def cifar_like():
    """Six batches of 20 digits as 32x32 colour images, each channel different."""
    images, labels = digit_source()
    grey = upscaled(images[:120], 32).astype(np.int64)
    rgb = np.stack([grey, 255 - grey, grey // 2 + 40], axis=-1).astype(np.uint8)
    return [(rgb[i:i + 20], labels[i:i + 20]) for i in range(0, 120, 20)]


def write_cifar(directory):
    os.makedirs(directory, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, (images, labels) in zip(names, cifar_like()):
        # The CIFAR layout: rows of 1024 red, 1024 green, 1024 blue bytes; the
        # original pickles have byte-string keys when read with encoding="bytes".
        batch = {b"batch_label": name.encode(), b"labels": [int(x) for x in labels],
                 b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(len(images))]}
        with open(os.path.join(directory, name), "wb") as f:
            pickle.dump(batch, f, protocol=2)


@pytest.mark.parametrize("layout", ["data_dir", "data_dir/cifar-10-batches-py", "keras_cache"])
def test_cifar10_batches_round_trip(tmp_path, offline, layout):
    data_dir = tmp_path / "data"
    where = {"data_dir": data_dir, "data_dir/cifar-10-batches-py": data_dir / "cifar-10-batches-py",
             "keras_cache": offline / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"}[layout]
    write_cifar(where)
    data = imagesets.load("cifar10", data_dir=None if layout == "keras_cache" else str(data_dir),
                          val_fraction=0.0)
    batches = cifar_like()
    assert data.class_names == CIFAR10_CLASSES
    assert data.input_shape == (32, 32, 3)
    assert data.counts() == {"train": 100, "val": 0, "test": 20}
    np.testing.assert_array_equal(data.arrays["train"][0], np.concatenate([b[0] for b in batches[:5]]))
    np.testing.assert_array_equal(data.arrays["train"][1], np.concatenate([b[1] for b in batches[:5]]))
    np.testing.assert_array_equal(data.arrays["test"][0], batches[5][0])
    np.testing.assert_array_equal(data.arrays["test"][1], batches[5][1])


def test_cifar10_carves_val_and_converts_to_grey(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    data = imagesets.load("cifar10", data_dir=str(tmp_path), channels=1)
    assert data.input_shape == (32, 32, 1)
    assert data.counts()["train"] + data.counts()["val"] == 100 and data.counts()["val"] >= 10
    test_rgb = cifar_like()[5][0].astype(np.float64)
    expected = np.round(test_rgb @ [0.299, 0.587, 0.114])
    assert np.abs(data.arrays["test"][0][..., 0] - expected).max() <= 1


# --- folder:PATH -------------------------------------------------------------------

CLASSES = ["zero", "one two", "drei-ü"]  # a space and a non-ASCII letter


def save_image_zoo(class_dir, digits):
    """Writes 13 digits as every kind of file a photo folder holds; returns the paths.

    Sizes differ from file to file (and from the target size) so that resizing is exercised.
    """
    os.makedirs(class_dir, exist_ok=True)
    grey = [Image.fromarray(d).resize((20 + i, 24 - i), Image.Resampling.BILINEAR) for i, d in enumerate(digits)]
    rgb = [Image.merge("RGB", (g, g.point(lambda v: 255 - v), g.point(lambda v: v // 2))) for g in grey]
    paths = []

    def save(name, image, **options):
        path = os.path.join(class_dir, name)
        image.save(path, **options)
        paths.append(path)

    save("a_grey.png", grey[0])
    save("b_rgb.jpg", rgb[1], quality=95)
    save("c_rgb.bmp", rgb[2])
    save("d_still.gif", grey[3])
    save("e_animated.gif", grey[4], save_all=True, append_images=[grey[5]], duration=100, loop=0)
    palette = rgb[5].quantize(16)
    save("f_palette.png", palette, transparency=0)
    rgba = rgb[6].copy()
    rgba.putalpha(grey[6].point(lambda v: 255 if v > 30 else 0))
    save("g_rgba.png", rgba)
    save("h_grey16.png", Image.fromarray(np.asarray(grey[7]).astype(np.uint16) * 257))
    save("i_upper.JPG", rgb[8])
    save("j_photo.jpeg", rgb[9])
    save("k_image.webp", rgb[10])
    save("l_scan.tiff", Image.merge("CMYK", (grey[11], grey[11], grey[11], grey[11].point(lambda v: 0))))
    os.makedirs(os.path.join(class_dir, "more"))
    save(os.path.join("more", "m_nested.png"), grey[12])
    return paths


def write_hidden(directory):
    """OS and tool litter that must be neither read nor reported."""
    os.makedirs(os.path.join(directory, ".ipynb_checkpoints"), exist_ok=True)
    Image.new("L", (8, 8), 128).save(os.path.join(directory, ".ipynb_checkpoints", "a_grey-checkpoint.png"))
    with open(os.path.join(directory, ".DS_Store"), "wb") as f:
        f.write(b"\x00\x00\x00\x01Bud1" + bytes(64))
    with open(os.path.join(directory, "Thumbs.db"), "wb") as f:
        f.write(bytes(range(256)))
    with open(os.path.join(directory, "._a_grey.png"), "wb") as f:  # macOS AppleDouble
        f.write(b"\x00\x05\x16\x07" + bytes(60))


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory):
    """3 classes x 13 images of every format, 4 unusable files, and litter."""
    root = tmp_path_factory.mktemp("photos")
    images, _ = digit_source()
    good = {name: save_image_zoo(root / name, images[13 * i:13 * (i + 1)]) for i, name in enumerate(CLASSES)}
    rng = np.random.default_rng(0)
    bad = [root / "zero" / "corrupt.jpg", root / "one two" / "truncated.png",
           root / "drei-ü" / "notes.txt", root / "zero" / "empty.png"]
    bad[0].write_bytes(rng.integers(0, 256, 600, dtype=np.uint8).tobytes())
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "full.png")
    whole = (root / "full.png").read_bytes()
    (root / "full.png").unlink()
    bad[1].write_bytes(whole[:len(whole) // 2])
    bad[2].write_text("labels: see the folder names\n")
    bad[3].write_bytes(b"")
    write_hidden(root)
    os.makedirs(root / ".ipynb_checkpoints" / "zero")
    Image.new("L", (8, 8), 0).save(root / ".ipynb_checkpoints" / "zero" / "x.png")
    os.makedirs(root / "__MACOSX" / "zero")
    (root / "__MACOSX" / "zero" / "._a_grey.png").write_bytes(bytes(64))
    for name in CLASSES:
        write_hidden(root / name)
    return root, good, [str(p) for p in bad]


@pytest.mark.parametrize("channels, image_size", [(1, (16, 16)), (3, (12, 20))])
def test_folder_reads_every_format(photo_tree, channels, image_size):
    root, good, bad = photo_tree
    data = imagesets.load(f"folder:{root}", image_size=image_size, channels=channels, seed=0)
    assert data.name == f"folder:{root}"
    assert data.class_names == sorted(CLASSES) == ["drei-ü", "one two", "zero"]
    assert data.input_shape == (*image_size, channels)

    skipped = dict(data.skipped)
    assert sorted(skipped) == sorted(bad)  # never the hidden files
    assert all(reason.strip() and "\n" not in reason for reason in skipped.values())
    kept = sum(len(paths) for paths in good.values())
    assert sum(data.counts().values()) == kept == 39
    assert sum(data.counts().values()) + len(data.skipped) == kept + len(bad)

    for split in imagesets.SPLITS:
        images, labels = data.arrays[split]
        assert images.dtype == np.uint8 and images.shape[1:] == (*image_size, channels)
        assert set(labels) == {0, 1, 2}  # every class in every split
        # Every image decoded to a digit, not to a blank frame.
        images = np.asarray(images)  # a folder's images are rows of its cache on disk, read here
        assert (images.max(axis=(1, 2, 3)).astype(int) - images.min(axis=(1, 2, 3)) > 50).all()
    all_labels = np.concatenate([data.arrays[s][1] for s in imagesets.SPLITS])
    np.testing.assert_array_equal(np.bincount(all_labels), [13, 13, 13])


def test_folder_channels_default_to_rgb(photo_tree):
    root, _, _ = photo_tree
    assert imagesets.load(f"folder:{root}", image_size=(8, 8)).input_shape == (8, 8, 3)


@pytest.fixture
def pixel_tree(tmp_path):
    """One 8x8 image per class, each testing one conversion exactly."""
    root = tmp_path / "pixels"
    for name in ("a_rgba", "b_grey16", "c_palette", "d_animated"):
        (root / name).mkdir(parents=True)
    # Left half transparent over green (which must not show), right half opaque red.
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (10, 200, 30, 0)
    rgba[:, 4:] = (200, 40, 40, 255)
    Image.fromarray(rgba, "RGBA").save(root / "a_rgba" / "x.png")
    # 16-bit grey: left half mid-grey, right half a quarter grey (nothing near white,
    # so neither clipping at 255 nor stretching to the image's own maximum passes).
    grey16 = np.full((8, 8), 32768, np.uint16)
    grey16[:, 4:] = 16384
    Image.fromarray(grey16).save(root / "b_grey16" / "x.png")
    # Palette: index 0 transparent (its colour is blue), index 1 opaque dark red.
    palette = Image.fromarray(np.repeat([[0] * 4 + [1] * 4], 8, axis=0).astype(np.uint8), "P")
    palette.putpalette([0, 0, 255, 120, 10, 10] + [0] * 762)
    palette.save(root / "c_palette" / "x.png", transparency=0)
    # Two frames: the first grey 50, the second grey 200.
    frames = [Image.new("L", (8, 8), 50), Image.new("L", (8, 8), 200)]
    frames[0].save(root / "d_animated" / "x.gif", save_all=True, append_images=frames[1:], duration=100)
    return root


def test_folder_pixel_conversions_rgb(pixel_tree):
    data = imagesets.load(f"folder:{pixel_tree}", image_size=(8, 8), channels=3, val_fraction=0, test_fraction=0)
    images, labels = data.arrays["train"]
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])
    rgba, grey16, palette, animated = np.asarray(images).astype(int)  # read from the folder's cache
    assert (rgba[:, :4] == 255).all()  # transparent pixels become white
    assert (rgba[:, 4:] == (200, 40, 40)).all()
    assert (np.abs(grey16[:, :4] - 128) <= 1).all()  # scaled from 16 bits, not clipped at 255
    assert (np.abs(grey16[:, 4:] - 64) <= 1).all()
    assert (palette[:, :4] == 255).all() and (palette[:, 4:] == (120, 10, 10)).all()
    assert (animated == 50).all()  # the first frame


def test_folder_pixel_conversions_grey(pixel_tree):
    data = imagesets.load(f"folder:{pixel_tree}", image_size=(8, 8), channels=1, val_fraction=0, test_fraction=0)
    rgba, grey16, palette, animated = data.arrays["train"][0][..., 0].astype(int)
    assert (rgba[:, :4] == 255).all()
    assert (np.abs(rgba[:, 4:] - (0.299 * 200 + 0.587 * 40 + 0.114 * 40)) <= 1).all()
    assert (np.abs(grey16[:, :4] - 128) <= 1).all() and (np.abs(grey16[:, 4:] - 64) <= 1).all()
    assert (palette[:, :4] == 255).all()
    assert (animated == 50).all()


def test_load_image_size_is_height_width_and_exif_is_applied(tmp_path):
    # predict.py calls load_image directly, without load()'s second resize.
    Image.fromarray(np.tile(digit_source()[0][0], (2, 3))).save(tmp_path / "wide.png")  # 16 high, 24 wide
    assert load_image(tmp_path / "wide.png", None, 1).shape == (16, 24, 1)
    assert load_image(tmp_path / "wide.png", (12, 20), 3).shape == (12, 20, 3)
    # A camera's portrait photo: stored 16 wide and 8 high, EXIF orientation 6 (rotate 90 degrees).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (16, 8), (90, 90, 90)).save(tmp_path / "portrait.jpg", exif=exif)
    assert load_image(tmp_path / "portrait.jpg", None, 3).shape == (16, 8, 3)


@pytest.mark.parametrize("val_dir", ["val", "validation", "valid"])
def test_folder_with_split_subfolders(tmp_path, val_dir):
    root = tmp_path / "split"
    images, _ = digit_source()
    counts = {"train": {"cat": 7, "dog": 5}, val_dir: {"cat": 2, "dog": 3}, "test": {"cat": 4, "dog": 1}}
    index = 0
    for split, per_class in counts.items():
        for name, n in per_class.items():
            (root / split / name).mkdir(parents=True)
            for _ in range(n):
                Image.fromarray(images[index]).save(root / split / name / f"{index}.png")
                index += 1
    write_hidden(root / "train")
    data = imagesets.load(f"folder:{root}", image_size=(8, 8), channels=1)
    assert data.class_names == ["cat", "dog"]
    assert data.counts() == {"train": 12, "val": 5, "test": 5}
    assert data.skipped == []
    for split, folder_name in (("train", "train"), ("val", val_dir), ("test", "test")):
        np.testing.assert_array_equal(np.bincount(data.arrays[split][1], minlength=2),
                                      [counts[folder_name]["cat"], counts[folder_name]["dog"]])
    # The test split holds exactly the test folder's images (PNG is lossless).
    assert rows(*data.arrays["test"]) == rows(images[17:22, ..., None], [0, 0, 0, 0, 1])


def test_folder_with_train_and_test_only_carves_val(tmp_path):
    root = tmp_path / "split"
    images, _ = digit_source()
    for split, n in (("train", 10), ("test", 2)):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(images[i]).save(root / split / name / f"{i}.png")
    data = imagesets.load(f"folder:{root}", image_size=(8, 8), channels=1)
    assert data.counts() == {"train": 18, "val": 2, "test": 4}


# --- errors -------------------------------------------------------------------------------


def make_class(directory, n=2, readable=True):
    directory.mkdir(parents=True)
    for i in range(n):
        if readable:
            Image.new("L", (8, 8), 40 * i).save(directory / f"{i}.png")
        else:
            (directory / f"{i}.jpg").write_bytes(b"this is not a JPEG")


def missing(root):
    return root / "no-such-folder", "does not exist"


def a_file(root):
    (root / "photos.zip").write_bytes(b"PK\x03\x04")
    return root / "photos.zip", "is a file"


def empty(root):
    (root / "empty").mkdir()
    (root / "empty" / ".DS_Store").write_bytes(bytes(8))
    return root / "empty", "no class sub-folders"


def one_class(root):
    make_class(root / "one" / "only-cats")
    return root / "one", "only one class"


def unreadable_class(root):
    make_class(root / "mixed" / "good")
    make_class(root / "mixed" / "broken", readable=False)
    return root / "mixed", "broken"


def nothing_readable(root):
    make_class(root / "bad" / "a", readable=False)
    make_class(root / "bad" / "b", readable=False)
    return root / "bad", "no readable images"


def extra_val_class(root):
    make_class(root / "split" / "train" / "a")
    make_class(root / "split" / "train" / "b")
    make_class(root / "split" / "val" / "c")
    return root / "split", "classes that train/ lacks: c"


def splits_without_train(root):
    make_class(root / "nosplit" / "val" / "a")
    make_class(root / "nosplit" / "test" / "a")
    return root / "nosplit", "no train/"


@pytest.mark.parametrize("tree", [missing, a_file, empty, one_class, unreadable_class, nothing_readable,
                                  extra_val_class, splits_without_train])
def test_folder_errors(tmp_path, tree):
    path, expected = tree(tmp_path)
    with pytest.raises(UserError) as excinfo:
        imagesets.load(f"folder:{path}", image_size=(8, 8))
    message = one_line_user_error(excinfo)
    assert expected in message and path.name in message


def test_folder_needs_image_size(photo_tree):
    with pytest.raises(UserError) as excinfo:
        imagesets.load(f"folder:{photo_tree[0]}")
    assert "--image-size" in one_line_user_error(excinfo)


@pytest.mark.parametrize("spec, suggestion", [("digit", "digits"), ("fashion-mnist", "fashion_mnist"),
                                              ("cifar", "cifar10"), ("folder:", "folder")])
def test_unknown_dataset_suggests_close_match(spec, suggestion):
    with pytest.raises(UserError) as excinfo:
        imagesets.load(spec)
    message = one_line_user_error(excinfo)
    assert repr(spec) in message and f"did you mean {suggestion}" in message


# --- tfds:NAME -------------------------------------------------------------------------------

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class ImagesetsTinyDigits(tfds.core.GeneratorBasedBuilder):
    """300 training and 100 test digits from scikit-learn; registers as "imagesets_tiny_digits"."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(8, 8, 1)),
                                                 "label": tfds.features.ClassLabel(names=DIGIT_NAMES)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 300), "test": self._generate_examples(300, 400)}

    def _generate_examples(self, start, stop):
        images, labels = digit_source()
        for i in range(start, stop):
            yield i, {"image": images[i][..., None], "label": int(labels[i])}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.disable_progress_bar()
    ImagesetsTinyDigits(data_dir=str(data_dir)).download_and_prepare()
    return data_dir


def test_tfds_prepared_dataset(tfds_dir):
    data = imagesets.load("tfds:imagesets_tiny_digits", data_dir=str(tfds_dir))
    images, labels = digit_source()
    assert data.class_names == DIGIT_NAMES
    assert data.input_shape == (8, 8, 1)
    assert data.counts()["test"] == 100
    assert data.counts()["train"] + data.counts()["val"] == 300
    assert data.counts()["val"] >= 30  # carved per class: a tenth, at least one each
    assert set(data.arrays["val"][1]) == set(range(10))
    assert data.arrays["train"][0].dtype == np.uint8
    assert rows(*data.arrays["test"]) == rows(images[300:400, ..., None], labels[300:400])
    assert rows(*data.arrays["train"]) + rows(*data.arrays["val"]) == rows(images[:300, ..., None], labels[:300])


def test_two_workers_of_a_multi_worker_run_read_disjoint_shards_of_a_tfds_source(tfds_dir):
    import collections

    import tensorflow as tf

    from training.data import worker_pipeline

    data = imagesets.load("tfds:imagesets_tiny_digits", data_dir=str(tfds_dir))
    config = {"batch_size": 32, "seed": 0, "fit_on_val": False}
    train_images, train_labels = data.arrays["train"]
    source = collections.Counter(zip((x.tobytes() for x in train_images), train_labels.tolist()))
    shards = []
    for worker in range(2):  # the InputContext tf.distribute gives each worker of a 2-worker cluster
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2)
        batches = list(worker_pipeline(config, data, context))
        assert {len(x) for x, _ in batches[:-1]} == {16}  # its share of --batch-size 32
        shards.append(collections.Counter((x.tobytes(), int(np.argmax(y))) for xs, ys in batches
                                          for x, y in zip(xs.numpy(), ys.numpy())))
    half = len(train_labels) // 2
    assert sum(shards[0].values()) == sum(shards[1].values()) == half
    assert not (shards[0] + shards[1]) - source  # no image read by both workers (beyond its copies in the split)


def test_tfds_resized_and_converted(tfds_dir):
    data = imagesets.load("tfds:imagesets_tiny_digits", data_dir=str(tfds_dir), image_size=(16, 16), channels=3)
    assert data.input_shape == (16, 16, 3)
    images = data.arrays["test"][0]
    assert images.dtype == np.uint8 and images.shape == (100, 16, 16, 3)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_tfds_splits_stream_into_the_image_cache_and_a_rerun_reads_it(tfds_dir, tmp_path, monkeypatch):
    from imagesets import cache, tfds_source
    from imagesets.diskarray import DiskImages

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    first = imagesets.load("tfds:imagesets_tiny_digits", data_dir=str(tfds_dir), image_size=(12, 12), channels=1)
    # Every split is rows of a file on disk: the records were streamed, never held as arrays.
    assert all(isinstance(first.arrays[split][0], DiskImages) for split in ("train", "val", "test"))
    entries = sorted((tmp_path / "cache" / "images").iterdir())
    assert len(entries) == 2  # train (val is carved from it) and test
    pixel_files = {entry / "pixels.u8": (entry / "pixels.u8").stat().st_ino for entry in entries}

    def no_records(*_):
        raise AssertionError("the records were read again")

    monkeypatch.setattr(tfds_source, "_records", no_records)
    again = imagesets.load("tfds:imagesets_tiny_digits", data_dir=str(tfds_dir), image_size=(12, 12), channels=1)
    assert {path: path.stat().st_ino for path in pixel_files} == pixel_files
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(np.asarray(again.arrays[split][0]), np.asarray(first.arrays[split][0]))
        np.testing.assert_array_equal(again.arrays[split][1], first.arrays[split][1])
    # The rows are what resizing the records gives (in the order TFDS stored them).
    images, labels = digit_source()
    expected = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(images[300:400, ..., None], (12, 12))), 0, 255),
                       tf.uint8).numpy()
    assert rows(np.asarray(first.arrays["test"][0]), first.arrays["test"][1]) == rows(expected, labels[300:400])


def test_tfds_records_are_read_from_disk_each_pass_and_tfds_keeps_no_copy_of_them(tfds_dir, tmp_path):
    from imagesets import tfds_source

    # A copy: the records are deleted below, and the module's other tests read the prepared folder.
    shutil.copytree(tfds_dir, tmp_path / "tfds")
    builder = tfds.builder("imagesets_tiny_digits", data_dir=str(tmp_path / "tfds"))
    ours = tfds_source._dataset(builder, "test", (8, 8, 1))
    tfds_default = builder.as_dataset(split="test", as_supervised=True, shuffle_files=False)
    assert len(list(ours)) == len(list(tfds_default)) == 100
    for record in (tmp_path / "tfds").rglob("*-test.tfrecord*"):
        record.unlink()
    # tfds' default auto-caches a dataset this small: its first pass kept every decoded image in memory.
    assert len(list(tfds_default)) == 100
    with pytest.raises(tf.errors.NotFoundError):
        list(ours)


def test_tfds_another_size_or_a_reprepared_split_gets_its_own_cache_entry(tfds_dir, tmp_path, monkeypatch):
    from imagesets import cache

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    spec, data_dir = "tfds:imagesets_tiny_digits", str(tfds_dir)
    imagesets.load(spec, data_dir=data_dir, image_size=(12, 12), channels=1)
    imagesets.load(spec, data_dir=data_dir, image_size=(10, 10), channels=1)
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 4
    test_records = sorted(tfds_dir.rglob("*-test.tfrecord*"))
    assert test_records
    stat = test_records[0].stat()
    os.utime(test_records[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as a re-prepared split would
    imagesets.load(spec, data_dir=data_dir, image_size=(12, 12), channels=1)
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 5  # only the test split is read again


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(UserError) as excinfo:
        imagesets.load("tfds:imagesets_no_such_dataset", data_dir=str(tmp_path))
    assert "imagesets_no_such_dataset" in one_line_user_error(excinfo)
