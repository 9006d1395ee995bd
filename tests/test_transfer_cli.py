"""Transfer learning through the command line, proved on real data: a backbone this
toolkit pretrained on Fashion-MNIST classes 0-4, fine-tuned with the default flags
on a 10-images-a-class folder of classes 5-9, beats training from scratch and is not
below its own linear probe (bench/bench_transfer.py --small --sizes 10)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli

FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="Debian's dataset-fashion-mnist is not installed")
def test_pretrained_backbone_beats_scratch_and_its_export_classifies_files(tmp_path):
    done = run_cli("bench/bench_transfer.py", "--small", "--sizes", "10", "--no-extras",
                   "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "result.json"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())["results"]
    assert result["pretrain"]["test_accuracy_classes_0_4"] > 0.6
    ten = result["sizes"]["10"]
    assert ten["fine_tuned"]["test_accuracy"] >= ten["scratch"]["test_accuracy"] + 0.1, ten
    assert ten["fine_tuned"]["test_accuracy"] >= ten["probe"]["test_accuracy"] - 0.01, ten
    assert ten["fine_tuned"]["train_images"] <= 50  # really a small folder

    # The fine-tuned export takes image files of any size and mode (28x28 grey model).
    export = tmp_path / "work" / "saved_models" / "transfer10"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    Image.fromarray(rng.integers(0, 255, (12, 20), dtype=np.uint8)).save(tmp_path / "small.png")
    shown = run_cli("predict.py", str(export), str(tmp_path / "big.jpg"), str(tmp_path / "small.png"), "--json")
    assert shown.returncode == 0, shown.stderr[-2000:]
    predictions = json.loads(shown.stdout)["predictions"]
    classes = {"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}
    assert len(predictions) == 2 and all(p["top"][0]["class"] in classes for p in predictions)
