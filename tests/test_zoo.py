"""The contract every registered model keeps, tested over ``zoo.names()``.

Each model builds at its paper input and at a small one, gives softmax
probabilities, ends at a feature vector without its top, takes the options
every family shares, survives a ``.keras`` round trip, and the small-image
models learn from real digits.  Facts about one family (parameter counts,
paper layouts) live in ``test_zoo_<family>.py``.

The file must stay fast on two CPU cores, so models are built at a quarter of
their width wherever they take one (build time grows with the number of
layers, compute with the width squared); the full-width networks are built by
the family tests, which count their parameters.
"""

import dataclasses
import functools
import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import imagesets
import exports
import zoo
from core.model import assemble, inference_model, preprocessing_layer
from zoo._layers import ScaledTanh
from zoo.alexnet import ALEXNET_MIN_INPUT

NAMES = zoo.names()
NUM_CLASSES = 7  # not the registry's 10, so a hard-wired class count would show
SHARED_OPTIONS = {"batch_norm": False, "activation": "gelu", "l2": 1e-4, "kernel_initializer": "glorot"}
MIN_SIZE = {"alexnet": ALEXNET_MIN_INPUT}  # the one model that rejects small inputs


def settings(name):
    """The options ``name`` builds with when given none: the builder's defaults under the variant's."""
    variant = zoo.get(name)
    params = inspect.signature(variant.builder).parameters
    return {**{p: spec.default for p, spec in params.items() if spec.kind is spec.KEYWORD_ONLY}, **variant.defaults}


def narrow(name, width=0.25):
    """A width multiplier that makes ``name`` cheap, where it takes one."""
    if "width" not in zoo.options(name):
        return {}
    return {"width": width}


def is_small_image(name):
    return zoo.get(name).input_shape[0] <= 32


def small_shape(name, channels):
    """A small input that differs from the default: 28x28 (24x24 where that is
    the default) for the small-image models, 32x32 or the minimum for ImageNet ones."""
    default = zoo.get(name).input_shape[0]
    if is_small_image(name):
        size = 24 if default == 28 else 28
    else:
        size = MIN_SIZE.get(name, 32)
    return (size, size, channels)


def predict(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


@functools.cache
def tiny(name, channels):
    """``name`` at a small input with NUM_CLASSES classes.

    Every weight gets a little zero-mean noise, so that biases and batch norm's
    moving statistics differ from their initial values and a round trip that
    re-initialized them would show.  (Positive noise would not do: in a
    hundred-block ResNet it compounds until the activations overflow.)
    """
    model = zoo.build(name, small_shape(name, channels), num_classes=NUM_CLASSES, **narrow(name))
    rng = np.random.default_rng(0)
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        weight.assign(value + rng.normal(0.0, 0.01, value.shape).astype(value.dtype))
    return model


def images_for(model, count=3, seed=0):
    return np.random.default_rng(seed).random((count, *model.input_shape[1:]), dtype="float32")


# --- Building --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_builds_at_the_registered_input(name):
    variant = zoo.get(name)
    model = zoo.build(name, **narrow(name))
    assert model.name == name
    assert model.input_shape == (None, *variant.input_shape)
    assert model.output_shape == (None, 10)
    assert model.get_layer("predictions").output.shape == (None, 10)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_small_input_gives_probabilities(name, channels):
    model = tiny(name, channels)
    assert model.input_shape == (None, *small_shape(name, channels))
    probabilities = predict(model, images_for(model))
    assert probabilities.shape == (3, NUM_CLASSES)
    assert (probabilities >= 0).all()
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_without_the_top_gives_feature_vectors(name):
    model = zoo.build(name, small_shape(name, 3), include_top=False, pooling="avg", **narrow(name))
    assert "predictions" not in [layer.name for layer in model.layers]
    assert len(model.output_shape) == 2
    features = predict(model, images_for(model, count=2))
    assert features.shape == (2, model.output_shape[-1])


# --- Registry --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_named(name):
    # A typo, and a real option of another model that this one does not take (mlp has no depth).
    others = sorted(set().union(*map(zoo.options, NAMES)) - set(zoo.options(name)))
    for option in ["widht", *others[:1]]:
        with pytest.raises(ValueError, match=re.escape(repr(option))):
            zoo.build(name, **{option: 3})


def test_lenet5_uses_table_one_at_its_own_width_and_full_connections_at_any_other():
    # The search proposes widths for every model; the classic LeNet-5 must build at each of them.
    from zoo.lenet import ConnectedConv2D

    def c3(model):
        return model.get_layer("c3_conv")

    assert isinstance(c3(zoo.build("lenet5")), ConnectedConv2D)
    for width in (0.5, 2.0):
        model = zoo.build("lenet5", width=width)
        assert not isinstance(c3(model), ConnectedConv2D)
        assert c3(model).filters == round(16 * width)
    with pytest.raises(ValueError, match="needs width=1"):
        zoo.build("lenet5", width=0.5, connection_table=True)


def test_lenet5_filters_set_each_layer_apart_and_width_multiplies_them():
    def sizes(model):
        return [model.get_layer("c1_conv").filters, model.get_layer("c3_conv").filters,
                model.get_layer("c5_conv").filters, model.get_layer("f6_dense").units]

    assert sizes(zoo.build("lenet5_modern")) == [6, 16, 120, 84]
    assert sizes(zoo.build("lenet5_modern", filters=[16, 48, 360, 252])) == [16, 48, 360, 252]
    assert sizes(zoo.build("lenet5_modern", filters=(16, 48, 360, 252), width=0.5)) == [8, 24, 180, 126]
    # Table I needs the paper's 6 and 16 maps, whatever sets them.
    from zoo.lenet import ConnectedConv2D

    assert isinstance(zoo.build("lenet5", filters=(6, 16, 60, 42)).get_layer("c3_conv"), ConnectedConv2D)
    assert not isinstance(zoo.build("lenet5", filters=(8, 16, 120, 84)).get_layer("c3_conv"), ConnectedConv2D)
    for bad in ((6, 16, 120), (6, 0, 120, 84)):
        with pytest.raises(ValueError, match="filters must be 4 positive counts"):
            zoo.build("lenet5", filters=bad)


def test_lenet5_gives_small_images_a_margin_as_the_paper_gave_mnist():
    model = zoo.build("lenet5", input_shape=(8, 8, 1), num_classes=10)
    field = keras.Model(model.input, model.get_layer("pad_to_32").output)
    image = np.ones((1, 8, 8, 1), "float32")
    seen = keras.ops.convert_to_numpy(field(image))[0, ..., 0]
    assert seen.shape == (32, 32)
    np.testing.assert_allclose(seen[4:28, 4:28], 1.0, atol=1e-5)  # the digit, enlarged to 24x24
    assert not seen[:4].any() and not seen[28:].any() and not seen[:, :4].any() and not seen[:, 28:].any()
    # 24x24 to 32x32 inputs are only padded
    assert "resize_to_24" not in [layer.name for layer in zoo.build("lenet5", input_shape=(28, 28, 1),
                                                                     num_classes=10).layers]


def test_mlp_does_not_take_a_depth():
    with pytest.raises(ValueError, match="'depth'"):
        zoo.build("mlp", depth=3)


@pytest.mark.parametrize("name", NAMES)
def test_a_mistyped_name_suggests_the_name(name):
    with pytest.raises(ValueError, match=rf"did you mean [^?]*\b{re.escape(name)}\b"):
        zoo.build(name + name[-1])


@pytest.mark.parametrize("typo, meant", [("resnet21", "resnet20"), ("lenet", "lenet5"), ("alexnett", "alexnet"),
                                         ("wrn28-10", "wrn28_10")])
def test_unknown_name_suggests_close_matches(typo, meant):
    with pytest.raises(ValueError, match=rf"Unknown model '{typo}'; did you mean [^?]*\b{meant}\b"):
        zoo.get(typo)


def test_name_is_an_option_like_the_others():
    # zoo.options lists it, so build's own first parameter must not swallow it.
    assert "name" in zoo.options("mlp")
    assert zoo.build("mlp", name="baseline").name == "baseline"


@pytest.mark.parametrize("name", NAMES)
def test_none_options_are_dropped(name, monkeypatch):
    # Every option None, as an unset command-line flag gives it: the builder must see only the variant's own.
    variant = zoo.get(name)
    calls = []

    @functools.wraps(variant.builder)  # keeps the signature that zoo.options reads
    def spy(input_shape, num_classes, **options):
        calls.append((input_shape, num_classes, options))

    monkeypatch.setitem(zoo.MODELS, name, dataclasses.replace(variant, builder=spy))
    zoo.build(name, **dict.fromkeys(zoo.options(name)))
    assert calls == [(variant.input_shape, 10, {**variant.defaults, "name": name})]


@pytest.mark.parametrize("name, option, rate", [
    ("wrn28_10_dropout", "block_dropout", 0.3),  # a variant default
    ("googlenet", "dropout", 0.4),  # a builder default
])
def test_a_none_option_keeps_the_default_rate(name, option, rate):
    model = zoo.build(name, (32, 32, 3), **{option: None}, **narrow(name))
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts and {layer.rate for layer in dropouts} == {rate}


# --- Options every family shares --------------------------------------------------------------------------------------

@functools.cache
def with_shared_options(name):
    """``name`` built with every option of SHARED_OPTIONS it takes, so one build serves four tests."""
    taken = {option: value for option, value in SHARED_OPTIONS.items() if option in zoo.options(name)}
    return zoo.build(name, small_shape(name, 3), num_classes=NUM_CLASSES, **taken, **narrow(name))


def layers_with(model, attribute):
    return [layer for layer in model.layers if hasattr(layer, attribute)]


@pytest.mark.parametrize("option", SHARED_OPTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_shared_option(name, option):
    if option not in zoo.options(name):
        pytest.skip(f"{name} does not take {option!r}; it takes {', '.join(zoo.options(name))}")
    model = with_shared_options(name)
    if option == "batch_norm":
        def is_bn(layer):
            return isinstance(layer, keras.layers.BatchNormalization)
        if settings(name)["batch_norm"]:
            assert any(map(is_bn, tiny(name, 3).layers)), "the default build should have batch norm"
        assert not any(map(is_bn, model.layers))
    elif option == "activation":
        hidden = [layer for layer in model.layers if isinstance(layer, keras.layers.Activation)
                  and layer.name != "predictions"]
        assert hidden and all(layer.activation is keras.activations.get("gelu") for layer in hidden)
        others = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU, ScaledTanh)
        assert not [layer.name for layer in model.layers if isinstance(layer, others)]
    elif option == "l2":
        kernels = layers_with(model, "kernel_regularizer")
        assert kernels and all(layer.kernel_regularizer is not None for layer in kernels)
        assert all(layer.kernel_regularizer.get_config()["l2"] == pytest.approx(1e-4) for layer in kernels)
        assert len(model.losses) == len(kernels)
    elif option == "kernel_initializer":
        kernels = layers_with(model, "kernel_initializer")
        assert kernels and all(isinstance(layer.kernel_initializer, keras.initializers.GlorotUniform)
                               for layer in kernels)


# --- Training --------------------------------------------------------------------------------------------------------

@functools.cache
def digits(input_shape):
    """320 of scikit-learn's handwritten digits at ``input_shape``, scaled to [0, 1]."""
    data = imagesets.load("digits", image_size=input_shape[:2], channels=input_shape[2])
    images, labels = data.arrays["train"]
    return images[:320].astype("float32") / 255.0, labels[:320]


def training_loss(model, images, labels):
    # Training mode: after a few dozen steps batch norm's moving averages (momentum
    # 0.99) still mostly hold their initial 0 and 1, so an inference-mode loss would
    # say more about them than about what the weights learned.
    probabilities = model(images, training=True)
    return float(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities)))


def training_width(name):
    """A quarter of the width, and Wide ResNets thinned to the plain ResNet's
    16-32-64 filters: the question is whether gradients flow, not accuracy."""
    return narrow(name, min(0.25, 1.0 / settings(name).get("widen_factor", 1)))


@pytest.fixture
def fast_tracing():
    """Turns off Grappler's graph rewrites while a test runs.  Tracing and
    optimizing the first training step is most of the cost of training a deep
    network for a few steps on CPU; without the rewrites a 110-layer ResNet gets
    there in about 60% of the time, and the steps themselves hardly change."""
    saved = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options(saved)


# Training steps cost seconds per model, so each small-image family trains at its shallowest and at one
# deep setting (56 layers for the CIFAR ResNets, 28 for Wide ResNets, which train thinned to the same
# filters); the other variants repeat the same blocks, and every registered model is still built, run
# and saved by the tests above.
TRAINED = [pytest.param(name, marks=pytest.mark.slow) if settings(name).get("depth", 0) >= 28 else name
           for name in NAMES if is_small_image(name)
           and name not in ("resnet32", "resnet44", "resnet110", "preact_resnet110", "wrn16_8", "wrn28_10_dropout",
                            "wrn40_4")]


@pytest.mark.parametrize("name", TRAINED)
def test_a_few_adam_steps_lower_the_training_loss(name, fast_tracing):
    keras.utils.set_random_seed(0)
    shape = zoo.get(name).input_shape
    images, labels = digits(shape)
    model = zoo.build(name, shape, num_classes=10, **training_width(name))
    optimizer = keras.optimizers.Adam(1e-3)
    # Created here, not inside the first traced step, which would then be traced
    # twice: this halves the time to the first step of the deep ResNets.
    optimizer.build(model.trainable_variables)
    model.compile(optimizer, "sparse_categorical_crossentropy")
    fixed = images[:64], labels[:64]
    before = training_loss(model, *fixed)
    for start in range(0, len(images), 16):  # 20 steps
        model.train_on_batch(images[start:start + 16], labels[start:start + 16])
    after = training_loss(model, *fixed)
    assert after < before, f"{name}: loss {before:.3f} -> {after:.3f}"


# --- Saving and serving ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_keras_file_round_trip(name, tmp_path):
    model = tiny(name, 3)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    # Untrained deep networks give nearly one-hot probabilities, which would hide a
    # weight lost on the way, so the weights are compared too.
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored), keras.ops.convert_to_numpy(saved),
                                      err_msg=saved.path)
    images = images_for(model, seed=1)
    np.testing.assert_allclose(predict(loaded, images), predict(model, images), atol=1e-5)


# A SavedModel export traces, writes and reloads the whole network (seconds
# each), so one model per family and stem stands for the rest: between them
# every custom layer (LeNet's subsampling, connection table and RBF, local
# response normalization, option-A shortcuts) and every kind of block goes
# through the export.  The ImageNet ones go at a quarter width and 32x32.
EXPORTED = ["lenet5", "alexnet_small", "inception_small", "googlenet", "resnet20", "resnet50", "wrn16_4", "mlp"]


@pytest.mark.parametrize("name", EXPORTED)
def test_savedmodel_export_serves_raw_pixels(name, tmp_path):
    shape = zoo.get(name).input_shape if is_small_image(name) else small_shape(name, 3)
    network = zoo.build(name, shape, num_classes=3, **narrow(name))
    model = inference_model(assemble(network, shape, preprocessing=preprocessing_layer("rescale")))
    path = exports.export_savedmodel(model, str(tmp_path), "m", class_names=["cat", "dog", "fox"])
    assert path == str(tmp_path / "m" / "1")
    export = exports.load_export(path)
    assert export.class_names == ["cat", "dog", "fox"]
    assert export.input_shape == shape
    raw = np.random.default_rng(2).integers(0, 256, (4, *shape)).astype("float32")
    np.testing.assert_allclose(export.predict(raw), predict(model, raw), atol=1e-5)
