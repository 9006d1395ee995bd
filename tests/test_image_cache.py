"""A folder's decoded images live in an on-disk cache: written once, reused, invalidated by any change to
the files, never trusted half-written; a split's images are rows of it read on demand."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import imagesets
from core.rows import concatenate, predict, take
from imagesets import cache
from imagesets import folder as folder_module
from imagesets.diskarray import DiskImages
from imagesets.images import list_images, load_image
from tests.helpers import write_digit_folder


@pytest.fixture
def decodes(monkeypatch):
    """The paths load_image decoded, in the folder source."""
    seen = []

    def counting(path, size, channels):
        seen.append(str(path))
        return load_image(path, size, channels)

    monkeypatch.setattr(folder_module, "load_image", counting)
    return seen


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(root))
    return root


def load(root, **options):
    return imagesets.load(f"folder:{root}", image_size=(12, 10), channels=3, seed=0, **options)


def every_image(data):
    return {split: np.asarray(data.arrays[split][0]) for split in imagesets.SPLITS}


def entries(cache_root):
    folder = cache_root / "images"
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_the_second_load_reads_the_cache_instead_of_decoding(tmp_path, own_cache, decodes):
    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=6)
    first = load(root)
    assert len(decodes) == 18 and len(entries(own_cache)) == 1
    assert isinstance(first.arrays["train"][0], DiskImages)
    decodes.clear()
    again = load(root)
    assert decodes == []  # nothing decoded
    for split, images in every_image(first).items():
        np.testing.assert_array_equal(np.asarray(again.arrays[split][0]), images)
        np.testing.assert_array_equal(again.arrays[split][1], first.arrays[split][1])


def test_the_rows_are_the_pixels_a_full_decode_gives(tmp_path, own_cache):
    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=5)
    (tmp_path / "digits" / "1" / "broken.png").write_bytes(b"not a png")  # a skipped file leaves no gap
    data = load(root, val_fraction=0, test_fraction=0)
    files = [path for path in list_images(root) if not path.endswith("broken.png")]
    expected = np.stack([load_image(path, (12, 10), 3) for path in files])
    images = data.arrays["train"][0]
    np.testing.assert_array_equal(np.asarray(images), expected)
    assert images.shape == expected.shape and images.dtype == np.uint8 and len(images) == 15
    streamed = list(data.train.as_numpy_iterator())  # the unbatched dataset reads the same rows
    np.testing.assert_array_equal(np.stack([image for image, _ in streamed]), expected)
    np.testing.assert_array_equal([label for _, label in streamed], data.arrays["train"][1])
    assert data.skipped == [(os.path.join(root, "1", "broken.png"), "not an image: its content is no known "
                                                                     "image format")]


def test_disk_images_index_like_numpy(tmp_path):
    expected = np.random.default_rng(0).integers(0, 256, (9, 4, 3, 2), dtype=np.uint8)
    path = tmp_path / "pixels.u8"
    expected.tofile(path)
    images = DiskImages(str(path), (4, 3, 2), count=9)
    mask = np.arange(9) % 3 == 0
    for key in (4, -1, slice(2, 7), slice(None, None, -2), [5, 1, 1, 8], np.array([], int), mask,
                (slice(None), 0, 0), (3, 1), (..., 0), ([2, 0], slice(1, 3))):
        np.testing.assert_array_equal(images[key], expected[key], err_msg=repr(key))
    view = images.select(np.array([7, 2, 4]))
    np.testing.assert_array_equal(np.asarray(view), expected[[7, 2, 4]])
    np.testing.assert_array_equal(view[[2, 0]], expected[[4, 7]])
    joined = concatenate([view, take(images, slice(0, 2))])
    assert isinstance(joined, DiskImages) and joined.shape == (5, 4, 3, 2)
    np.testing.assert_array_equal(np.asarray(joined), expected[[7, 2, 4, 0, 1]])


@pytest.mark.parametrize("change", ["rewritten", "added", "removed"])
def test_any_change_to_the_files_invalidates_the_cache(tmp_path, own_cache, decodes, change):
    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=6)
    before = load(root)
    target = os.path.join(root, "2", sorted(os.listdir(os.path.join(root, "2")))[0])
    if change == "rewritten":  # same name and size: only the modification time tells
        Image.new("L", (24, 24), 77).save(target)
        os.utime(target, ns=(os.stat(target).st_atime_ns, os.stat(target).st_mtime_ns + 10**9))
    elif change == "added":
        Image.new("L", (24, 24), 77).save(os.path.join(root, "2", "new.png"))
    else:
        os.remove(target)
    decodes.clear()
    after = load(root)
    assert len(decodes) == 18 - (change == "removed") + (change == "added")  # decoded again
    assert len(entries(own_cache)) == 2
    count = sum(after.counts().values())
    assert count == 18 + {"rewritten": 0, "added": 1, "removed": -1}[change]
    if change != "removed":
        grey = [image for image in np.asarray(concatenate([after.arrays[s][0] for s in imagesets.SPLITS]))
                if (image == 77).all()]
        assert len(grey) == 1 and not any((image == 77).all() for image in every_image(before)["train"])


def test_another_size_or_channel_count_is_another_entry(tmp_path, own_cache, decodes):
    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=4)
    load(root)
    imagesets.load(f"folder:{root}", image_size=(12, 10), channels=1)
    imagesets.load(f"folder:{root}", image_size=(8, 8), channels=3)
    assert len(decodes) == 3 * 12 and len(entries(own_cache)) == 3


@pytest.mark.parametrize("damage", ["truncated pixels", "no metadata", "other key"])
def test_a_damaged_entry_is_not_trusted(tmp_path, own_cache, decodes, damage):
    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=5)
    good = every_image(load(root))
    (entry,) = entries(own_cache)
    directory = own_cache / "images" / entry
    if damage == "truncated pixels":
        os.truncate(directory / cache.PIXELS, os.path.getsize(directory / cache.PIXELS) - 1)
    elif damage == "no metadata":
        os.remove(directory / cache.META)
    else:
        (directory / cache.META).write_text((directory / cache.META).read_text().replace(entry, "0" * len(entry)))
    decodes.clear()
    again = load(root)
    assert len(decodes) == 15  # decoded again, and the entry rewritten whole
    for split, images in every_image(again).items():
        np.testing.assert_array_equal(images, good[split])
    assert entries(own_cache) == [entry]
    decodes.clear()
    load(root)
    assert decodes == []


def test_an_interrupted_write_leaves_no_entry(tmp_path, own_cache, monkeypatch):
    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=5)
    calls = []

    def interrupted(path, size, channels):
        calls.append(path)
        if len(calls) == 7:
            raise KeyboardInterrupt  # Ctrl-C mid-scan
        return load_image(path, size, channels)

    monkeypatch.setattr(folder_module, "load_image", interrupted)
    monkeypatch.setattr(folder_module.os, "cpu_count", lambda: 1)
    with pytest.raises(KeyboardInterrupt):
        load(root)
    assert entries(own_cache) == []  # neither a published entry nor a partial one
    monkeypatch.setattr(folder_module, "load_image", load_image)
    assert sum(load(root).counts().values()) == 15


def test_a_partial_entry_of_a_crashed_writer_is_never_read(tmp_path, own_cache, decodes):
    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=5)
    files = list_images(root)
    key = cache.source_key(files, (12, 10, 3))
    partial = own_cache / "images" / f"{key}{cache.PARTIAL}killed"
    partial.mkdir(parents=True)
    (partial / cache.PIXELS).write_bytes(bytes(10))
    load(root)
    assert len(decodes) == 15
    assert (own_cache / "images" / key / cache.META).exists()
    assert partial.exists()  # it may be another process still writing
    cache.remove_abandoned(str(own_cache / "images"), now=os.path.getmtime(partial) + cache.ABANDONED_AFTER + 1)
    assert entries(own_cache) == [key]  # a day later it is taken for a crash's leftovers


def test_an_unwritable_cache_falls_back_to_memory_with_a_note(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker))
    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=4)
    data = load(root)
    assert isinstance(data.arrays["train"][0], np.ndarray) and sum(data.counts().values()) == 12
    assert "cannot write the image cache" in capsys.readouterr().err


def test_the_cache_lives_in_the_user_cache_folder_by_default(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == str(tmp_path / "xdg" / "cnn-classroom")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == str(tmp_path / "home" / ".cache" / "cnn-classroom")


def test_a_pipeline_over_disk_rows_gives_the_batches_of_the_array(tmp_path, own_cache):
    from training.pipeline import make_pipeline

    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=8)
    images, labels = load(root, val_fraction=0, test_fraction=0).arrays["train"]
    assert isinstance(images, DiskImages)
    on_disk = make_pipeline(images, labels, 3, batch_size=5, shuffle=True, seed=3)
    in_memory = make_pipeline(np.asarray(images), labels, 3, batch_size=5, shuffle=True, seed=3)

    def as_set(x, y):  # a batch read from disk comes in file order: the same images, sorted
        rows = np.concatenate([x.numpy().reshape(len(x), -1), y.numpy()], axis=1)
        return rows[np.lexsort(rows.T[::-1])]

    batches = 0
    for (x, y), (x2, y2) in zip(on_disk, in_memory):
        np.testing.assert_array_equal(as_set(x, y), as_set(x2, y2))
        assert x.dtype.name == "float32" and x.shape[1:] == (12, 10, 3)
        batches += 1
    assert batches == -(-len(labels) // 5)


def test_chunked_prediction_matches_one_call(tmp_path):
    import keras

    images = np.random.default_rng(1).integers(0, 256, (600, 4, 4, 1), dtype=np.uint8)
    path = tmp_path / "pixels.u8"
    images.tofile(path)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    whole = model.predict(images.astype(np.float32), batch_size=128, verbose=0)
    np.testing.assert_allclose(predict(model, DiskImages(str(path), (4, 4, 1), count=600), 128), whole, rtol=1e-6)


def test_a_folder_run_trains_and_evaluates_from_the_cache(tmp_path, own_cache):
    from training.run import train

    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=10)
    config = {"dataset": f"folder:{root}", "model": "mlp", "image_size": [12, 12], "channels": 3, "epochs": 2,
              "verbose": 0, "batch_size": 8, "tta": "flip", "preprocessing": "standardize", "augment": "pca",
              "runs_dir": str(tmp_path / "runs"), "export": False}
    metrics = train(config, log=lambda *_: None)
    assert metrics["test_samples"] == 6 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["epochs_run"] == 2
    assert os.path.isfile(os.path.join(metrics["run_dir"], "mistakes.png"))
    assert len(entries(own_cache)) == 1


def test_a_folders_backbone_features_go_to_disk_and_match_those_computed_in_memory(tmp_path, own_cache):
    import gc

    from transfer import extract_features, load_backbone
    from transfer.probe import pool

    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=6)
    data = imagesets.load(f"folder:{root}", image_size=(32, 32), channels=3, seed=0)
    images = data.arrays["train"][0]
    backbone = load_backbone("mlp", input_shape=(32, 32, 3), weights=None)
    on_disk = extract_features(backbone, images, batch_size=4, split="train")
    in_memory = extract_features(backbone, np.asarray(images), batch_size=4)
    assert isinstance(on_disk, DiskImages) and isinstance(in_memory, np.ndarray)
    assert on_disk.dtype == np.float32 and on_disk.shape == in_memory.shape
    np.testing.assert_allclose(np.asarray(on_disk), in_memory, rtol=1e-6, atol=1e-6)
    # Pooled a chunk at a time, and read by index like any split (the fast path's pipeline does).
    np.testing.assert_allclose(pool(on_disk), pool(in_memory), rtol=1e-6, atol=1e-6)
    index = np.array([3, 0, 2])
    np.testing.assert_array_equal(on_disk.select(index)[:], on_disk[index])
    # The file is temporary: it goes with the last view of it.
    path = on_disk.path
    view = on_disk.select(index)
    del on_disk
    gc.collect()
    assert os.path.exists(path)
    del view
    gc.collect()
    assert not os.path.exists(path)


KILLED_WRITER = """
import os, sys, time
sys.path.insert(0, {root!r})
import imagesets
from imagesets import folder, images

decoded = []


def slow(path, size, channels):  # the 20th file holds its writer until the test kills it
    decoded.append(path)
    if len(decoded) == 20:
        open({marker!r}, "w").close()
        time.sleep(600)
    return images.load_image(path, size, channels)


folder.load_image = slow
imagesets.load("folder:" + {folder!r}, image_size=(12, 10), channels=3, seed=0)
"""


def test_kill_9_while_the_cache_is_written_then_the_rerun_gets_the_same_split_from_a_sound_cache(tmp_path, own_cache,
                                                                                                monkeypatch):
    import signal
    import subprocess
    import sys
    import time

    root = write_digit_folder(str(tmp_path / "digits"), n_per_class=30)
    marker = tmp_path / "writing"
    code = KILLED_WRITER.format(root=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                marker=str(marker), folder=root)
    writer = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, cache.CACHE_ENV: str(own_cache)})
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached its 20th file"
            time.sleep(0.05)
        partial = [name for name in entries(own_cache) if cache.PARTIAL in name]
        assert partial and not [name for name in entries(own_cache) if cache.PARTIAL not in name]  # mid-write
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        writer.kill()

    rerun = load(root)
    published = [name for name in entries(own_cache) if cache.PARTIAL not in name]
    assert len(published) == 1  # the rerun wrote a whole entry; the killed writer's half is never read
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "clean-cache"))
    clean = load(root)  # the same folder loaded by a writer nobody killed
    assert rerun.manifest() == clean.manifest()
    for split in imagesets.SPLITS:
        assert isinstance(rerun.arrays[split][0], DiskImages)
        np.testing.assert_array_equal(rerun.arrays[split][1], clean.arrays[split][1])
        np.testing.assert_array_equal(np.asarray(rerun.arrays[split][0]), np.asarray(clean.arrays[split][0]))
