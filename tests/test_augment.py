"""Tests for augment/: layers, batch mixing, policies, TTA, preview.

Real Keras and TensorFlow on scikit-learn's digits (8x8 grey), plus an RGB
version of them tinted per image for the colour operations.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import augment
import imagesets
import keras
from augment import randaugment
from augment.reference import pil_op
from core.model import assemble

BATCH = 32


@pytest.fixture(scope="module")
def digits():
    images, labels = imagesets.load("digits").arrays["train"]
    return images[:BATCH].astype(np.float32), labels[:BATCH]


@pytest.fixture(scope="module")
def rgb(digits):
    """Digits tinted with a random colour each, kept inside 40-215 so that
    colour shifts of a few tens of pixel values never clip."""
    images, _ = digits
    tint = np.random.default_rng(0).uniform(0.3, 1.0, size=(len(images), 1, 1, 3)).astype(np.float32)
    return 40.0 + images * tint * (175.0 / 255.0)


def our_layers():
    return {
        "crop": lambda: augment.RandomCropWithPadding(2, seed=1),
        "crop_reflect": lambda: augment.RandomCropWithPadding(2, fill_mode="reflect", seed=1),
        "erasing": lambda: augment.RandomErasing(probability=1.0, seed=1),
        "cutout": lambda: augment.Cutout(4, seed=1),
        "elastic": lambda: augment.ElasticDistortion(sigma=1.2, magnitude=0.8, seed=1),
        "pca": lambda: augment.PCAColorJitter(std=0.5, seed=1),
        "noise": lambda: augment.PixelNoise(8.0, seed=1),
        "saturation": lambda: augment.RandomSaturation(0.5, seed=1),
        "randaugment": lambda: augment.RandAugment(num_ops=2, magnitude=9, seed=1),
    }


# Every policy component, built through the spec parser (covers the Keras layers too).
COMPONENT_NAMES = list(augment.COMPONENTS)


def component_layer(name):
    return augment.policy(name, input_shape=(8, 8, 3), seed=3).layers[-1]


@pytest.mark.parametrize("name", list(our_layers()))
def test_our_layer_changes_in_training_identity_otherwise(name, rgb):
    layer = our_layers()[name]()
    augmented = layer(rgb, training=True)
    assert augmented.shape == rgb.shape and augmented.dtype == "float32"
    assert not np.allclose(np.asarray(augmented), rgb)
    np.testing.assert_array_equal(np.asarray(layer(rgb, training=False)), rgb)
    np.testing.assert_array_equal(np.asarray(layer(rgb)), rgb)  # training defaults to off


@pytest.mark.parametrize("name", COMPONENT_NAMES)
def test_every_component_changes_in_training_identity_otherwise(name, rgb):
    layer = component_layer(name)
    augmented = np.asarray(layer(rgb, training=True))
    assert augmented.shape == rgb.shape and augmented.dtype == np.float32
    assert not np.allclose(augmented, rgb)
    assert augmented.min() >= -1e-3 and augmented.max() <= 255.0 + 1e-3
    np.testing.assert_allclose(np.asarray(layer(rgb, training=False)), rgb)


@pytest.mark.parametrize("name", list(our_layers()))
def test_fixed_seed_repeats(name, rgb):
    first, second = our_layers()[name](), our_layers()[name]()
    np.testing.assert_array_equal(np.asarray(first(rgb, training=True)), np.asarray(second(rgb, training=True)))


@pytest.mark.parametrize("name", ["crop", "erasing", "randaugment"])
def test_grey_and_single_images(name, digits):
    images, _ = digits
    layer = our_layers()[name]()
    assert layer(images, training=True).shape == images.shape
    assert layer(images[0], training=True).shape == images[0].shape


@pytest.mark.parametrize("name", list(our_layers()) + ["flip", "rotate"])
def test_inside_tf_data_map(name, rgb):
    layer = our_layers()[name]() if name in our_layers() else component_layer(name)
    dataset = tf.data.Dataset.from_tensor_slices(rgb).batch(8).map(lambda batch: layer(batch, training=True))
    batches = [np.asarray(batch) for batch in dataset]
    out = np.concatenate(batches)
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert not np.allclose(out, rgb)
    # Each batch draws anew: two passes over the dataset differ.
    again = np.concatenate([np.asarray(batch) for batch in dataset])
    assert not np.allclose(out, again)


@pytest.mark.parametrize("spec", ["standard", "strong"])
def test_policy_inside_tf_data_map(spec, digits):
    images, labels = digits
    layer = augment.policy(spec, input_shape=(8, 8, 1), flips=False, seed=0)
    dataset = (tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
               .map(lambda x, y: (layer(x, training=True), y), num_parallel_calls=2))
    out = np.concatenate([np.asarray(x) for x, _ in dataset])
    assert out.shape == images.shape and not np.allclose(out, images)


def test_crop_is_a_window_of_the_padded_image(digits):
    images, _ = digits
    pad = 2
    out = np.asarray(augment.RandomCropWithPadding(pad, seed=5)(images, training=True))
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = set()
    for original, cropped in zip(padded, out):
        matches = [(top, left) for top in range(2 * pad + 1) for left in range(2 * pad + 1)
                   if np.array_equal(original[top:top + 8, left:left + 8], cropped)]
        assert matches, "crop is not a window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 3  # offsets differ per image


def test_elastic_distortion_moves_pixels_by_its_magnitude_and_keeps_flat_images_flat():
    # A horizontal ramp: each pixel's value is its column, so the change at a pixel is its column displacement.
    ramp = np.tile(np.arange(28, dtype=np.float32), (64, 28, 1))[..., None]
    for magnitude in (0.5, 1.4):
        moved = np.asarray(augment.ElasticDistortion(sigma=4.0, magnitude=magnitude, seed=2)(ramp, training=True))
        inner = (moved - ramp)[:, 6:-6, 6:-6]  # away from the edges, where displacements are clipped
        assert abs(inner.std() / magnitude - 1) < 0.15, (magnitude, inner.std())
        # Smoothed: neighbours move together (a field of independent noise would differ as much as it varies).
        assert np.abs(np.diff(inner, axis=2)).mean() < 0.3 * inner.std()
    flat = np.full((4, 8, 8, 1), 100.0, np.float32)
    np.testing.assert_allclose(np.asarray(augment.ElasticDistortion(1.0, 2.0, seed=0)(flat, training=True)), flat,
                               rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(augment.ElasticDistortion(1.0, 0.0, seed=0)(ramp, training=True)), ramp)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        augment.ElasticDistortion(sigma=0)


def test_erasing_and_cutout_fill_one_rectangle(digits):
    images, _ = digits
    sentinel = -7.0  # a fill no real pixel has
    for layer, largest in ((augment.RandomErasing(probability=1.0, fill=sentinel, seed=2), 8),
                           (augment.Cutout(3, fill=sentinel, seed=2), 3)):
        out = np.asarray(layer(images, training=True))
        for original, erased in zip(images, out):
            box = erased[..., 0] == sentinel
            rows, cols = np.nonzero(box)
            assert len(rows) > 0
            assert box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
            assert rows.max() - rows.min() < largest and cols.max() - cols.min() < largest
            np.testing.assert_array_equal(erased[~box], original[~box])


def test_pca_eigenvectors_are_orthonormal(rgb):
    values, vectors = augment.fit_pca(rgb)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-6)
    assert values.shape == (3,) and (np.diff(values) <= 0).all() and (values >= 0).all()
    covariance = np.cov(rgb.reshape(-1, 3) / 255.0, rowvar=False)
    np.testing.assert_allclose(covariance @ vectors, vectors * values, atol=1e-8)


def test_pca_jitter_shifts_colour_not_structure(rgb):
    layer = augment.PCAColorJitter.from_images(rgb, std=0.3, seed=4)
    out = np.asarray(layer(rgb, training=True))
    shift = out - rgb
    # One colour offset per image, the same at every pixel.
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1, :1, :], shift.shape), atol=1e-3)
    assert np.abs(shift[:, 0, 0, :]).max() > 0.5
    assert not np.allclose(shift[:, 0, 0, :], shift[:1, 0, 0, :])  # differs per image


def test_pca_refuses_grey_images(digits):
    images, _ = digits
    with pytest.raises(ValueError, match="3 channels|RGB"):
        augment.fit_pca(images)
    with pytest.raises(ValueError, match="RGB"):
        augment.PCAColorJitter(seed=0)(images, training=True)
    with pytest.raises(ValueError, match="'pca' needs colour"):
        augment.policy("standard+pca", input_shape=(8, 8, 1))


def _pil_reference(name, image, level, sign):
    return np.asarray(pil_op(Image.fromarray(image.astype(np.uint8)), name, level, sign), dtype=np.float32)


@pytest.mark.parametrize("name", ["auto_contrast", "equalize", "solarize", "posterize", "color", "contrast",
                                  "brightness", "sharpness"])
def test_randaugment_colour_ops_match_pil(name, rgb):
    images = np.round(rgb[:6])
    sign = np.array([1, -1, 1, -1, 1, -1], np.float32)
    ours = np.asarray(randaugment._colour_op(name, tf.constant(images), 7.0, tf.constant(sign)))
    reference = np.stack([_pil_reference(name, image, 7.0, s) for image, s in zip(images, sign)])
    # PIL rounds to uint8 on the way; ours stays float.
    assert np.abs(ours - reference).max() <= 1.5


@pytest.mark.parametrize("name", [op for op in randaugment.OPS if op != "identity"])
def test_randaugment_each_op_changes_images(name, rgb):
    layer = augment.RandAugment(num_ops=1, magnitude=9, operations=[name], seed=0)
    out = np.asarray(layer(rgb, training=True))
    assert out.shape == rgb.shape and not np.allclose(out, rgb)
    assert out.min() >= 0 and out.max() <= 255


def test_randaugment_picks_ops_per_image(rgb):
    layer = augment.RandAugment(num_ops=1, magnitude=9, operations=["identity", "brightness"], seed=0)
    out = np.asarray(layer(rgb, training=True))
    unchanged = np.all(out == rgb, axis=(1, 2, 3))
    assert 0 < unchanged.sum() < len(rgb)


def test_randaugment_rejects_unknown_op():
    with pytest.raises(ValueError, match="'rotat'.*rotate"):
        augment.RandAugment(operations=["rotat"])


def _one_hot_index_labels(count):
    # Image i is constant i and has class i, so mixing is readable from both.
    images = np.broadcast_to(np.arange(count, dtype=np.float32)[:, None, None, None], (count, 8, 8, 1))
    return tf.constant(images), tf.one_hot(tf.range(count), count)


def test_mixup_labels_follow_the_mixing_weight():
    images, labels = _one_hot_index_labels(16)
    mixed, soft = augment.mixup(images, labels, alpha=0.4, seed=0)
    mixed, soft = np.asarray(mixed), np.asarray(soft)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    for i in range(16):
        expected = (soft[i] * np.arange(16)).sum()  # the label-weighted image index
        np.testing.assert_allclose(mixed[i], expected, atol=1e-4)


def test_cutmix_labels_match_pasted_area():
    images, labels = _one_hot_index_labels(16)
    mixed, soft = augment.cutmix(images, labels, alpha=1.0, seed=1)
    mixed, soft = np.asarray(mixed), np.asarray(soft)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    for i in range(16):
        kept = np.mean(mixed[i] == i)
        partner = int(round(mixed[i][mixed[i] != i].mean())) if kept < 1 else i
        np.testing.assert_allclose(soft[i, i], kept if partner != i else 1.0, atol=1e-6)
        if partner != i:
            np.testing.assert_allclose(soft[i, partner], 1.0 - kept, atol=1e-6)


def test_mixer_maps_over_batched_dataset_with_integer_labels(digits):
    images, labels = digits
    mix = augment.mixer("standard+mixup+cutmix", num_classes=10, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8).map(mix)
    for batch_images, soft in dataset:
        assert batch_images.shape == (8, 8, 8, 1) and soft.shape == (8, 10)
        np.testing.assert_allclose(np.asarray(soft).sum(axis=1), 1.0, atol=1e-5)
    assert augment.mixer("standard", num_classes=10) is None


@pytest.mark.parametrize("spec, layers", [
    ("standard", ["crop", "flip"]),
    ("light", ["crop", "flip"]),
    ("flip+crop+erasing", ["crop", "flip", "erasing"]),
    ("erasing+flip+crop", ["crop", "flip", "erasing"]),  # fixed application order
    ("light+randaugment", ["crop", "flip", "randaugment"]),
    ("strong", ["crop", "flip", "randaugment", "erasing"]),
    (" Standard + Cutout + mixup ", ["crop", "flip", "cutout"]),
])
def test_policies_compose(spec, layers):
    built = augment.policy(spec, input_shape=(32, 32, 3), seed=0)
    assert isinstance(built, keras.Sequential) and built.name == "augmentation"
    assert [layer.name for layer in built.layers] == layers


def test_policy_parameters_scale_with_image_size():
    def padding(spec, shape):
        return augment.policy(spec, input_shape=shape).get_layer("crop").padding

    assert [padding("standard", s) for s in [(32, 32, 3), (28, 28, 1), (8, 8, 1)]] == [4, 3, 1]
    assert [padding("light", s) for s in [(32, 32, 3), (8, 8, 1)]] == [2, 1]
    assert padding("light+standard", (32, 32, 3)) == 4  # the stronger setting wins
    # Elastic distortion: Simard et al.'s 28x28 setting (sigma 4, about 1.4 px), scaled to the side.
    elastic = [augment.policy("elastic", input_shape=s).get_layer("elastic") for s in [(28, 28, 1), (8, 8, 1)]]
    assert [value for layer in elastic for value in (layer.sigma, layer.magnitude)] == \
        pytest.approx([4.0, 1.4, 8 * 4 / 28, 0.4])


def test_none_policy_and_batch_only_specs_give_no_layer():
    assert augment.policy("none", input_shape=(8, 8, 1)) is None
    assert augment.policy("mixup", input_shape=(8, 8, 1)) is None
    assert augment.policy("flip", input_shape=(8, 8, 1), flips=False) is None


def test_flips_false_never_mirrors():
    for spec in ["light", "standard", "strong", "flip+crop"]:
        built = augment.policy(spec, input_shape=(8, 8, 1), flips=False)
        assert not any(isinstance(layer, keras.layers.RandomFlip) for layer in built.layers)
    assert "  flip:" not in augment.describe("standard", input_shape=(8, 8, 1), flips=False)


def test_default_flips():
    assert augment.default_flips("digits") is False
    assert augment.default_flips("mnist") is False
    assert augment.default_flips("fashion_mnist") is True
    assert augment.default_flips("cifar10") is True


@pytest.mark.parametrize("spec, bad", [("standrd", "standrd"), ("flip+crp+erasing", "crp"), ("light++flip", "")])
def test_unknown_names_raise_naming_the_bad_part(spec, bad):
    with pytest.raises(ValueError) as error:
        augment.policy(spec, input_shape=(32, 32, 3))
    message = str(error.value)
    assert f"{bad!r}" in message and "valid:" in message and "\n" not in message


def test_close_matches_are_suggested():
    with pytest.raises(ValueError, match="did you mean standard"):
        augment.policy("standrd", input_shape=(32, 32, 3))


def test_describe_lists_every_component():
    text = augment.describe("strong+mixup", input_shape=(32, 32, 3))
    for word in ["crop: pad 4 px", "flip", "randaugment", "erasing", "mixup (batch level"]:
        assert word in text
    assert set(augment.POLICIES) == {"none", "light", "standard", "strong"}


@pytest.fixture(scope="module")
def classifier(digits):
    images, labels = digits
    network = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(10, activation="softmax")], name="tiny")
    augmentation = augment.policy("strong+cutout+noise", input_shape=(8, 8, 1), flips=False, seed=0)
    model = assemble(network, (8, 8, 1), preprocessing=keras.layers.Rescaling(1 / 255.0, name="preprocessing"),
                     augmentation=augmentation)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    return model


def test_assembled_model_augments_only_in_training(classifier, digits):
    images, _ = digits
    plain = np.asarray(classifier(images, training=False))
    assert not np.allclose(np.asarray(classifier(images, training=True)), plain)
    np.testing.assert_allclose(np.asarray(classifier(images)), plain, atol=1e-6)


def test_keras_round_trip_keeps_working(classifier, digits, tmp_path):
    images, labels = digits
    path = tmp_path / "model.keras"
    classifier.save(path)
    loaded = keras.models.load_model(path)
    assert [layer.name for layer in loaded.get_layer("augmentation").layers] == \
        [layer.name for layer in classifier.get_layer("augmentation").layers]
    np.testing.assert_allclose(loaded.predict(images, verbose=0), classifier.predict(images, verbose=0), atol=1e-6)
    loaded.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(loaded.predict(images, verbose=0)).all()


def test_pca_decomposition_survives_saving(rgb, tmp_path):
    values, vectors = augment.fit_pca(rgb)
    layer = augment.policy("pca", input_shape=(8, 8, 3), pca=(values, vectors), seed=0)
    model = keras.Sequential([keras.Input((8, 8, 3)), layer])
    model.save(tmp_path / "pca.keras")
    loaded = keras.models.load_model(tmp_path / "pca.keras").get_layer("augmentation").get_layer("pca")
    np.testing.assert_allclose(loaded.eigenvectors, vectors, atol=1e-12)
    np.testing.assert_allclose(loaded.eigenvalues, values, atol=1e-12)


@pytest.mark.parametrize("mode, count", [("none", 1), ("flip", 2), ("ten_crop", 10), ("shift", 10)])
def test_tta_views(mode, count, digits):
    images, _ = digits
    assert len(augment.tta.views(images, mode)) == count
    assert len(augment.tta.views(images, mode, flips=False)) == max(1, count // 2)


def test_tta_shift_views_are_the_image_moved_by_one_pixel_diagonally(digits):
    images, _ = digits
    shifted = augment.tta.views(images, "shift", flips=False)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = [padded[:, top:top + 8, left:left + 8] for top, left in [(0, 0), (0, 2), (2, 0), (2, 2)]]
    for view, want in zip(shifted, expected + [images]):  # four diagonal shifts, then the image itself
        np.testing.assert_array_equal(view, want)
    # ten_crop keeps side/8 (3 px on 28x28); shift is one pixel whatever the size.
    big = np.random.default_rng(0).uniform(0, 255, (2, 28, 28, 1)).astype(np.float32)
    np.testing.assert_array_equal(augment.tta.views(big, "shift")[0][:, 1:, 1:], big[:, :-1, :-1])
    np.testing.assert_array_equal(augment.tta.views(big, "ten_crop")[0][:, 3:, 3:], big[:, :-3, :-3])


@pytest.mark.parametrize("mode", ["none", "flip", "ten_crop", "shift"])
def test_tta_returns_probabilities(classifier, digits, mode):
    images, _ = digits
    probabilities = augment.predict_tta(classifier, images, mode=mode, batch_size=16)
    assert probabilities.shape == (len(images), 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    if mode == "none":
        np.testing.assert_allclose(probabilities, classifier.predict(images, verbose=0), atol=1e-6)


def test_tta_flip_without_flips_is_plain_prediction(classifier, digits):
    images, _ = digits
    np.testing.assert_allclose(augment.predict_tta(classifier, images, mode="flip", flips=False),
                               augment.predict_tta(classifier, images, mode="none"), atol=1e-6)


def test_tta_softmaxes_logits(digits):
    images, _ = digits
    logits = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    probabilities = augment.predict_tta(logits, images, mode="flip")
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert probabilities.min() >= 0


def test_save_grid_writes_png_of_expected_size(digits, tmp_path):
    images, labels = digits
    layer = augment.policy("standard", input_shape=(8, 8, 1), flips=False, seed=0)
    path = augment.save_grid(images, layer, tmp_path / "grid.png", rows=2, cols=3, class_names=list("0123456789"),
                             labels=labels, cell=64)
    with Image.open(path) as picture:
        assert picture.size == (3 * 64, 2 * 64)
        assert picture.format == "PNG"
        assert np.asarray(picture).std() > 0
