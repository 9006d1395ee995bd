"""Optimizers and learning-rate schedules, keyed by the names the CLI uses.

Schedules are functions of the optimizer's step counter, which is saved with
the optimizer state, so a resumed run continues the schedule where it stopped.
"""

from __future__ import annotations

import math

import keras

from core import compat

BASES = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
         "rmsprop": keras.optimizers.RMSprop}
OPTIMIZERS = tuple(BASES)
SCHEDULES = ("constant", "step", "cosine", "onecycle")


@keras.saving.register_keras_serializable(package="training")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up then anneal, both cosine-shaped (Smith & Topin 2018, "Super-Convergence").

    Starts at ``max_lr / div_factor``, rises to ``max_lr`` over ``warmup_steps``,
    then falls to ``max_lr / final_div_factor`` at ``total_steps``.
    """

    def __init__(self, max_lr, total_steps, warmup_steps, div_factor=25.0, final_div_factor=1e4):
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        start, end = self.max_lr / self.div_factor, self.max_lr / self.final_div_factor
        warm = max(self.warmup_steps, 1)
        anneal = max(self.total_steps - self.warmup_steps, 1)
        up = ops.clip(step / warm, 0.0, 1.0)
        down = ops.clip((step - self.warmup_steps) / anneal, 0.0, 1.0)
        rising = start + (self.max_lr - start) * (1.0 - ops.cos(math.pi * up)) / 2.0
        falling = end + (self.max_lr - end) * (1.0 + ops.cos(math.pi * down)) / 2.0
        return ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor}


@keras.saving.register_keras_serializable(package="training")
class Stretched(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule`` read on a clock sped up or slowed down by ``scale``: step s gives ``schedule(s * scale)``.

    ``--time-budget`` builds the schedule for the epochs it plans, then, as the
    measured epochs come in, sets ``scale`` to planned / now-expected epochs,
    so the schedule reaches its end when the time does (``training.budget``).
    ``scale`` is a non-trainable variable, so changing it needs no recompile.
    """

    def __init__(self, schedule, scale=1.0):
        self.schedule = schedule
        self.scale = scale if isinstance(scale, keras.Variable) else keras.Variable(
            float(scale), trainable=False, dtype="float32", name="schedule_scale")

    def __call__(self, step):
        return self.schedule(keras.ops.cast(step, "float32") * self.scale)

    def get_config(self):
        return {"schedule": keras.saving.serialize_keras_object(self.schedule), "scale": float(self.scale.numpy())}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["scale"])


def make_schedule(kind, lr, *, steps_per_epoch, epochs, warmup_epochs=0, step_epochs=30, step_gamma=0.1):
    """A learning rate (float or schedule) for ``kind`` in ``SCHEDULES``.

    ``step`` multiplies the rate by ``step_gamma`` every ``step_epochs`` epochs
    (the ResNet paper's recipe); ``cosine`` decays to zero over the run after an
    optional linear warm-up; ``onecycle`` warms up for ``warmup_epochs`` (default
    30% of the run) and anneals.
    """
    total = max(1, steps_per_epoch * epochs)
    warmup = int(steps_per_epoch * warmup_epochs)
    if kind == "constant":
        return float(lr)
    if kind == "step":
        # PiecewiseConstantDecay switches *after* a boundary step, so step k*E*S - 1 is the last at the old rate.
        boundaries = [steps_per_epoch * e - 1 for e in range(step_epochs, epochs, step_epochs)]
        if not boundaries:
            return float(lr)
        values = [float(lr) * step_gamma ** i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if kind == "cosine":
        if warmup:
            return keras.optimizers.schedules.CosineDecay(0.0, max(1, total - warmup), warmup_target=float(lr),
                                                          warmup_steps=warmup)
        return keras.optimizers.schedules.CosineDecay(float(lr), total)
    if kind == "onecycle":
        return OneCycle(lr, total, warmup or int(0.3 * total))
    raise ValueError(f"Unknown schedule {kind!r} (valid: {', '.join(SCHEDULES)})")


def make_optimizer(name, learning_rate, *, momentum=0.9, nesterov=False, weight_decay=None, lr_multipliers=None,
                   ema=None):
    """SGD (with momentum, optionally Nesterov), Adam, AdamW or RMSprop.

    ``weight_decay`` is decoupled weight decay (Loshchilov & Hutter 2019) for
    every optimizer; None keeps each optimizer's own default.
    ``lr_multipliers`` ({variable path: factor}) gives chosen variables a
    smaller (or larger) rate; see ``transfer.discriminative_multipliers``.
    ``ema`` (a momentum): the optimizer also keeps a moving average of the
    weights, which ``training.callbacks.AveragedWeights`` evaluates and keeps.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r} (valid: {', '.join(OPTIMIZERS)})")
    extra = {} if weight_decay is None else {"weight_decay": float(weight_decay)}
    if name == "sgd":
        extra.update(momentum=momentum, nesterov=nesterov)
    elif name == "rmsprop":
        extra["momentum"] = 0.0 if momentum is None else momentum
    if ema is not None:
        extra.update(use_ema=True, ema_momentum=float(ema))
    if lr_multipliers:
        return LAYERWISE[name](learning_rate, lr_multipliers=lr_multipliers, **extra)
    return BASES[name](learning_rate, **extra)


class _LayerwiseRates:
    """Scales the learning rate of chosen variables: discriminative learning rates
    (Howard & Ruder 2018, "Universal Language Model Fine-tuning", section 3.2).

    Keras 3 optimizers have no parameter groups, so the scale is applied where
    each variable is updated.  ``lr_multipliers`` maps a variable's ``path``
    to its factor; variables not listed learn at the full rate.  The mapping
    is part of the optimizer's config, so a saved model reloads with it.
    Decoupled weight decay still uses the full rate.
    """

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # Looked up once per variable at trace time: a Python float, not a tensor lookup per step.
        self._scales = [self.lr_multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scales[compat.variable_index(self, variable)]
        return super().update_step(gradient, variable, learning_rate if scale == 1.0 else learning_rate * scale)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


def _layerwise(base):
    cls = type(f"Layerwise{base.__name__}", (_LayerwiseRates, base),
               {"__doc__": f"{base.__name__} with per-variable learning-rate factors (see _LayerwiseRates)."})
    return keras.saving.register_keras_serializable(package="training")(cls)


LAYERWISE = {name: _layerwise(base) for name, base in BASES.items()}
