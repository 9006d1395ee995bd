"""Optimizers, schedules, class weights and run-directory bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from training import rundir
from training.optim import OneCycle, make_optimizer, make_schedule
from training.run import DEFAULTS, class_weights


def values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_step_schedule_divides_by_gamma_at_each_boundary():
    schedule = make_schedule("step", 0.1, steps_per_epoch=10, epochs=90, step_epochs=30, step_gamma=0.1)
    np.testing.assert_allclose(values(schedule, [0, 299, 300, 599, 600, 899]), [0.1, 0.1, 0.01, 0.01, 0.001, 0.001],
                               rtol=1e-5)


def test_cosine_warms_up_linearly_then_decays_to_zero():
    schedule = make_schedule("cosine", 0.4, steps_per_epoch=10, epochs=10, warmup_epochs=2)
    lr = values(schedule, [0, 10, 20, 60, 100])
    assert lr[0] == pytest.approx(0.0, abs=1e-6) and lr[1] == pytest.approx(0.2, rel=1e-3)
    assert lr[2] == pytest.approx(0.4, rel=1e-3) and lr[2] > lr[3] > lr[4]
    assert lr[4] == pytest.approx(0.0, abs=1e-3)


def test_onecycle_peaks_at_the_end_of_warmup_and_survives_serialization():
    schedule = make_schedule("onecycle", 1.0, steps_per_epoch=10, epochs=10)
    lr = values(schedule, range(0, 101))
    assert lr.argmax() == 30 and lr.max() == pytest.approx(1.0, rel=1e-4)
    assert lr[0] == pytest.approx(1.0 / 25) and lr[-1] == pytest.approx(1e-4, rel=1e-2)
    again = OneCycle.from_config(schedule.get_config())
    np.testing.assert_allclose(values(again, [5, 50]), values(schedule, [5, 50]))


def test_constant_schedule_and_optimizers():
    assert make_schedule("constant", 0.01, steps_per_epoch=1, epochs=1) == 0.01
    sgd = make_optimizer("sgd", 0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    assert sgd.nesterov and float(sgd.momentum) == pytest.approx(0.9) and sgd.weight_decay == pytest.approx(5e-4)
    import keras

    for name, kind in (("adam", keras.optimizers.Adam), ("adamw", keras.optimizers.AdamW),
                       ("rmsprop", keras.optimizers.RMSprop)):
        assert type(make_optimizer(name, 1e-3)) is kind
    with pytest.raises(ValueError, match="Unknown optimizer 'adagrad'"):
        make_optimizer("adagrad", 1e-3)
    with pytest.raises(ValueError, match="Unknown schedule"):
        make_schedule("linear", 0.1, steps_per_epoch=1, epochs=1)


def test_balanced_class_weights_favour_the_rare_class():
    labels = np.array([0] * 90 + [1] * 10)
    weights = class_weights({**DEFAULTS, "class_weight": "balanced"}, labels, 3)
    assert weights[1] == pytest.approx(5.0) and weights[0] == pytest.approx(100 / 180)
    assert weights[2] == 1.0  # absent from train: neutral weight
    assert class_weights(DEFAULTS, labels, 3) is None


def test_run_directory_choice_resumes_only_the_same_unfinished_configuration(tmp_path):
    config = {**DEFAULTS, "epochs": 5}
    path, resuming, _ = rundir.choose(str(tmp_path), "r", config)
    assert (path, resuming) == (str(tmp_path / "r"), False)
    (tmp_path / "r").mkdir()
    rundir.write_json(str(tmp_path / "r" / "config.json"), config)
    assert rundir.choose(str(tmp_path), "r", {**config, "export_dir": "elsewhere"})[:2] == (path, True)
    other, resuming, notes = rundir.choose(str(tmp_path), "r", {**config, "epochs": 9})
    assert (other, resuming) == (str(tmp_path / "r-2"), False) and "epochs" in notes[0]
    rundir.write_json(str(tmp_path / "r" / "metrics.json"), {})
    assert rundir.choose(str(tmp_path), "r", config)[:2] == (str(tmp_path / "r-2"), False)


def test_averaged_weights_are_validated_and_kept_while_training_goes_on_from_the_trained_ones():
    import keras

    from training.callbacks import AveragedWeights

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")
    x_val, y_val = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    keras.utils.set_random_seed(0)
    start = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).get_weights()

    def fit(ema, callbacks):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.set_weights(start)
        model.compile(make_optimizer("sgd", 0.05, ema=ema), "mse")
        model.fit(x, y, validation_data=(x_val, y_val), epochs=3, batch_size=8, shuffle=False, verbose=0,
                  callbacks=callbacks)
        return model

    seen = {"averaged": [], "trained": [], "logged": [], "evaluated": []}

    class Look(keras.callbacks.Callback):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def on_epoch_end(self, epoch, logs=None):
            seen[self.key].append(self.model.get_weights())
            if self.key == "averaged":  # the model as validated is the one in place now
                seen["logged"].append(logs["val_loss"])
                seen["evaluated"].append(self.model.evaluate(x_val, y_val, verbose=0))

    averaged = AveragedWeights()
    model = fit(0.5, [averaged, Look("averaged"), averaged.back, Look("trained")])
    # The same fit without an average: the trained weights take the same path, epoch by epoch.
    seen["plain"] = []
    fit(None, [Look("plain")])
    for plain, trained in zip(seen["plain"], seen["trained"]):
        for a, b in zip(plain, trained):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert seen["logged"] == pytest.approx(seen["evaluated"], rel=1e-5)
    for avg, trained in zip(seen["averaged"], seen["trained"]):
        assert not np.allclose(avg[0], trained[0])  # the average lags the trained weights
    # What is kept at the end is the last average; training itself never saw the averages.
    for kept, avg in zip(model.get_weights(), seen["averaged"][-1]):
        np.testing.assert_allclose(kept, avg, rtol=1e-6)


def test_a_run_with_ema_keeps_the_averaged_weights_it_validated(tmp_path):
    from training.run import fit, prepare

    config = {**DEFAULTS, "epochs": 2, "ema": 0.9, "patience": 0, "verbose": 0, "runs_dir": str(tmp_path)}
    run = prepare(config, log=lambda *_: None)
    fitted = fit(run)
    # The model kept is the best epoch's average: validating it again gives the loss the history logged.
    loss, _ = run.model.evaluate(run.val_ds, verbose=0)
    assert loss == pytest.approx(fitted["best_val_loss"], rel=1e-4)
    assert fitted["best_val_loss"] == pytest.approx(min(row["val_loss"] for row in fitted["history"]))


def test_ema_outside_zero_to_one_is_refused_with_what_it_is():
    import train as train_cli
    from core.errors import UserError
    from training.config import check_config, complete

    config, _ = train_cli.resolve_config(["--ema", "1.5"])
    with pytest.raises(UserError, match=r"--ema is the moving average's momentum, in \(0, 1\)"):
        check_config(complete(config))
    assert train_cli.resolve_config(["--ema", "0.999"])[0]["ema"] == 0.999
