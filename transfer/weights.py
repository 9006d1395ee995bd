"""Pretrained weights: Keras' cache, downloads, hashes, local files, and one-line errors when they are missing.

ImageNet weights come from ``~/.keras/models`` (or ``$KERAS_HOME``) when
there, else from Keras' download; offline (``CNN_CLASSROOM_OFFLINE``) a
missing file is named with where to put it.  A cached file is checked
against Keras' published hash before it is used.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.parse

import keras

from core import compat
from core.errors import UserError


def keras_home() -> str:
    """``$KERAS_HOME`` or ``~/.keras``, read now (Keras itself reads it once, at import)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def offline() -> bool:
    return os.environ.get("CNN_CLASSROOM_OFFLINE", "") not in ("", "0")


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _no_imagenet_weights(name: str, filename: str, why: str, url: str | None = None) -> UserError:
    where = f" (from {url})" if url else ""
    return UserError(
        f"No ImageNet weights for backbone {name!r}: {why}. Put {filename}{where} in ~/.keras/models/ "
        f"(or $KERAS_HOME/models/), or pass --weights PATH to a local weights file, or --weights none "
        f"to start from random weights")


def _download_failure(error: BaseException) -> str | None:
    """The URL Keras failed to fetch, '' when the failure names none, None when it is no download failure."""
    url = compat.download_failure_url(error)
    if url is not None:
        return url
    if isinstance(error, (urllib.error.URLError, socket.error, ConnectionError, TimeoutError)):
        return ""
    return None


# The published hashes of the no-top ImageNet weights files (md5; sha256 for ConvNeXt), as in
# keras.applications 3.15.  Keras checks a download against them; ``_check_cached_weights`` checks
# a file already in the cache, which Keras would otherwise try to download again, or load as it is
# when a call does not pass the hash.  MobileNetV2's files are published without one.
WEIGHTS_HASHES = {
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
    "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5": "fac2f116257151a9d068a22e544a4917",
    "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5": "d3e8ec802a04aa4fc771ee12a9a9b836",
    "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5": "07fb09a5933dd0c8eaafa16978110389",
    "efficientnetb0_notop.h5": "50bc09e76180e00e4465e1a485ddc09d",
    "efficientnetb1_notop.h5": "74c4e6b3e1f6a1eea24c589628592432",
    "efficientnetb2_notop.h5": "111f8e2ac8aa800a7a99e3239f7bfb39",
    "efficientnetb3_notop.h5": "af6d107764bb5b1abb91932881670226",
    "efficientnetv2-b0_notop.h5": "893217f2bb855e2983157299931e43ff",
    "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5": "bcbd6486424b2319ff4ef7d526e38f63",
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5": "6d6bbae143d832006294945121d1f1fc",
    "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5": "30ee3e1110167f948a6b9946edeeb738",
    "convnext_tiny_notop.h5": "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    "xception_weights_tf_dim_ordering_tf_kernels_notop.h5": "b0042744bf5b25fce3cb969f33bebb97",
}


def _file_hash(path: str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_cached_weights(name: str, path: str) -> None:
    """Refuses a cached ImageNet weights file whose content is not the published file's."""
    expected = WEIGHTS_HASHES.get(os.path.basename(path))
    if expected is None or not os.path.isfile(path):
        return
    algorithm = "sha256" if len(expected) == 64 else "md5"
    found = _file_hash(path, algorithm)
    if found != expected:
        raise UserError(f"ImageNet weights {path!r} for backbone {name!r} do not match the published file "
                        f"({algorithm} {found}, expected {expected}): the file is incomplete, corrupt or "
                        "replaced; delete it and run again to download it anew")


def imagenet_model(name: str, spec, shape: tuple) -> keras.Model:
    filename = spec.weights_filename(shape)
    cache = os.path.join(keras_home(), "models")
    if not os.path.isfile(os.path.join(cache, filename)) and offline():
        raise _no_imagenet_weights(name, filename, f"{filename} is not in {cache}/ and downloads are off "
                                                   "(CNN_CLASSROOM_OFFLINE is set)")
    _check_cached_weights(name, os.path.join(cache, filename))
    try:
        return spec.constructor(include_top=False, weights="imagenet", input_shape=shape, pooling=spec.pooling)
    except Exception as error:  # a failed download comes as a bare Exception
        url = _download_failure(error)
        if url is None:
            raise
        if url:
            filename = os.path.basename(urllib.parse.urlsplit(url).path) or filename
        reason = first_line(error).rpartition(" -- ")[2]
        why = f"{filename} is not in {cache}/ and the download failed ({reason})"
        raise _no_imagenet_weights(name, filename, why, url or None) from None


def weights_path(weights) -> str:
    path = os.path.expanduser(os.fspath(weights))
    if not os.path.isfile(path):
        raise UserError(f"Weights file {weights!r} does not exist")
    if not path.endswith(".h5"):
        raise UserError(f"Weights file {weights!r} is not a Keras weights file (.weights.h5 or .h5)")
    return path


def load_weights(model: keras.Model, path: str, what: str) -> None:
    try:
        model.load_weights(path)
    except Exception as error:  # shape mismatches and unreadable files come in many types
        raise UserError(f"Could not load weights {path!r} into {what}: {first_line(error)}") from None
