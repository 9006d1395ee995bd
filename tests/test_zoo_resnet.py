"""Tests for zoo.resnet: parameter counts against the papers and torchvision,
shapes, the family options, and stable layer names.  Models are built, not
trained: another test module trains every registered model briefly."""

import functools

import keras
import numpy as np
import pytest

import zoo
from zoo.resnet import ZeroPadShortcut, resnet


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# Counts and shapes do not depend on the initializer, and uniform weights are
# about twice as fast to draw as the default truncated normal ones.
FAST_INIT = {"kernel_initializer": "he_uniform"}


@functools.cache
def small(name, size):
    """``name`` at a small input with 5 classes, shared by the tests that only read it."""
    return zoo.build(name, input_shape=(size, size, 3), num_classes=5)


# torchvision.models totals at 1000 classes.  torchvision keeps batch norm's
# running statistics as buffers, so its totals are our trainable weights.
TORCHVISION = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("name, expected", TORCHVISION.items())
def test_imagenet_resnets_match_torchvision(name, expected):
    model = zoo.build(name, num_classes=1000, **FAST_INIT)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    assert trainable(model) == expected


# Millions of parameters at 10 classes, written to the precision the papers
# print: He et al. 2015 Table 6, He et al. 2016 Table 3 (pre-activation
# ResNet-110), Zagoruyko & Komodakis 2016 Table 4.
PAPERS = {
    "resnet20": "0.27",
    "resnet32": "0.46",
    "resnet44": "0.66",
    "resnet56": "0.85",
    "resnet110": "1.7",
    "preact_resnet110": "1.7",
    "wrn40_4": "8.9",
    "wrn16_8": "11.0",
    "wrn28_10": "36.5",
}


@pytest.mark.parametrize("name, millions", PAPERS.items())
def test_cifar_networks_match_the_papers(name, millions):
    model = zoo.build(name, num_classes=10, **FAST_INIT)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    decimals = len(millions.split(".")[1])
    assert round(trainable(model) / 1e6, decimals) == float(millions)


def test_resnet20_count_is_exact():
    # 267,696 conv weights + 19 batch norms on 688 channels (1,376) + a 64x10 classifier (650).
    assert trainable(zoo.build("resnet20", num_classes=10)) == 269_722


@pytest.mark.parametrize("name, size", [
    ("resnet18", 64), ("resnet50", 64), ("preact_resnet18", 64),
    ("resnet20", 32), ("preact_resnet20", 32), ("wrn16_4", 32),
    # Odd sizes: strided convolutions and shortcuts must still agree on the grid.
    ("resnet18", 65), ("resnet20", 33),
])
def test_forward_pass_at_a_small_input(name, size):
    model = small(name, size)
    images = np.random.default_rng(0).random((2, size, size, 3), dtype="float32")
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    assert probabilities.shape == (2, 5)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name, size, grid, channels", [
    ("resnet18", 64, 2, 512), ("resnet50", 64, 2, 2048), ("preact_resnet18", 64, 2, 512),
    ("resnet20", 32, 8, 64), ("wrn16_4", 32, 8, 256),
])
def test_features_without_the_top(name, size, grid, channels):
    shape = (size, size, 3)
    pooled = zoo.build(name, input_shape=shape, include_top=False, pooling="avg", **FAST_INIT)
    assert pooled.output_shape == (None, channels)
    feature_map = zoo.build(name, input_shape=shape, include_top=False, pooling=None, **FAST_INIT)
    assert feature_map.output_shape == (None, grid, grid, channels)


def test_option_a_shortcuts_have_no_parameters():
    option_a = zoo.build("resnet20", num_classes=10)
    option_b = zoo.build("resnet20", num_classes=10, shortcut="projection")
    pads = [layer for layer in option_a.layers if isinstance(layer, ZeroPadShortcut)]
    assert [layer.name for layer in pads] == ["stage2_block1_shortcut_pad", "stage3_block1_shortcut_pad"]
    assert not any(layer.weights for layer in pads)
    # Option B adds a 1x1 convolution and a batch norm at 16->32 and at 32->64.
    assert trainable(option_b) - trainable(option_a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_preact_normalizes_before_convolving_and_after_the_last_block():
    plain = zoo.build("resnet20", include_top=False)
    preact = zoo.build("preact_resnet20", include_top=False)
    assert isinstance(plain.layers[-2], keras.layers.Add)
    assert isinstance(preact.layers[-2], keras.layers.BatchNormalization)
    assert [layer.name for layer in preact.layers[-2:]] == ["post_bn", "post_act"]
    # Batch norm reads the block input, and the convolution its activation.
    assert preact.get_layer("stage2_block2_bn1").input is preact.get_layer("stage2_block1_add").output
    assert preact.get_layer("stage2_block2_conv1").input is preact.get_layer("stage2_block2_act1").output
    assert plain.get_layer("stage2_block2_conv1").input is plain.get_layer("stage2_block1_out").output
    # No batch norm after the stem: the first block's pre-activation follows it.
    with pytest.raises(ValueError):
        preact.get_layer("conv1_bn")


def test_block_dropout_sits_between_the_two_convolutions():
    plain = zoo.build("wrn16_4")
    assert not [layer for layer in plain.layers if isinstance(layer, keras.layers.Dropout)]
    model = zoo.build("wrn16_4", block_dropout=0.3)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.name for layer in dropouts] == [f"stage{s}_block{b}_dropout" for s in (1, 2, 3) for b in (1, 2)]
    assert {layer.rate for layer in dropouts} == {0.3}
    assert model.get_layer("stage1_block1_conv2").input is model.get_layer("stage1_block1_dropout").output
    assert zoo.get("wrn28_10_dropout").defaults["block_dropout"] == 0.3


def test_layer_names_are_stable():
    cifar = small("resnet20", 32)
    for name in ("conv1_conv", "conv1_bn", "conv1_act", "stage1_block1_conv1", "stage3_block2_conv1",
                 "stage3_block3_bn2", "stage3_block3_add", "stage3_block3_out", "stage2_block1_conv1_pad",
                 "stage2_block1_shortcut_pad", "predictions"):
        cifar.get_layer(name)
    imagenet = small("resnet50", 64)
    for name in ("conv1_conv_pad", "conv1_conv", "pool1_pool", "stage1_block1_shortcut_conv",
                 "stage2_block1_shortcut_bn", "stage4_block3_conv3", "stage4_block3_bn3"):
        imagenet.get_layer(name)
    # ResNet v1.5: the 3x3 convolution strides, not the 1x1 before it.
    assert imagenet.get_layer("stage2_block1_conv1").strides == (1, 1)
    assert imagenet.get_layer("stage2_block1_conv2").strides == (2, 2)
    assert imagenet.get_layer("stage2_block1_shortcut_conv").strides == (2, 2)


def test_family_options_reach_every_layer():
    model = zoo.build("resnet20", batch_norm=False, activation="swish", width=0.5, l2=1e-4)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(conv.use_bias for conv in convs)
    assert {conv.filters for conv in convs} == {8, 16, 32}
    activations = [layer for layer in model.layers if isinstance(layer, keras.layers.Activation)]
    assert activations and all(layer.activation is keras.activations.get("swish") for layer in activations)
    assert len(model.losses) == len(convs) + 1  # every kernel, the classifier's included


def test_convolutions_followed_by_batch_norm_have_no_bias():
    assert not any(layer.use_bias for layer in small("resnet20", 32).layers if isinstance(layer, keras.layers.Conv2D))


def test_builder_names_the_model_after_its_options():
    assert resnet((32, 32, 3), 10, stem="cifar", depth=8, preact=True).name == "preact_resnet8"
    assert zoo.build("resnet20").name == "resnet20"


@pytest.mark.parametrize("name, options, option", [
    ("resnet20", {"depth": 21}, "depth"),
    ("resnet18", {"depth": 19}, "depth"),
    ("resnet18", {"stem": "cifra"}, "stem"),
    ("resnet20", {"shortcut": "B"}, "shortcut"),
    ("resnet20", {"width": 0}, "width"),
    ("resnet20", {"block_dropout": 0.3}, "block_dropout"),  # only the Wide ResNet takes it
    ("wrn16_4", {"depth": 18}, "depth"),
    ("wrn16_4", {"widen_factor": 0}, "widen_factor"),
    ("wrn16_4", {"block_dropout": 1.0}, "block_dropout"),
])
def test_bad_options_raise_naming_the_option(name, options, option):
    with pytest.raises(ValueError, match=option):
        zoo.build(name, **options)


def test_saved_model_round_trip(tmp_path):
    model = zoo.build("resnet20", num_classes=3)
    path = tmp_path / "resnet20.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    images = np.random.default_rng(1).random((2, 32, 32, 3), dtype="float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)),
                               keras.ops.convert_to_numpy(model(images)), atol=1e-6)


def test_every_resnet_variant_is_registered():
    expected = {f"resnet{d}" for d in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110)}
    expected |= {f"preact_resnet{d}" for d in (18, 50, 152, 20, 56, 110)}
    expected |= {"wrn16_4", "wrn16_8", "wrn28_10", "wrn28_10_dropout", "wrn40_4"}
    assert expected <= set(zoo.names())
