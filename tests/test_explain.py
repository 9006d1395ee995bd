"""explain: class heatmaps for every kind of model the toolkit trains or loads, checked against keras.io's recipe,
against Adebayo et al.'s randomisation test, and through predict.py, the reports and the server.

One small LeNet-5 is trained in-process on scikit-learn's digits (a few seconds); the other networks are built at
small sizes and never trained: their heatmaps are checked for shape, range and where they look from.
"""

from __future__ import annotations

import asyncio
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.stats import spearmanr

import explain
import zoo
from core.model import assemble, inference_model, preprocessing_layer
from helpers import digit_images
from training.reports import overlay

SHAPE = (24, 24, 1)


def lenet(seed: int):
    keras.utils.set_random_seed(seed)
    network = zoo.build("lenet5_modern", SHAPE, num_classes=10)
    return inference_model(assemble(network, SHAPE, preprocessing=preprocessing_layer("rescale")))


@pytest.fixture(scope="module")
def digits():
    images, labels = digit_images(180, size=SHAPE[0])
    order = np.random.default_rng(0).permutation(len(images))
    return np.stack(images)[order][..., None].astype(np.float32), np.asarray(labels)[order]


@pytest.fixture(scope="module")
def trained(digits):
    """LeNet-5 (modern) trained for four epochs on 1,700 digits: about 95% on the 100 held out."""
    x, y = digits
    model = lenet(0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[:-100], y[:-100], epochs=4, batch_size=32, verbose=0)
    assert model.evaluate(x[-100:], y[-100:], verbose=0)[1] > 0.85
    return model


def checked(heatmaps, count, height, width):
    assert heatmaps.shape == (count, height, width) and heatmaps.dtype == np.float32
    assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    return heatmaps


# --- the numbers: a reference implementation and the sanity check ----------------------------------------------

def keras_io_grad_cam(network, images, classes, layer_name):
    """keras.io's Grad-CAM recipe (examples/vision/grad_cam.py), written out for a flat network: one model from the
    input to the last convolution's maps and the predictions, the last layer's softmax taken off, a tape."""
    import tensorflow as tf

    network.get_layer("predictions").activation = None
    try:
        grad_model = keras.Model(network.inputs, [network.get_layer(layer_name).output, network.output])
        with tf.GradientTape() as tape:
            maps, predictions = grad_model(images)
            class_channel = tf.gather(predictions, classes, axis=1, batch_dims=1)
        pooled = tf.reduce_mean(tape.gradient(class_channel, maps), axis=(1, 2))
        return tf.nn.relu(tf.einsum("nhwc,nc->nhw", maps, pooled)).numpy()
    finally:
        network.get_layer("predictions").activation = keras.activations.softmax


def test_grad_cam_matches_the_keras_io_recipe_on_a_flat_network(trained, digits):
    """The keras.io recipe is the reference where it works: a flat model (it cannot reach into a nested one).
    tf-keras-vis 0.8.7 agreed to 3e-8 here too, but is not a test dependency: its wheel installs a top-level
    ``tests`` package that hides this folder's modules from ``import tests.helpers``."""
    network = trained.get_layer("lenet5_modern")  # flat: the zoo network alone, on pixels / 255
    x = digits[0][-8:] / 255.0
    classes = np.asarray(network(x)).argmax(1)
    ours = explain.class_activation_maps(network, x, classes)[0].numpy()
    reference = keras_io_grad_cam(network, x, classes, "s4_pool")
    assert ours.shape == (8, 5, 5) and ours.max() > 0.1
    np.testing.assert_allclose(ours, reference, atol=1e-4 * ours.max())
    assert not np.allclose(ours, keras_io_grad_cam(network, x, classes, "c3_act")[:, ::2, ::2], atol=1e-2)


def mean_rank_correlation(method, trained, random, images) -> tuple[float, int]:
    """Adebayo et al.'s model-parameter randomisation check: the mean Spearman correlation between the trained
    network's heatmaps and the re-initialised one's, for the trained network's class; and how many pairs had a
    blank map (no ranking to compare: Grad-CAM's ReLU can cut a random network's map to zero)."""
    classes = np.asarray(trained(images)).argmax(1)
    a, b = method(trained, images, classes), method(random, images, classes)
    correlations = [spearmanr(p.ravel(), q.ravel()).statistic for p, q in zip(a, b) if p.std() > 0 and q.std() > 0]
    return float(np.mean(correlations)), len(images) - len(correlations)


def edge_map(model, images, classes):
    """A Sobel edge detector: a 'heatmap' that never looks at the model, so it must fail the check."""
    grey = np.asarray(images, np.float32).mean(axis=-1)
    edges = np.hypot(ndimage.sobel(grey, 1), ndimage.sobel(grey, 2))
    return edges / edges.max(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("method", [explain.gradcam, explain.occlusion, edge_map],
                         ids=["gradcam", "occlusion", "edge_detector"])
def test_heatmaps_change_when_the_weights_are_randomised(method, trained, digits):
    """Sanity Checks for Saliency Maps (Adebayo et al., NeurIPS 2018), on 16 test digits: a method that explains
    the model must lose its ranking when the weights are re-initialised; one that ignores them must not."""
    images = digits[0][-16:]
    correlation, blank = mean_rank_correlation(method, trained, lenet(1), images)
    if method is edge_map:
        assert correlation > 0.9  # the check would catch a method that ignores the weights
    else:
        assert correlation < 0.5 and blank <= 8, (correlation, blank)


# --- every kind of model -----------------------------------------------------------------------------------

FAMILIES = {  # name: (input shape, options, the maps Grad-CAM looks at)
    "lenet5": ((28, 28, 1), {}, "lenet5/s4_act"),
    "alexnet": ((67, 67, 3), {"width": 0.25}, "alexnet/conv5_act"),
    "inception_small": ((32, 32, 3), {"width": 0.25}, "inception_small/stage3_block2_concat"),
    "resnet20": ((32, 32, 3), {}, "resnet20/stage3_block3_out"),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_every_zoo_family_gives_heatmaps_the_size_of_its_images(name):
    shape, options, target = FAMILIES[name]
    model = inference_model(assemble(zoo.build(name, shape, num_classes=4, **options), shape,
                                     preprocessing=preprocessing_layer("rescale")))
    images = np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype(np.float32)
    assert [call.path for call in explain.graph_of(model).target_layers()] == [target]
    for method in (explain.gradcam, explain.occlusion):
        heatmaps = checked(method(model, images), 2, *shape[:2])
        assert overlay(images[0], heatmaps[0]).shape == (*shape[:2], 3)


def test_a_nested_keras_applications_backbone_is_reached_without_graph_disconnected():
    import transfer

    backbone = transfer.load_backbone("mobilenet_v2", input_shape=(32, 32, 3), weights=None)
    model = inference_model(assemble(transfer.classifier_network(backbone, 3), (32, 32, 3),
                                     preprocessing=backbone.preprocessing))
    inner = backbone.features.get_layer("block_6_expand_relu")
    with pytest.raises(ValueError, match="not connected"):  # the classic failure, as keras.io's recipe meets it
        keras.Model(model.inputs, [inner.output, model.output])
    graph = explain.graph_of(model)
    assert graph.target_layers()[0].path.startswith("mobilenet_v2_transfer/mobilenetv2_1.00_32/block_13")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    heatmaps = checked(explain.gradcam(model, images, layer="block_6_expand_relu"), 2, 32, 32)
    assert heatmaps.max() == pytest.approx(1.0)  # gradients flow through the frozen, nested backbone


def test_an_ensemble_adds_up_the_heatmap_of_every_member(trained, digits):
    from insight.ensemble import build_ensemble

    members = [keras.models.clone_model(trained), lenet(2)]
    members[0].set_weights(trained.get_weights())
    ensemble = build_ensemble(members)
    paths = [call.path for call in explain.graph_of(ensemble).target_layers()]
    assert len(paths) == 2 and all(path.endswith("s4_pool") for path in paths)
    checked(explain.gradcam(ensemble, digits[0][:3]), 3, 24, 24)


def test_any_class_can_be_named_and_a_network_without_maps_says_what_to_use(trained, digits):
    images = digits[0][-4:]
    top = explain.gradcam(trained, images)
    assert np.array_equal(top, explain.gradcam(trained, images, np.asarray(trained(images)).argmax(1)))
    other = (np.asarray(trained(images)).argmax(1) + 5) % 10
    assert not np.allclose(top, explain.gradcam(trained, images, other))
    with pytest.raises(ValueError, match="out of range"):
        explain.gradcam(trained, images, 10)
    mlp = inference_model(assemble(zoo.build("mlp", SHAPE, num_classes=3), SHAPE,
                                   preprocessing=preprocessing_layer("rescale")))
    with pytest.raises(ValueError, match="no convolutional feature maps.*integrated gradients"):
        explain.gradcam(mlp, images)
    checked(explain.integrated_gradients(mlp, images, steps=8), 4, 24, 24)


# --- an export: predict.py --explain and the server's :explain ---------------------------------------------

@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    from exports import export_savedmodel

    root = tmp_path_factory.mktemp("explain-exports")
    return export_savedmodel(trained, str(root), "digits", class_names=[str(d) for d in range(10)])


def test_an_export_explains_as_its_model_does_and_predict_writes_heatmaps_of_each_files_size(
        trained, digits, exported, tmp_path):
    from exports.load import load_export
    from training.predictions import classify

    images = digits[0][:2]
    np.testing.assert_allclose(explain.gradcam(load_export(exported).keras_model(), images),
                               explain.gradcam(trained, images), atol=1e-5)
    sizes = [(40, 30), (64, 64)]  # (width, height) of two photos of digits, neither the model's 24x24
    for i, size in enumerate(sizes):
        Image.fromarray(images[i][..., 0].astype(np.uint8)).convert("RGB").resize(size).save(tmp_path / f"d{i}.png")
    result = classify(exported, [str(tmp_path / "d0.png"), str(tmp_path / "d1.png")],
                      explain_dir=str(tmp_path / "why"))
    for prediction, (width, height) in zip(result["predictions"], sizes):
        found = prediction["explanation"]
        assert found["class"] == prediction["top"][0]["class"] and found["method"] == "gradcam"
        heatmap = np.load(found["heatmap"])
        assert heatmap.shape == (height, width) and 0 <= heatmap.min() and heatmap.max() <= 1
        with Image.open(found["overlay"]) as shown:
            assert shown.size == (width, height) and shown.mode == "RGB"
    json.dumps(result)  # what predict.py --json prints


def test_the_server_explains_toolkit_exports_and_refuses_other_models_with_a_400(exported, digits, tmp_path):
    import concurrent.futures

    import tensorflow as tf

    from server.errors import ServingError
    from server.models import Manager, parse_policy
    from server.servable import loader
    from server.service import Service, Spec
    from server.settings import DEFAULTS

    plain = tf.Module()
    plain.v = tf.Variable(2.0)
    plain.f = tf.function(lambda x: {"y": x * plain.v}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(plain, str(tmp_path / "plain" / "1"), signatures={"serving_default": plain.f})
    manager = Manager([os.path.dirname(exported), str(tmp_path / "plain")], parse_policy("latest"),
                      loader(DEFAULTS, concurrent.futures.ThreadPoolExecutor(2)))
    manager.poll()
    service = Service(manager, DEFAULTS)
    try:
        images = digits[0][:3]
        _, outputs = asyncio.run(service.explain(Spec("digits"), images))
        np.testing.assert_allclose(outputs["heatmaps"], explain.gradcam(service.keras_model(
            manager.servable("digits")), images), atol=1e-5)
        assert outputs["heatmaps"].shape == (3, 24, 24) and outputs["classes"].shape == (3,)
        with pytest.raises(ServingError, match="not an image classifier exported by this toolkit") as refused:
            asyncio.run(service.explain(Spec("plain"), images))
        assert refused.value.http_status == 400
        with pytest.raises(ServingError, match=r"shape \[-1,24,24,1\]"):
            asyncio.run(service.explain(Spec("digits"), images[..., :1, :]))
    finally:
        manager.stop()


# --- for the student: what the layers learned, and the mistakes beside their heatmaps -----------------------

def test_a_run_draws_the_first_filters_the_feature_maps_and_mistakes_beside_their_heatmaps(trained, digits, tmp_path):
    from training import mistakes
    from training.reports import plot_what_it_learned

    kernels = explain.first_filters(trained)
    assert kernels[0].endswith("c1_conv") and kernels[1].shape == (5, 5, 1, 6)
    stages = explain.feature_maps(trained, digits[0][0])
    assert [(path.rsplit("/", 1)[-1], maps.shape) for path, maps in stages] == [  # the paper's C1, S2, C3, S4
        ("c1_act", (28, 28, 6)), ("s2_pool", (14, 14, 6)), ("c3_act", (10, 10, 16)), ("s4_pool", (5, 5, 16))]
    written = plot_what_it_learned(trained, digits[0][0], str(tmp_path / "f.png"), str(tmp_path / "m.png"))
    assert written == [str(tmp_path / "f.png"), str(tmp_path / "m.png")]
    x, y = digits
    probabilities = np.asarray(trained(x[-100:]))
    plain = mistakes.plot_mistakes(x[-100:], y[-100:], probabilities, list("0123456789"), str(tmp_path / "a.png"))
    beside = mistakes.plot_mistakes(x[-100:], y[-100:], probabilities, list("0123456789"), str(tmp_path / "b.png"),
                                    model=trained)
    assert plain == beside and len(beside) > 0
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert b.size[0] > 1.5 * a.size[0]  # a heatmap beside each mistake


def test_predict_py_lists_the_methods_explain_has():
    import predict

    assert set(predict.EXPLAIN_METHODS) == set(explain.METHODS)
