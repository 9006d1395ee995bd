"""A run's data: loading it at the size the model takes, checking it, augmenting it, batching it."""

from __future__ import annotations

import functools
import json
import os

import numpy as np

import augment
import imagesets
import zoo
from core.errors import UserError
from core.rows import concatenate
from imagesets import copies
from training.distribute import is_multi_worker
from training.pipeline import make_pipeline

SHOWN_SKIPS = 20  # skipped files listed on the terminal; data_manifest.json has them all


def load_data(config: dict, backbone=None):
    """The ImageSet of ``config["dataset"]``, resized to what the model takes.

    A backbone fixes the input; folder images take the zoo model's input
    size and channels unless ``--image-size``/``--channels`` say otherwise.
    """
    image_size, channels = config["image_size"], config["channels"]
    if backbone is not None:
        image_size, channels = backbone.input_shape[:2], backbone.input_shape[2]
    elif config["dataset"].startswith("folder:"):
        default = zoo.get(config["model"]).input_shape
        image_size = image_size or default[:2]
        channels = channels or default[2]
    return imagesets.load(config["dataset"], data_dir=config["data_dir"], image_size=image_size, channels=channels,
                          val_fraction=config["val_fraction"], test_fraction=config["test_fraction"],
                          seed=config["seed"], exclude=read_exclude(config.get("exclude")))


def read_exclude(path: str | None) -> list[tuple[str, str]]:
    """--exclude FILE as (path, reason) pairs: an audit's JSON (its "exclude" list of {"file", "reason"}), a JSON
    list of paths, or a text file of paths, one a line ("#" starts a comment).  Paths are relative to the
    dataset folder, or absolute."""
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise UserError(f"Cannot read --exclude {path!r}: {error.strerror or error}") from None
    reason = f"listed in {os.path.basename(path)} (--exclude)"
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if isinstance(values, dict):
        if not isinstance(values.get("exclude"), list):
            raise UserError(f"--exclude {path!r} is a JSON object without an \"exclude\" list; pass the JSON that "
                            "`train.py audit --json FILE` wrote, or a list of paths")
        values = values["exclude"]
    if isinstance(values, list):
        pairs = []
        for item in values:
            if isinstance(item, dict) and isinstance(item.get("file"), str):
                pairs.append((item["file"], f"{reason}: {item.get('reason', 'flagged by the audit')}"))
            elif isinstance(item, str):
                pairs.append((item, reason))
            else:
                raise UserError(f"--exclude {path!r}: each entry must be a path or {{\"file\": ...}}, got {item!r}")
        return pairs
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [(line, reason) for line in lines if line]


def check_data(config: dict, data) -> list[str]:
    """Lines about files a folder source skipped; raises for --strict or an empty validation split."""
    lines = []
    if data.skipped:
        lines.append(f"Skipped {len(data.skipped)} files that are not readable images:")
        lines += [f"  {path}: {reason}" for path, reason in data.skipped[:SHOWN_SKIPS]]
        if len(data.skipped) > SHOWN_SKIPS:
            lines.append(f"  ... and {len(data.skipped) - SHOWN_SKIPS} more (see data_manifest.json in the run "
                         "directory)")
        if config["strict"]:
            listed = "; ".join(f"{path} ({reason})" for path, reason in data.skipped[:5])
            more = f"; and {len(data.skipped) - 5} more" if len(data.skipped) > 5 else ""
            raise UserError(f"--strict: {len(data.skipped)} dataset files are not usable images: {listed}{more}; "
                            "fix or remove them, or drop --strict to skip them")
    if data.excluded:
        lines.append(f"Left out {len(data.excluded)} files listed in {config['exclude']} (--exclude); "
                     "data_manifest.json names them")
    elif config.get("exclude"):
        lines.append(f"Note: none of the files listed in {config['exclude']} (--exclude) is in {config['dataset']}")
    if data.checks is not None:
        lines.append(copies.line(data.checks))
    if data.counts()["val"] == 0:
        raise UserError("The validation split is empty; add images or raise --val-fraction")
    return lines


def flips_for(config: dict) -> bool:
    """Mirroring is on unless turned off, or the data are digits or characters."""
    return augment.default_flips(config["dataset"]) if config["flips"] is None else bool(config["flips"])


def augmentation_for(config: dict, data):
    """The in-graph augmentation stage and the batch-level mixer (either may be None)."""
    spec = config["augment"]
    try:
        parts, _ = augment.parse(spec)
        colour = data.input_shape[-1] == 3
        # AlexNet's lighting noise uses the principal components of this dataset's own pixels.
        pca = augment.fit_pca(data.arrays["train"][0]) if "pca" in parts and colour else None
        layer = augment.policy(spec, input_shape=data.input_shape, flips=flips_for(config), seed=config["seed"],
                               pca=pca)
        mix = augment.mixer(spec, num_classes=data.num_classes, seed=config["seed"])
    except ValueError as error:
        raise UserError(f"--augment {spec!r}: {error}") from None
    return layer, mix


def training_arrays(config: dict, data) -> tuple[np.ndarray, np.ndarray]:
    """What the network fits on: the training split, plus validation for a search's final fit."""
    if config["fit_on_val"]:
        # The final fit of a search: the validation images train too (the epoch count comes from the search).
        # concatenate keeps a folder's images on disk: a view of both splits' rows, not a copy.
        return tuple(concatenate([a, b]) for a, b in zip(data.arrays["train"], data.arrays["val"]))
    return data.arrays["train"]


def train_pipeline(config: dict, data, batch_size: int, shard=None, mix=None):
    """The training images, shuffled each epoch, in batches of ``batch_size`` (``shard``: a share of them).
    uint8 batches: the network casts them in its graph; the mixers blend pixels, so they get floats."""
    x_train, y_train = training_arrays(config, data)
    ds = make_pipeline(x_train, y_train, data.num_classes, batch_size=batch_size, shuffle=True,
                       seed=config["seed"], shard=shard, cast=mix is not None)
    return ds.map(mix) if mix is not None else ds


def worker_pipeline(config: dict, data, context, mix=None):
    """One worker's training pipeline under a multi-worker strategy, given its ``tf.distribute.InputContext``
    (what ``distribute_datasets_from_function`` calls on each worker): its own shard of the images, whatever
    the source (a folder, ``tfds:``, a built-in set: all are rows of the image cache by then), in batches of
    its share of --batch-size."""
    return train_pipeline(config, data, context.get_per_replica_batch_size(config["batch_size"]),
                          (context.num_input_pipelines, context.input_pipeline_id), mix)


def pipelines(config: dict, data, mix=None, strategy=None):
    """(training, validation) tf.data pipelines: shuffled, batched, one-hot, mixed when asked.

    Under a multi-worker strategy each worker's training pipeline reads only
    its own shard of the images (``worker_pipeline``) through
    ``distribute_datasets_from_function``; left to tf.distribute's automatic
    sharding, every worker would read every image and drop all but its share."""
    if strategy is not None and is_multi_worker(strategy):
        train_ds = strategy.distribute_datasets_from_function(
            functools.partial(worker_pipeline, config, data, mix=mix))
    else:
        train_ds = train_pipeline(config, data, config["batch_size"], mix=mix)
    # Validation batches the size of training's: a few of them are in flight at once (prefetch), so a fixed
    # 256 would hold several 256-image float32 batches whatever --batch-size asked for.
    val_ds = make_pipeline(*data.arrays["val"], data.num_classes, batch_size=config["batch_size"], shuffle=False,
                           seed=0, cast=False)
    return train_ds, val_ds


def clean_batches(config: dict, data):
    """Training batches as the network sees them without augmentation or mixing, shuffled, of --batch-size:
    what batch norm's statistics are re-estimated on (``core.batchnorm``)."""
    x_train, y_train = training_arrays(config, data)
    return make_pipeline(x_train, y_train, data.num_classes, batch_size=config["batch_size"], shuffle=True,
                         seed=config["seed"], cast=False)


def class_weights(config: dict, labels: np.ndarray, num_classes: int):
    """Keras' class_weight for --class-weight balanced (None otherwise)."""
    if config["class_weight"] == "none":
        return None
    if config["class_weight"] != "balanced":
        raise UserError(f"Unknown class weighting {config['class_weight']!r} (valid: none, balanced)")
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=labels)
    result = {int(c): 1.0 for c in range(num_classes)}
    result.update({int(c): float(w) for c, w in zip(present, weights)})
    return result
