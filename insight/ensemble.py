"""Averaging several trained models into one SavedModel.

Models trained with different seeds or architectures make different mistakes;
averaging their class probabilities usually beats each of them (Dietterich
2000, "Ensemble Methods in Machine Learning"; the ILSVRC winners from AlexNet
on submitted ensembles).

    python train.py ensemble saved_models/lenet5-digits saved_models/mlp-digits --name digits-ensemble

Each member is an export of this toolkit (``saved_models/NAME`` means its
newest version); its Keras model (``assets/model.keras``) is loaded, and one
Keras model averages the members' probabilities.  Members must take the same
input shape and predict the same class names in the same order.  The result is
exported like any run (``exports.export``): raw float32 pixels in,
``probabilities``/``class_ids``/``classes`` out, TensorFlow only to serve, as
the next version of ``--name`` (the same name again makes version 2).
When the members' run directories are still there and they share one
split, the members and the ensemble are scored on its test images.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from core.errors import UserError
from core.rows import predict
from exports.export import check_name, export_savedmodel
from exports.load import read_metadata
from training import rundir
from training.config import DEFAULTS, complete


def read_member(path: str) -> tuple[str, dict]:
    """(version directory, metadata) of an export, checked to carry its Keras model."""

    version_dir, metadata = read_metadata(path)
    if not os.path.isfile(os.path.join(version_dir, "assets", "model.keras")):
        raise UserError(f"Export {version_dir!r} has no assets/model.keras (exported by an older version); "
                        "export its run again")
    return version_dir, metadata


def check_compatible(members: list[tuple[str, dict]]) -> None:
    first_dir, first = members[0]
    for version_dir, metadata in members[1:]:
        if list(metadata["input_shape"]) != list(first["input_shape"]):
            raise UserError(f"{version_dir!r} takes {'x'.join(map(str, metadata['input_shape']))} images but "
                            f"{first_dir!r} takes {'x'.join(map(str, first['input_shape']))}; ensemble members "
                            "must share one input shape (train them with the same --image-size and --channels)")
        if list(metadata["class_names"]) != list(first["class_names"]):
            raise UserError(f"{version_dir!r} and {first_dir!r} predict different classes "
                            f"({metadata['class_names'][:5]} vs. {first['class_names'][:5]}); ensemble members must "
                            "be trained on the same classes")


def build_ensemble(models: list, name: str = "ensemble"):
    """One Keras model: raw images in, the members' mean probabilities out."""
    import keras

    inputs = keras.Input(shape=tuple(models[0].input_shape[1:]), dtype="float32", name="image")
    for index, model in enumerate(models, start=1):
        model.name = f"member{index}_{model.name}"  # two members of one architecture share a name otherwise
    outputs = keras.layers.Average(name="average")([model(inputs) for model in models])
    return keras.Model(inputs, outputs, name=name)


def load_members(paths: list[str]):
    """The members' version directories, metadata and Keras models."""
    import keras


    if len(paths) < 2:
        raise UserError(f"An ensemble needs at least two exports, got {len(paths)}")
    members = [read_member(path) for path in paths]
    if len({version_dir for version_dir, _ in members}) < len(members):
        raise UserError("The same export is named twice; give each member once")
    check_compatible(members)
    models = []
    for version_dir, _ in members:
        try:
            models.append(keras.models.load_model(os.path.join(version_dir, "assets", "model.keras"),
                                                  safe_mode=True, compile=False))
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"Could not load the Keras model of {version_dir!r}: {reason}") from None
    return members, models


SPLIT_KEYS = ("dataset", "data_dir", "image_size", "channels", "val_fraction", "test_fraction", "seed")


def common_test_split(members: list[tuple[str, dict]]):
    """(images, labels) of the test split every member held out, or (None, why not).

    --seed also seeds the split, so members trained with different seeds saw
    each other's test images: no split is held out from all of them.
    """

    configs = [rundir.read_config(metadata.get("run_dir") or "") for _, metadata in members]
    if any(config is None for config in configs):
        return None, "a member's run directory is gone"
    splits = {json.dumps([config.get(k) for k in SPLIT_KEYS]) for config in configs}
    if len(splits) > 1:
        return None, ("the members were trained on different splits (dataset, fractions or --seed, which also "
                      "seeds the split), so no test image is unseen by all of them")
    from training import run

    config = complete(configs[0])
    return run.load_data(config, run.load_backbone(config)).arrays["test"], None


def build_parser() -> argparse.ArgumentParser:
    """``train.py ensemble``'s own parser (it takes no training flags)."""
    parser = argparse.ArgumentParser(prog="train.py ensemble", description=(
        "Average the predicted probabilities of several exports and export the average as one SavedModel."))
    parser.add_argument("members", nargs="+", metavar="EXPORT", help="saved_models/NAME[/VERSION] of each member")
    parser.add_argument("--name", default="ensemble",
                        help="the model the ensemble's export is a version of: EXPORT_DIR/NAME/VERSION, the next "
                             "version when NAME exists, which a running `train.py serve` swaps in")
    parser.add_argument("--export-dir", default=DEFAULTS["export_dir"], help="SavedModel root")
    parser.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                        help="score members and ensemble on their common test split (needs their run directories)")
    return parser


def main(argv) -> int:
    args = build_parser().parse_args(argv)
    check_name(args.name, "--name")  # before the members load, not after
    # Here rather than at the top, so that ensemble --help starts no TensorFlow.
    import zoo  # noqa: F401 - registers the zoo's custom layers for loading
    from training import run

    members, models = load_members(args.members)
    names = [os.path.basename(os.path.dirname(version_dir)) for version_dir, _ in members]
    ensemble = build_ensemble(models, name=args.name.replace("-", "_"))
    first = members[0][1]
    scores = {}
    split, why_not = common_test_split(members) if args.evaluate else (None, None)
    if split is not None:
        images, labels = split  # a folder's test images stay on disk, read a chunk at a time
        member_probabilities = [predict(model, images, 256) for model in models]
        for name, probabilities in zip(names, member_probabilities):
            scores[name] = float((probabilities.argmax(1) == labels).mean())
        scores["ensemble"] = float((np.mean(member_probabilities, axis=0).argmax(1) == labels).mean())
        for name, accuracy in scores.items():
            print(f"{name:<30} test accuracy {accuracy:.4f}")
    elif why_not:
        print(f"Not scored: {why_not}")
    datasets = sorted({str(metadata.get("dataset")) for _, metadata in members})
    path = export_savedmodel(
        ensemble, args.export_dir, args.name, class_names=first["class_names"],
        metadata={"model": "ensemble", "members": [os.path.abspath(d) for d, _ in members],
                  "dataset": datasets[0] if len(datasets) == 1 else datasets,
                  "test_accuracy": scores.get("ensemble"), "flips": first.get("flips"),
                  "member_test_accuracy": {k: v for k, v in scores.items() if k != "ensemble"}})
    print(run.exported_line(path, f"the mean of {len(models)} members' probabilities"))
    return 0
