"""core.compat: each assumption about a library's internals, checked against the installed library.

No mocks: every test drives the real Keras, keras-tuner, TensorFlow or argparse
through the compat function and states what it expects with ``check``, so a
failure names the assumption that broke and the installed versions.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
import warnings

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


def test_ema_pairs_pairs_each_trained_variable_with_its_own_moving_average():
    variables = [keras.Variable(np.full(2, 1.0, "float32"), name=f"v{i}") for i in range(3)]
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
    optimizer.build(variables)
    for _ in range(2):  # variable i falls by 0.1 * (i + 1) a step; its average is the variable after step 1,
        optimizer.apply_gradients([(np.full(2, i + 1.0, "float32"), v) for i, v in enumerate(variables)])
    pairs = compat.ema_pairs(optimizer)  # then halfway to it after step 2
    check("ema_pairs gives the trained variables in order, each with its own moving average",
          [v.name for v, _ in pairs] == ["v0", "v1", "v2"]
          and all(np.allclose(average.numpy(), 1 - 0.15 * (i + 1)) for i, (_, average) in enumerate(pairs)))


def test_serialize_as_saves_a_subclass_under_the_public_keras_name():
    class Quieter(keras.layers.BatchNormalization):
        pass

    assert keras.saving.serialize_keras_object(Quieter())["class_name"] == "Quieter"
    compat.serialize_as(Quieter, keras.layers.BatchNormalization)
    saved = keras.saving.serialize_keras_object(Quieter(momentum=0.5))
    assert (saved["module"], saved["class_name"], saved["registered_name"]) == \
        ("keras.layers", "BatchNormalization", None)
    restored = keras.saving.deserialize_keras_object(saved)
    assert type(restored) is keras.layers.BatchNormalization and restored.momentum == 0.5


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
    check("the chief is not a worker", compat.is_worker() is False)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    check("KERASTUNER_TUNER_ID=tuner0 is a worker", compat.is_chief_oracle() is False and compat.is_worker() is True)
    monkeypatch.delenv("KERASTUNER_ORACLE_IP")
    check("without KERASTUNER_ORACLE_IP no process is a worker", compat.is_worker() is False)


def test_waiting_for_running_trials_keeps_a_worker_asking_while_another_runs_a_trial(tmp_path):
    plain = oracle_of(keras_tuner.oracles.RandomSearchOracle, max_trials=2)
    waiting = oracle_of(compat.waiting_for_running_trials(keras_tuner.oracles.RandomSearchOracle), max_trials=2)
    for name, oracle in (("plain", plain), ("waiting", waiting)):
        QuickTuner(oracle, tmp_path / name)  # gives the oracle its folder
        first, second = oracle.create_trial("tuner0"), oracle.create_trial("tuner1")
        first.status = "COMPLETED"
        oracle.update_trial(first.trial_id, {"val_accuracy": 0.5})
        oracle.end_trial(first)
        asked = oracle.create_trial("tuner0")  # no trial is left, and tuner1 still runs one
        expected = "STOPPED" if name == "plain" else "IDLE"
        check(f"create_trial answers {expected} {'' if name == 'plain' else 'with waiting_for_running_trials '}"
              f"when no trial is left but another worker runs one (got {asked.status})", asked.status == expected)
        check(f"the worker told {expected} is {'no longer' if name == 'plain' else 'still'} in tuner_ids",
              ("tuner0" in oracle.tuner_ids) == (name == "waiting"))
    second.status = "COMPLETED"
    waiting.update_trial(second.trial_id, {"val_accuracy": 0.6})
    waiting.end_trial(second)
    check("once no other trial runs, create_trial answers STOPPED", waiting.create_trial("tuner0").status == "STOPPED")


def test_drop_worker_puts_its_trial_back_in_the_queue_then_fails_it(tmp_path):
    oracle = oracle_of(compat.waiting_for_running_trials(keras_tuner.oracles.RandomSearchOracle), max_trials=2)
    QuickTuner(oracle, tmp_path)
    lost, other = oracle.create_trial("tuner1"), oracle.create_trial("tuner0")
    check("oracle_workers reads each worker's running trial from ongoing_trials",
          compat.oracle_workers(oracle) == {"tuner1": lost.trial_id, "tuner0": other.trial_id})
    check("drop_worker returns the dropped worker's trial as INVALID (queued)",
          compat.drop_worker(oracle, "tuner1", "tuner1 stopped answering", runs=2) == (lost.trial_id, "INVALID"))
    check("a dropped worker leaves tuner_ids and ongoing_trials",
          compat.oracle_workers(oracle) == {"tuner0": other.trial_id})
    other.status = "COMPLETED"
    oracle.update_trial(other.trial_id, {"val_accuracy": 0.5})
    oracle.end_trial(other)
    again = oracle.create_trial("tuner0")
    check("create_trial hands the queued trial (_retry_queue) to the next worker that asks, as RUNNING",
          again.trial_id == lost.trial_id and again.status == "RUNNING")
    check("a trial whose worker is lost `runs` times is FAILED with the message, in end_order",
          compat.drop_worker(oracle, "tuner0", "tuner0 stopped answering", runs=2) == (lost.trial_id, "FAILED")
          and oracle.trials[lost.trial_id].message == "tuner0 stopped answering"
          and oracle.end_order[-1] == lost.trial_id)
    check("drop_worker of a worker that runs no trial returns (None, None)",
          compat.drop_worker(oracle, "tuner9", "gone", runs=2) == (None, None))
    check("with every trial ended and no worker left, the search is over",
          compat.oracle_workers(oracle) == {} and oracle.create_trial("tuner0").status == "STOPPED")
    saved = json.loads((tmp_path / "search" / f"trial_{lost.trial_id}" / "trial.json").read_text())
    state = json.loads((tmp_path / "search" / "oracle.json").read_text())
    check("drop_worker saves what it did (the trial's trial.json and the oracle's oracle.json)",
          saved["status"] == "FAILED" and saved["message"] == "tuner0 stopped answering"
          and state["retry_queue"] == [] and state["ongoing_trials"] == {})


def chief_environment(monkeypatch) -> int:
    """A free localhost port, and this process as the chief of a distributed search on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", str(port))
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    return port


def search_until_finished(worker, finished, timeout: float = 60) -> threading.Thread:
    """Runs ``worker.search`` in a thread until the chief says it is finished (or ``timeout``); the thread."""
    thread = threading.Thread(target=worker.search, kwargs={"verbose": 0}, daemon=True)
    thread.start()
    deadline = time.time() + timeout
    while not finished() and time.time() < deadline:
        time.sleep(0.1)
    thread.join(timeout=10)
    return thread


def test_start_oracle_server_serves_a_real_worker_until_it_is_done(tmp_path, monkeypatch):
    port = chief_environment(monkeypatch)
    chief = QuickTuner(oracle_of(keras_tuner.oracles.RandomSearchOracle, max_trials=2), tmp_path / "chief")
    chief.oracle.verbose = 0
    server, finished = compat.start_oracle_server(chief.oracle, f"127.0.0.1:{port}")
    try:
        check("the chief is not finished before any worker has asked for a trial", finished() is False)
        monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
        worker = QuickTuner(oracle_of(keras_tuner.oracles.RandomSearchOracle, max_trials=2), tmp_path / "worker",
                            score=lambda values: 0.5)
        thread = search_until_finished(worker, finished)
        statuses = sorted(t.status for t in chief.oracle.trials.values())
        check(f"a worker runs the chief's trials over gRPC until told to stop, and then OracleServicer's "
              f"stop_triggered and exit_chief() say the chief is finished (trials: {statuses})",
              finished() and statuses == ["COMPLETED", "COMPLETED"] and not thread.is_alive())
    finally:
        server.stop(grace=1)


def test_start_oracle_server_says_who_calls_and_gives_failed_trials_a_message(tmp_path, monkeypatch):
    port = chief_environment(monkeypatch)
    oracle_class = compat.waiting_for_running_trials(keras_tuner.oracles.RandomSearchOracle)
    chief = QuickTuner(oracle_of(oracle_class, max_trials=3), tmp_path / "chief")
    chief.oracle.verbose = 0
    calls = []
    server, finished = compat.start_oracle_server(chief.oracle, f"127.0.0.1:{port}",
                                                  heard=lambda **call: calls.append(call),
                                                  failure_message=lambda trial_id: f"trial {trial_id}: no room")
    ran = []

    def score(values):  # the first trial: the chief drops its worker, which reports anyway; the second fails
        ran.append(len(ran))
        if ran == [0]:
            compat.drop_worker(chief.oracle, "tuner0", "tuner0 stopped answering", runs=2)
            return 0.5
        if ran == [0, 1]:
            raise ValueError("out of room")
        return 0.7

    try:
        monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
        worker = QuickTuner(oracle_of(oracle_class, max_trials=3), tmp_path / "worker", score=score)
        thread = search_until_finished(worker, finished)
        trials = [chief.oracle.trials[key] for key in sorted(chief.oracle.trials)]
        check(f"heard() gets the worker's id as it asks for a trial, and the trial's id with its other calls "
              f"(got {calls[:4]})", {"tuner_id": "tuner0"} in calls and {"trial_id": trials[0].trial_id} in calls)
        check(f"a trial reported finished after its worker was dropped is taken out of the queue, not run again "
              f"(ran {ran}, statuses {[t.status for t in trials]})",
              ran == [0, 1, 2] and [t.status for t in trials] == ["COMPLETED", "FAILED", "COMPLETED"])
        check("a failed trial's message is failure_message(trial_id) (gRPC's trial carries none)",
              trials[1].message == f"trial {trials[1].trial_id}: no room")
        check("the chief finishes once its worker is told to stop", finished() and not thread.is_alive())
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


def int8_dense_model():
    """A Keras Dense+softmax model (its layer named ``scores``) as int8 .tflite bytes with a float32 input."""
    import tensorflow as tf

    inputs = keras.Input((4,))
    scores = keras.layers.Dense(3, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=7),
                                name="scores")  # a seed whose answer is not a saturated softmax
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, scores(inputs)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [np.random.default_rng(i).uniform(0, 255, (1, 4)).astype("float32")] for i in range(20))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a notice about quantized_input_stats, which calibration does not use
        return converter.convert()


def test_tflite_nodes_name_each_ops_outputs_after_its_layer(tmp_path):
    content = int8_dense_model()
    nodes = compat.tflite_nodes(content)
    check("tflite_nodes lists the ops in order, QUANTIZE first",
          [op for op, _, _ in nodes] == ["QUANTIZE", "FULLY_CONNECTED", "SOFTMAX", "DEQUANTIZE"])
    check("an op's output tensor is named with its Keras layer's name scope",
          any("scores" in part for name in nodes[1][1] for part in name.split("/")))
    check("int8 ops are not marked float", not any(computes_float for _, _, computes_float in nodes))
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    assert compat.tflite_nodes(str(path)) == nodes


def test_tflite_uint8_input_makes_the_input_uint8_with_the_same_scale():
    import tensorflow as tf

    content = int8_dense_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        before = tf.lite.Interpreter(model_content=content)
        after = tf.lite.Interpreter(model_content=compat.tflite_uint8_input(content))
    check("a quantized model's input is float32 before", before.get_input_details()[0]["dtype"] == np.float32)
    (scale, zero_point), dtype = after.get_input_details()[0]["quantization"], after.get_input_details()[0]["dtype"]
    check("modify_model_io_type makes the input uint8", dtype == np.uint8)
    quantized = compat.tflite_nodes(content)[0][1][0]  # the first op's output: the int8 input
    int8 = next(t for t in before.get_tensor_details() if t["name"] == quantized)
    check("the uint8 input has the int8 input's scale, its zero point moved by 128",
          int8["dtype"] == np.int8 and np.isclose(scale, int8["quantization"][0])
          and zero_point == int8["quantization"][1] + 128)
    check("the output stays float32", after.get_output_details()[0]["dtype"] == np.float32)
    x = np.array([[0, 64, 128, 255]], np.float32)
    uint8 = np.clip(np.round(x / scale + zero_point), 0, 255).astype(np.uint8)
    outputs = []
    for interpreter, images in ((before, x), (after, uint8)):
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    check("the uint8 model computes what the float-input one does", np.array_equal(*outputs))


def test_a_session_runs_a_feed_that_python_s_shape_check_would_refuse():
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None])
        x = tf.identity(tf.compat.v1.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"])
        y = x * 0.5 + 2.0
    assert x.shape.as_list() == [None, 1]
    with tf.compat.v1.Session(graph=graph) as session:
        with pytest.raises(ValueError, match="Cannot feed value of shape"):
            session.run(y, {x: np.array([1.0, 2.0, 5.0], np.float32)})
        (answer,) = compat.run_session_unchecked(session, [y], {x: np.array([1.0, 2.0, 5.0], np.float32)})
    assert answer.tolist() == [2.5, 3.0, 4.5]  # as TF Serving answers its half_plus_two


def test_run_graph_calls_each_layer_through_the_callback_even_on_another_graphs_tensors():
    inner_input = keras.Input((4,))
    inner = keras.Model(inner_input, keras.layers.Dense(3, name="inner_dense")(inner_input), name="inner")
    outer_input = keras.Input((4,))
    outer = keras.Model(outer_input, keras.layers.Dense(2, name="outer_dense")(inner(outer_input)))
    check("keras.Model(inputs, outputs) is Functional, a subclassed model is not",
          compat.is_functional(outer) and not compat.is_functional(keras.Sequential()))
    seen = []

    def call(layer, *args, **kwargs):
        seen.append(layer.name)
        if compat.is_functional(layer):
            return compat.run_graph(layer, args[0], call)  # opened: its layers run on the outer graph's tensors
        return layer(*args, **kwargs)

    x = np.ones((1, 4), np.float32)
    out = compat.run_graph(outer, keras.ops.convert_to_tensor(x), call)
    check("run_graph calls call_fn(layer, ...) for each layer, nested models included",
          seen == ["inner", "inner_dense", "outer_dense"] and np.allclose(np.asarray(out), np.asarray(outer(x))))
