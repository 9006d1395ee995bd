"""core.compat: each assumption about a library's internals, checked against the installed library.

No mocks: every test drives the real Keras, keras-tuner, TensorFlow or argparse
through the compat function and states what it expects with ``check``, so a
failure names the assumption that broke and the installed versions.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time

import keras
import keras_tuner
import numpy as np
import pytest

from core import compat
from helpers import crafted_keras_file
from core.compat import check


def tiny_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def test_check_names_the_assumption_and_the_installed_versions():
    with pytest.raises(compat.BrokenAssumption) as error:
        check("two and two make five", 2 + 2 == 5)
    message = str(error.value)
    assert "two and two make five" in message
    assert f"keras {keras.__version__}" in message and f"keras-tuner {keras_tuner.__version__}" in message
    with pytest.raises(compat.BrokenAssumption, match=r"a missing attribute .*\(AttributeError: "):
        check("a missing attribute is there", lambda: keras.no_such_attribute)
    check("a true condition passes", lambda: True)


# --- Keras: training --------------------------------------------------------------------------


def test_set_initial_epoch_moves_where_fit_starts_and_none_undoes_it():
    class StartAfter(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch

        def on_train_begin(self, logs=None):
            compat.set_initial_epoch(self.model, self.epoch)

    model = tiny_model()
    model.compile("sgd", "mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[StartAfter(2)])
    check("fit() starts after the epoch set by set_initial_epoch in on_train_begin", history.epoch == [2])
    history = model.fit(x, y, epochs=3, verbose=0)
    check("Keras keeps _initial_epoch between fits (why ResumableCheckpoint clears it)", history.epoch == [2])
    compat.set_initial_epoch(model, None)
    history = model.fit(x, y, epochs=2, verbose=0)
    check("set_initial_epoch(model, None) lets fit() start at its own initial_epoch", history.epoch == [0, 1])


def test_variable_index_is_the_position_in_the_built_variable_list():
    seen = []

    class Recording(keras.optimizers.SGD):
        def update_step(self, gradient, variable, learning_rate):
            # Under TensorFlow this is the backing tf.Variable, named like the Keras one ("v1:0").
            seen.append((variable.name.split(":")[0], compat.variable_index(self, variable)))
            return super().update_step(gradient, variable, learning_rate)

    variables = [keras.Variable(np.ones(2, "float32"), name=f"v{i}") for i in range(3)]
    optimizer = Recording(0.1)
    optimizer.build(variables)
    check("variable_index gives each variable's position in the list the optimizer was built with",
          lambda: [compat.variable_index(optimizer, v) for v in variables] == [0, 1, 2])
    optimizer.apply_gradients([(np.ones(2, "float32"), v) for v in reversed(variables)])
    check("variable_index finds the variable update_step receives at its position in the built list",
          sorted(seen) == [(f"v{i}", i) for i in range(3)])


def test_attach_assets_copies_files_into_the_savedmodel(tmp_path):
    import tensorflow as tf

    model = tiny_model()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda x: model(x), input_signature=[tf.TensorSpec((None, 3), tf.float32)])
    compat.attach_assets(archive, {"notes_file": str(notes)})
    archive.write_out(str(tmp_path / "export"), verbose=False)
    copied = tmp_path / "export" / "assets" / "notes.txt"
    check("an asset attached to ExportArchive._tf_trackable is copied into the SavedModel's assets/",
          copied.is_file() and copied.read_text() == "hello")
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    check("the loaded SavedModel has the asset as the attribute it was attached as",
          lambda: os.path.basename(loaded.notes_file.asset_path.numpy().decode()) == "notes.txt")


def test_scale_normalization_variance_divides_by_the_scaled_deviation():
    layer = keras.layers.Normalization(axis=-1)  # no mean/variance given: as in Keras' EfficientNet
    layer.build((None, 3))
    factors = np.array([4.0, 1.0, 0.25], "float32")
    x = np.array([[2.0, 3.0, -1.0]], "float32")
    before = np.asarray(layer(x))
    compat.scale_normalization_variance(layer, factors)
    check("Normalization divides by sqrt(adapt_variance) once finalize_state() has run",
          np.allclose(np.asarray(layer(x)), before / np.sqrt(factors), rtol=1e-5))


# --- Keras and TensorFlow: multi-worker fit -------------------------------------------------------


def test_in_multi_worker_mode_is_false_on_one_machine():
    """The True case is tests/test_distribute.py's two real workers (only the chief exports)."""
    import tensorflow as tf

    check("the default strategy's extended._in_multi_worker_mode() is False",
          lambda: compat.in_multi_worker_mode(tf.distribute.get_strategy()) is False)
    check("MirroredStrategy's extended._in_multi_worker_mode() is False",
          lambda: compat.in_multi_worker_mode(tf.distribute.MirroredStrategy(["/cpu:0"])) is False)
    assert compat.in_multi_worker_mode(None) is False


def test_patch_multi_worker_fit_leaves_other_strategies_fitting():
    """The patch checks Keras' signatures itself; the patched fit under MultiWorkerMirroredStrategy is
    tests/test_distribute.py's two-worker run.  Here: fit under another strategy goes through the
    patched functions to Keras' own, with the arguments Keras passes."""
    import tensorflow as tf

    compat.patch_multi_worker_fit()
    compat.patch_multi_worker_fit()  # idempotent
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = tiny_model()
        model.compile("sgd", "mse", metrics=["mae"])
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    check("fit() under a MirroredStrategy still works through the patched _maybe_symbolic_build and "
          "reduce_per_replica", np.isfinite(history.history["loss"][0]) and "mae" in history.history)


# --- Keras: the wording of its errors -------------------------------------------------------------


def test_download_failure_url_reads_kerass_get_file_error(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: the fetch fails at once, offline too
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights_notop.h5"
    with pytest.raises(Exception) as error:
        keras.utils.get_file("weights_notop.h5", origin=url, cache_dir=str(tmp_path))
    check(f"keras.utils.get_file fails with 'URL fetch failure on URL: ...' (got {error.value!r})",
          compat.download_failure_url(error.value) == url)
    assert compat.download_failure_url(ValueError("something else")) is None


def _innermost_first_line(error: BaseException) -> str:
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return str(error).strip().splitlines()[0]


def test_is_lambda_refusal_recognises_safe_modes_refusal(tmp_path):
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs)).save(tmp_path / "lambda.keras")
    with pytest.raises(Exception) as error:
        keras.models.load_model(tmp_path / "lambda.keras", safe_mode=True, compile=False)
    text = _innermost_first_line(error.value)
    check(f"load_model(safe_mode=True) refuses a Lambda layer naming Lambda and safe_mode (got {text!r})",
          compat.is_lambda_refusal(text))
    assert not compat.is_lambda_refusal("Could not locate class 'Dense'")


def test_unknown_object_name_reads_kerass_unknown_class_error(tmp_path):

    crafted_keras_file(tiny_model(), str(tmp_path), module="no_such_package", class_name="Mystery")
    with pytest.raises(Exception) as error:
        keras.models.load_model(tmp_path / "crafted.keras", safe_mode=True, compile=False)
    text = _innermost_first_line(error.value)
    check(f"load_model says \"Could not locate class 'NAME'\" for a class it does not know (got {text!r})",
          compat.unknown_object_name(text) == "Mystery")
    assert compat.unknown_object_name("something else") is None


# --- keras-tuner ----------------------------------------------------------------------------------


class QuickTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """A real keras-tuner tuner whose trials return at once: ``score(values)`` or a failure."""

    def __init__(self, oracle, directory, score=None):
        self.score = score
        super().__init__(oracle, directory=str(directory), project_name="search")

    def run_trial(self, trial, *args, **kwargs):
        if self.score is None:
            raise keras_tuner.errors.FailedTrialError("this trial fails on purpose")
        return {"val_accuracy": self.score(trial.hyperparameters.values)}

    def save_model(self, trial_id, model, step=0):
        pass


def space():
    hp = keras_tuner.HyperParameters()
    hp.Choice("units", [8, 16, 32, 64], default=32)
    return hp


def oracle_of(oracle_class, **kwargs):
    """An oracle over ``space()``; Hyperband takes max_epochs where the others take max_trials."""
    if issubclass(oracle_class, keras_tuner.oracles.HyperbandOracle):
        kwargs = {"max_epochs": 3, **{k: v for k, v in kwargs.items() if k != "max_trials"}}
    else:
        kwargs.setdefault("max_trials", 3)
    return oracle_class(objective=keras_tuner.Objective("val_accuracy", "max"), hyperparameters=space(), seed=0,
                        **kwargs)


@pytest.mark.parametrize("oracle_class", [keras_tuner.oracles.RandomSearchOracle, keras_tuner.oracles.HyperbandOracle,
                                          keras_tuner.oracles.BayesianOptimizationOracle])
def test_proposing_first_makes_the_oracles_first_proposal(oracle_class):
    # 17 is not one of the space's choices: only the proposal can have put it there.
    oracle = oracle_of(compat.proposing_first(oracle_class, lambda oracle: {"units": 17}))
    response = oracle.populate_space("0")
    check(f"{oracle_class.__name__}.populate_space takes its first values from _random_values()",
          lambda: response["values"]["units"] == 17)


def test_already_tried_knows_the_values_of_created_trials(tmp_path):
    oracle_class = compat.proposing_first(keras_tuner.oracles.RandomSearchOracle,
                                          lambda o: None if compat.already_tried(o, {"units": 32}) else {"units": 32})
    oracle = oracle_of(oracle_class)
    tuner = QuickTuner(oracle, tmp_path, score=lambda values: values["units"] / 64)
    tuner.search(verbose=0)
    tried = [t.hyperparameters.values["units"] for t in sorted(oracle.trials.values(), key=lambda t: t.trial_id)]
    check("the oracle's _duplicate(values) is True for a created trial's values, so the proposal is made once",
          tried[0] == 32 and tried.count(32) == 1 and compat.already_tried(oracle, {"units": 32}))
    check("already_tried is False for values no trial had",
          not compat.already_tried(oracle, {"units": next(u for u in (8, 16, 32, 64) if u not in tried)}))


def test_print_failed_trial_tracebacks_switches_kerastuners_printing(tmp_path, capsys):
    try:
        for enabled in (True, False):
            compat.print_failed_trial_tracebacks(enabled)
            oracle = oracle_of(keras_tuner.oracles.RandomSearchOracle, max_trials=1, max_consecutive_failed_trials=3)
            QuickTuner(oracle, tmp_path / str(enabled)).search(verbose=0)
            printed = capsys.readouterr()
            trial = next(iter(oracle.trials.values()))
            check(f"with keras_tuner.src.config.DEBUG = {enabled} a failed trial's traceback is "
                  f"{'' if enabled else 'not '}printed, and kept in trial.message either way",
                  ("Traceback" in printed.err + printed.out) == enabled and "on purpose" in trial.message)
    finally:
        compat.print_failed_trial_tracebacks(False)  # the project's setting (tuning.search sets it on import)


def test_is_failure_limit_recognises_kerastuners_error(tmp_path):
    compat.print_failed_trial_tracebacks(False)
    oracle = oracle_of(keras_tuner.oracles.RandomSearchOracle, max_trials=5, max_consecutive_failed_trials=2)
    with pytest.raises(RuntimeError) as error:
        QuickTuner(oracle, tmp_path).search(verbose=0)
    check(f"keras-tuner stops after max_consecutive_failed_trials with a RuntimeError naming "
          f"'consecutive failures' (got {str(error.value).splitlines()[0]!r})", compat.is_failure_limit(error.value))
    assert not compat.is_failure_limit(RuntimeError("out of memory"))


def test_is_chief_oracle_reads_kerastuners_variables(monkeypatch):
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)
    check("without KERASTUNER_ORACLE_IP no process is the chief", compat.is_chief_oracle() is False)
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    check("KERASTUNER_TUNER_ID=chief with the oracle's address set is the chief", compat.is_chief_oracle() is True)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    check("KERASTUNER_TUNER_ID=tuner0 is a worker", compat.is_chief_oracle() is False)


def test_start_oracle_server_serves_a_real_worker_until_it_is_done(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(port))
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    chief = QuickTuner(oracle_of(keras_tuner.oracles.RandomSearchOracle, max_trials=2), tmp_path / "chief")
    chief.oracle.verbose = 0
    server, finished = compat.start_oracle_server(chief.oracle, f"127.0.0.1:{port}")
    try:
        check("the chief is not finished before any worker has asked for a trial", finished() is False)
        monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
        worker = QuickTuner(oracle_of(keras_tuner.oracles.RandomSearchOracle, max_trials=2), tmp_path / "worker",
                            score=lambda values: 0.5)
        thread = threading.Thread(target=worker.search, kwargs={"verbose": 0}, daemon=True)
        thread.start()
        deadline = time.time() + 60
        while not finished() and time.time() < deadline:
            time.sleep(0.1)
        thread.join(timeout=10)
        statuses = sorted(t.status for t in chief.oracle.trials.values())
        check(f"a worker runs the chief's trials over gRPC until told to stop, and then OracleServicer's "
              f"stop_triggered and exit_chief() say the chief is finished (trials: {statuses})",
              finished() and statuses == ["COMPLETED", "COMPLETED"] and not thread.is_alive())
    finally:
        server.stop(grace=1)


# --- argparse -------------------------------------------------------------------------------------


def test_parser_actions_lists_every_argument_in_order():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int)
    group = parser.add_argument_group("Model")
    group.add_argument("--batch-norm", action=argparse.BooleanOptionalAction)
    actions = compat.parser_actions(parser)
    check("ArgumentParser._actions holds help and every argument, its groups' included, in order",
          [a.dest for a in actions] == ["help", "epochs", "batch_norm"])
    check("a BooleanOptionalAction's option_strings hold both spellings",
          actions[-1].option_strings == ["--batch-norm", "--no-batch-norm"])


def test_tflite_ops_reads_the_operators_of_a_converted_model(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path = tmp_path / "model.tflite"
    path.write_bytes(converter.convert())
    ops, float_ops = compat.tflite_ops(str(path))
    check("tflite_ops reads builtin operator names from the flatbuffer", "FULLY_CONNECTED" in ops)
    check("tflite_ops marks float32 outputs", "SOFTMAX" in float_ops)
    assert not any(op.startswith("CUSTOM:") for op in ops)
