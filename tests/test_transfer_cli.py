"""Transfer learning through the command line, on real data: the benchmark's tiny mode
(a LeNet-5 this toolkit pretrained on digits 0-4, fine-tuned with the default flags on
a 10-images-a-class folder of digits 5-9, beside its linear probe and from scratch)
runs end to end, the run is not below its own probe on validation (nor far below it on
test), and its export classifies image files.  Whether transfer beats from-scratch is the benchmark's question, measured in
the README over three seeds and every size (bench/bench_transfer.py)."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from helpers import run_cli


def test_the_benchmark_runs_the_default_transfer_above_its_probe_and_its_export_classifies_files(tmp_path):
    done = run_cli("bench/bench_transfer.py", "--tiny", "--sizes", "10", "--no-extras", "--seeds", "1",
                   "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "result.json"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())["results"]
    assert result["pretrain"]["test_accuracy_classes_0_4"] > 0.9
    ten = result["sizes"]["10"]
    # What the floor guarantees on every draw: the kept model is not below the probe on validation.
    probe = json.loads((tmp_path / "work" / "runs" / "transfer10-s0" / "metrics.json").read_text())["probe"]
    kept_val = probe["network_val_accuracy"] if probe["kept"] == "network" else probe["val_accuracy"]
    assert kept_val >= probe["val_accuracy"], probe
    # On the test split one draw moves by several of the 250 images; the benchmark's "within a point of the probe"
    # is the mean of three draws (0.896 against 0.905 at 10 a class; this draw 0.900 against 0.924).
    assert ten["fine_tuned"]["test_accuracy"] >= ten["probe"]["test_accuracy"] - 0.04, ten
    assert ten["fine_tuned"]["test_accuracy"] > 0.6 and ten["scratch"]["test_accuracy"] > 0.4, ten  # 5 classes
    assert ten["fine_tuned"]["train_images"] <= 50  # really a small folder

    # The fine-tuned export takes image files of any size and mode (8x8 grey model).
    export = tmp_path / "work" / "saved_models" / "transfer10-s0"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    Image.fromarray(rng.integers(0, 255, (12, 20), dtype=np.uint8)).save(tmp_path / "small.png")
    shown = run_cli("predict.py", str(export), str(tmp_path / "big.jpg"), str(tmp_path / "small.png"), "--json")
    assert shown.returncode == 0, shown.stderr[-2000:]
    predictions = json.loads(shown.stdout)["predictions"]
    classes = {"5", "6", "7", "8", "9"}
    assert len(predictions) == 2 and all(p["top"][0]["class"] in classes for p in predictions)
