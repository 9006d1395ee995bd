"""An array of images that stays on disk: rows of a uint8 file read when indexed.

``DiskImages`` is what a folder source gives for a split: it holds the path
of the folder's image cache (``imagesets.cache``) and which of its rows
belong to the split, never the pixels.  Indexing it reads those rows with
plain file reads, so memory holds the batch asked for and nothing more.

Plain reads rather than ``np.memmap``: the pages of a mapped file that a
process has touched count in its resident memory, so one epoch over a
mapped cache would show the whole cache in RSS.  Pages read with ``pread``
sit in the kernel's page cache, which the kernel drops under pressure.
"""

from __future__ import annotations

import math
import os

import numpy as np


class DiskImages:
    """(N, H, W, C) uint8 images: row ``i`` is row ``rows[i]`` of the file ``path``.

    Supports ``len``, ``shape``, ``dtype``, ``ndim``; ``images[i]``,
    ``images[a:b]``, ``images[index_array]``, ``images[mask]`` and tuple keys
    (``images[:, 0, 0]``) give ndarrays, like numpy; ``np.asarray(images)``
    reads everything.  ``select`` and ``concat`` give views, reading nothing.

    Other row types work the same way: ``dtype`` float32 holds a backbone's
    feature maps (``transfer.features``), any rank of row.  ``owner`` is kept
    alive by every view: whatever deletes a temporary file when collected.
    """

    def __init__(self, path: str, row_shape, rows=None, *, count: int | None = None, dtype=np.uint8, owner=None):
        self.path = str(path)
        self.row_shape = tuple(int(d) for d in row_shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 1 + len(self.row_shape)
        self.row_bytes = math.prod(self.row_shape) * self.dtype.itemsize
        self.rows = np.arange(count, dtype=np.int64) if rows is None else np.asarray(rows, np.int64).reshape(-1)
        self.owner = owner

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.row_shape)

    @property
    def size(self) -> int:
        return len(self.rows) * math.prod(self.row_shape)

    @property
    def nbytes(self) -> int:  # what a copy in memory would take
        return len(self.rows) * self.row_bytes

    def __repr__(self) -> str:
        return f"DiskImages({self.path!r}, shape={self.shape})"

    def select(self, index) -> DiskImages:
        """The rows ``index`` (an index array, mask or slice) as a view on the same file."""
        return self._view(self.rows[index])

    def _view(self, rows) -> DiskImages:
        return DiskImages(self.path, self.row_shape, rows, dtype=self.dtype, owner=self.owner)

    def concat(self, *others: DiskImages) -> DiskImages:
        """These rows then the others' rows, as one view; they must be views of the same file."""
        for other in others:
            if other.path != self.path or other.row_shape != self.row_shape or other.dtype != self.dtype:
                raise ValueError(f"cannot join rows of {other!r} to {self!r}: not the same file")
        return self._view(np.concatenate([self.rows, *(o.rows for o in others)]))

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self._getitem_tuple(key)
        if isinstance(key, (int, np.integer)):
            return self._read(self.rows[[key]])[0]
        return self._read(self.rows[key])

    def _getitem_tuple(self, key: tuple):
        # The first key picks rows (read from disk); the rest applies to what was read, as numpy would.
        first, rest = key[0], key[1:]
        if first is Ellipsis:
            return self._read(self.rows)[key]
        picked = self[first]
        return picked[rest] if isinstance(first, (int, np.integer)) else picked[(slice(None), *rest)]

    def __array__(self, dtype=None, copy=None):
        images = self._read(self.rows)
        return images if dtype is None else images.astype(dtype)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """The file's rows ``rows`` in that order.  Each run of consecutive rows (in the order asked) is one read
        straight into its place in the result: no second copy to put rows in order.  The training pipeline sorts
        each batch's indices first (``training.pipeline.make_pipeline``), so rows that sit together on disk come
        in one read."""
        out = np.empty((len(rows), *self.row_shape), self.dtype)
        if not len(rows):
            return out
        starts = np.flatnonzero(np.diff(rows) != 1) + 1
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for begin, end in zip([0, *starts.tolist()], [*starts.tolist(), len(rows)]):
                self._read_run(fd, int(rows[begin]), out[begin:end])
        finally:
            os.close(fd)
        return out

    def _read_run(self, fd: int, first_row: int, into: np.ndarray) -> None:
        view, offset = memoryview(into.reshape(-1)).cast("B"), first_row * self.row_bytes
        while len(view):
            got = os.preadv(fd, [view], offset)
            if got == 0:
                raise OSError(f"{self.path!r} ends before row {offset // self.row_bytes}: the image cache is "
                              "truncated; delete it and load the folder again")
            view, offset = view[got:], offset + got

    def write(self, first_row: int, rows: np.ndarray) -> None:
        """Writes ``rows`` at the file's rows ``first_row``, ``first_row + 1``, ... (a file being filled)."""
        fd = os.open(self.path, os.O_WRONLY)
        try:
            write_at(fd, np.ascontiguousarray(rows, self.dtype), first_row * self.row_bytes)
        finally:
            os.close(fd)


def write_at(fd: int, array: np.ndarray, offset: int) -> None:
    """Writes the C-contiguous ``array``'s bytes into the open file ``fd`` from byte ``offset``, all of them
    (``pwrite`` may write fewer bytes than asked)."""
    view = memoryview(array.reshape(-1)).cast("B")
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
