"""Every use of a library's private internals, behind small named functions.

Keras, keras-tuner, TensorFlow and argparse do not promise to keep what is
used here: a private attribute, a module under ``keras.src``, the wording of
an error message.  So it is all in this one module, each function's
docstring says what it assumes and with which version that was checked, and
``tests/test_compat.py`` checks each assumption against the installed
libraries.  When an upgrade breaks one, that test (or ``check`` at run time)
fails with the assumption and the installed versions, instead of a resume
that silently restarts at epoch 0.

Checked with keras 3.15.1, keras-tuner 1.4.8, tensorflow 2.21.0 and Python 3.11
(the versions pinned in ``constraints.txt``).  Libraries are imported inside
the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import importlib
import inspect
import platform
import re

CHECKED_WITH = "keras 3.15.1, keras-tuner 1.4.8, tensorflow 2.21.0, Python 3.11"


class BrokenAssumption(RuntimeError):
    """An installed library no longer behaves as this module assumes."""


def installed_versions() -> str:
    """The versions of the libraries this module reaches into, as installed now."""
    parts = []
    for module, label in (("keras", "keras"), ("keras_tuner", "keras-tuner"), ("tensorflow", "tensorflow")):
        try:
            version = importlib.import_module(module).__version__
        except Exception as error:  # a broken install is worth naming too
            version = f"(not importable: {type(error).__name__})"
        parts.append(f"{label} {version}")
    return ", ".join([*parts, f"Python {platform.python_version()}"])


def check(assumption: str, condition) -> None:
    """Raises ``BrokenAssumption`` naming ``assumption`` and the installed versions unless ``condition`` holds.

    ``condition`` is a value, or a callable evaluated here; an exception it
    raises (an attribute gone, a module moved) counts as the assumption broken.
    """
    reason = ""
    if callable(condition):
        try:
            condition = condition()
        except Exception as error:
            condition, reason = False, f" ({type(error).__name__}: {error})"
    if not condition:
        raise BrokenAssumption(
            f"core/compat.py assumes that {assumption}, which no longer holds with the installed "
            f"{installed_versions()}{reason}. It was checked with {CHECKED_WITH}: install those "
            "(pip install -c constraints.txt -e .) or update core/compat.py and tests/test_compat.py.")


def _private_module(name: str, assumption: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        check(f"{name} is importable ({assumption})", False)


# --- Keras: training -----------------------------------------------------------------------------


def set_initial_epoch(model, epoch: int | None) -> None:
    """Makes the next ``fit`` of ``model`` start after ``epoch`` epochs (None: where ``fit`` was told).

    Assumes ``fit`` starts at ``model._initial_epoch or initial_epoch``, read
    after the callbacks' ``on_train_begin`` (the hook Keras' own
    BackupAndRestore uses), and that Keras never resets ``_initial_epoch``
    between fits, so a later fit must be given None.  Checked with keras 3.15.1.
    """
    check("keras models have the attribute _initial_epoch that fit() starts from",
          hasattr(model, "_initial_epoch"))
    model._initial_epoch = None if epoch is None else int(epoch)


def variable_index(optimizer, variable) -> int:
    """The position of ``variable`` in the list the (built) ``optimizer`` was built with.

    Assumes ``BaseOptimizer._get_variable_index(variable)``, which Keras' own
    optimizers use in ``update_step`` to find a variable's slots.  Checked
    with keras 3.15.1.
    """
    return optimizer._get_variable_index(variable)


def ema_pairs(optimizer) -> list:
    """(variable, its moving average) for each variable a built optimizer with ``use_ema=True`` trains.

    Assumes ``BaseOptimizer._trainable_variables`` and
    ``_model_variables_moving_average``, the two lists Keras' own
    ``SwapEMAWeights`` callback pairs up (one average per trained variable,
    in the same order).  Checked with keras 3.15.1.
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's (mixed precision)
    check("an optimizer with use_ema=True keeps _model_variables_moving_average, one per _trainable_variables",
          hasattr(inner, "_model_variables_moving_average") and hasattr(inner, "_trainable_variables")
          and len(inner._model_variables_moving_average) == len(inner._trainable_variables))
    return list(zip(inner._trainable_variables, inner._model_variables_moving_average))


def serialize_as(subclass, public) -> None:
    """Makes Keras save layers of ``subclass`` under ``public``'s name (``keras.layers.BatchNormalization``), so
    they load as Keras' own layer, in any program that can load the rest of the model.

    Assumes ``keras.src.api_export.REGISTERED_OBJS_TO_NAMES``, the table of
    exported classes that ``serialization_lib.serialize_with_public_class``
    reads to name a class in a saved model.  Checked with keras 3.15.1.
    """
    api_export = _private_module("keras.src.api_export", "it names Keras' public classes in saved models")
    names = getattr(api_export, "REGISTERED_OBJS_TO_NAMES", None)
    check("keras.src.api_export.REGISTERED_OBJS_TO_NAMES maps each exported class to its public name",
          isinstance(names, dict) and public in names)
    names[subclass] = names[public]


def attach_assets(archive, files: dict[str, str]) -> None:
    """Copies ``files`` ({attribute: path}) into the ``assets/`` folder of the SavedModel
    that the ``keras.export.ExportArchive`` ``archive`` writes, reachable as
    ``tf.saved_model.load(path).<attribute>``.

    Assumes the archive keeps the object it saves as ``archive._tf_trackable``
    (an AutoTrackable), whose ``tf.saved_model.Asset`` attributes TensorFlow
    copies into ``assets/``.  Checked with keras 3.15.1, tensorflow 2.21.0.
    """
    import tensorflow as tf

    check("keras.export.ExportArchive saves the object archive._tf_trackable",
          lambda: archive._tf_trackable is not None)
    for name, path in files.items():
        setattr(archive._tf_trackable, name, tf.saved_model.Asset(path))


def scale_normalization_variance(layer, factors) -> None:
    """Multiplies the per-channel variance a ``keras.layers.Normalization`` divides by
    (x -> (x - mean) / sqrt(variance * factors)).

    For a layer built without ``mean``/``variance`` arguments, as in Keras'
    EfficientNet: assumes its statistics live in the weights ``adapt_mean``
    and ``adapt_variance``, and that ``finalize_state()`` recomputes what
    ``call`` uses from them.  Checked with keras 3.15.1.
    """
    from keras import ops

    check("a Normalization layer built without mean/variance keeps them in the weight adapt_variance",
          lambda: layer.adapt_variance is not None)
    layer.adapt_variance.assign(layer.adapt_variance * ops.convert_to_tensor(factors, "float32"))
    layer.finalize_state()


# --- Keras: a functional model's graph, layer by layer ------------------------------------------------

def is_functional(model) -> bool:
    """Whether ``model`` is a functional Keras model (a graph of layer calls), not a subclassed one.
    Assumes ``keras.src.models.functional.Functional`` is the class of ``keras.Model(inputs, outputs)``."""
    functional = _private_module("keras.src.models.functional", "the Functional model class")
    check("keras.src.models.functional.Functional is the class of keras.Model(inputs, outputs)",
          lambda: hasattr(functional, "Functional"))
    return isinstance(model, functional.Functional)


def run_graph(model, inputs, call):
    """Runs a functional ``model``'s graph on ``inputs`` (tensors of another graph, or arrays), with each layer
    call made by ``call(layer, *args, **kwargs)``; returns the outputs, structured as the model's.

    ``explain.graph`` opens nested models this way: ``keras.models.clone_model(..., call_function=...)`` runs the
    same loop but then builds a model from the new tensors, which fails when they belong to an outer graph
    ("Output ... is not connected to inputs").  Assumes ``Function._run_through_graph(inputs, operation_fn,
    call_fn)`` calls ``call_fn(operation_fn(op), *args, **kwargs)`` for each node, as in keras 3.15.1."""
    check("functional models have _run_through_graph(inputs, operation_fn, call_fn)",
          lambda: "call_fn" in inspect.signature(model._run_through_graph).parameters)
    return model._run_through_graph(inputs, operation_fn=lambda operation: operation, call_fn=call)


# --- Keras and TensorFlow: multi-worker fit ---------------------------------------------------------


def in_multi_worker_mode(strategy) -> bool:
    """True when ``strategy`` (a tf.distribute strategy, or None) spans several workers.

    Assumes every strategy's ``extended`` has TensorFlow's private
    ``_in_multi_worker_mode()`` (Keras asks it the same question).  Checked
    with tensorflow 2.21.0.
    """
    extended = getattr(strategy, "extended", None)
    if extended is None:
        return False
    check("tf.distribute strategies' extended objects have _in_multi_worker_mode()",
          hasattr(extended, "_in_multi_worker_mode"))
    return bool(extended._in_multi_worker_mode())


_PATCHED = False


def patch_multi_worker_fit() -> None:
    """Works around two Keras 3 bugs that stop ``fit`` under MultiWorkerMirroredStrategy.

    keras-team/keras#20585 (open; also tensorflow/tensorflow#72388): before the
    first step Keras asks the strategy to average a whole (images, labels)
    batch, which MultiWorkerMirroredStrategy cannot do for a tuple; and it
    averages each step's scalar loss and metrics with ``axis=0``, which fails
    for scalars.  The replacements take the shapes from this worker's part of
    the batch, and average scalars over all replicas.  Other strategies go
    through Keras' own code unchanged.  Idempotent.

    Assumes, in ``keras.src.backend.tensorflow.trainer``: the method
    ``TensorFlowTrainer._maybe_symbolic_build(self, iterator=None,
    data_batch=None)``, which ``fit`` calls with an iterator of (begin, end,
    iterator) triples; and the module function ``reduce_per_replica(values,
    strategy, reduction)``, looked up by name in each step.  Checked with
    keras 3.15.1, tensorflow 2.21.0.
    """
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf

    why = "patched for multi-worker fit"
    tree = _private_module("keras.src.tree", why)
    tf_trainer = _private_module("keras.src.backend.tensorflow.trainer", why)
    check("TensorFlowTrainer._maybe_symbolic_build takes (self, iterator=None, data_batch=None)",
          lambda: list(inspect.signature(tf_trainer.TensorFlowTrainer._maybe_symbolic_build).parameters)
          == ["self", "iterator", "data_batch"])
    check("keras.src.backend.tensorflow.trainer.reduce_per_replica takes (values, strategy, reduction)",
          lambda: list(inspect.signature(tf_trainer.reduce_per_replica).parameters)
          == ["values", "strategy", "reduction"])
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def local_part(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return value.values[0]
        return value

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and data_batch is None and in_multi_worker_mode(self.distribute_strategy):
            for _, _, it in iterator:
                data_batch = tree.map_structure(local_part, next(it))
                break
            iterator = None
        return original_build(self, iterator=iterator, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and in_multi_worker_mode(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True


# --- TensorFlow: TF1 sessions -------------------------------------------------------------------------


def run_session_unchecked(session, fetches: list, feeds: dict) -> list:
    """``session.run(fetches, feeds)`` without the Python client's check of each fed value against the fed
    tensor's static shape.

    TF Serving runs a TF1 SavedModel from C++, where only the kernels check shapes: its own half_plus_two
    declares ``x`` as ``[-1, 1]`` and answers ``{"instances": [1.0, 2.0, 5.0]}``, a ``[3]`` feed, with
    ``[2.5, 3.0, 4.5]``.  Python's ``Session.run`` refuses that feed before the graph sees it
    ("Cannot feed value of shape"), so the model server calls the step underneath: ``Session._do_run(handle,
    target_list, fetch_list, feed_dict, options, run_metadata)`` with ``feed_dict`` keyed by ``tensor.ref()``.
    Checked with tensorflow 2.21.0.
    """
    parameters = ["handle", "target_list", "fetch_list", "feed_dict", "options", "run_metadata"]
    check("tf.compat.v1.Session._do_run takes (handle, target_list, fetch_list, feed_dict, options, run_metadata)",
          lambda: list(inspect.signature(session._do_run).parameters) == parameters)
    return session._do_run(None, [], list(fetches), {tensor.ref(): value for tensor, value in feeds.items()},
                           None, None)


# --- Keras: the wording of its errors ----------------------------------------------------------------


def download_failure_url(error: BaseException) -> str | None:
    """The URL in ``keras.utils.get_file``'s "URL fetch failure on URL: code -- reason", else None.

    Assumes that wording (get_file raises a plain Exception carrying it).
    Checked with keras 3.15.1.
    """
    match = re.search(r"URL fetch failure on (\S+?):\s", str(error))
    return match.group(1) if match else None


def is_lambda_refusal(text: str) -> bool:
    """True for the message ``keras.models.load_model(..., safe_mode=True)`` raises for a Lambda layer.

    Assumes its first line names "`Lambda`" and "safe_mode".  Checked with keras 3.15.1.
    """
    return "Lambda" in text and "safe_mode" in text


def unknown_object_name(text: str) -> str | None:
    """The class or function name in Keras' "Could not locate class 'NAME'" loading error, else None.

    Assumes that wording, raised when a model file names a class Keras does not
    know.  Checked with keras 3.15.1.
    """
    match = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    return match.group(1) if match else None


# --- keras-tuner ---------------------------------------------------------------------------------


def proposing_first(oracle_class, propose):
    """A subclass of the keras-tuner oracle class ``oracle_class`` whose random
    proposals start with ``propose(oracle)`` (a dict of values, or None for keras-tuner's own).

    Assumes RandomSearchOracle, HyperbandOracle (the first round of each
    bracket) and BayesianOptimizationOracle (its initial points) draw every
    random proposal through ``Oracle._random_values()``, which returns a dict
    of values, or None when no new one is left.  Checked with keras-tuner 1.4.8.
    """
    check(f"keras-tuner's {oracle_class.__name__} draws random proposals through _random_values()",
          callable(getattr(oracle_class, "_random_values", None)))

    def _random_values(self):
        values = propose(self)
        return values if values is not None else super(subclass, self)._random_values()

    subclass = type(oracle_class.__name__, (oracle_class,), {
        "_random_values": _random_values,
        "__doc__": f"{oracle_class.__name__} whose random proposals start with {propose.__name__}."})
    return subclass


def already_tried(oracle, values: dict) -> bool:
    """True when the keras-tuner ``oracle`` has already created a trial with ``values``.

    Assumes ``Oracle._duplicate(values)``, which the oracles use to refuse a
    repeated proposal.  Checked with keras-tuner 1.4.8.
    """
    return oracle._duplicate(values)


def print_failed_trial_tracebacks(enabled: bool) -> None:
    """Whether keras-tuner prints the traceback of each failed trial (it does by default).

    Assumes the module flag ``keras_tuner.src.config.DEBUG``, read by
    ``BaseTuner`` when a trial fails; the trial's ``message`` keeps the
    traceback either way.  Checked with keras-tuner 1.4.8.
    """
    config = _private_module("keras_tuner.src.config", "its DEBUG flag prints failed trials' tracebacks")
    check("keras_tuner.src.config has the flag DEBUG", hasattr(config, "DEBUG"))
    config.DEBUG = bool(enabled)


def is_failure_limit(error: BaseException) -> bool:
    """True for the RuntimeError keras-tuner raises when ``max_consecutive_failed_trials`` trials failed in a row.

    Assumes its wording, "Number of consecutive failures exceeded the limit".
    Checked with keras-tuner 1.4.8.
    """
    return isinstance(error, RuntimeError) and "consecutive failures" in str(error)


def is_chief_oracle() -> bool:
    """True in the process that serves the oracle of a distributed keras-tuner search.

    Assumes keras-tuner's ``distribute.utils.is_chief_oracle()``: the
    ``KERASTUNER_ORACLE_IP``/``_PORT`` variables are set and
    ``KERASTUNER_TUNER_ID`` contains "chief".  Checked with keras-tuner 1.4.8.
    """
    utils = _private_module("keras_tuner.src.distribute.utils", "it says which process is the chief")
    return bool(utils.is_chief_oracle())


def is_worker() -> bool:
    """True in a worker of a distributed keras-tuner search (it asks the chief for trials).

    Assumes keras-tuner's ``distribute.utils``: ``has_chief_oracle()`` (the
    address variables are set) and ``is_chief_oracle()``.  Checked with keras-tuner 1.4.8.
    """
    utils = _private_module("keras_tuner.src.distribute.utils", "it says which process is a worker")
    return bool(utils.has_chief_oracle() and not utils.is_chief_oracle())


def waiting_for_running_trials(oracle_class):
    """A subclass of the keras-tuner oracle class ``oracle_class`` that tells a worker to ask again
    (IDLE) rather than to stop (STOPPED) while another worker still runs a trial.

    That trial goes back to the queue if its worker is lost (``drop_worker``);
    a worker already told to stop could not take it, and a search whose last
    workers had stopped would never finish it.

    Assumes ``Oracle.create_trial(tuner_id)`` (decorated with
    ``keras_tuner.synchronized``) returns a trial with status STOPPED when
    none is left, after removing ``tuner_id`` from the set ``tuner_ids``
    (the workers keras-tuner's chief waits for); that ``ongoing_trials``
    maps each worker's tuner id to its running trial; and that a worker
    given IDLE asks again (``BaseTuner.search``).  Checked with keras-tuner 1.4.8.
    """
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    check(f"keras-tuner's {oracle_class.__name__} has create_trial and ongoing trials",
          callable(getattr(oracle_class, "create_trial", None)))

    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        trial = super(subclass, self).create_trial(tuner_id)
        if trial.status == TrialStatus.STOPPED and any(other != tuner_id for other in self.ongoing_trials):
            self.tuner_ids.add(tuner_id)
            trial.status = TrialStatus.IDLE
        return trial

    subclass = type(oracle_class.__name__, (oracle_class,), {
        "create_trial": create_trial,
        "__doc__": f"{oracle_class.__name__} whose workers wait while another still runs a trial."})
    return subclass


_WORKER_STATE = ("tuner_ids", "ongoing_trials", "_run_times", "_retry_queue", "end_order", "_save_trial")


def oracle_workers(oracle) -> dict[str, str | None]:
    """The workers a distributed search's chief waits for: {tuner id: the id of the trial it runs, or None}.

    Assumes the oracle's set ``tuner_ids`` (every worker that asked for a
    trial and was not yet told to stop) and its dict ``ongoing_trials``
    ({tuner id: trial}).  Checked with keras-tuner 1.4.8.
    """
    import keras_tuner

    check("keras-tuner oracles keep their workers in tuner_ids and ongoing_trials",
          lambda: isinstance(oracle.tuner_ids, set) and isinstance(oracle.ongoing_trials, dict))

    @keras_tuner.synchronized
    def snapshot(oracle):
        workers = dict.fromkeys(oracle.tuner_ids)
        workers.update({tuner_id: trial.trial_id for tuner_id, trial in oracle.ongoing_trials.items()})
        return workers

    return snapshot(oracle)


def drop_worker(oracle, tuner_id: str, message: str, *, runs: int) -> tuple[str | None, str | None]:
    """Forgets the worker ``tuner_id`` of a distributed search: the chief no longer waits for it.

    The trial it was running goes back to the queue, first in line for the
    next worker that asks, with status INVALID and ``message``; once a trial
    has lost its worker ``runs`` times it is FAILED with ``message`` instead.
    Returns (that trial's id, its new status), or (None, None) when the
    worker was running no trial.

    Assumes, besides ``oracle_workers``' attributes: ``_run_times`` (runs per
    trial id, counted by ``end_trial``), ``_retry_queue`` (trial ids that
    ``create_trial`` hands out before new ones, saved with the oracle),
    ``end_order`` (the ended trials, read by the failure limit),
    ``_save_trial(trial)`` and ``save()``.  Checked with keras-tuner 1.4.8.
    """
    import keras_tuner
    from keras_tuner.engine.trial import TrialStatus

    check("keras-tuner oracles have tuner_ids, ongoing_trials, _run_times, _retry_queue, end_order and "
          "_save_trial", lambda: all(hasattr(oracle, name) for name in _WORKER_STATE))

    @keras_tuner.synchronized
    def drop(oracle):
        oracle.tuner_ids.discard(tuner_id)
        trial = oracle.ongoing_trials.pop(tuner_id, None)
        if trial is None or trial.status in (TrialStatus.COMPLETED, TrialStatus.FAILED):
            oracle.save()
            return None, None
        oracle._run_times[trial.trial_id] += 1
        trial.message = message
        if oracle._run_times[trial.trial_id] < runs:
            trial.status = TrialStatus.INVALID
            if trial.trial_id not in oracle._retry_queue:
                oracle._retry_queue.append(trial.trial_id)
        else:
            trial.status = TrialStatus.FAILED
            oracle.end_order.append(trial.trial_id)
        oracle._save_trial(trial)
        oracle.save()
        return trial.trial_id, trial.status

    return drop(oracle)


def start_oracle_server(oracle, address: str, *, heard=None, failure_message=None):
    """Serves the keras-tuner ``oracle`` to a distributed search's workers at ``address`` ("host:port").

    Returns ``(server, finished)``: the started ``grpc.Server`` (stop it with
    ``server.stop(grace)``), and ``finished()``, True once a worker has been
    told the search is over and no trial or worker is left.  This is
    keras-tuner's own ``oracle_chief.start_server`` without its loop, so the
    caller can poll more often than its 20 s and report as trials end.

    ``heard(tuner_id=..., trial_id=...)`` is called as each request comes:
    with the worker's id when it asks for a trial, else with the id of the
    trial the request is about.  ``failure_message(trial_id)`` gives the
    message of a trial a worker reports failed (keras-tuner's gRPC trial
    carries none).  A finished trial that a worker reports after it was put
    back in the queue (its worker was dropped, then answered after all) is
    taken out of the queue: it is not run again.

    Assumes ``keras_tuner.src.distribute.oracle_chief``'s ``OracleServicer``
    (with its ``stop_triggered`` flag, and the request fields ``tuner_id``,
    ``trial_id`` and ``trial``) and ``exit_chief(oracle)``,
    ``keras_tuner.src.protos.get_service()`` and
    ``get_service_grpc().add_OracleServicer_to_server``, and the oracle's
    ``_retry_queue``.  Checked with keras-tuner 1.4.8.
    """
    from concurrent import futures

    import grpc
    import keras_tuner
    from keras_tuner.engine.trial import Trial, TrialStatus

    why = "serving the oracle as keras-tuner's chief does"
    protos = _private_module("keras_tuner.src.protos", why)
    chief = _private_module("keras_tuner.src.distribute.oracle_chief", why)
    heard = heard or (lambda **_: None)
    check("keras-tuner's oracles keep the trials to run again in _retry_queue",
          isinstance(getattr(oracle, "_retry_queue", None), list))

    @keras_tuner.synchronized
    def unqueue(oracle, trial_id):
        if oracle.trials[trial_id].status in (TrialStatus.COMPLETED, TrialStatus.FAILED):
            while trial_id in oracle._retry_queue:
                oracle._retry_queue.remove(trial_id)

    class Servicer(chief.OracleServicer):
        def CreateTrial(self, request, context):
            heard(tuner_id=request.tuner_id)
            return super().CreateTrial(request, context)

        def UpdateTrial(self, request, context):
            heard(trial_id=request.trial_id)
            return super().UpdateTrial(request, context)

        def GetTrial(self, request, context):
            heard(trial_id=request.trial_id)
            return super().GetTrial(request, context)

        def EndTrial(self, request, context):  # keras-tuner's, with the failure's message
            trial = Trial.from_proto(request.trial)
            heard(trial_id=trial.trial_id)
            if failure_message is not None and trial.status in (TrialStatus.FAILED, TrialStatus.INVALID):
                trial.message = failure_message(trial.trial_id)
            self.oracle.end_trial(trial)
            unqueue(self.oracle, trial.trial_id)
            return protos.get_service().EndTrialResponse()

    servicer = Servicer(oracle)
    check("keras-tuner's OracleServicer has the flag stop_triggered", hasattr(servicer, "stop_triggered"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(address)
    server.start()

    def finished() -> bool:
        return bool(servicer.stop_triggered and chief.exit_chief(oracle))

    return server, finished


# --- argparse ------------------------------------------------------------------------------------


def parser_actions(parser) -> list:
    """Every action (argument) of an ``argparse.ArgumentParser``, its groups' included, in order.

    Assumes the private ``parser._actions`` list.  Checked with Python 3.11.
    """
    check("argparse.ArgumentParser keeps its arguments in the list _actions",
          isinstance(getattr(parser, "_actions", None), list))
    return list(parser._actions)


def tflite_nodes(model: str | bytes) -> list[tuple[str, tuple[str, ...], bool]]:
    """(op, its output tensors' names, whether it computes in float32) for every op of a .tflite model, in order.

    ``model`` is a file's path or the model's bytes.  A custom or Flex (SELECT_TF_OPS) op shows as
    ``CUSTOM:<name>``.  QUANTIZE and DEQUANTIZE, the boundaries of an integer graph, are not counted as
    computing in float.  Tensor names are those the converter gives, TensorFlow's name scopes
    (``model/lenet5/rbf/add``), which name the Keras layer an op came from.

    Assumes TensorFlow's flatbuffer reader ``tensorflow.lite.tools.flatbuffer_utils`` (``read_model``,
    ``read_model_from_bytearray``) and the generated schema ``tensorflow.lite.python.schema_py_generated``
    (``BuiltinOperator``, ``TensorType``, operator codes with ``builtinCode``/``deprecatedBuiltinCode``/
    ``customCode``, tensors with ``name`` and ``type``), which are outside the ``tf.*`` API.  Checked with
    tensorflow 2.21.0.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    def text(value):
        return value.decode() if isinstance(value, bytes) else value

    builtin = {code: op for op, code in vars(schema.BuiltinOperator).items() if not op.startswith("_")}
    if isinstance(model, str):
        model = flatbuffer_utils.read_model(model)
    else:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    names = []
    for code in model.operatorCodes:
        number = max(code.builtinCode, code.deprecatedBuiltinCode)
        names.append(f"CUSTOM:{text(code.customCode)}" if number == schema.BuiltinOperator.CUSTOM
                     else builtin[number])
    nodes = []
    for graph in model.subgraphs:
        for op in graph.operators:
            op_name = names[op.opcodeIndex]
            outputs = [graph.tensors[i] for i in op.outputs if i >= 0]
            computes_float = (op_name not in ("QUANTIZE", "DEQUANTIZE")
                              and any(t.type == schema.TensorType.FLOAT32 for t in outputs))
            nodes.append((op_name, tuple(text(t.name) for t in outputs), computes_float))
    return nodes


def tflite_ops(path: str) -> tuple[list[str], list[str]]:
    """(every op in a .tflite file, the ops computing in float32), sorted; see ``tflite_nodes``."""
    nodes = tflite_nodes(path)
    return sorted({op for op, _, _ in nodes}), sorted({op for op, _, computes_float in nodes if computes_float})


def tflite_uint8_input(model: bytes) -> bytes:
    """A quantized .tflite model whose float32 input is quantized by its first op, made to take uint8 instead.

    The QUANTIZE op then requantizes uint8 to int8 (the same scale, zero point + 128), which is how
    ``TFLiteConverter`` itself makes the file when ``inference_input_type=tf.uint8``; quantizing outside
    the converter (``tf.lite.experimental.QuantizationDebugger``) leaves a float input.  The output is
    left as it is.

    Assumes ``tensorflow.lite.python.util.modify_model_io_type(model, inference_input_type,
    inference_output_type)``, the function the converter applies, which is outside the ``tf.*`` API.
    Checked with tensorflow 2.21.0.
    """
    import tensorflow as tf

    util = _private_module("tensorflow.lite.python.util", "the converter's modify_model_io_type")
    check("tensorflow.lite.python.util has modify_model_io_type", hasattr(util, "modify_model_io_type"))
    return bytes(util.modify_model_io_type(model, tf.uint8, tf.float32))
