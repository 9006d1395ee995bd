"""One process per run directory: an OS lock held for the run's life.

``acquire(folder)`` takes ``fcntl.flock`` (exclusive, non-blocking) on
``folder/.lock``.  The operating system drops the lock when the process ends,
however it ends (``kill -9`` and power cuts included), so a lock left by a
dead process never blocks: its file stays behind, its lock does not.  The
file holds the holder's pid and command line, read only to name it in the
error a second process gets.

Locks are kept per process until released: a process never blocks itself
(a run retried in the same process after an error takes its own lock again),
and a lock nobody releases goes when the process does.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import IO

from core.errors import UserError

NAME = ".lock"


class Busy(UserError):
    """Another process holds the folder's lock; ``pid`` is None when its file does not say which."""

    def __init__(self, folder: str, holder: dict, advice: str):
        self.folder, self.pid = folder, holder.get("pid")
        who = f"process {self.pid}" if self.pid else "another process"
        if holder.get("host") not in (None, socket.gethostname()):
            who += f" on {holder['host']}"
        command = " ".join(holder.get("command") or [])
        details = ", ".join(([command if len(command) <= 120 else command[:117] + "..."] if command else []) +
                            ([f"started {holder['started']}"] if holder.get("started") else []))
        super().__init__(f"{folder} is in use by {who}" + (f" ({details})" if details else "") + f"; {advice}")


@dataclasses.dataclass
class Lock:
    """A held lock; ``release()`` (or leaving a ``with`` block) lets the next process in."""

    folder: str
    path: str
    file: IO

    def release(self) -> None:
        if _held.get(_key(self.path)) is self:
            del _held[_key(self.path)]
        if not self.file.closed:
            self.file.close()  # closing the descriptor drops the lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


_held: dict[str, Lock] = {}  # what this process holds, by real path


def _key(path: str) -> str:
    return os.path.realpath(path)


def acquire(folder: str, *, name: str = NAME, advice: str = "wait for it to finish") -> Lock:
    """Locks ``folder`` (created if missing) for this process, or raises ``Busy`` naming the holder.

    Args:
        folder: the run (or search) directory.
        name: the lock file's name inside it.
        advice: what the refused user can do, ending the error's sentence.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    if _key(path) in _held:
        return _held[_key(path)]
    file = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")  # never truncates
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise Busy(folder, holder(path), advice) from None
    file.truncate()
    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": [os.path.basename(sys.executable),
                                                                            *sys.argv],
               "started": datetime.datetime.now().isoformat(timespec="seconds")}, file)
    file.flush()
    held = _held[_key(path)] = Lock(folder, path, file)
    return held


def release(folder: str, *, name: str = NAME) -> None:
    """Releases this process's lock on ``folder``, if it holds one."""
    held = _held.get(_key(os.path.join(folder, name)))
    if held is not None:
        held.release()


def holder(path: str) -> dict:
    """What the lock file at ``path`` says about its holder ({} when it says nothing readable)."""
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
