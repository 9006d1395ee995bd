"""--time-budget: epochs sized to the minutes from measured steps, a schedule that ends with the time."""

from __future__ import annotations

import json
import types

import keras
import numpy as np
import pytest

from core.errors import UserError
from training import budget
from training.config import check_config, complete
from training.optim import Stretched
from training.run import train


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def deadline(tmp_path, plan, *, most=100):
    scale = keras.Variable(budget.scale(plan), trainable=False, dtype="float32")
    clock = Clock()
    callback = budget.Deadline(str(tmp_path), plan, scale, started=clock.now, most=most, clock=clock)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.stop_training = False  # as fit sets it
    callback.set_model(model)
    return callback, scale, clock


def epoch(callback, clock, index, seconds):
    callback.on_epoch_begin(index)
    clock.now += seconds
    callback.on_epoch_end(index)


def test_the_deadline_replans_from_measured_epochs_and_stops_when_no_epoch_fits(tmp_path):
    # Planned 10 epochs of 6 s in a minute; the epochs really take 10 s.
    plan = {"minutes": 1.0, "epochs": 10, "epoch_seconds": 6.0}
    callback, scale, clock = deadline(tmp_path, plan)
    epoch(callback, clock, 0, 10.0)
    # 50 s left at 10 s an epoch: 5 more, 6 in all; the schedule's clock runs 10/6 as fast.
    saved = json.loads((tmp_path / budget.PLAN).read_text())
    assert saved["total_epochs"] == 6 and saved["spent_seconds"] == pytest.approx(10.0)
    assert float(scale.numpy()) == pytest.approx(10 / 6)
    assert not callback.model.stop_training
    for index in range(1, 5):
        epoch(callback, clock, index, 10.0)
        assert not callback.model.stop_training
    epoch(callback, clock, 5, 10.0)  # 60 s spent: no epoch fits any more
    assert callback.model.stop_training
    assert json.loads((tmp_path / budget.PLAN).read_text())["total_epochs"] == 6


def test_a_resumed_budget_counts_the_time_already_spent(tmp_path):
    plan = {"minutes": 1.0, "epochs": 10, "epoch_seconds": 6.0, "spent_seconds": 40.0, "total_epochs": 7}
    callback, scale, clock = deadline(tmp_path, plan)
    assert float(scale.numpy()) == pytest.approx(10 / 7)  # the clock scale the killed run had reached
    epoch(callback, clock, 4, 6.0)  # 46 s spent, 14 s left: two more 6 s epochs
    assert json.loads((tmp_path / budget.PLAN).read_text())["total_epochs"] == 7
    assert float(scale.numpy()) == pytest.approx(10 / 7)


def test_a_stretched_schedule_reads_its_schedule_on_a_scaled_clock_and_round_trips():
    cosine = keras.optimizers.schedules.CosineDecay(1.0, 100)
    stretched = Stretched(cosine, 1.0)
    assert float(stretched(50)) == pytest.approx(float(cosine(50)))
    stretched.scale.assign(2.0)
    assert float(stretched(50)) == pytest.approx(float(cosine(100)), abs=1e-7)  # the end, half-way through
    again = Stretched.from_config(stretched.get_config())
    assert float(again(30)) == pytest.approx(float(cosine(60)))


def test_a_budgeted_run_plans_its_epochs_and_its_schedule_ends_with_them(tmp_path):
    lines = []
    metrics = train({"dataset": "digits", "model": "mlp", "time_budget": 0.1, "runs_dir": str(tmp_path),
                     "export": False, "verbose": 0, "patience": 0}, log=lines.append)
    line = next(line for line in lines if line.startswith("Time budget 0.1 min"))
    assert "epochs" in line and "schedule is resized" in line
    record = metrics["time_budget"]
    plan = json.loads((tmp_path / metrics["run_dir"].split("/")[-1] / budget.PLAN).read_text())
    assert plan["train_step_seconds"] > 0 and plan["epoch_seconds"] > 0 and plan["epochs"] >= 1
    # The epochs run are the ones the last re-plan expected, and the schedule's clock was scaled to end there.
    assert metrics["epochs_run"] == record["epochs"] == plan["total_epochs"]
    assert record["planned_epochs"] == plan["epochs"]
    assert 0 < record["spent_seconds"]


def test_a_resumed_run_reads_its_plan_instead_of_measuring_again(tmp_path, monkeypatch):
    plan = {"minutes": 2.0, "epochs": 17, "epoch_seconds": 3.0, "spent_seconds": 12.0}
    (tmp_path / budget.PLAN).write_text(json.dumps(plan))

    def no_measuring(*_):
        raise AssertionError("measured again")

    monkeypatch.setattr(budget, "measure", no_measuring)
    run = types.SimpleNamespace(run_dir=str(tmp_path), resuming=True)
    assert budget.plan_epochs(run, None, 2.0, None) == plan


@pytest.mark.parametrize("config, words", [
    ({"time_budget": 0}, "--time-budget must be a number of minutes > 0"),
    ({"time_budget": 5, "backbone": "mobilenet_v2", "finetune_epochs": 3}, "with --finetune-epochs there are two"),
])
def test_a_budget_that_cannot_apply_is_refused_in_one_line(config, words):
    with pytest.raises(UserError) as error:
        check_config(complete(config))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_measuring_leaves_the_weights_as_they_were():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(64) % 3]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    measured = budget.measure(model, data, data, 8,
                              lambda m: m.compile(optimizer="sgd", loss="categorical_crossentropy"))
    assert measured["epoch_seconds"] > 0
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


# --- --precision and --jit-compile -----------------------------------------------------------

@pytest.mark.parametrize("precision, model", [("mixed_bfloat16", "lenet5_modern"), ("mixed_float16", "mlp")])
def test_a_mixed_precision_run_learns_gives_float32_outputs_and_leaves_the_policy_as_it_was(
        tmp_path, precision, model):
    from core.model import inference_model
    from training.run import prepare

    metrics = train({"dataset": "digits", "model": model, "epochs": 3, "precision": precision,
                     "runs_dir": str(tmp_path), "export_dir": str(tmp_path / "exports"), "verbose": 0})
    assert keras.config.dtype_policy().name == "float32"
    assert metrics["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    run = prepare({"dataset": "digits", "model": model, "epochs": 1, "precision": precision,
                   "runs_dir": str(tmp_path / "again"), "verbose": 0}, log=lambda *_: None)
    assert keras.config.dtype_policy().name == "float32"
    layers = [layer for layer in run.model._flatten_layers() if layer.weights]
    assert any(layer.dtype_policy.name == precision for layer in layers)
    assert run.model.outputs[0].dtype == "float32"
    assert inference_model(run.model).outputs[0].dtype == "float32"
    # The exported SavedModel serves float32 probabilities that sum to one.
    import tensorflow as tf

    served = tf.saved_model.load(metrics["export_path"]).signatures["serving_default"]
    images = np.zeros((2, 8, 8, 1), np.float32)
    probabilities = served(tf.constant(images))["probabilities"]
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(-1), 1.0, atol=1e-3)


def test_mixed_float16_scales_the_loss_and_jit_compile_reaches_keras(tmp_path):
    from training.run import compile_model, prepare

    run = prepare({"dataset": "digits", "model": "mlp", "epochs": 1, "precision": "mixed_float16",
                   "jit_compile": True, "runs_dir": str(tmp_path), "verbose": 0}, log=lambda *_: None)
    compile_model(run.model, run.config, run.steps)
    assert isinstance(run.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert run.model.jit_compile is True
    history = run.model.fit(run.train_ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_noisy_probe_never_times_a_step_at_zero(monkeypatch):
    import tensorflow as tf

    # Fits of 5 and 15 steps that took the same time: a busy machine can give that.
    clock = iter([0.0, 3.0, 10.0, 13.0])
    monkeypatch.setattr(budget.time, "perf_counter", lambda: next(clock))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    data = tf.data.Dataset.from_tensor_slices((np.zeros((8, 2), "float32"), np.eye(2, dtype="float32")[[0, 1] * 4]))
    assert budget._fit_step(model, data.batch(4)) == pytest.approx(3.0 / 15)
