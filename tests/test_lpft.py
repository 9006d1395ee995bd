"""LP-FT: transfer runs start from a linear probe and never end below it.

Real backbones (zoo networks trained for a few steps on scikit-learn's digits),
real image folders on disk, real scikit-learn probes; nothing mocked.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest

import imagesets
import transfer
import zoo
from helpers import write_digit_folder
from core.errors import UserError
from core.model import assemble, preprocessing_layer
from training.phases import SMALL_VALIDATION
from training.run import train
from transfer import fit_probe, head_model, initialize_head, load_backbone
from transfer.freeze import default_fine_tune_from
from transfer.probe import ABSENT_CLASS_LOGIT, pool


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


@functools.cache
def digit_features():
    """Pooled features of a random LeNet-5 on real digits: (train vectors, labels), (test vectors, labels)."""
    data = imagesets.load("digits", image_size=(32, 32), channels=1)
    network = zoo.build("lenet5_modern", input_shape=(32, 32, 1), include_top=False, pooling=None)
    def features(split):
        images, labels = data.arrays[split]
        return pool(np.asarray(network.predict(images.astype(np.float32) / 255.0, verbose=0))), labels
    return features("train"), features("test")


def head_outputs(head, vectors):
    return np.asarray(head.predict(vectors.astype(np.float32), verbose=0))


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("hidden, how", [((), "linear"), ((24, 32), "pass-through")])
def test_a_head_started_from_the_probe_predicts_exactly_what_the_probe_does(hidden, how):
    (x, y), (x_test, _) = digit_features()
    probe = fit_probe(x, y, 10)
    head = head_model(x.shape[1:], 10, hidden=hidden, dropout=0.3)
    assert initialize_head(head, probe) == how
    np.testing.assert_allclose(head_outputs(head, x_test), softmax(probe.logits(x_test)), atol=2e-5)
    assert probe.accuracy(x_test, digit_features()[1][1]) > 0.6  # a real probe, not a constant


def test_a_narrow_hidden_head_refits_its_output_layer_on_the_hidden_activations():
    (x, y), (x_test, y_test) = digit_features()
    probe = fit_probe(x, y, 10)
    head = head_model(x.shape[1:], 10, hidden=(12,), dropout=0.0)  # narrower than 2 x 10 classes
    with pytest.raises(ValueError, match="needs the training vectors"):
        initialize_head(head, probe)
    assert initialize_head(head, probe, x, y) == "refit"
    accuracy = np.mean(head_outputs(head, x_test).argmax(-1) == y_test)
    assert accuracy > 0.5  # 12 random ReLU features of a 10-class problem: well above chance, below the probe


def test_binary_and_missing_classes_map_onto_every_output():
    (x, y), (x_test, y_test) = digit_features()
    keep = np.isin(y, (3, 8))
    probe = fit_probe(x[keep], y[keep], 10)  # classes 3 and 8 only, in a 10-class head
    head = head_model(x.shape[1:], 10, dropout=0.0)
    initialize_head(head, probe)
    predicted = head_outputs(head, x_test[np.isin(y_test, (3, 8))]).argmax(-1)
    assert set(predicted) <= {3, 8}
    assert np.mean(predicted == y_test[np.isin(y_test, (3, 8))]) > 0.8
    assert probe.bias[0] <= np.min(probe.bias[[3, 8]]) + ABSENT_CLASS_LOGIT + 1e-9


@functools.cache
def lenet_backbone_file(tmp_root, batch_norm):
    """A LeNet-5 trained for two epochs on digits 0-4, saved the way runs and exports save it."""
    data = imagesets.load("digits", image_size=(32, 32), channels=1)
    images, labels = data.arrays["train"]
    keep = labels < 5
    network = zoo.build("lenet5", input_shape=(32, 32, 1), num_classes=5, batch_norm=batch_norm)
    model = assemble(network, (32, 32, 1), preprocessing=preprocessing_layer("rescale"))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images[keep].astype(np.float32), labels[keep], epochs=2, batch_size=32, verbose=0)
    path = f"{tmp_root}/lenet5-bn{int(batch_norm)}.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def backbone_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("backbones"))


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """Digits 5-9, 12 images a class, as PNG files: a small folder of classes the backbone never saw."""
    return write_digit_folder(str(tmp_path_factory.mktemp("digits")), n_per_class=12,
                              classes=("5", "6", "7", "8", "9"), formats=("png",))


def run_transfer(tmp_path, backbone, folder, **extra):
    config = {"dataset": f"folder:{folder}", "backbone": backbone, "epochs": 3, "finetune_epochs": 2,
              "flips": False, "runs_dir": str(tmp_path / "runs"), "export": False, "verbose": 0, **extra}
    lines = []
    return train(config, log=lines.append), lines


def test_the_default_run_starts_from_its_probe_and_is_not_below_it(tmp_path, backbone_root, digit_folder):
    metrics, lines = run_transfer(tmp_path, lenet_backbone_file(backbone_root, True), digit_folder)
    probe = metrics["probe"]
    assert probe["head_start"] == "linear"
    assert any(line.startswith("Linear probe (logistic regression") for line in lines)
    assert any("Validation accuracy: network" in line for line in lines)
    kept_val = probe["network_val_accuracy"] if probe["kept"] == "network" else probe["val_accuracy"]
    assert kept_val >= probe["val_accuracy"]
    assert metrics["test_accuracy"] >= probe["test_accuracy"] - 0.05
    assert metrics["test_accuracy"] > 0.6  # five classes: chance is 0.2
    # A handful of validation images cannot rank fine-tuning's epochs: the phase keeps its last one.
    assert metrics["counts"]["val"] < SMALL_VALIDATION
    assert "keeps its last epoch" in next(line for line in lines if line.startswith("Phase 'finetune': epochs"))
    assert metrics["best_epoch"] == metrics["epochs_run"] == 5
    # The probe is scored on the pretrained backbone, not on the one fine-tuning changed in place.
    from training.run import DEFAULTS, load_data

    fresh = load_backbone(lenet_backbone_file(backbone_root, True))
    baseline = transfer.sklearn_baseline(fresh, load_data({**DEFAULTS, **metrics["config"]}, fresh))
    assert probe["test_accuracy"] == pytest.approx(baseline["test_accuracy"])
    assert probe["val_accuracy"] == pytest.approx(baseline["val_accuracy"])


def test_a_network_that_ends_below_the_probe_is_replaced_by_the_probe(backbone_root):
    import types

    from core.model import inference_model
    from training.config import complete
    from training.recipes import TransferRecipe

    config = complete({"backbone": lenet_backbone_file(backbone_root, False), "head_dropout": 0.0})
    recipe = TransferRecipe(config)
    data = imagesets.load("digits", image_size=(32, 32), channels=1, seed=0)
    lines = []
    run = types.SimpleNamespace(config=config, data=data, model=recipe.build(config, data), log=lines.append,
                                trial=False)
    recipe.start(run)
    # Spoil the trained network: the output layer's weights scrambled.
    output = recipe.head(run).get_layer("predictions")
    kernel, bias = output.get_weights()
    output.set_weights([np.random.default_rng(0).permutation(kernel.ravel()).reshape(kernel.shape) * 50, bias])
    inference = inference_model(run.model)
    record = recipe.finish(run, inference)
    assert record["kept"] == "probe" and record["network_val_accuracy"] < record["val_accuracy"]
    # Both losses are the run's own validation loss: against targets smoothed by --label-smoothing.
    assert config["label_smoothing"] > 0
    assert record["val_loss"] == pytest.approx(recipe.start_state.loss("val", config["label_smoothing"]))
    assert record["val_loss"] != pytest.approx(recipe.start_state.loss("val"))
    assert any("keeping the probe" in line for line in lines)
    # The model now is exactly the probe on the pretrained backbone.
    x_test, y_test = data.arrays["test"]
    predicted = inference.predict(x_test.astype(np.float32), verbose=0).argmax(-1)
    assert np.mean(predicted == y_test) == pytest.approx(record["test_accuracy"], abs=1e-9)
    assert record["test_accuracy"] > 0.5


@pytest.mark.parametrize("val_images, keep_last", [(SMALL_VALIDATION - 1, True), (SMALL_VALIDATION, False)])
def test_fine_tuning_keeps_its_last_epoch_only_when_validation_is_too_small_to_rank_epochs(
        backbone_root, val_images, keep_last):
    import types

    from training.config import complete
    from training.recipes import TransferRecipe

    config = complete({"backbone": lenet_backbone_file(backbone_root, False), "finetune_epochs": 2})
    labels = np.arange(val_images) % 5
    run = types.SimpleNamespace(config=config, steps=3, data=types.SimpleNamespace(arrays={"val": (None, labels)}))
    head, finetune = TransferRecipe(config).phases(run, augmented=True)
    assert (head.keep_last, finetune.keep_last) == (False, keep_last)
    assert finetune.lr == pytest.approx(config["lr"] * transfer.FINETUNE_FACTOR)


def test_a_small_folder_gets_a_minimum_of_optimizer_steps_per_phase(tmp_path, backbone_root, digit_folder):
    metrics, lines = run_transfer(tmp_path, lenet_backbone_file(backbone_root, False), digit_folder,
                                  min_phase_steps=40, batch_size=16)
    # 5 classes x ~9 training images = 3 steps an epoch: 3 head epochs need 5 passes for 40 steps.
    head_line = next(line for line in lines if line.startswith("Phase 'head': epochs"))
    assert "passes over the training data an epoch" in head_line
    assert metrics["epochs_run"] <= 5  # the epoch count is still the one asked for


def test_lenet_with_batch_norm_fine_tunes_its_last_convolution(backbone_root):
    backbone = load_backbone(lenet_backbone_file(backbone_root, True))
    assert backbone.fine_tune_from == "c5_conv"
    transfer.freeze(backbone, "from:auto")
    assert backbone.features.trainable_weights  # before, c5_bn was picked and nothing trained


def test_a_freeze_policy_that_trains_nothing_stops_with_one_line(tmp_path, backbone_root, digit_folder):
    with pytest.raises(UserError, match="leaves no weight of backbone .* to fine-tune"):
        run_transfer(tmp_path, lenet_backbone_file(backbone_root, True), digit_folder, freeze="pattern:_bn$")


# One model of each zoo family, at a small input; each saved as a run saves it (an export's assets hold the same file).
FAMILIES = {"lenet5": {"batch_norm": True}, "lenet5_modern": {}, "mlp": {}, "alexnet_small": {},
            "inception_small": {}, "resnet20": {}, "preact_resnet20": {}, "wrn16_4": {"width": 0.25}}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_zoo_familys_saved_model_unfreezes_weights_when_fine_tuning(tmp_path, name):
    shape = zoo.get(name).input_shape
    network = zoo.build(name, input_shape=shape, num_classes=3, **FAMILIES[name])
    path = str(tmp_path / "model.keras")
    assemble(network, shape, preprocessing=preprocessing_layer("rescale")).save(path)
    backbone = load_backbone(path)
    assert backbone.fine_tune_from == default_fine_tune_from(backbone.features)
    transfer.freeze(backbone, "from:auto")
    trainable = sum(int(np.prod(w.shape)) for w in backbone.features.trainable_weights)
    assert trainable > 0, f"{name}: fine-tuning from {backbone.fine_tune_from!r} trains nothing"
    transfer.freeze(backbone, "all")
    assert not backbone.features.trainable_weights


def test_the_floor_keeps_the_more_accurate_and_breaks_ties_by_cross_entropy():
    assert transfer.choose((0.8, 0.9), (0.6, 0.1)) == "network"
    assert transfer.choose((0.6, 0.1), (0.8, 0.9)) == "probe"
    assert transfer.choose((1.0, 0.5), (1.0, 0.3)) == "probe"  # a tie on enough validation images: calibration
    assert transfer.choose((1.0, 0.3), (1.0, 0.5)) == "network"
    assert transfer.choose((1.0, 0.3), (1.0, 0.3)) == "network"
    # Too few validation images to rank them: a tie keeps the network, a more accurate probe still wins.
    assert transfer.choose((1.0, 0.5), (1.0, 0.3), ties_by_loss=False) == "network"
    assert transfer.choose((0.8, 0.1), (1.0, 0.9), ties_by_loss=False) == "probe"
    probabilities, labels = np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([0, 0])
    assert transfer.cross_entropy(probabilities, labels) == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2)
    # With label smoothing it is Keras' own loss.
    keras_loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(2)[labels], probabilities)
    assert transfer.cross_entropy(probabilities, labels, 0.1) == pytest.approx(float(keras_loss), rel=1e-5)
    # Tied on accuracy, a near-certain probe loses to a calibrated network under the run's smoothed loss,
    # though it wins against hard labels.
    confident, calibrated, truth = np.array([[0.999, 0.001]]), np.array([[0.91, 0.09]]), np.array([0])
    hard = [transfer.cross_entropy(p, truth) for p in (calibrated, confident)]
    smoothed = [transfer.cross_entropy(p, truth, 0.1) for p in (calibrated, confident)]
    assert transfer.choose((1.0, hard[0]), (1.0, hard[1])) == "probe"
    assert transfer.choose((1.0, smoothed[0]), (1.0, smoothed[1])) == "network"


@pytest.mark.slow
def test_weights_none_trains_the_architecture_from_scratch_and_validates(tmp_path):
    # The command of a user with a small folder: MobileNetV2 from scratch on 30 digits a class at 32x32 for
    # 8 epochs.  Before --precise-bn its training accuracy reached 1.000 and its test accuracy stayed at 0.100,
    # chance: batch norm's moving averages, after 56 steps, matched no weights the network had.
    folder = write_digit_folder(str(tmp_path / "digits"), n_per_class=30, classes=[str(d) for d in range(10)],
                                formats=("png",))
    lines = []
    metrics = train({"dataset": f"folder:{folder}", "backbone": "mobilenet_v2", "weights": "none",
                     "image_size": [32, 32], "epochs": 8, "finetune_epochs": 2, "runs_dir": str(tmp_path / "runs"),
                     "export": False, "verbose": 0}, log=lines.append)
    assert any("trains from scratch" in line and "--finetune-epochs" in line for line in lines)
    assert not any(line.startswith("Linear probe") for line in lines)  # random features: nothing to probe
    assert metrics["probe"] is None and metrics["config"]["lr"] == 1e-3  # the zoo's rate, one phase
    assert len(metrics["history"]) == 8
    assert metrics["batch_norm"]["precise_bn"] is True  # the default wherever batch norm trains
    assert metrics["test_accuracy"] >= 0.4, metrics["test_accuracy"]
    # The run's own measurement, on the last epoch's weights: the moving averages are the cause.
    scores = metrics["batch_norm"]["val_accuracy"]
    assert scores["reestimated"] >= scores["moving_average"] + 0.3, scores
    # (That the export carries the re-estimated statistics is tests/test_batchnorm.py's, on a smaller network.)
