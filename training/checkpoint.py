"""A resumable training checkpoint that a crash cannot corrupt.

Keras' ``BackupAndRestore`` overwrites ``latest.weights.h5`` in place and then
rewrites its ``training_metadata.json``: a process killed during the first
write leaves a torn weights file, and one killed between the two leaves
weights one epoch ahead of the epoch count, so the resumed run repeats an
epoch from already-updated weights and optimizer state.

Here each epoch's state (layer weights and the optimizer's variables,
including its step count, which is the learning-rate schedule's position) goes
to a new file, written under a temporary name, flushed and renamed.  Only then
is ``training_metadata.json`` replaced, atomically, to point at it; it is the
commit.  A kill at any instant leaves the metadata naming a complete file: the
last committed epoch.  The epoch before it is kept too (``previous``), so a
multi-worker run whose workers stopped an epoch apart can step the one ahead
back (``training.distribute.roll_back``); older files are deleted after the
commit.

    backup/<phase>/training_metadata.json   {"epoch": 3, "weights": "epoch-3.weights.h5",
                                             "previous": {"epoch": 2, "weights": "epoch-2.weights.h5", ...}}
    backup/<phase>/epoch-3.weights.h5
    backup/<phase>/epoch-2.weights.h5
"""

from __future__ import annotations

import json
import os
import signal

import keras

from core import compat
from core.errors import size_of, writing

METADATA = "training_metadata.json"

# Tests set this to "<point>:<epoch>" to SIGKILL the process at a given point, deterministically:
# "mid-epoch" (after the epoch's first batch), "weights-written" (state file complete, not yet
# committed) or "committed" (metadata replaced, old state not yet deleted).
CRASH_ENV = "CNN_CLASSROOM_CRASH_AT"


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read_metadata(backup_dir: str) -> dict | None:
    try:
        with open(os.path.join(backup_dir, METADATA)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def committed_epoch(backup_dir: str) -> int:
    """Epochs the checkpoint in ``backup_dir`` has committed (0 when there is none)."""
    try:
        return int((read_metadata(backup_dir) or {}).get("epoch", 0))
    except (TypeError, ValueError):
        return 0


def commit(backup_dir: str, metadata: dict) -> None:
    """Replaces the metadata in one step, flushed to disk first: this is what makes a state current."""
    tmp_meta, final = os.path.join(backup_dir, f".tmp-{METADATA}"), os.path.join(backup_dir, METADATA)
    with writing(final, needed=size_of(final), cleanup=[tmp_meta]):
        with open(tmp_meta, "w") as f:
            json.dump(metadata, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_meta, final)


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves the training state after every epoch and restores it when fit starts.

    Args:
        backup_dir: the folder for this phase's state.
    """

    def __init__(self, backup_dir: str):
        super().__init__()
        self.backup_dir = backup_dir

    def _crash_if(self, point: str, epoch: int) -> None:
        if os.environ.get(CRASH_ENV) == f"{point}:{epoch + 1}":
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_begin(self, logs=None):
        # Keras never resets the initial epoch between fits; a later phase must not inherit it.
        compat.set_initial_epoch(self.model, None)
        metadata = read_metadata(self.backup_dir)
        # Runs checkpointed by Keras' BackupAndRestore (before this callback) kept one latest.weights.h5.
        path = os.path.join(self.backup_dir, (metadata or {}).get("weights", "latest.weights.h5"))
        if not metadata or not os.path.isfile(path):
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(path)
        compat.set_initial_epoch(self.model, int(metadata["epoch"]))

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self._crash_if("mid-epoch", self._epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{epoch + 1}.weights.h5"
        final = os.path.join(self.backup_dir, name)
        tmp = os.path.join(self.backup_dir, f".tmp-{name}")
        previous = os.path.join(self.backup_dir, (read_metadata(self.backup_dir) or {}).get("weights", name))
        with writing(final, needed=size_of(previous), cleanup=[tmp]):  # a full disk: the last commit stands
            self.model.save_weights(tmp)
            _fsync_file(tmp)
            os.replace(tmp, final)
        self._crash_if("weights-written", epoch)
        optimizer = self.model.optimizer
        steps = int(optimizer.iterations.numpy()) if optimizer is not None else None
        metadata = {"epoch": epoch + 1, "weights": name, "optimizer_steps": steps}
        previous = read_metadata(self.backup_dir)
        if previous and previous.get("epoch", 0) < epoch + 1 and previous.get("weights") != name:
            metadata["previous"] = {k: previous[k] for k in ("epoch", "weights", "optimizer_steps") if k in previous}
        commit(self.backup_dir, metadata)
        self._crash_if("committed", epoch)
        keep = {name, metadata.get("previous", {}).get("weights")}
        for other in os.listdir(self.backup_dir):
            if other.endswith(".weights.h5") and other not in keep:
                os.remove(os.path.join(self.backup_dir, other))

    def on_train_end(self, logs=None):
        compat.set_initial_epoch(self.model, None)
