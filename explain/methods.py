"""Class heatmaps: Grad-CAM, and integrated gradients, which does not depend on any layer's resolution.

Both take a Keras model (raw pixels in, as this toolkit's inference models and exports' ``model.keras`` are) and
a batch of images, and give one heatmap per image: float32 (N, H, W) at the image's height and width, in [0, 1],
1 where the evidence for the class is strongest.  The class is the model's top class, or the one named
(``class_index``: one int for the whole batch, or one per image).
"""

from __future__ import annotations

import numpy as np

from explain.graph import graph_of


def _classes(class_index, probabilities: np.ndarray) -> np.ndarray:
    if class_index is None:
        return probabilities.argmax(axis=-1)
    chosen = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (len(probabilities),))
    bad = chosen[(chosen < 0) | (chosen >= probabilities.shape[-1])]
    if bad.size:
        raise ValueError(f"class_index {int(bad[0])} is out of range: the model has {probabilities.shape[-1]} classes")
    return chosen


def _for_batch(class_index, start: int, count: int):
    """The part of ``class_index`` (None, an int, or one per image) for images start..start+count."""
    if class_index is None or np.ndim(class_index) == 0:
        return class_index
    return np.asarray(class_index)[start:start + count]


def _scores(run, tf):
    """The class scores differentiated: the mean of the logits the output comes from, else the output itself."""
    if not run.logits:
        return tf.cast(run.output, tf.float32)
    return tf.add_n([tf.cast(t, tf.float32) for t in run.logits]) / len(run.logits)


def _normalize(maps, tf):
    """Each map divided by its own maximum (an all-zero map stays zero)."""
    peak = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(maps, peak)


def _batches(images, batch_size: int):
    for start in range(0, len(images), batch_size):
        yield start, np.asarray(images[start:start + batch_size], dtype=np.float32)


def gradcam(model, images, class_index=None, *, layer: str | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV): the last feature maps weighted by the mean gradient of the class score over each map,
    summed, ReLU'd, enlarged bilinearly to the image's size and scaled to [0, 1].

    The class score is the logit before the softmax (the gradient of a saturated probability is zero).  The
    feature maps are the last ones on the way to the output (``explain.graph.Graph.target_layers``), inside a
    nested backbone too; for an ensemble, each member's, and their maps add up.

    Grad-CAM keeps only positive evidence, which assumes ReLU-like maps: on the paper's LeNet-5 (scaled tanh) the
    weighted S4 maps are often negative everywhere and the heatmap is blank (57 of 64 Fashion-MNIST test images in
    ``bench/bench_explain.py``); ``occlusion`` has no such assumption.

    Args:
        model: a functional Keras model, nested models and all.
        images: (N, H, W, C) raw pixels as the model takes them.
        class_index: None (each image's top class), an int, or one int per image.
        layer: a layer to look at instead (its name, or its path such as ``backbone/conv5_block3_out``).
        batch_size: images per gradient computation.

    Raises:
        ValueError: the model has no feature maps (an MLP; use ``integrated_gradients``), an unknown layer or class.
    """
    import tensorflow as tf

    height, width = (int(d) for d in model.input_shape[1:3])
    out = np.zeros((len(images), height, width), np.float32)
    for start, batch in _batches(images, batch_size):
        cams = 0.0
        for cam in class_activation_maps(model, batch, _for_batch(class_index, start, len(batch)), layer=layer):
            cams = cams + tf.image.resize(_normalize(cam[..., None], tf), (height, width), method="bilinear")
        out[start:start + len(batch)] = np.clip(_normalize(cams, tf)[..., 0].numpy(), 0.0, 1.0)
    return out


def class_activation_maps(model, images, class_index=None, *, layer: str | None = None) -> list:
    """Grad-CAM's maps at their layers' own resolution, before enlarging and scaling: one (N, h, w) tensor per
    target layer, ``ReLU(sum_k alpha_k^c A^k)`` with ``alpha_k^c`` the mean gradient of the class score over map
    ``A^k``.  ``gradcam`` is these, enlarged to the image and scaled."""
    import tensorflow as tf

    graph = graph_of(model)
    targets = [graph.find(layer)] if layer else graph.target_layers()
    if not targets:
        raise ValueError(f"{model.name} has no convolutional feature maps for Grad-CAM; use integrated gradients")
    x = tf.constant(np.asarray(images, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)  # so that frozen layers' operations are recorded too
        run = graph.run(x, targets)
        chosen = _classes(class_index, np.asarray(run.output))
        score = tf.gather(_scores(run, tf), chosen, axis=1, batch_dims=1)
    maps = [run.maps[call.index] for call in targets]
    cams = []
    for feature, grad in zip(maps, tape.gradient(score, maps)):
        feature, grad = tf.cast(feature, tf.float32), tf.cast(grad, tf.float32)
        weights = tf.reduce_mean(grad, axis=[1, 2], keepdims=True)                   # alpha_k^c
        cams.append(tf.nn.relu(tf.reduce_sum(weights * feature, axis=-1)))           # ReLU(sum_k alpha A^k)
    return cams


def integrated_gradients(model, images, class_index=None, *, steps: int = 32, baseline: float = 0.0,
                         batch_size: int = 128) -> np.ndarray:
    """Integrated gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", ICML):
    (image - baseline) times the class score's gradient averaged along the straight path from a black image,
    per pixel, so at the input's own resolution whatever the network's last maps are.

    The heatmap is the attribution's magnitude summed over channels, divided by its 99th percentile (a few
    pixels would otherwise take the whole scale) and clipped to [0, 1].  Pixels equal to the baseline get no
    attribution: on black backgrounds that is most of the image.

    Args:
        steps: points on the path (midpoint rule); 32 is within a few percent of the integral on small networks.
        baseline: the reference pixel value (0: black).
    """
    import tensorflow as tf

    graph = graph_of(model)
    alphas = tf.reshape((tf.range(steps, dtype=tf.float32) + 0.5) / steps, (steps, 1, 1, 1))
    out = np.zeros((len(images), *model.input_shape[1:3]), np.float32)
    per_batch = max(1, batch_size // steps)
    for start, batch in _batches(images, per_batch):
        chosen = _classes(_for_batch(class_index, start, len(batch)), np.asarray(graph.run(tf.constant(batch), []).output))
        for i, image in enumerate(batch):
            x = tf.constant(image)[None]
            reference = tf.fill(tf.shape(x), tf.constant(baseline, tf.float32))
            path = reference + alphas * (x - reference)
            with tf.GradientTape() as tape:
                tape.watch(path)
                score = _scores(graph.run(path, []), tf)[:, int(chosen[i])]
            grads = tf.reduce_mean(tape.gradient(score, path), axis=0)
            attribution = tf.reduce_sum(tf.abs((x[0] - reference[0]) * grads), axis=-1).numpy()
            scale = np.percentile(attribution, 99)
            out[start + i] = np.clip(attribution / scale, 0.0, 1.0) if scale > 0 else 0.0
    return out


def occlusion(model, images, class_index=None, *, patch: int | None = None, stride: int | None = None,
              fill: float = 0.0, batch_size: int = 256) -> np.ndarray:
    """Occlusion (Zeiler & Fergus 2014, "Visualizing and Understanding Convolutional Networks", ECCV): how much
    the class's probability drops when a square of the image is covered (``fill``, black by default), averaged
    over the squares covering each pixel, negative drops cut to zero and scaled to [0, 1].  It needs only the
    model's outputs, no gradient and no layer, at the resolution of its stride: an eighth of the image's side
    by default, with squares twice as wide.
    """
    height, width = (int(d) for d in model.input_shape[1:3])
    patch = patch or max(2, min(height, width) // 4)
    stride = stride or max(1, patch // 2)
    corners = [(top, left) for top in range(0, max(1, height - patch + stride), stride)
               for left in range(0, max(1, width - patch + stride), stride)]
    out = np.zeros((len(images), height, width), np.float32)
    for n, image in enumerate(np.asarray(images, np.float32)):
        base = np.asarray(model(image[None], training=False))[0]
        chosen = int(_classes(_for_batch(class_index, n, 1), base[None])[0])
        drops, covered = np.zeros((height, width), np.float32), np.zeros((height, width), np.float32)
        for start in range(0, len(corners), batch_size):
            chunk = corners[start:start + batch_size]
            covers = np.repeat(image[None], len(chunk), axis=0)
            for i, (top, left) in enumerate(chunk):
                covers[i, top:top + patch, left:left + patch] = fill
            scores = np.asarray(model(covers, training=False))[:, chosen]
            for (top, left), score in zip(chunk, scores):
                drops[top:top + patch, left:left + patch] += base[chosen] - score
                covered[top:top + patch, left:left + patch] += 1
        heat = np.maximum(drops / np.maximum(covered, 1), 0.0)
        out[n] = heat / heat.max() if heat.max() > 0 else heat
    return out


METHODS = {"gradcam": gradcam, "integrated_gradients": integrated_gradients, "occlusion": occlusion}


def explain(model, images, method: str = "gradcam", class_index=None, **options) -> np.ndarray:
    """Heatmaps by the method named (``METHODS``)."""
    if method not in METHODS:
        raise ValueError(f"Unknown explanation method {method!r} (valid: {', '.join(METHODS)})")
    return METHODS[method](model, images, class_index, **options)


# --- what the layers learned -------------------------------------------------------------------------------

def first_filters(model) -> tuple[str, np.ndarray] | None:
    """(path, kernels) of the first convolution: float32 (k, k, in, out) for a Conv2D, LeNet-5's C1 included;
    None for a network without one."""
    for call in graph_of(model).calls:
        kernels = [w for w in call.layer.weights if len(w.shape) == 4 and int(np.prod(tuple(w.shape)[:-1])) > 1]
        if kernels:
            return call.path, np.asarray(kernels[0], np.float32)
    return None


def feature_maps(model, image) -> list[tuple[str, np.ndarray]]:
    """What each stage of the network sees of one image: per resolution, the last feature maps a convolution made
    at it (LeNet-5: C1, S2, C3, S4; a ResNet: each stage's output), as (path, float32 (h, w, channels))."""
    graph = graph_of(model)
    import keras

    layers = [call for call in graph.spatial_layers() if not isinstance(call.layer, keras.layers.ZeroPadding2D)]
    stages = [call for call, after in zip(layers, [*layers[1:], None])
              if after is None or tuple(after.outputs[0].shape[1:3]) != tuple(call.outputs[0].shape[1:3])]
    run = graph.run(np.asarray(image, np.float32)[None], stages)
    return [(call.path, np.asarray(run.maps[call.index], np.float32)[0]) for call in stages]
