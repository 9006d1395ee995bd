"""Batch norm's statistics: re-estimated on clean batches ("precise BN"), or taken from the batch itself.

A BatchNormalization layer normalizes with the statistics of the batch in
training and with its moving averages in inference.  Those averages are an
exponential moving average over training steps (momentum 0.99 in Keras, 0.999
in keras.applications' MobileNetV2), each step's statistics coming from
different weights.  Over the few hundred steps of a small folder trained from
scratch, with the weights moving fast, the average matches no network that
ever existed, and a network that fits its training images scores chance on
every other image.

Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021), section 3: PreciseBN
fixes the weights, runs the network on many training batches with batch
statistics, and aggregates those batches' statistics into population ones,
equally weighted and all from the same weights.  ``PopulationStatistics``
does that:

* the batches are clean (the caller passes un-augmented training batches of
  the training batch size: batch norm's statistics depend on both);
* every batch-norm layer uses its batch's statistics, as in training, while
  dropout and noise layers are off, as at inference, so each layer sees the
  inputs it will see once exported;
* per channel, the population mean is the mean of the batch means and the
  population variance is the pooled one, the mean of the batch variances plus
  the variance of the batch means (each batch weighted by its size).

The same class also predicts with batch statistics without touching the
moving averages: the measurement that tells moving statistics from
over-fitting (``training.diagnose``).
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

# Images a re-estimation reads (whole training batches).  Wu & Johnson's PreciseBN settles with a few thousand
# samples; a small folder gives all it has, and a large data set spends on it about a tenth of an epoch of CIFAR.
PRECISE_BN_IMAGES = 2048

# Layers whose training behaviour adds noise, and the attribute that turns it off (Keras reads it in ``call``).
_NOISE = ((keras.layers.Dropout, "rate"), (keras.layers.GaussianDropout, "rate"),
          (keras.layers.AlphaDropout, "rate"), (keras.layers.GaussianNoise, "stddev"))


def _leaves(model) -> list:
    """The layers of ``model`` and of the models inside it.  A layer that wraps a model without being one
    (``transfer.heads.InferenceMode``) is a leaf: whatever it holds runs in inference mode."""
    found = []
    for layer in model.layers:
        found.extend(_leaves(layer) if isinstance(layer, keras.Model) else [layer])
    return found


def batch_norm_layers(model) -> list:
    """The BatchNormalization layers of ``model`` that normalize with batch statistics in training:
    trainable ones, reachable through nested models (not inside a layer that keeps its model in inference)."""
    return [layer for layer in _leaves(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def moving_statistics(norms) -> list[tuple[np.ndarray, np.ndarray]]:
    """(moving mean, moving variance) of each layer of ``norms``, as arrays (to put back with ``assign``)."""
    return [(keras.ops.convert_to_numpy(layer.moving_mean), keras.ops.convert_to_numpy(layer.moving_variance))
            for layer in norms]


def assign(norms, statistics) -> None:
    for layer, (mean, variance) in zip(norms, statistics):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(variance)


class PopulationStatistics:
    """Runs ``model`` with batch statistics in every batch-norm layer and everything else in inference mode.

    ``model`` is the network as it is exported (no augmentation layers); the
    batch-norm layers are those of ``batch_norm_layers``.  The function that
    runs it is traced once and reused, so a re-estimation before every
    validation costs a forward pass over its batches.
    """

    def __init__(self, model):
        self.model = model
        self.norms = batch_norm_layers(model)
        self._noise = [(layer, attribute) for layer in _leaves(model) for kind, attribute in _NOISE
                       if isinstance(layer, kind)]
        self._step = None

    @contextlib.contextmanager
    def _batch_mode(self):
        """Momentum 0 (a layer's moving statistics become its last batch's) and no noise, put back after.
        Held for the whole pass, and the function is traced inside it: the trace reads these settings."""
        momenta = [layer.momentum for layer in self.norms]
        noise = [getattr(layer, attribute) for layer, attribute in self._noise]
        for layer in self.norms:
            layer.momentum = 0.0
        for layer, attribute in self._noise:
            setattr(layer, attribute, 0.0)
        try:
            yield self._function()
        finally:
            for layer, momentum in zip(self.norms, momenta):
                layer.momentum = momentum
            for (layer, attribute), value in zip(self._noise, noise):
                setattr(layer, attribute, value)

    def _function(self):
        if self._step is None:
            import tensorflow as tf

            model, norms = self.model, self.norms

            # Any batch size, one trace: the clean batches and the validation split's last batch differ.
            @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)])
            def step(images):
                outputs = model(images, training=True)
                # Read after the layers assigned them (automatic control dependencies keep the order).
                return outputs, [(keras.ops.convert_to_tensor(layer.moving_mean),
                                  keras.ops.convert_to_tensor(layer.moving_variance)) for layer in norms]

            self._step = step
        return self._step

    def reestimate(self, batches, max_images: int = PRECISE_BN_IMAGES) -> int:
        """Sets every layer's moving statistics to the population statistics of ``batches``.

        Args:
            batches: float32 image batches (or (images, labels) pairs), as the
                model takes them; un-augmented, of the training batch size.
                A last batch smaller than the first is left out when there
                was a whole one: its statistics are noisier than training's.
            max_images: stop after the batch that reaches this many images.

        Returns:
            The number of images the statistics come from (0: nothing changed).
        """
        if not self.norms:
            return 0
        count, first, sums = 0, None, None
        with self._batch_mode() as step:
            for batch in batches:
                images = batch[0] if isinstance(batch, (tuple, list)) else batch
                size = int(images.shape[0])
                if first is not None and size < first:
                    break
                first = first or size
                _, statistics = step(keras.ops.cast(images, "float32"))
                moments = [(np.asarray(mean, np.float64), np.asarray(variance, np.float64))
                           for mean, variance in statistics]
                if sums is None:
                    sums = [(np.zeros_like(mean), np.zeros_like(mean)) for mean, _ in moments]
                for (total_mean, total_square), (mean, variance) in zip(sums, moments):
                    total_mean += size * mean
                    total_square += size * (variance + mean * mean)
                count += size
                if count >= max_images:
                    break
        if not count:
            return 0
        population = []
        for total_mean, total_square in sums:
            mean = total_mean / count
            population.append((mean, np.maximum(total_square / count - mean * mean, 0.0)))
        assign(self.norms, population)
        return count

    def predict(self, batches) -> np.ndarray:
        """The model's outputs with each batch normalized by its own statistics; the moving ones are kept."""
        kept = moving_statistics(self.norms)
        outputs = []
        try:
            with self._batch_mode() as step:
                for batch in batches:
                    images = batch[0] if isinstance(batch, (tuple, list)) else batch
                    outputs.append(np.asarray(step(keras.ops.cast(images, "float32"))[0]))
        finally:
            assign(self.norms, kept)
        return np.concatenate(outputs) if outputs else np.zeros((0,))
