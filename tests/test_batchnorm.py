"""Batch norm's statistics re-estimated on clean batches (core.batchnorm, training.callbacks.PreciseBatchNorm).

Small hand-built networks whose statistics can be computed in numpy, then a
real run whose export must carry the re-estimated statistics.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.batchnorm import PopulationStatistics, batch_norm_layers, moving_statistics
from training.callbacks import PreciseBatchNorm


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)


def two_norms():
    """Dense -> dropout -> batch norm -> ReLU -> batch norm (no scale or offset) -> Dense."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, name="dense")(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(h)
    x = keras.layers.BatchNormalization(momentum=0.99, name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.BatchNormalization(center=False, scale=False, name="bn2")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def clean_batches():
    """Three batches of 16 with different means (so the batch means vary), then a short one of 5."""
    rng = np.random.default_rng(0)
    return [rng.normal(offset, 2.0, (16, 4)).astype("float32") for offset in (-1.0, 0.5, 3.0)] + \
        [rng.normal(9.0, 1.0, (5, 4)).astype("float32")]


def by_hand(model, batches):
    """What bn1 and bn2 see, batch by batch, with each batch normalized by its own statistics and no dropout."""
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.get_layer("dense").weights)
    epsilon = model.get_layer("bn1").epsilon
    first, second = [], []
    for batch in batches:
        h = batch @ kernel + bias
        relu = np.maximum((h - h.mean(0)) / np.sqrt(h.var(0) + epsilon), 0.0)
        first.append(h)
        second.append(relu)
    return first, second


def pooled(parts):
    whole = np.concatenate(parts)
    return whole.mean(0), whole.var(0)


def test_reestimation_gives_the_population_statistics_of_the_clean_batches():
    model, batches = two_norms(), clean_batches()
    statistics = PopulationStatistics(model)
    assert [layer.name for layer in statistics.norms] == ["bn1", "bn2"]
    assert statistics.reestimate(batches) == 48  # the short last batch is left out
    first, second = by_hand(model, batches[:3])
    for name, parts in (("bn1", first), ("bn2", second)):
        mean, variance = pooled(parts)  # the pooled variance: batch variances plus the spread of batch means
        layer = model.get_layer(name)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), variance, rtol=1e-4, atol=1e-5)
    # What the pass changed for its own sake is put back.
    assert model.get_layer("bn1").momentum == 0.99 and model.get_layer("drop").rate == 0.5
    # A cap on the images stops after the batch that reaches it.
    assert statistics.reestimate(batches, max_images=20) == 32


def test_predicting_with_batch_statistics_keeps_the_moving_ones():
    model, batches = two_norms(), clean_batches()
    statistics = PopulationStatistics(model)
    before = moving_statistics(statistics.norms)
    outputs = statistics.predict(batches[:2])
    for (mean, variance), (kept_mean, kept_variance) in zip(moving_statistics(statistics.norms), before):
        np.testing.assert_array_equal(mean, kept_mean)
        np.testing.assert_array_equal(variance, kept_variance)
    _, second = by_hand(model, batches[:2])
    epsilon = model.get_layer("bn2").epsilon
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.get_layer("out").weights)
    expected = np.concatenate([(r - r.mean(0)) / np.sqrt(r.var(0) + epsilon) @ kernel + bias for r in second])
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def test_only_batch_norm_that_trains_on_batch_statistics_is_reestimated():
    from transfer.heads import InferenceMode

    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(name="nested")], name="inner")
    kept = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(name="wrapped")], name="kept")
    inputs = keras.Input((4,))
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    outputs = InferenceMode(kept)(frozen(inner(inputs)))
    assert [layer.name for layer in batch_norm_layers(keras.Model(inputs, outputs))] == ["nested"]


def test_the_callback_reestimates_before_validation_and_measures_at_the_end():
    import tensorflow as tf

    model, batches = two_norms(), clean_batches()[:3]
    x = np.concatenate(batches)
    y = keras.utils.to_categorical((x.sum(1) > x.sum(1).mean()).astype(int), 2)
    clean = tf.data.Dataset.from_tensor_slices(x).batch(16)  # in order: the statistics can be checked
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    seen = []

    class Watch(keras.callbacks.Callback):  # after the re-estimation, as BestWeights is
        def on_epoch_end(self, epoch, logs=None):
            seen.append(moving_statistics([model.get_layer("bn1")])[0])

    precise = PreciseBatchNorm(model, clean, val)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=8, epochs=2, validation_data=val, callbacks=[precise, Watch()], verbose=0)
    mean, variance = pooled(by_hand(model, batches)[0])
    for moving_mean, moving_variance in (seen[-1], moving_statistics([model.get_layer("bn1")])[0]):
        np.testing.assert_allclose(moving_mean, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(moving_variance, variance, rtol=1e-4, atol=1e-5)
    measured = precise.measurement
    assert measured["epoch"] == 2 and measured["precise_bn"] is True
    assert set(measured["val_accuracy"]) == {"moving_average", "reestimated", "batch_statistics"}
    assert measured["variance_ratio"]["layer"] in ("bn1", "bn2")
    # Off, the moving averages are Keras' own, and the measurement leaves them so.
    model = two_norms()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy", metrics=["accuracy"])
    off = PreciseBatchNorm(model, clean, val, enabled=False)
    model.fit(x, y, batch_size=8, epochs=2, validation_data=val, callbacks=[Watch(), off], verbose=0)
    np.testing.assert_array_equal(moving_statistics([model.get_layer("bn1")])[0][0], seen[-1][0])
    assert off.measurement["precise_bn"] is False


def test_the_export_carries_the_reestimated_statistics(tmp_path):
    # LeNet-5 with batch norm on 108 training digits, 3 epochs: the moving averages of 42 steps at Keras'
    # momentum 0.99 still hold most of their starting values (tests/test_insight.py's batchnorm_statistics run).
    from exports.load import load_export
    from training.config import complete
    from training.data import load_data
    from training.run import train

    config = {"dataset": "digits", "model": "lenet5_modern", "batch_norm": True, "epochs": 3, "test_fraction": 0.89,
              "val_fraction": 0.05, "batch_size": 8, "patience": 0, "runs_dir": str(tmp_path / "runs"),
              "export_dir": str(tmp_path / "exports"), "verbose": 0}
    metrics = train(config, log=lambda *_: None)
    assert metrics["batch_norm"]["precise_bn"] is True
    assert metrics["config"]["precise_bn"] is None  # config.json keeps what was asked, so a rerun finds the run
    scores = metrics["batch_norm"]["val_accuracy"]
    assert scores["reestimated"] > scores["moving_average"] + 0.2, scores
    assert metrics["diagnosis"]["verdict"] != "batchnorm_statistics"
    images, labels = load_data(complete(config)).arrays["test"]
    served = load_export(metrics["export_path"]).predict(images, batch_size=256)
    assert np.mean(served.argmax(-1) == labels) == pytest.approx(metrics["test_accuracy"], abs=1e-3)
    kept = keras.models.load_model(f"{metrics['run_dir']}/model.keras")  # the in-memory model, as it was saved
    np.testing.assert_allclose(served[:64], kept.predict(images[:64].astype("float32"), verbose=0), atol=1e-4)


def test_precise_bn_is_on_by_default_only_where_batch_norm_trains_on_one_device():
    import types

    from core.errors import UserError
    from core.model import assemble
    from training.run import precise_bn

    def network(norm: bool):
        inputs = keras.Input((4,))
        x = keras.layers.BatchNormalization()(inputs) if norm else inputs
        return assemble(keras.Model(inputs, keras.layers.Dense(2)(x)), (4,),
                        preprocessing=keras.layers.Rescaling(1.0, name="preprocessing"))

    one, two = types.SimpleNamespace(num_replicas_in_sync=1), types.SimpleNamespace(num_replicas_in_sync=2)
    notes = []
    assert precise_bn({"precise_bn": None}, network(True), one, notes.append) is True
    assert precise_bn({"precise_bn": False}, network(True), one, notes.append) is False
    assert precise_bn({"precise_bn": None}, network(False), one, notes.append) is False and not notes
    assert precise_bn({"precise_bn": True}, network(False), one, notes.append) is False
    assert "nothing to re-estimate" in notes.pop()
    assert precise_bn({"precise_bn": None}, network(True), two, notes.append) is False
    assert "moving averages" in notes.pop()
    with pytest.raises(UserError, match="2 replicas"):
        precise_bn({"precise_bn": True}, network(True), two, notes.append)


# --- The fused training kernel (zoo._layers.BatchNormalization) ------------------------------------------------------


def _trained_twice(layer, images, momentum):
    """The layer's outputs, gradients (inputs, gamma, beta) and moving statistics after two training steps."""
    import tensorflow as tf

    layer.momentum = momentum
    layer.build(images.shape)
    layer.gamma.assign(np.linspace(0.5, 1.5, images.shape[-1]).astype("float32"))
    layer.beta.assign(np.linspace(-1.0, 1.0, images.shape[-1]).astype("float32"))
    x = tf.constant(images)
    for _ in range(2):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, training=True)
            loss = tf.reduce_sum(outputs * outputs * tf.range(1.0, images.shape[-1] + 1.0))
    gradients = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [outputs.numpy(), *(g.numpy() for g in gradients), *moving_statistics([layer])[0]]


@pytest.mark.parametrize("shape", [(8, 6, 6, 32), (8, 6, 6, 18), (8, 20)])
@pytest.mark.parametrize("momentum", [0.9, 0.0])  # 0: how PopulationStatistics reads a batch's statistics
def test_the_fused_kernel_trains_exactly_like_keras_batch_norm(shape, momentum):
    from zoo import _layers

    images = np.random.default_rng(1).normal(2.0, 3.0, shape).astype("float32")
    ours = _trained_twice(_layers.BatchNormalization(), images, momentum)
    theirs = _trained_twice(keras.layers.BatchNormalization(), images, momentum)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_fused_kernel_runs_only_where_it_was_measured_faster():
    import tensorflow as tf

    from zoo import _layers

    def ops(shape, training):
        layer = _layers.BatchNormalization()
        traced = tf.function(lambda x: layer(x, training=training)).get_concrete_function(
            tf.TensorSpec((None, *shape[1:]), tf.float32))
        return {op.type for op in traced.graph.get_operations()}

    assert "FusedBatchNormV3" in ops((8, 6, 6, 32), True)
    for shape, training in (((8, 6, 6, 32), False), ((8, 6, 6, 18), True), ((8, 32), True)):
        assert "FusedBatchNormV3" not in ops(shape, training), (shape, training)


def test_a_zoo_model_saves_plain_keras_batch_norm_that_loads_with_its_statistics(tmp_path):
    import zipfile

    import zoo
    from zoo import _layers

    model = zoo.build("resnet20", (32, 32, 3), num_classes=10)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(type(layer) is _layers.BatchNormalization for layer in norms)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.random.default_rng(0).random((32, 32, 32, 3), dtype="float32"), np.arange(32) % 10,
              batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    assert '"module": "zoo._layers"' not in zipfile.ZipFile(tmp_path / "model.keras").read("config.json").decode()
    loaded = keras.models.load_model(tmp_path / "model.keras")
    restored = [layer for layer in loaded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(type(layer) is keras.layers.BatchNormalization for layer in restored)
    for mine, theirs in zip(moving_statistics(norms), moving_statistics(restored), strict=True):
        np.testing.assert_array_equal(mine[1], theirs[1])
    assert not np.allclose(moving_statistics(norms)[0][1], 1.0)  # the fit moved them
