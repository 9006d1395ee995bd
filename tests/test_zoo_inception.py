"""GoogLeNet against Table 1 of Szegedy et al. 2014, and the small Inception of Zhang et al. 2017.

Big models are built, never trained: another module trains every registered model briefly.
"""

import re

import keras
import numpy as np
import pytest

import zoo
from zoo import inception
from zoo.inception import GOOGLENET_MODULES, LocalResponseNormalization, googlenet, inception_small, without_aux

# Table 1: row -> (params in K, ops in M, side of the row's output map at 224x224).
TABLE_1 = {
    "conv1": (2.7, 34, 112),
    "conv2": (112, 360, 56),
    "3a": (159, 128, 28),
    "3b": (380, 304, 28),
    "4a": (364, 73, 14),
    "4b": (437, 88, 14),
    "4c": (463, 100, 14),
    "4d": (580, 119, 14),
    "4e": (840, 170, 14),
    "5a": (1072, 54, 7),
    "5b": (1388, 71, 7),
    "linear": (1000, 1, 1),
}
# Rows whose printed params disagree with the printed widths (built kernels / 1024 vs table):
# conv1 9.2K vs 2.7K (7x7x3x64 = 9408 weights; the row's own ops, 34M, imply the same 2.7K), 4c 497.5K vs
# 463K, 4d 590.5K vs 580K, 5a 1018K vs 1072K, 5b 1409K vs 1388K.
PARAMS_MISPRINTED = {"conv1", "4c", "4d", "5a", "5b"}
# The ops column (kernel weights x output positions) agrees with the widths everywhere but these.
OPS_MISPRINTED = {"conv1", "5a"}


def _prefix(row):
    return {"conv1": "conv1_", "conv2": "conv2_", "linear": "predictions"}.get(row, f"inception_{row}_")


def _weights(model, prefix, kind="kernel"):
    return sum(int(np.prod(v.shape)) for layer in model.layers if layer.name.startswith(prefix)
               for v in layer.weights if v.path.endswith(kind))


def _module_kernels(c_in, widths):
    """Kernel weights of an Inception module by hand: 1x1 convs see the c_in input maps."""
    n1, r3, n3, r5, n5, proj = widths
    return c_in * (n1 + r3 + r5 + proj) + 9 * r3 * n3 + 25 * r5 * n5


@pytest.fixture(scope="module")
def paper_net():
    return googlenet((224, 224, 3), 1000)


def _marked(rows, misprinted, why):
    return [pytest.param(r, marks=pytest.mark.xfail(strict=True, reason=why)) if r in misprinted else r
            for r in rows]


def test_modules_are_built_from_the_width_table(paper_net):
    c_in = 192  # conv2's output
    for module, widths in GOOGLENET_MODULES.items():
        kernels = _weights(paper_net, f"inception_{module}_")
        assert kernels == _module_kernels(c_in, widths), module
        assert _weights(paper_net, f"inception_{module}_", "bias") == sum(widths), module
        c_in = widths[0] + widths[2] + widths[4] + widths[5]  # 1x1 + 3x3 + 5x5 + pool proj
        assert paper_net.get_layer(f"inception_{module}_concat").output.shape[-1] == c_in


@pytest.mark.parametrize("row", _marked(TABLE_1, PARAMS_MISPRINTED, "Table 1 params entry disagrees with its widths"))
def test_params_match_table_1(paper_net, row):
    # Convention that fits: kernels only (no biases), K = 1024.  It makes conv2 (114,688 = 112.0K) and the linear
    # layer (1,024,000 = 1000.0K) exact; with biases or K = 1000 neither is.  The table rounds to 1K but is itself
    # off by about 1% on rows we match (3b: 379.0K built, 380K printed; 4a: 366.75K vs 364K; 4e: 847K vs 840K),
    # so the tolerance is 1%.
    built = _weights(paper_net, _prefix(row)) / 1024
    assert built == pytest.approx(TABLE_1[row][0], rel=0.01)


@pytest.mark.parametrize("row", _marked(TABLE_1, OPS_MISPRINTED, "Table 1 ops entry disagrees with its widths"))
def test_ops_match_table_1(paper_net, row):
    # ops = kernel weights x output positions, in millions; the table rounds (4a: 73.6M printed as 73M), so +-1M.
    _, ops, side = TABLE_1[row]
    assert _weights(paper_net, _prefix(row)) * side * side / 1e6 == pytest.approx(ops, abs=1.0)


def test_total_parameters(paper_net):
    # Table 1's params sum to 6,797.7K ("about 6.8M"); the misprints roughly cancel, so the built kernels
    # (6,990,272 = 6,826.4 x 1024) are within 0.5% of it.  With biases: 6,998,552 parameters.
    assert sum(p for p, _, _ in TABLE_1.values()) == pytest.approx(6797.7)
    kernels = _weights(paper_net, "")
    assert kernels == 6_990_272
    assert kernels / 1024 == pytest.approx(6797.7, rel=0.005)
    assert paper_net.count_params() == 6_998_552


def test_paper_layout(paper_net):
    assert paper_net.output.shape == (None, 1000)
    assert paper_net.get_layer("pool2").output.shape == (None, 28, 28, 192)
    assert paper_net.get_layer("inception_5b_concat").output.shape == (None, 7, 7, 1024)
    assert [l.name for l in paper_net.layers if isinstance(l, LocalResponseNormalization)] == ["pool1_lrn", "conv2_lrn"]
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in paper_net.layers)
    assert paper_net.get_layer("head_dropout").rate == 0.4
    assert paper_net.get_layer("inception_3a_1x1_conv").use_bias


def test_aux_classifiers_and_inference_model():
    model = googlenet((224, 224, 3), 1000, aux_classifiers=True)
    assert model.output_names == ["predictions", "aux1", "aux2"]
    assert [o.shape for o in model.outputs] == [(None, 1000)] * 3
    assert model.get_layer("aux1_pool").output.shape == (None, 4, 4, 512)
    assert model.get_layer("aux1_dropout").rate == 0.7
    # aux1 on 4a (512 maps): 1x1 conv 512*128+128 = 65,664; FC 4*4*128*1024+1024 = 2,098,176; linear
    # 1024*1000+1000 = 1,025,000.  aux2 on 4d (528 maps): 67,712 + 2,098,176 + 1,025,000.
    assert model.count_params() - 6_998_552 == (65_664 + 2_098_176 + 1_025_000) + (67_712 + 2_098_176 + 1_025_000)
    deployed = without_aux(model)
    assert deployed.output.shape == (None, 1000)
    assert deployed.count_params() == 6_998_552


def test_without_aux_shares_the_trained_weights():
    model = googlenet((65, 65, 3), 5, aux_classifiers=True, width=0.125)
    x = np.random.default_rng(0).uniform(size=(2, 65, 65, 3)).astype("float32")
    main, aux1, aux2 = model(x, training=False)
    np.testing.assert_allclose(without_aux(model)(x, training=False), main, rtol=1e-5, atol=1e-6)
    # The paper's recipe: aux losses weighted by 0.3 (eager, to skip tracing a 200-layer graph in a unit test).
    model.compile(optimizer="sgd", loss=["sparse_categorical_crossentropy"] * 3, loss_weights=[1.0, 0.3, 0.3],
                  run_eagerly=True)
    logs = model.train_on_batch(x, [np.array([0, 1])] * 3, return_dict=True)
    assert np.isfinite(logs["loss"])


@pytest.mark.parametrize("shape, expected", [((32, 32, 3), (None, 10)), ((28, 28, 1), (None, 10)),
                                             ((100, 120, 3), (None, 10))])
def test_googlenet_small_inputs(shape, expected):
    assert googlenet(shape, 10, width=0.25).output.shape == expected


@pytest.mark.parametrize("pooling, expected", [(None, (None, 7, 7, 512)), ("avg", (None, 512)), ("max", (None, 512))])
def test_googlenet_features(pooling, expected):
    model = googlenet((224, 224, 3), 10, include_top=False, pooling=pooling, width=0.5)
    assert model.output.shape == expected


def test_googlenet_batch_norm_replaces_lrn():
    model = googlenet((64, 64, 3), 10, batch_norm=True, width=0.25)
    assert not any(isinstance(l, LocalResponseNormalization) for l in model.layers)
    assert isinstance(model.get_layer("inception_4e_5x5_bn"), keras.layers.BatchNormalization)
    assert not model.get_layer("inception_4e_5x5_conv").use_bias


@pytest.mark.parametrize("options, message", [
    (dict(aux_classifiers=True, input_shape=(64, 64, 3)), "at least 65x65"),
    (dict(aux_classifiers=True, include_top=False), "needs include_top=True"),
    (dict(activation="relu6"), "Unknown activation 'relu6'"),
    (dict(pooling="sum"), "Unknown pooling 'sum'"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(width=0), "width must be > 0"),
    (dict(kernel_initializer="xavir"), "did you mean xavier"),
    (dict(input_shape=(32, 32)), "input_shape (H, W, C)"),
    (dict(depth=22), "does not take option 'depth'"),
])
def test_bad_options(options, message):
    options = {"input_shape": (96, 96, 3), **options}
    with pytest.raises(ValueError, match=re.escape(message)):
        zoo.build("googlenet", num_classes=10, **options)


def test_inception_small_matches_zhang_et_al():
    # Zhang et al. 2017, Table 1: 1,649,402 parameters.  That is the count with a bias per conv channel, which
    # equals TF's batch norm with its default center-only (no scale) setting; Keras batch norm also learns a
    # scale, one per conv channel: 96 + (64+80) + 80 + (160+160+160+144) + 96 + (336+336) = 1,712 more.
    plain = inception_small((28, 28, 3), 10, batch_norm=False)
    assert plain.count_params() == 1_649_402
    model = inception_small((28, 28, 3), 10)
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == 1_649_402 + 1_712
    assert model.count_params() < 2_000_000
    # "mean pooling 7x7" of the paper: the last map is 7x7 on 28x28 crops.
    assert model.get_layer("stage3_block2_concat").output.shape == (None, 7, 7, 336)


def test_inception_small_shapes_and_names():
    model = zoo.build("inception_small")
    assert model.input.shape == (None, 32, 32, 3)
    assert model.output.shape == (None, 10)
    assert model.get_layer("stage1_downsample_concat").output.shape == (None, 16, 16, 160)
    assert isinstance(model.get_layer("stem_bn"), keras.layers.BatchNormalization)
    features = inception_small((32, 32, 3), 10, include_top=False)
    assert features.output.shape == (None, 8, 8, 336)
    assert inception_small((32, 32, 3), 10, include_top=False, pooling="avg", width=0.5).output.shape == (None, 168)


def test_lrn_matches_its_formula():
    x = np.random.default_rng(1).normal(size=(1, 2, 2, 7)).astype("float32")
    layer = LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=1e-2, beta=0.75)
    sq = np.pad(x**2, [(0, 0), (0, 0), (0, 0), (2, 2)])
    window = sum(sq[..., i:i + 7] for i in range(5))
    np.testing.assert_allclose(layer(x), x / (2.0 + 1e-2 * window) ** 0.75, rtol=1e-5)
    assert LocalResponseNormalization.from_config(layer.get_config()).get_config() == layer.get_config()


def test_registered():
    assert zoo.get("googlenet").input_shape == (224, 224, 3)
    assert zoo.get("inception_small").input_shape == (32, 32, 3)
    assert "aux_classifiers" in zoo.options("googlenet")
    assert inception.VARIANTS[0].builder is googlenet
