"""AlexNet (Krizhevsky et al. 2012), the small AlexNet and MLPs of Zhang et al. 2017, and the MLP baseline.

Big models are built, never trained: another module trains every registered model briefly.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.alexnet import alexnet, alexnet_small
from zoo.inception import LocalResponseNormalization
from zoo.mlp import mlp

# By hand, 227x227x3 input, 1000 classes; "(k*k*c_in/groups + 1) * filters" per conv:
#   conv1 (11*11*3 + 1) * 96          =     34,944
#   conv2 (5*5*96/2 + 1) * 256        =    307,456   one tower: (5*5*96 + 1) * 256   =    614,656
#   conv3 (3*3*256 + 1) * 384         =    885,120   (conv3 sees both GPUs' maps)
#   conv4 (3*3*384/2 + 1) * 384       =    663,936   one tower: (3*3*384 + 1) * 384  =  1,327,488
#   conv5 (3*3*384/2 + 1) * 256       =    442,624   one tower: (3*3*384 + 1) * 256  =    884,992
#   fc6   (6*6*256 + 1) * 4096        = 37,752,832
#   fc7   (4096 + 1) * 4096           = 16,781,312
#   fc8   (4096 + 1) * 1000           =  4,097,000
#   total                             = 60,965,224   one tower: 62,378,344
ALEXNET_PARAMS = 60_965_224
ALEXNET_ONE_TOWER_PARAMS = 62_378_344


def _uniform_init(**options):
    # Counting does not depend on the initializer, and uniform draws are much faster than
    # he_normal's truncated normal for fc6's 37.7M weights.
    return alexnet((227, 227, 3), 1000, kernel_initializer="he_uniform", **options)


@pytest.fixture(scope="module")
def paper_net():
    return _uniform_init()


def _of_type(model, cls):
    return [layer.name for layer in model.layers if isinstance(layer, cls)]


def test_alexnet_parameter_count(paper_net):
    assert paper_net.count_params() == ALEXNET_PARAMS
    assert paper_net.output.shape == (None, 1000)
    assert paper_net.get_layer("conv1_conv").output.shape == (None, 55, 55, 96)
    assert paper_net.get_layer("pool5").output.shape == (None, 6, 6, 256)
    assert [paper_net.get_layer(f"conv{i}_conv").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]


def test_alexnet_one_tower_parameter_count():
    model = _uniform_init(grouped=False)
    assert model.count_params() == ALEXNET_ONE_TOWER_PARAMS
    assert all(model.get_layer(f"conv{i}_conv").groups == 1 for i in range(1, 6))


def test_alexnet_paper_lrn_and_dropout(paper_net):
    assert _of_type(paper_net, LocalResponseNormalization) == ["conv1_lrn", "conv2_lrn"]
    config = paper_net.get_layer("conv1_lrn").get_config()
    assert (config["depth_radius"], config["bias"], config["alpha"], config["beta"]) == (2, 2.0, 1e-4, 0.75)
    assert not _of_type(paper_net, keras.layers.BatchNormalization)
    assert _of_type(paper_net, keras.layers.Dropout) == ["fc6_dropout", "fc7_dropout"]
    assert all(paper_net.get_layer(n).rate == 0.5 for n in ("fc6_dropout", "fc7_dropout"))
    assert [l.name for l in paper_net.layers[1:5]] == ["conv1_conv", "conv1_act", "conv1_lrn", "pool1"]


@pytest.mark.parametrize("options", [dict(normalization="batch_norm"), dict(batch_norm=True)])
def test_alexnet_batch_norm(options):
    model = alexnet((67, 67, 3), 10, **options)
    assert _of_type(model, keras.layers.BatchNormalization) == [f"conv{i}_bn" for i in range(1, 6)]
    assert not _of_type(model, LocalResponseNormalization)
    assert not model.get_layer("conv3_conv").use_bias


def test_alexnet_without_normalization():
    model = alexnet((67, 67, 3), 10, normalization=None)
    assert not _of_type(model, LocalResponseNormalization)
    assert not _of_type(model, keras.layers.BatchNormalization)


@pytest.mark.parametrize("shape, pooling, expected", [
    ((227, 227, 3), None, (None, 6, 6, 256)),
    ((227, 227, 3), "avg", (None, 256)),
    ((224, 224, 3), None, (None, 5, 5, 256)),  # the paper's text size: 54x54 after conv1, a 5x5 map at the end
    ((67, 67, 1), "max", (None, 256)),
])
def test_alexnet_features(shape, pooling, expected):
    assert alexnet(shape, 10, include_top=False, pooling=pooling).output.shape == expected


def test_alexnet_small_input_and_width():
    model = alexnet((67, 67, 3), 10, width=0.3)
    assert model.output.shape == (None, 10)
    # 96 * 0.3 = 28.8 -> 29 -> 30: both towers need the same number of maps.
    assert model.get_layer("conv1_conv").filters == 30
    assert model.get_layer("fc6_dense").units == round(4096 * 0.3)


@pytest.mark.parametrize("name, options, message", [
    ("alexnet", dict(input_shape=(66, 66, 3)), "at least 67x67"),
    ("alexnet", dict(normalization="lrm"), "Unknown normalization 'lrm'; did you mean lrn?"),
    ("alexnet_small", dict(normalization="bn"), "Unknown normalization 'bn'"),
    ("alexnet", dict(dropout=-0.1), "dropout must be in"),
    ("alexnet_small", dict(activation="Relu"), "Unknown activation 'Relu'"),
    ("alexnet_small", dict(grouped=False), "does not take option 'grouped'"),
    ("mlp", dict(hidden_units=(300, 0)), "hidden_units must be positive integers"),
    ("mlp", dict(pooling="mean"), "Unknown pooling 'mean'"),
    ("mlp", dict(l2=-1.0), "weight penalties must be >= 0"),
])
def test_bad_options(name, options, message):
    options = {"input_shape": zoo.get(name).input_shape if name != "alexnet" else (67, 67, 3), **options}
    with pytest.raises(ValueError, match=re.escape(message)):
        zoo.build(name, num_classes=10, **options)


def test_alexnet_small_matches_zhang_et_al():
    # Zhang et al. 2017, Table 1, on 28x28 CIFAR-10 crops: 1,387,786 parameters.
    #   conv1 (5*5*3 + 1) * 64 = 4,864; conv2 (5*5*64 + 1) * 64 = 102,464; fc3 (7*7*64 + 1) * 384 = 1,204,608;
    #   fc4 (384 + 1) * 192 = 73,920; softmax (192 + 1) * 10 = 1,930.
    assert alexnet_small((28, 28, 3), 10).count_params() == 1_387_786
    model = zoo.build("alexnet_small")
    assert model.input.shape == (None, 32, 32, 3)
    assert model.count_params() == 1_387_786 - 1_204_608 + (8 * 8 * 64 + 1) * 384
    assert _of_type(model, LocalResponseNormalization) == ["pool1_lrn", "pool2_lrn"]
    assert not _of_type(model, keras.layers.Dropout)


def test_alexnet_small_options():
    assert alexnet_small((32, 32, 3), 10, include_top=False).output.shape == (None, 8, 8, 64)
    assert alexnet_small((28, 28, 1), 10, include_top=False, pooling="avg").output.shape == (None, 64)
    model = alexnet_small((32, 32, 3), 10, dropout=0.5, normalization="batch_norm", width=0.5, l2=1e-4)
    assert _of_type(model, keras.layers.Dropout) == ["fc3_dropout", "fc4_dropout"]
    assert _of_type(model, keras.layers.BatchNormalization) == ["conv1_bn", "conv2_bn"]
    assert model.get_layer("conv2_conv").filters == 32
    assert len(model.losses) == 5  # one L2 penalty per kernel


def test_lrn_model_save_load_round_trip(tmp_path):
    model = alexnet_small((32, 32, 3), 10)
    path = tmp_path / "alexnet_small.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.get_layer("pool1_lrn"), LocalResponseNormalization)
    x = tf.random.uniform((4, 32, 32, 3), seed=3)
    np.testing.assert_array_equal(model(x, training=False), restored(x, training=False))


def test_mlp_default_is_lecun_300_100():
    model = zoo.build("mlp")
    assert model.input.shape == (None, 28, 28, 1)
    # (784 + 1) * 300 + (300 + 1) * 100 + (100 + 1) * 10
    assert model.count_params() == 235_500 + 30_100 + 1_010
    assert model.output.shape == (None, 10)


@pytest.mark.parametrize("hidden, expected", [((512,), 1_209_866), ((512, 512, 512), 1_735_178)])
def test_mlp_matches_zhang_et_al(hidden, expected):
    # Zhang et al. 2017, Table 1: "MLP 1x512" and "MLP 3x512" on 28x28x3 crops.
    assert mlp((28, 28, 3), 10, hidden_units=hidden).count_params() == expected


def test_mlp_options():
    features = mlp((28, 28, 1), 10, include_top=False, width=2.0)
    assert features.output.shape == (None, 200)
    assert mlp((28, 28, 1), 10, include_top=False, hidden_units=()).output.shape == (None, 784)
    assert mlp((8, 8, 3), 5, hidden_units=()).count_params() == (192 + 1) * 5  # softmax regression
    model = mlp((28, 28, 1), 10, batch_norm=True, dropout=0.2, activation="tanh")
    assert _of_type(model, keras.layers.BatchNormalization) == ["hidden1_bn", "hidden2_bn"]
    assert _of_type(model, keras.layers.Dropout) == ["hidden1_dropout", "hidden2_dropout"]
    assert not model.get_layer("hidden1_dense").use_bias
    assert model.get_layer("hidden2_act").get_config()["activation"] == "tanh"
    assert "hidden_units" in zoo.options("mlp")


def test_registered():
    assert {"alexnet", "alexnet_small", "mlp"} <= set(zoo.names())
    assert zoo.get("alexnet").input_shape == (227, 227, 3)
