"""Choosing a tf.distribute strategy for a run, and who writes what under it.

    auto          MirroredStrategy when the machine has more than one GPU, else none
    one_device    OneDeviceStrategy on the first GPU (the CPU without one)
    mirrored      MirroredStrategy: every GPU of this machine (the CPU without one)
    multi_worker  MultiWorkerMirroredStrategy across the machines listed in TF_CONFIG

``--batch-size`` is the global batch: the input pipeline batches that many
images and the strategy splits each batch between the replicas (64 on two GPUs
is 32 per GPU), so a run's steps per epoch, schedule and learning rate do not
change with the number of devices.

Under ``multi_worker`` every worker runs the same command; the chief (the task
of type ``chief``, else worker 0) writes the run directory and the export.
The other workers write theirs under ``<runs_dir>/.worker<N>/``, Keras'
convention of per-worker scratch directories, so each worker keeps its own
BackupAndRestore state and a restarted cluster resumes where it stopped.
"""

from __future__ import annotations

import json
import os

from core import compat
from core.errors import UserError
from training.checkpoint import commit, read_metadata
from training.phases import read_marker

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def read_tf_config() -> dict:
    """TF_CONFIG, checked enough to give a clear message instead of a hang."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UserError("--strategy multi_worker needs TF_CONFIG, e.g. "
                        '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                        '"task": {"type": "worker", "index": 0}} (see docs/concepts/distributed.md)')
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        members = cluster[task["type"]]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"TF_CONFIG is not usable ({type(error).__name__}: {error}); "
                        f"it needs 'cluster' and 'task' with 'type' and 'index': {text!r}") from None
    if not 0 <= index < len(members):
        raise UserError(f"TF_CONFIG task index {index} is outside its {task['type']!r} list of {len(members)}")
    return config


def make_strategy(name: str):
    """The tf.distribute strategy named by ``--strategy``."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise UserError(f"Unknown strategy {name!r} (valid: {', '.join(STRATEGIES)})")
    # Physical, not logical, devices: listing logical ones starts the runtime, after which
    # MultiWorkerMirroredStrategy can no longer configure its collectives.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    read_tf_config()
    # Ring all-reduce works on every device kind, CPUs included; NCCL would need GPUs on every worker.
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING if not gpus
        else tf.distribute.experimental.CommunicationImplementation.AUTO)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except RuntimeError as error:  # "Collective ops must be configured at program startup"
        raise UserError(f"--strategy multi_worker must start with its process, before other TensorFlow work "
                        f"(run train.py, or call training.run.train first thing): {error}") from None
    compat.patch_multi_worker_fit()  # Keras' fit fails under this strategy without it (keras-team/keras#20585)
    return strategy


def is_multi_worker(strategy) -> bool:
    return compat.in_multi_worker_mode(strategy)


def is_chief(strategy) -> bool:
    """True for single-machine strategies and for the multi-worker chief."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def worker_runs_dir(runs_dir: str, strategy) -> str:
    """Where this worker's run directories go: ``runs_dir`` for the chief, a scratch folder for the others."""
    if is_chief(strategy):
        return runs_dir
    return os.path.join(runs_dir, f".worker{strategy.cluster_resolver.task_id}")


def worker_count(strategy) -> int:
    """Machines in the cluster (chief included): one input pipeline each."""
    if not is_multi_worker(strategy):
        return 1
    return sum(len(v) for v in strategy.cluster_resolver.cluster_spec().as_dict().values())


def describe(strategy) -> str:
    replicas = strategy.num_replicas_in_sync
    if is_multi_worker(strategy):
        resolver = strategy.cluster_resolver
        workers = worker_count(strategy)
        return (f"{type(strategy).__name__}: {replicas} replicas on {workers} workers; "
                f"this is {resolver.task_type} {resolver.task_id}")
    return f"{type(strategy).__name__}: {replicas} replica{'s' if replicas != 1 else ''}"


def agree_on_epochs(strategy, done: int, backup_root: str, log=print) -> int:
    """The epoch every worker resumes after: the fewest any worker has checkpointed.

    Workers checkpoint each epoch independently, so a cluster killed between
    two workers' writes leaves one an epoch ahead.  Synchronous training needs
    all of them at the same step, so the one ahead steps back to its previous
    checkpoint (BackupAndRestore's ``double_checkpoint`` copy).
    """
    if not is_multi_worker(strategy):
        return done
    import tensorflow as tf

    values = strategy.experimental_distribute_values_from_function(lambda _: tf.constant([done], tf.int64))
    agreed = int(tf.reduce_min(strategy.gather(values, axis=0)))
    if agreed < done:
        log(f"Another worker checkpointed only {agreed} epochs; going back from epoch {done} to {agreed}")
        roll_back(backup_root, agreed)
    return agreed


def roll_back(backup_root: str, epoch: int) -> None:
    """Makes ``backup_root`` (one folder per phase) hold the state after ``epoch`` epochs."""
    import shutil


    if epoch == 0:
        shutil.rmtree(backup_root, ignore_errors=True)
        return
    for entry in sorted(os.listdir(backup_root)) if os.path.isdir(backup_root) else []:
        path = os.path.join(backup_root, entry)
        if entry.endswith(".done"):
            end = read_marker(path)
            if end is None or end > epoch:
                os.remove(path)  # that phase is unfinished again
            continue
        metadata = read_metadata(path)
        if not metadata or int(metadata.get("epoch", 0)) <= epoch:
            continue
        previous = metadata.get("previous") or {}
        if previous.get("epoch") != epoch:
            raise UserError(f"Cannot take {path!r} back to epoch {epoch} (its previous checkpoint is of epoch "
                            f"{previous.get('epoch')}); delete the run directories of every worker and start again")
        commit(path, previous)
