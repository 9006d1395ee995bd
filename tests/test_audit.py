"""The audit (train.py audit), the scan's cheap checks for copies, the group-keeping split and --exclude.

Real images on disk (scikit-learn's digits), a few seconds each; the library-wrapper tests call cleanlab and
imagehash themselves, unmocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import digit_images, write_digit_folder


def train_main(capsys, *argv):
    """``python train.py ARGV`` in this process (TensorFlow starts once for the module): (exit code, stdout,
    stderr)."""
    import train

    code = train.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fingerprint(root) -> dict:
    """Every file's bytes, mode and mtime under ``root``: what "byte-for-byte unchanged" compares."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            info = os.stat(path)
            try:
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            except PermissionError:
                digest = "unreadable"
            found[os.path.relpath(path, root)] = (digest, info.st_mode, info.st_mtime_ns)
    return found


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CNN_CLASSROOM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


# --- the wrappers of cleanlab and imagehash ----------------------------------------------------------------------

def test_confident_learning_finds_the_flipped_labels_and_suggests_their_class():
    from audit.confident import label_issues

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    probabilities = np.full((120, 3), 0.02)
    probabilities[np.arange(120), labels] = 0.96
    flipped = [3, 50, 100]
    for i in flipped:  # the model is sure these belong to the next class
        probabilities[i] = 0.01
        probabilities[i, (labels[i] + 1) % 3] = 0.98
    probabilities += rng.uniform(0, 0.01, probabilities.shape)
    found = label_issues(labels, probabilities)
    assert sorted(issue.index for issue in found) == flipped
    assert all(issue.suggested == (labels[issue.index] + 1) % 3 for issue in found)
    assert [issue.score for issue in found] == sorted(issue.score for issue in found)  # most doubtful first


def test_perceptual_hash_keeps_resized_copies_close_and_other_pictures_apart():
    from imagesets.perceptual import distances, phashes

    images, _ = digit_images(3, size=32, classes=[0, 3])
    image = images[0]
    resized = np.asarray(Image.fromarray(image).resize((48, 48)).resize((32, 32)))
    bits = phashes(np.stack([image, resized, images[4]])[..., None])
    table = distances(bits, bits)
    assert table[0, 1] <= 4 and table[0, 2] > 10


# --- real photographs and their near copies ----------------------------------------------------------------------

TILE = 106  # pixels a side: scikit-learn's photographs (427x640) hold 4 x 6 tiles that do not overlap


def photo_tiles() -> dict[str, list[Image.Image]]:
    """{"china": 24 tiles, "flower": 24 tiles}: pieces of scikit-learn's two sample photographs, no two alike."""
    from sklearn.datasets import load_sample_image

    tiles = {}
    for name in ("china", "flower"):
        photo = Image.fromarray(load_sample_image(f"{name}.jpg"))
        tiles[name] = [photo.crop((c * TILE, r * TILE, (c + 1) * TILE, (r + 1) * TILE))
                       for r in range(4) for c in range(6)]
    return tiles


def near_copy(tile: Image.Image, how: str) -> Image.Image:
    """A near copy of ``tile`` as the benchmark plants them; "jpeg" is re-encoded by being saved as a JPEG."""
    if how == "cropped":  # 5% off each side, scaled back
        margin = round(TILE * 0.05)
        return tile.crop((margin, margin, TILE - margin, TILE - margin)).resize((TILE, TILE), Image.Resampling.BICUBIC)
    if how == "resized":
        return tile.resize((TILE * 3 // 2, TILE * 3 // 2), Image.Resampling.BICUBIC)
    if how == "brightened":
        from PIL import ImageEnhance

        return ImageEnhance.Brightness(tile).enhance(1.3)
    return tile


def save_copy(tile: Image.Image, how: str, folder, name: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.{'jpg' if how == 'jpeg' else 'png'}")
    near_copy(tile, how).save(path, **({"quality": 70} if how == "jpeg" else {}))
    return path


NEAR_KINDS = ("cropped", "resized", "jpeg", "brightened")


def test_cropped_resized_reencoded_and_brightened_copies_across_the_split_are_leaks(tmp_path, capsys):
    """A folder that gives train/ and test/, with four training photos' near copies in test/: the audit reports
    each as a leak, and no other pair.  The cropped copy is the one a fixed-zoom comparison of thumbnails missed
    (its correlation 0.9956 in the benchmark, under the 0.996 that kept different pictures apart)."""
    root = tmp_path / "photos"
    tiles = photo_tiles()
    for name, pieces in tiles.items():
        for i, tile in enumerate(pieces):
            save_copy(tile, "same", root / ("train" if i < 20 else "test") / name, str(i))
    planted = set()
    for k, how in enumerate(NEAR_KINDS):
        name = ("china", "flower")[k % 2]
        original = 2 + 3 * k
        copy = save_copy(tiles[name][original], how, root / "test" / name, f"copy_{how}")
        planted.add(frozenset({f"train/{name}/{original}.png", os.path.relpath(copy, root)}))
    out = tmp_path / "audit.json"
    code, _, err = train_main(capsys, "audit", f"folder:{root}", "--runs-dir", str(tmp_path / "runs"), "--json",
                              str(out), "--audit-epochs", "1", "--folds", "2")
    assert code == 0, err[-2000:]
    with open(out) as f:
        findings = json.load(f)
    leaks = {frozenset(leak["files"]): leak for leak in findings["leaks"]}
    assert set(leaks) == planted, sorted(map(sorted, leaks))
    assert all(leak["kind"] == "near" and sorted(leak["splits"]) == ["test", "train"] for leak in leaks.values())


def test_the_scans_pair_search_finds_exactly_the_pairs_that_comparing_every_pair_finds():
    """``near_pairs`` compares only hashes that share a block of bits (pigeonhole); on random hashes with close ones
    planted, it must find what the comparison of every pair with every rule finds."""
    from imagesets.perceptual import HEX, SCAN_RULES, near_pairs, words

    def flip(key: str, hash_bits: list) -> str:
        """``key`` with the given bits of each of its four hashes flipped."""
        hashes = [int(key[k * HEX:(k + 1) * HEX], 16) ^ sum(1 << int(b) for b in bits) for k, bits in
                  enumerate(hash_bits)]
        return "".join(f"{value:0{HEX}x}" for value in hashes)

    rng = np.random.default_rng(0)
    keys = ["".join(f"{int(rng.integers(0, 2**63)):0{HEX}x}" for _ in range(4)) for _ in range(300)]
    for i in range(0, 120, 2):  # the next key: a near copy of this one, each of its hashes 0 to 9 bits away
        keys[i + 1] = flip(keys[i], [rng.choice(64, rng.integers(0, 10), replace=False) for _ in range(4)])
    # 4 bits apart, one in each quarter of the whole image's phash: a search over 4 blocks of bits would miss it
    keys[201] = flip(keys[200], [(8, 24, 40, 56), (), (), ()])
    keys[7] = ""  # a file the scan could not hash pairs with nothing
    hashed = words(keys)
    expected = set()
    for view_a, view_b, phash_radius, dhash_radius in SCAN_RULES:
        close = ((np.bitwise_count(hashed[view_a, "phash"][:, None] ^ hashed[view_b, "phash"][None]) <= phash_radius)
                 & (np.bitwise_count(hashed[view_a, "dhash"][:, None] ^ hashed[view_b, "dhash"][None]) <= dhash_radius))
        expected |= {(min(i, j), max(i, j)) for i, j in zip(*np.nonzero(close)) if i != j and 7 not in (i, j)}
    found = near_pairs(keys)
    assert set(found) == expected and len(found) == len(expected) and (200, 201) in found
    assert 10 < len(found) < 60  # some planted pairs are close enough, and some are not


# --- the scan's cheap checks and the split -----------------------------------------------------------------------

def test_groups_stay_on_one_side_of_the_split_and_singletons_split_as_before():
    from imagesets import stratified_split
    from imagesets.copies import group_ids

    labels = np.repeat(np.arange(2), 30)
    alone = stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=3)
    singletons = stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=3, groups=np.arange(60))
    assert all(np.array_equal(alone[k], singletons[k]) for k in alone)
    keys = [f"k{i // 3}" if i < 30 else "" for i in range(60)]  # groups of three in class 0
    groups = group_ids(keys)
    for seed in range(5):
        parts = stratified_split(labels, {"val": 0.1, "test": 0.2}, seed=seed, groups=groups)
        side = {i: name for name, index in parts.items() for i in index}
        assert sorted(side) == list(range(60))
        for group in set(groups.tolist()):
            assert len({side[i] for i in np.flatnonzero(groups == group)}) == 1


def test_the_toolkits_split_keeps_each_group_of_near_copies_on_one_side(tmp_path):
    """Photos with planted groups of near copies (an original with its resized, re-encoded, brightened or cropped
    copies); the scan groups each, and the split saved for every seed keeps each group on one side."""
    import imagesets
    from imagesets.folder import folder

    root = tmp_path / "photos"
    tiles = photo_tiles()
    for name, pieces in tiles.items():
        for i, tile in enumerate(pieces):
            save_copy(tile, "same", root / name, str(i))
    planted = []
    groups = (("resized", "jpeg"), ("jpeg", "resized"), ("jpeg", "brightened"), ("resized", "jpeg", "brightened"),
              ("cropped", "jpeg"))
    for k, kinds in enumerate(groups):
        name, original = ("china", "flower")[k % 2], (7, 8, 14, 9, 20)[k]  # tiles with texture, not sky
        copies = [save_copy(tiles[name][original], how, root / name, f"copy{k}_{how}") for how in kinds]
        planted.append({str(root / name / f"{original}.png"), *copies})
    scan = folder(str(root), image_size=(32, 32), channels=3)[-1]
    ids = dict(zip(scan.files["train"], scan.groups["train"].tolist()))
    assert all(len({ids[path] for path in group}) == 1 for group in planted)  # the scan joined each group
    assert max(np.unique(list(ids.values()), return_counts=True)[1]) <= 4  # and nothing else to them
    for seed in range(5):
        data = imagesets.load(f"folder:{root}", image_size=(32, 32), seed=seed)
        side = {path: split for split, paths in data.files.items() for path in paths}
        assert len(side) == 48 + sum(len(group) - 1 for group in planted)
        for group in planted:
            assert len({side[path] for path in group}) == 1, (seed, sorted(group))


def test_every_folder_run_reports_exact_copies_and_copies_across_a_given_split(tmp_path):
    import imagesets
    from imagesets.copies import line

    root = tmp_path / "photos"
    write_digit_folder(root / "train", n_per_class=6, classes=("1", "2"))
    images, labels = digit_images(8, classes=[1, 2])
    for i, (image, label) in enumerate(zip(images, labels)):
        if i % 8 >= 6:  # images the train/ folder does not hold
            os.makedirs(root / "test" / str(label), exist_ok=True)
            Image.fromarray(image).save(root / "test" / str(label) / f"t{i}.png")
    first = sorted(os.listdir(root / "train" / "1"))[0]
    shutil.copy(root / "train" / "1" / first, root / "test" / "1" / "leaked.png")
    shutil.copy(root / "train" / "1" / first, root / "train" / "2" / "twin.png")
    data = imagesets.load(f"folder:{root}", image_size=(16, 16))
    checks = data.checks
    assert checks["exact_copy_groups"] == 1 and checks["files_in_copy_groups"] == 3
    assert checks["copies_across_classes"] == 1 and checks["copies_across_split"] == 1
    assert "train.py audit" in line(checks) and "across train/val/test" in line(checks)


# --- the audit on a planted folder -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """See ``audited``; the planted folder alone."""
    return _planted(tmp_path_factory)


def _planted(tmp_path_factory):
    """Digits 0-4, 24 a class, with a flipped label, an exact copy under another class, a resized copy, a
    constant image and a file that is not an image; audited once through the command line."""
    root = str(tmp_path_factory.mktemp("planted") / "digits")
    write_digit_folder(root, n_per_class=24, classes=[str(d) for d in range(5)], formats=("png",))
    shutil.copy(os.path.join(root, "0", "img0.png"), os.path.join(root, "1", "twin_of_0.png"))
    Image.open(os.path.join(root, "2", "img50.png")).resize((40, 40)).save(os.path.join(root, "2", "resized.png"))
    shutil.move(os.path.join(root, "3", "img75.png"), os.path.join(root, "4", "img75.png"))  # a 3 filed as 4
    Image.new("L", (24, 24), 128).save(os.path.join(root, "0", "grey.png"))
    with open(os.path.join(root, "1", "notes.png"), "w") as f:
        f.write("not an image")
    return root


@pytest.fixture(scope="module")
def audited(planted):
    """The planted folder audited once, through the command line: (root, the JSON, stdout, its files before)."""
    import contextlib  # capsys is function-scoped: the module's one audit is captured by hand
    import io

    import train

    root = planted
    before = fingerprint(root)
    work = os.path.dirname(root)
    out = os.path.join(work, "audit.json")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = train.main(["audit", f"folder:{root}", "--runs-dir", os.path.join(work, "runs"), "--json", out,
                           "--audit-epochs", "4", "--folds", "3"])
    assert code == 0, stdout.getvalue()[-2000:]
    with open(out) as f:
        return root, json.load(f), stdout.getvalue(), before


def test_audit_json_has_every_kind_of_finding(audited):
    root, findings, _, _ = audited
    assert {"3": 1} == {item["suggested"]: 1 for item in findings["label_issues"] if item["file"] == "4/img75.png"}
    flagged = [item for item in findings["label_issues"] if item["file"] == "4/img75.png"][0]
    assert flagged["given"] == "4" and 0 <= flagged["score"] < 0.05
    groups = {frozenset(group["files"]): group for group in findings["duplicates"]}
    assert groups[frozenset({"0/img0.png", "1/twin_of_0.png"})]["kind"] == "exact"
    assert groups[frozenset({"0/img0.png", "1/twin_of_0.png"})]["across_classes"]
    assert groups[frozenset({"2/img50.png", "2/resized.png"})]["kind"] == "near"
    issues = {item["file"]: item["issue"] for item in findings["image_issues"]}
    assert issues["0/grey.png"].startswith("nearly constant")
    assert "not an image" in issues["1/notes.png"]
    assert set(findings["class_balance"]["counts"]) == {"0", "1", "2", "3", "4"}
    excluded = {item["file"] for item in findings["exclude"]}
    assert "4/img75.png" in excluded and len({"0/img0.png", "1/twin_of_0.png"} & excluded) == 1


def test_audit_reports_leaks_with_their_splits(audited):
    _, findings, _, _ = audited
    for leak in findings["leaks"]:
        assert len(set(leak["splits"])) > 1 and len(leak["splits"]) == len(leak["files"])


def test_audit_prints_one_screen_with_the_next_command_and_writes_the_report(audited):
    root, findings, stdout, _ = audited
    lines = stdout.strip().splitlines()
    summary = lines[next(i for i, line in enumerate(lines) if line.startswith("Audited")):]
    assert len(summary) <= 24
    assert summary[-1].startswith(f"next: python train.py --dataset folder:{root} --exclude ")
    report = os.path.join(os.path.dirname(root), "runs", "audit", "audit-digits", "report.html")
    with open(report, encoding="utf-8") as f:
        page = f.read()
    assert page.count("data:image/png;base64,") >= 4 and "twin_of_0.png" in page


def test_audit_changes_no_file_of_the_folder(audited):
    root, _, _, before = audited
    assert fingerprint(root) == before


def test_train_exclude_leaves_the_flagged_files_out_and_records_them(audited, tmp_path, capsys):
    root, findings, _, _ = audited
    out = os.path.dirname(root)
    code, stdout, stderr = train_main(capsys, "--dataset", f"folder:{root}", "--image-size", "16", "16",
                                      "--epochs", "1", "--exclude", os.path.join(out, "audit.json"), "--runs-dir",
                                      str(tmp_path / "runs"), "--no-export", "--run-name", "excluded", "--verbose",
                                      "0", "--augment", "none")
    assert code == 0, stderr[-2000:]
    assert f"Left out {len(findings['exclude'])} files" in stdout
    assert "Copies: no exact copies" in stdout  # the twin was left out
    with open(tmp_path / "runs" / "excluded" / "metrics.json") as f:
        metrics = json.load(f)
    left_out = {os.path.relpath(path, root) for path in metrics["excluded_files"]}
    assert left_out == {item["file"] for item in findings["exclude"]}
    assert metrics["copies"]["exact_copy_groups"] == 0


# --- unusable images ---------------------------------------------------------------------------------------------

def test_a_blurred_photo_is_flagged_and_its_sharp_original_is_not(tmp_path):
    """scikit-learn's china.jpg and the same photo through PIL's Gaussian blur, among sharp views of the two sample
    photographs (windows on their subjects: the tiles of the sky and of the flower's soft background would be
    soft themselves), read as the audit reads a folder."""
    from PIL import ImageFilter
    from sklearn.datasets import load_sample_image

    import imagesets
    from audit import quality
    from audit.run import rows_of

    root = tmp_path / "photos"
    for name, (x, y) in (("china", (330, 280)), ("flower", (320, 230))):  # the temple, the flower
        photo = Image.fromarray(load_sample_image(f"{name}.jpg"))
        os.makedirs(root / name)
        for k in range(12):  # 12 windows, 160 to 270 pixels a side, around the subject
            side, left, top = 160 + 10 * k, x + (k % 4 - 1.5) * 40, y + (k // 4 - 1) * 40
            box = (left - side / 2, top - side / 2, left + side / 2, top + side / 2)
            photo.crop(tuple(round(v) for v in box)).save(root / name / f"{k}.png")
    china = Image.fromarray(load_sample_image("china.jpg"))
    china.save(root / "china" / "original.jpg", quality=95)
    china.filter(ImageFilter.GaussianBlur(radius=4)).save(root / "china" / "blurred.jpg", quality=95)
    data = imagesets.load(f"folder:{root}", image_size=(128, 128), test_fraction=0, val_fraction=0)
    images, _, _, names, paths = rows_of(data)
    flagged = {names[index]: issue for index, issue in quality.issues(images, paths)}
    assert list(flagged) == ["china/blurred.jpg"] and flagged["china/blurred.jpg"].startswith("blurry")


# --- bad input ---------------------------------------------------------------------------------------------------

def test_bad_folders_give_one_line_and_a_nonzero_exit_and_stay_unchanged(tmp_path, capsys):
    cases = {}
    (tmp_path / "empty").mkdir()
    cases["empty"] = "no class sub-folders"
    write_digit_folder(tmp_path / "one_class", n_per_class=3, classes=("1",))
    cases["one_class"] = "only one class"
    write_digit_folder(tmp_path / "one_each", n_per_class=1, classes=("1", "2"))
    cases["one_each"] = "fewer than 2 usable images"
    broken = tmp_path / "broken"
    write_digit_folder(broken, n_per_class=3, classes=("1", "2"))
    for name in os.listdir(broken / "2"):
        with open(broken / "2" / name, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n truncated")
    cases["broken"] = "no readable images"
    for name, message in cases.items():
        before = fingerprint(tmp_path / name)
        code, _, stderr = train_main(capsys, "audit", f"folder:{tmp_path / name}", "--runs-dir",
                                     str(tmp_path / "runs"))
        assert code != 0, name
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], (name, stderr[-500:])
        assert fingerprint(tmp_path / name) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_a_reason_in_the_report(tmp_path):
    root = tmp_path / "locked"
    write_digit_folder(root, n_per_class=4, classes=("1", "2"))
    locked = root / "1" / sorted(os.listdir(root / "1"))[0]
    locked.chmod(0)
    try:
        import imagesets

        data = imagesets.load(f"folder:{root}", image_size=(16, 16))
        assert [path for path, _ in data.skipped] == [str(locked)]
    finally:
        locked.chmod(0o644)
