"""Reading photo folders fast: large JPEGs decoded at a reduced scale, files decoded in
parallel in a fixed order, and the progress line of a folder scan.  No timings are asserted."""

from __future__ import annotations

import functools
import io
import os
import time

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin
from sklearn.datasets import load_sample_images

import imagesets
from imagesets import folder as folder_module
from imagesets.folder import Progress
from imagesets.images import load_image, to_mode


@functools.lru_cache(maxsize=1)
def sample_photos():
    """scikit-learn's two sample photographs (640x427 RGB)."""
    return [Image.fromarray(image) for image in load_sample_images().images]


def write_photo(path, size, *, index=0, mode="RGB", exif=None):
    """A sample photograph upscaled to ``size`` (width, height), saved as a JPEG of ``mode``."""
    image = sample_photos()[index].resize(size, Image.Resampling.BICUBIC).convert(mode)
    options = {"exif": exif} if exif is not None else {}
    image.save(path, "JPEG", quality=90, **options)
    return path


def full_decode(path, size, channels):
    """What load_image did before drafting: decode every pixel, then resize."""
    with Image.open(path) as image:
        image.load()
        image = to_mode(ImageOps.exif_transpose(image), channels)
        if image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(image, np.uint8).reshape(size[0], size[1], channels)


@pytest.fixture
def drafts(monkeypatch):
    """Records the (mode, size) of every JPEG draft request and the scale it chose."""
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        before = self.size
        result = original(self, mode, size)
        calls.append({"mode": mode, "size": size, "from": before, "to": self.size})
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


# --- drafted JPEG decoding ---------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 1])
def test_a_large_jpeg_is_drafted_and_nearly_the_same(tmp_path, drafts, channels):
    path = write_photo(tmp_path / "big.jpg", (1792, 1344))
    drafted = load_image(path, (224, 224), channels)
    assert drafts == [{"mode": "L" if channels == 1 else None, "size": (224, 224), "from": (1792, 1344),
                       "to": (448, 336)}]  # 1/4 scale: 1/8 would fall below 224 high
    full = full_decode(path, (224, 224), channels)
    assert drafted.shape == full.shape == (224, 224, channels) and drafted.dtype == np.uint8
    difference = np.abs(drafted.astype(int) - full.astype(int))
    assert difference.mean() < 3.0, difference.mean()  # a few grey levels at most, on average


def test_a_jpeg_under_twice_the_target_decodes_exactly_as_before(tmp_path, drafts):
    path = write_photo(tmp_path / "medium.jpg", (440, 300))  # 2x wide but not 2x high
    np.testing.assert_array_equal(load_image(path, (224, 224), 3), full_decode(path, (224, 224), 3))
    assert load_image(path, None, 3).shape == (300, 440, 3)  # no target size: never drafted
    assert drafts == []


def test_drafting_respects_exif_orientation(tmp_path, drafts):
    # A portrait phone photo: stored landscape (1600 wide, 800 high), EXIF orientation 6.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write_photo(tmp_path / "portrait.jpg", (1600, 800), exif=exif)
    drafted = load_image(path, (400, 100), 3)  # 400 high, 100 wide once upright
    assert drafts[0]["size"] == (400, 100) and drafts[0]["to"] == (400, 200)  # the stored sides, never below them
    full = full_decode(path, (400, 100), 3)
    assert drafted.shape == full.shape == (400, 100, 3)
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 3.0


def test_a_large_cmyk_jpeg_is_drafted_and_nearly_the_same(tmp_path, drafts):
    path = write_photo(tmp_path / "print.jpg", (1024, 768), mode="CMYK")
    drafted = load_image(path, (128, 128), 3)
    assert drafts[0]["to"] == (256, 192)
    assert np.abs(drafted.astype(int) - full_decode(path, (128, 128), 3).astype(int)).mean() < 3.0


def test_a_multi_picture_jpeg_from_a_phone_is_drafted(tmp_path, drafts):
    # Many phones write MPO: a JPEG with a second, smaller picture after the first; PIL opens it as "MPO".
    photo = sample_photos()[1].resize((1600, 1200), Image.Resampling.BICUBIC)
    photo.save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[photo.resize((320, 240))])
    drafted = load_image(tmp_path / "phone.jpg", (224, 224), 3)
    assert drafts[0]["to"] == (400, 300)
    assert np.abs(drafted.astype(int) - full_decode(tmp_path / "phone.jpg", (224, 224), 3).astype(int)).mean() < 3.0


def test_other_formats_are_never_drafted(tmp_path, drafts):
    sample_photos()[0].resize((1280, 854)).save(tmp_path / "big.png")
    path = tmp_path / "big.png"
    np.testing.assert_array_equal(load_image(path, (64, 64), 3), full_decode(path, (64, 64), 3))
    assert drafts == []


# --- parallel decoding keeps the file order -------------------------------------------------


def test_parallel_decoding_keeps_the_file_order(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(12):  # each file one flat grey value, so the order is visible in the pixels
            Image.new("L", (8, 8), 10 * i + (0 if name == "a" else 130)).save(root / name / f"{i:02d}.png")
    (root / "a" / "05b.png").write_bytes(b"")  # a skipped file among them

    original = folder_module.load_image

    def slow_first(path, size, channels):  # the earlier the file, the later it finishes
        time.sleep(0.02 * (12 - int(os.path.basename(path)[:2])) / 12)
        return original(path, size, channels)

    monkeypatch.setattr(folder_module, "load_image", slow_first)
    monkeypatch.setattr(folder_module.os, "cpu_count", lambda: 4)
    data = imagesets.load(f"folder:{root}", image_size=(8, 8), channels=1, val_fraction=0, test_fraction=0)
    images, labels = data.arrays["train"]
    expected = [10 * i for i in range(12)] + [130 + 10 * i for i in range(12)]
    assert images[:, 0, 0, 0].tolist() == expected
    assert labels.tolist() == [0] * 12 + [1] * 12
    assert data.skipped == [(str(root / "a" / "05b.png"), "empty file (0 bytes)")]


# --- the progress line -----------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_prints_only_a_final_line_when_not_on_a_terminal(capsys):
    clock = Clock()
    progress = Progress(5, label="Reading photos", clock=clock)  # stderr, captured: not a terminal
    for skipped in (0, 1, 0, 1, 0):
        clock.now += 0.5
        progress.update(skipped=skipped)
    progress.close()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "Reading photos: 5/5 files in 2.5 s (2 files/s), 2 skipped\n"


def test_progress_redraws_in_place_on_a_terminal_at_most_every_interval():
    clock, terminal = Clock(), Terminal()
    progress = Progress(40, label="Reading x", stream=terminal, clock=clock)
    for _ in range(40):
        clock.now += 0.125  # exact in binary, so the 0.5 s steps fall where expected
        progress.update()
    progress.close()
    text = terminal.getvalue()
    draws = text.split("\r")[1:]
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    # 5 s in all: silent for the first second, then drawn at 1.0, 1.5, ... 5.0 s, then the final line.
    assert len(draws) == 9 + 1, draws
    assert draws[0].rstrip() == "Reading x: 8/40 files (20%), 8 files/s, ETA 4 s"
    assert draws[-1].rstrip("\n").rstrip() == "Reading x: 40/40 files in 5.0 s (8 files/s)"
    widths = [len(draw.rstrip("\n")) for draw in draws]
    assert widths == sorted(widths)  # padded: a shorter line (the final one) wipes a longer one


def test_progress_is_silent_for_a_scan_under_a_second():
    clock, terminal = Clock(), Terminal()
    progress = Progress(3, stream=terminal, clock=clock)
    for _ in range(3):
        clock.now += 0.2
        progress.update()
    progress.close()
    assert terminal.getvalue() == ""


def test_a_small_folder_prints_nothing(tmp_path, capsys):
    root = tmp_path / "photos"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name / f"{i}.jpg")
    imagesets.load(f"folder:{root}", image_size=(8, 8))
    assert capsys.readouterr() == ("", "")


def test_a_folder_scan_ends_with_a_line_of_counts(tmp_path, capsys, monkeypatch):
    root = tmp_path / "photos"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / name / f"{i}.jpg")
    (root / "b" / "page.jpg").write_text("<html></html>")
    monkeypatch.setattr(folder_module, "Progress", functools.partial(Progress, quiet_for=0.0))
    data = imagesets.load(f"folder:{root}", image_size=(8, 8))
    captured = capsys.readouterr()
    assert captured.out == "" and sum(data.counts().values()) == 8
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Reading {root}: 9/9 files in "), lines
    assert lines[0].endswith(", 1 skipped")
