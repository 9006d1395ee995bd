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
