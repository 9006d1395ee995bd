"""A small TFDS dataset built offline, so a benchmark can run ``train.py --dataset tfds:NAME``.

    from local_tfds import prepare
    name = prepare(data_dir, crop_at, train=1200, test=300, size=160, class_names=["a", "b"])
    # then: train.py --dataset tfds:bench_photos --data-dir DATA_DIR

``crop_at(i)`` gives the i-th example's uint8 pixels (size x size x 3) and class index; the train split holds
examples 0 .. train-1 and the test split the ``test`` after them, stored as JPEG like most image datasets.

Only preparing needs this module.  A reader needs the prepared folder alone
(``DATA_DIR/bench_photos/1.0.0``): ``tfds.builder(name, data_dir=...)`` falls back to reading a dataset
from its files when no builder class of that name is registered, so ``train.py`` runs on it unchanged, in a
process that never imports this code, as it would on a dataset prepared on another machine.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

NAME = "bench_photos"  # tfds' name for BenchPhotos


class BenchPhotos(tfds.core.GeneratorBasedBuilder):
    """Photograph crops in ``len(class_names)`` classes, with train and test splits and (image, label) keys."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, crop_at, train: int, test: int, size: int, class_names, **kwargs):
        # Set before the base class's __init__, which may already read the info.
        self._crop_at, self._size, self._class_names = crop_at, size, list(class_names)
        self._ranges = {"train": (0, train), "test": (train, train + test)}
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(self._size, self._size, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=self._class_names)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(*bounds) for split, bounds in self._ranges.items()}

    def _generate_examples(self, start: int, stop: int):
        for i in range(start, stop):
            pixels, label = self._crop_at(i)
            yield i, {"image": pixels, "label": int(label)}


def prepare(data_dir: str, crop_at, *, train: int, test: int, size: int, class_names) -> str:
    """Writes the dataset's records and info under ``data_dir``; returns the name ``tfds:`` takes."""
    tfds.disable_progress_bar()
    builder = BenchPhotos(crop_at=crop_at, train=train, test=test, size=size, class_names=class_names,
                          data_dir=data_dir)
    # Nothing to download; without this tfds would first ask Google Cloud Storage for a prepared copy.
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return NAME
