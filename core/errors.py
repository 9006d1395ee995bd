"""The one exception type for a user's mistake (bad path, unknown name...).

Command-line entry points print its message on one line and exit non-zero,
without a traceback; anything else is a bug and keeps its traceback.
A full disk is reported the same way (``DiskFull``), by ``writing`` around
each write of a run's state.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import shutil


class UserError(Exception):
    """A problem with what the user asked for, stated with what to do about it."""


# --- A full disk ---------------------------------------------------------------------------------

_FULL = (errno.ENOSPC, errno.EDQUOT)
# TensorFlow's and HDF5's errors carry the OS message in their text rather than an errno.
_FULL_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), "errno = 28")


class DiskFull(UserError):
    """A write failed because the disk (or the user's quota) is full.

    Every write guarded by ``writing`` goes to a temporary name first and is
    renamed into place, so what was written before the failure is intact.

    Args:
        path: the file or folder that could not be written.
        needed: roughly how many bytes it needed, when that can be known
            (the size of the file it would have replaced), else None.
        at_least: ``needed`` is only what was written before the disk
            filled, so the write needed more.
    """

    def __init__(self, path: str, needed: int | None = None, *, at_least: bool = False):
        self.path, self.needed = path, needed
        folder = next((p for p in (path, os.path.dirname(path) or ".") if os.path.isdir(p)), None)
        room = [f"{size_text(shutil.disk_usage(folder).free)} free there now"] if folder else []
        room += [f"{'more than' if at_least else 'about'} {size_text(needed)} needed"] if needed else []
        super().__init__(f"the disk is full: could not write {path}" + (f" ({'; '.join(room)})" if room else "") +
                         ". What was written before is intact; free some space and run the same command again "
                         "to continue where it stopped")


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk or the quota is full (an OSError, or TensorFlow's or HDF5's wording)."""
    if isinstance(error, OSError) and error.errno in _FULL:
        return True
    return any(text in str(error) for text in _FULL_TEXT)


@contextlib.contextmanager
def writing(path: str, *, needed: int | None = None, cleanup=()):
    """Turns a full disk inside the block into one ``DiskFull`` line naming ``path``.

    ``cleanup`` names the temporary files or folders the block was writing;
    they are deleted, so the space a torn write took is given back.
    """
    try:
        yield
    except Exception as error:
        if not is_disk_full(error) or isinstance(error, DiskFull):
            raise
        torn = sum(size_of(partial) or 0 for partial in cleanup if not os.path.islink(partial))
        for partial in cleanup:
            if os.path.isfile(partial) and not os.path.islink(partial):
                os.truncate(partial, 0)  # frees its space now, even while a writer still holds it open
        # An HDF5 file whose close failed stays open in the failed writer's frames; let them go now, with
        # room to close it, rather than at exit, where h5py's last attempt crashes the interpreter.
        error.__traceback__ = None
        del error
        gc.collect()
        for partial in cleanup:
            if os.path.isdir(partial) and not os.path.islink(partial):
                shutil.rmtree(partial, ignore_errors=True)
            elif os.path.lexists(partial):
                os.remove(partial)
        raise DiskFull(path, needed or torn or None, at_least=not needed) from None  # more than the torn part


def size_of(path: str) -> int | None:
    """Bytes in the file or folder at ``path`` (None when there is none): what rewriting it will roughly need."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    if not os.path.isdir(path):
        return None
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(path) for name in names)


def size_text(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
