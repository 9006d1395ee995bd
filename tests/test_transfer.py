"""Tests for transfer/: backbones, freeze policies, heads, the fast path and the baseline.

Real Keras models and real data (scikit-learn's digits), nothing mocked.
keras.applications networks are built without weights at their smallest
input; no test downloads anything: ImageNet weights are asked for only with
downloads switched off, or where the network is unreachable anyway.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import socket

import keras
import numpy as np
import pytest

import imagesets
import transfer
import zoo
from transfer import (
    BACKBONES,
    ImagenetPreprocessing,
    classifier_network,
    describe_freeze,
    extract_features,
    freeze,
    head_model,
    load_backbone,
    parameter_counts,
    sklearn_baseline,
)
from core.errors import UserError
from core.model import assemble, inference_model, network_of, preprocessing_layer

# --- Helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)

# Where Keras itself looks for downloads: it reads $KERAS_HOME once, at import.
STARTUP_KERAS_HOME = os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras")


def smallest_shape(name):
    size = max(32, BACKBONES[name].min_size)
    return (size, size, 3)


@functools.cache
def digits():
    return imagesets.load("digits", image_size=(32, 32), channels=3)


def raw_images(n=8, shape=(32, 32, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape)).astype(np.float32)


def flat_layers(model):
    """Every non-container layer in order, nested models expanded (written here, independently of transfer)."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(flat_layers(layer))
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def parameters(layer):
    """A layer's trainable-when-unfrozen parameter count."""
    before = layer.trainable
    layer.trainable = True
    count = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    layer.trainable = before
    return count


def expected_trainable(layers, trains):
    """Trainable parameters when exactly the layers with ``trains(i, layer)`` train,
    with batch norm frozen whenever any layer with weights is frozen."""
    chosen = [bool(trains(i, layer)) for i, layer in enumerate(layers)]
    partial = any(parameters(layer) and not c for layer, c in zip(layers, chosen))
    return sum(parameters(layer) for layer, c in zip(layers, chosen)
               if c and not (partial and isinstance(layer, keras.layers.BatchNormalization)))


def trainable_count(model):
    return parameter_counts(model)[0]


# --- Backbones ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_at_its_smallest_input(name):
    spec = BACKBONES[name]
    shape = smallest_shape(name)
    backbone = load_backbone(name, input_shape=shape, weights=None)
    assert backbone.input_shape == shape and backbone.name == name
    assert backbone.preprocessing.name == "preprocessing" and backbone.preprocessing.mode == spec.preprocessing
    features = backbone.features(backbone.preprocessing(raw_images(2, shape)))
    # A network that pools itself (ConvNeXt, BackboneSpec.pooling) gives vectors; the rest, feature maps.
    assert len(features.shape) == (2 if spec.pooling else 4) and tuple(features.shape[1:]) == backbone.feature_shape
    assert np.all(np.isfinite(np.asarray(features)))
    # "none" means the network scales its own input: it must hold a rescaling/normalizing layer.
    own = [layer for layer in flat_layers(backbone.features)
           if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))]
    assert bool(own) == (spec.preprocessing == "none")
    # The table's fine-tuning point is a real layer name, and it trains part of the network.
    freeze(backbone, "from:auto")
    trainable, frozen = parameter_counts(backbone.features)
    assert 0 < trainable < trainable + frozen
    assert spec.min_size <= spec.input_size and spec.paper


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_imagenet_preprocessing_equals_the_familys_preprocess_input(name):
    family = BACKBONES[name].constructor.__module__.rsplit(".", 1)[1]  # e.g. "resnet", "mobilenet_v2"
    images = raw_images(3, (5, 6, 3), seed=1)
    expected = getattr(keras.applications, family).preprocess_input(images.copy())
    layer = ImagenetPreprocessing(BACKBONES[name].preprocessing)
    np.testing.assert_allclose(np.asarray(layer(images)), expected, rtol=1e-6, atol=1e-4)


def test_convnext_features_are_pooled_as_keras_pools_them():
    # Keras' pooling="avg" (and ConvNeXt's ImageNet head) pools first and applies the final LayerNormalization
    # after: LN(mean(x)), which a head pooling the per-position-normalized map, mean(LN(x)), does not give.
    shape = (64, 64, 3)  # the last stage's map is 2x2: at 32x32 (1x1) both orders would agree
    backbone = load_backbone("convnext_tiny", input_shape=shape, weights=None)
    keras_model = keras.applications.ConvNeXtTiny(include_top=False, pooling="avg", weights=None, input_shape=shape)
    rng = np.random.default_rng(0)
    # Random weights (LayerNormalization scales around 1), the same in both, so every weight has a say.
    weights = [rng.normal(1.0 if w.ndim == 1 else 0.0, 0.3 if w.ndim == 1 else 0.05, w.shape).astype(np.float32)
               for w in backbone.features.get_weights()]
    backbone.features.set_weights(weights)
    keras_model.set_weights(weights)
    images = raw_images(4, shape)
    expected = np.asarray(keras_model(images, training=False))
    features = extract_features(backbone, images)
    assert backbone.feature_shape == (768,)
    np.testing.assert_allclose(transfer.pooled(features), expected, rtol=0, atol=1e-4)
    head = head_model(backbone.feature_shape, 3)  # what the head's dense layers see is the same vector
    np.testing.assert_allclose(transfer.probe.vectors(head, features), expected, rtol=0, atol=1e-4)
    # The order matters at this size: normalizing each position and then pooling is far off.
    norm = backbone.features.layers[-1]
    assert isinstance(norm, keras.layers.LayerNormalization)
    maps = keras.Model(backbone.features.input, backbone.features.layers[-2].input)(images, training=False)
    assert tuple(maps.shape[1:3]) == (2, 2)
    assert np.abs(np.asarray(norm(maps)).mean(axis=(1, 2)) - expected).max() > 1e-2


@pytest.mark.parametrize("mode, family", [("caffe", "vgg16"), ("tf", "xception"), ("torch", "densenet")])
def test_each_mode_matches_keras_imagenet_utils(mode, family):
    images = np.random.default_rng(2).uniform(0, 255, (2, 4, 4, 3)).astype(np.float32)
    expected = keras.applications.imagenet_utils.preprocess_input(images.copy(), mode=mode)
    np.testing.assert_allclose(np.asarray(ImagenetPreprocessing(mode)(images)), expected, rtol=1e-6, atol=1e-4)
    with pytest.raises(ValueError, match="valid: caffe, tf, torch, none"):
        ImagenetPreprocessing("bgr")


def test_transfer_model_survives_a_keras_round_trip(tmp_path):
    backbone = load_backbone("mobilenet_v2", input_shape=(32, 32, 3), weights=None)
    model = assemble(classifier_network(backbone, 3, hidden=(8,)), backbone.input_shape,
                     preprocessing=backbone.preprocessing)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    images = raw_images(4)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    assert isinstance(loaded.get_layer("preprocessing"), ImagenetPreprocessing)
    assert loaded.get_layer("preprocessing").mode == "tf"
    # ...and the saved transfer model is itself a backbone: the head is cut off again.
    again = load_backbone(path)
    np.testing.assert_allclose(again.features(backbone.preprocessing(images)),
                               backbone.features(backbone.preprocessing(images)), atol=1e-5)


@pytest.mark.parametrize("name, shape", [("mobilenet_v2", (32, 32, 3)), ("resnet20", (32, 32, 3))])
def test_weights_load_from_a_local_file(tmp_path, name, shape):
    first = load_backbone(name, input_shape=shape, weights=None)
    path = str(tmp_path / "backbone.weights.h5")
    first.features.save_weights(path)
    second = load_backbone(name, input_shape=shape, weights=path)
    fresh = load_backbone(name, input_shape=shape, weights=None)
    x = first.preprocessing(raw_images(2, shape))
    np.testing.assert_array_equal(np.asarray(second.features(x)), np.asarray(first.features(x)))
    # The file mattered: a fresh random network differs (MobileNetV2's random outputs are ~1e-13, so no atol).
    assert not np.allclose(np.asarray(fresh.features(x)), np.asarray(first.features(x)), rtol=1e-3, atol=0)


def test_efficientnet_imagenet_h5_gets_kerass_extra_input_scaling(tmp_path):
    """Keras adds Rescaling(1/sqrt(std)) after EfficientNet's normalization only for
    weights="imagenet"; the legacy .h5 download passed as a path gets the same."""
    original = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    norm = next(layer for layer in original.layers if isinstance(layer, keras.layers.Normalization))
    norm.adapt_mean.assign([0.485, 0.456, 0.406])
    norm.adapt_variance.assign([0.229 ** 2, 0.224 ** 2, 0.225 ** 2])
    norm.finalize_state()
    legacy = str(tmp_path / "efficientnetb0_notop.h5")
    original.save(legacy)  # a legacy HDF5 file, like Keras' ImageNet weights
    backbone = load_backbone("efficientnet_b0", input_shape=(32, 32, 3), weights=legacy)
    loaded_norm = next(layer for layer in backbone.features.layers if isinstance(layer, keras.layers.Normalization))
    x = raw_images(2)

    def normalized(model, layer):
        return np.asarray(keras.Model(model.input, layer.output)(x))

    np.testing.assert_allclose(normalized(backbone.features, loaded_norm),
                               normalized(original, norm) / np.sqrt([0.229, 0.224, 0.225]), rtol=1e-5, atol=1e-5)


@pytest.fixture
def empty_keras_home(monkeypatch, tmp_path):
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def test_offline_imagenet_weights_name_the_file_to_fetch(monkeypatch, empty_keras_home):
    monkeypatch.setenv("CNN_CLASSROOM_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        load_backbone("mobilenet_v2", input_shape=(96, 96, 3))
    message = str(error.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5" in message
    assert "~/.keras/models" in message and "--weights PATH" in message and "--weights none" in message
    assert "\n" not in message


def _network_reachable() -> bool:
    try:
        socket.setdefaulttimeout(2)
        socket.getaddrinfo("storage.googleapis.com", 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def test_failed_download_names_the_file_from_kerass_url(monkeypatch, empty_keras_home):
    """The real download attempt; skipped where it could succeed (network up or weights cached)."""
    monkeypatch.delenv("CNN_CLASSROOM_OFFLINE", raising=False)
    filename = "efficientnetb0_notop.h5"
    if _network_reachable() or os.path.exists(os.path.join(STARTUP_KERAS_HOME, "models", filename)):
        pytest.skip("the download could succeed here")
    with pytest.raises(UserError) as error:
        load_backbone("efficientnet_b0", input_shape=(32, 32, 3))
    message = str(error.value)
    assert filename in message and "https://storage.googleapis.com/" in message
    assert "~/.keras/models" in message and "\n" not in message


@pytest.mark.parametrize("source, kwargs, match", [
    ("resnet5O", {}, "Unknown backbone 'resnet5O'; did you mean .*resnet50"),
    ("mobilenet_v2", {"weights": "no/such/file.weights.h5"}, "does not exist"),
    ("mobilenet_v2", {"input_shape": (32, 32, 1), "weights": None}, "3-channel"),
    ("inception_v3", {"input_shape": (32, 32, 3), "weights": None}, "at least 75x75"),
    ("lenet5", {}, "no ImageNet weights"),
    ("runs/missing/model.keras", {}, "does not exist"),
    ("saved_models/missing", {}, "does not exist"),
])
def test_bad_sources_are_one_line_user_errors(source, kwargs, match):
    with pytest.raises(UserError, match=match) as error:
        load_backbone(source, **kwargs)
    assert "\n" not in str(error.value)


def test_zoo_prefix_reaches_a_zoo_model_that_shares_a_pretrained_name():
    assert "resnet50" in BACKBONES and "resnet50" in zoo.MODELS
    backbone = load_backbone("zoo:resnet50", input_shape=(32, 32, 3), weights=None)
    assert backbone.features.get_layer("stage4_block3_conv3") is not None
    assert backbone.fine_tune_from == "stage4_" and backbone.preprocessing.name == "preprocessing"


# --- Saved models and exports as backbones --------------------------------------------------

# zoo name -> the layer whose output is the features (LeNet flattens, ResNet pools, MLP has hidden layers).
CUT_AT = {"lenet5": "c5_act", "resnet20": "stage3_block3_out", "mlp": "hidden2_act"}


@functools.cache
def trained_zoo_model(name):
    data = digits()
    shape = (32, 32, 3)
    images, labels = data.arrays["train"]
    network = zoo.build(name, input_shape=shape, num_classes=data.num_classes)
    if name == "resnet20":  # per-channel standardization, learned from the images, must travel along too
        preprocessing = keras.layers.Normalization(axis=-1, name="preprocessing")
        preprocessing.adapt(images[:256].astype(np.float32))
    else:
        preprocessing = preprocessing_layer("rescale")
    model = assemble(network, shape, preprocessing=preprocessing)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images[:64].astype(np.float32), labels[:64], batch_size=32, epochs=1, verbose=0)
    return model


def assert_features_match(backbone, model, name):
    network = network_of(model)
    images = digits().arrays["test"][0][:6].astype(np.float32)
    preprocessed = model.get_layer("preprocessing")(images)
    expected = keras.Model(network.input, network.get_layer(CUT_AT[name]).output)(preprocessed)
    np.testing.assert_allclose(np.asarray(backbone.features(backbone.preprocessing(images))), np.asarray(expected),
                               rtol=1e-5, atol=1e-5)
    assert tuple(backbone.feature_shape) == tuple(zoo.build(name, input_shape=(32, 32, 3), include_top=False)
                                                  .output_shape[1:])


@pytest.mark.parametrize("name", sorted(CUT_AT))
def test_a_runs_model_file_loads_as_a_backbone_cut_before_its_head(tmp_path, name):
    model = trained_zoo_model(name)
    path = str(tmp_path / "model.keras")
    model.save(path)
    backbone = load_backbone(path)
    assert backbone.input_shape == (32, 32, 3) and backbone.name == name and backbone.fine_tune_from
    assert_features_match(backbone, model, name)
    assert load_backbone(str(tmp_path)).feature_shape == backbone.feature_shape  # the run folder works too
    assert load_backbone(path, weights=None).feature_shape == backbone.feature_shape  # None: the file's own
    with pytest.raises(UserError, match="carries its own weights"):
        load_backbone(path, weights=str(tmp_path / "other.weights.h5"))
    with pytest.raises(UserError, match="trained on 32x32x3"):
        load_backbone(path, input_shape=(64, 64, 3))


def test_an_export_loads_as_a_backbone(tmp_path):
    from exports.export import export_savedmodel

    model = trained_zoo_model("lenet5")
    inference = inference_model(model)
    version = export_savedmodel(inference, str(tmp_path), "lenet", class_names=digits().class_names)
    model_file = os.path.join(version, "assets", "model.keras")
    if not os.path.isfile(model_file):  # exports made before exports/ wrote it themselves
        inference.save(model_file)
    for source in (tmp_path / "lenet", version):  # the model folder means its newest version
        assert_features_match(load_backbone(str(source)), model, "lenet5")
    old = tmp_path / "old" / "1"
    shutil.copytree(version, old)
    os.remove(old / "assets" / "model.keras")
    with pytest.raises(UserError, match="predates backbone support"):
        load_backbone(str(old))


# --- Freeze policies ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mobilenet():
    return load_backbone("mobilenet_v2", input_shape=(32, 32, 3), weights=None)


def _starts_at(layers, prefix):
    return next(i for i, layer in enumerate(layers) if layer.name.startswith(prefix))


def _weighted(layers):
    return [i for i, layer in enumerate(layers) if parameters(layer)]


POLICIES = {
    "all": lambda L: lambda i, layer: False,
    "none": lambda L: lambda i, layer: True,
    "last:5": lambda L: lambda i, layer: i >= _weighted(L)[-5],
    "last:0": lambda L: lambda i, layer: False,
    "fraction:0.1": lambda L: lambda i, layer: i >= _weighted(L)[-math.ceil(0.1 * len(_weighted(L)))],
    "fraction:1": lambda L: lambda i, layer: True,
    "blocks:2": lambda L: lambda i, layer: i >= _starts_at(L, "block_15_"),
    "pattern:^block_1[0-2]_": lambda L: lambda i, layer: layer.name[:9] in ("block_10_", "block_11_", "block_12_"),
    "from:block_13_": lambda L: lambda i, layer: i >= _starts_at(L, "block_13_"),
    "from:auto": lambda L: lambda i, layer: i >= _starts_at(L, "block_16_"),
}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_freeze_policies_train_the_expected_parameters(mobilenet, policy):
    layers = flat_layers(mobilenet.features)
    expected = expected_trainable(layers, POLICIES[policy](layers))
    freeze(mobilenet, policy)
    assert trainable_count(mobilenet.features) == expected
    trainable, frozen = parameter_counts(mobilenet.features)
    assert trainable + frozen == mobilenet.features.count_params()
    assert describe_freeze(mobilenet.features) == f"trainable {trainable:,} / frozen {frozen:,} parameters"
    batch_norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    if policy in ("none", "fraction:1"):
        assert all(layer.trainable for layer in batch_norms)
    else:
        assert not any(layer.trainable for layer in batch_norms)


def test_freezing_starts_afresh_each_time(mobilenet):
    freeze(mobilenet, "none")
    everything = trainable_count(mobilenet.features)
    freeze(mobilenet, "all")
    assert trainable_count(mobilenet.features) == 0 and not mobilenet.features.trainable
    freeze(mobilenet, "none")
    assert trainable_count(mobilenet.features) == everything
    transfer.unfreeze(mobilenet, 100)
    layers = flat_layers(mobilenet.features)
    assert trainable_count(mobilenet.features) == expected_trainable(layers, lambda i, layer: i >= 100)
    transfer.unfreeze(mobilenet, "block_16_")
    freeze(mobilenet.features, "from:auto", fine_tune_from="block_16_")
    assert trainable_count(mobilenet.features) == expected_trainable(layers, POLICIES["from:auto"](layers))


def test_names_match_through_nested_sub_models():
    backbone = load_backbone("convnext_tiny", input_shape=(32, 32, 3), weights=None)
    nested = backbone.features.get_layer("convnext_tiny_downsampling_block_2")
    assert isinstance(nested, keras.Model)  # ConvNeXt keeps its downsampling steps in Sequentials
    freeze(backbone, "pattern:downsampling_block_2$")
    assert trainable_count(backbone.features) == sum(parameters(layer) for layer in flat_layers(nested))
    freeze(backbone, "from:auto")
    layers = flat_layers(backbone.features)
    assert trainable_count(backbone.features) == expected_trainable(
        layers, lambda i, layer: i >= _starts_at(layers, "convnext_tiny_stage_3"))


@pytest.mark.parametrize("policy", [
    "", "some", "all:3", "last", "last:x", "last:-1", "fraction:2", "fraction:x", "pattern:(", "from:", 7,
])
def test_bad_policies_are_one_line_value_errors_listing_the_valid_forms(mobilenet, policy):
    with pytest.raises(ValueError, match=r"valid: all, none, last:N, blocks:N, fraction:F, pattern:REGEX, "
                                         r"from:NAME, from:auto") as error:
        freeze(mobilenet, policy)
    assert "\n" not in str(error.value)


def test_policies_that_name_nothing_say_so(mobilenet):
    with pytest.raises(ValueError, match="no layer .* starting with 'nosuch'"):
        freeze(mobilenet, "from:nosuch")
    inception = load_backbone("inception_v3", input_shape=(75, 75, 3), weights=None)
    with pytest.raises(ValueError, match="no layer names with numbered blocks"):
        freeze(inception, "blocks:2")
    with pytest.raises(ValueError, match="no usual fine-tuning point"):
        freeze(mobilenet.features, "from:auto")


# --- Heads, batch norm, the fast path and the baseline ------------------------------------


def test_head_model_shapes():
    head = head_model((4, 4, 16), 5, dropout=0.3, hidden=(12, 8), pooling="max")
    assert head.name == "head" and head.output_shape == (None, 5)
    assert [layer.name for layer in head.layers if isinstance(layer, keras.layers.Dense)] == \
        ["head_hidden1", "head_hidden2", "predictions"]
    vectors = head_model((100,), 3, dropout=0)
    assert [type(layer).__name__ for layer in vectors.layers] == ["InputLayer", "Standardize", "Dense"]
    with pytest.raises(ValueError, match="pooling"):
        head_model((4, 4, 16), 5, pooling="mean")
    mlp = load_backbone("mlp", input_shape=(28, 28, 1), weights=None)  # 2-D features: no pooling
    assert classifier_network(mlp, 4).output_shape == (None, 4)


@pytest.mark.parametrize("policy", ["all", "none"])
def test_batch_norm_statistics_do_not_move_while_the_classifier_trains(policy):
    backbone = load_backbone("resnet20", input_shape=(32, 32, 3), weights=None)
    network = classifier_network(backbone, 10)
    model = assemble(network, backbone.input_shape, preprocessing=backbone.preprocessing)
    freeze(backbone, policy)
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    batch_norms = [layer for layer in flat_layers(backbone.features)
                   if isinstance(layer, keras.layers.BatchNormalization)]
    statistics = [np.array(layer.moving_mean) + 0 for layer in batch_norms] + \
        [np.array(layer.moving_variance) + 0 for layer in batch_norms]
    head = network.get_layer("head").get_layer("predictions")
    kernel = np.array(head.kernel) + 0
    conv = backbone.features.get_layer("stage3_block3_conv2")
    conv_kernel = np.array(conv.kernel) + 0
    images, labels = digits().arrays["train"]
    model.fit(images[:96].astype(np.float32), labels[:96], batch_size=32, epochs=1, verbose=0)
    after = [np.array(layer.moving_mean) for layer in batch_norms] + \
        [np.array(layer.moving_variance) for layer in batch_norms]
    assert all(np.array_equal(a, b) for a, b in zip(statistics, after))
    assert not np.array_equal(kernel, np.array(head.kernel))
    assert np.array_equal(conv_kernel, np.array(conv.kernel)) == (policy == "all")


def test_fast_path_head_on_cached_features_equals_the_full_model():
    data = digits()
    backbone = load_backbone("resnet20", input_shape=(32, 32, 3), weights=None)
    freeze(backbone, "all")
    images, labels = data.arrays["train"]
    features = extract_features(backbone, images[:128], batch_size=32)
    assert features.shape == (128, *backbone.feature_shape) and features.dtype == np.float32
    head = head_model(backbone.feature_shape, data.num_classes)
    head.compile("adam", "sparse_categorical_crossentropy")
    head.fit(features, labels[:128], epochs=1, batch_size=32, verbose=0)
    model = assemble(classifier_network(backbone, head=head), backbone.input_shape,
                     preprocessing=backbone.preprocessing)
    test_images = data.arrays["test"][0][:40]
    np.testing.assert_allclose(model.predict(test_images.astype(np.float32), verbose=0),
                               head.predict(extract_features(backbone, test_images), verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="head takes features of shape"):
        classifier_network(load_backbone("lenet5", input_shape=(32, 32, 3), weights=None), head=head)


def test_sklearn_baseline_beats_chance_on_digits():
    data = digits()
    backbone = load_backbone("lenet5_modern", input_shape=(32, 32, 3), weights=None)
    result = sklearn_baseline(backbone, data)
    accuracies = [result[f"{split}_accuracy"] for split in ("train", "val", "test")]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert result["test_accuracy"] > 0.5  # chance is 0.1; random LeNet features give about 0.95
    assert result["feature_dim"] == backbone.feature_shape[-1]


def test_discriminative_rates_scale_each_blocks_step_and_survive_saving(tmp_path):
    from training.optim import make_optimizer

    backbone = load_backbone("resnet20", input_shape=(32, 32, 3), weights=None)
    model = assemble(classifier_network(backbone, 10, dropout=0), backbone.input_shape,
                     preprocessing=backbone.preprocessing)
    freeze(backbone, "from:stage3")
    factors = transfer.discriminative_multipliers(backbone, 0.01)
    by_block = {}
    for path, factor in factors.items():
        by_block.setdefault(path.split("_conv")[0], set()).add(factor)
    # Three blocks of stage 3, one rate each, rising from 0.01 towards (not reaching) the head's 1.
    assert sorted(by_block) == ["stage3_block1", "stage3_block2", "stage3_block3"]
    rates = [by_block[block].pop() for block in sorted(by_block)]
    assert rates[0] == pytest.approx(0.01) and rates[0] < rates[1] < rates[2] < 1
    assert not any(path.startswith("predictions") for path in factors)

    images, labels = digits().arrays["train"]
    x, y = images[:32].astype(np.float32), labels[:32]
    start = model.get_weights()

    def one_step(optimizer):
        model.set_weights(start)
        model.compile(optimizer, "sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        positions = {id(v): i for i, v in enumerate(model.weights)}
        return {v.path: np.array(v) - start[positions[id(v)]] for v in model.trainable_variables}

    plain = one_step(make_optimizer("sgd", 0.1, momentum=0.0))
    scaled = one_step(make_optimizer("sgd", 0.1, momentum=0.0, lr_multipliers=factors))
    assert set(plain) == set(scaled) and set(factors) < set(plain)
    for path, step in plain.items():
        np.testing.assert_allclose(scaled[path], step * factors.get(path, 1.0), rtol=1e-3, atol=1e-7, err_msg=path)

    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(reloaded.optimizer).__name__ == "LayerwiseSGD"
    assert reloaded.optimizer.lr_multipliers == pytest.approx(factors)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        transfer.discriminative_multipliers(backbone, 0)



def test_feature_extraction_reports_its_progress(capsys, monkeypatch):
    # (Progress stays silent for work under a second; tests/test_folder_speed.py covers that.)
    import core.progress
    import transfer.features as features_module

    backbone = load_backbone("lenet5", input_shape=(32, 32, 1), weights=None)
    images = raw_images(300, (32, 32, 1))
    first = extract_features(backbone, images)
    capsys.readouterr()
    monkeypatch.setattr(features_module, "Progress", functools.partial(core.progress.Progress, quiet_for=0.0))
    again = extract_features(backbone, images, split="train")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Computing lenet5 features of train: 300/300 images in "), lines
    np.testing.assert_array_equal(first, again)
