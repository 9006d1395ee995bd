"""TF Serving's configuration files: the model list (``--model_config_file``, a ``ModelServerConfig`` text
proto) and the batching parameters (``--batching_parameters_file``, a ``BatchingParameters`` text proto).

    model_config_list {
      config { name: "half_plus_two" base_path: "/models/half_plus_two" model_platform: "tensorflow"
               model_version_policy { specific { versions: 1 versions: 2 } }
               version_labels { key: "stable" value: 1 } }
    }

The model list is read with the protos of Google's ``tensorflow-serving-api``, so a file TF Serving takes is
taken here, and one it refuses is refused with the parser's line and column.
"""

from __future__ import annotations

import dataclasses
import os
import re

from core.errors import UserError
from server.models import ModelSource


def _text(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as error:
        raise UserError(f"{flag}: cannot read {path!r} ({error.strerror})") from None


def policy_of(config) -> object:
    """A ``ModelVersionPolicy`` as ``server.models.wanted_versions`` takes it (latest when unset)."""
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return "all"
    if which == "specific":
        if not policy.specific.versions:
            raise UserError(f"model {config.name!r}: model_version_policy specific lists no versions")
        return frozenset(int(v) for v in policy.specific.versions)
    if which == "latest" and policy.latest.num_versions > 1:
        return ("latest", int(policy.latest.num_versions))
    return "latest"


def sources_of(server_config, relative_to: str = ".") -> dict[str, ModelSource]:
    """``{name: ModelSource}`` of a ``ModelServerConfig`` message, checked as TF Serving checks it."""
    which = server_config.WhichOneof("config")
    if which is None:
        return {}
    if which != "model_config_list":
        raise UserError("Only model_config_list is supported (custom_model_config is TF Serving's plug-in hook)")
    sources: dict[str, ModelSource] = {}
    for config in server_config.model_config_list.config:
        if not config.name:
            raise UserError("A model config has no name")
        if config.name in sources:
            raise UserError(f"Model {config.name!r} is configured twice")
        if not config.base_path:
            raise UserError(f"Model {config.name!r} has no base_path")
        if config.model_platform not in ("", "tensorflow"):
            raise UserError(f"Model {config.name!r}: model_platform {config.model_platform!r} is not served here; "
                            "only tensorflow")
        base = config.base_path
        if base.startswith("file://"):
            base = base[len("file://"):]
        if "://" in base:
            raise UserError(f"Model {config.name!r}: base_path {config.base_path!r} is not a local folder")
        base = os.path.join(relative_to, base)
        sources[config.name] = ModelSource(base, policy_of(config), dict(config.version_labels))
    return sources


def read_model_config(path: str):
    """The ``ModelServerConfig`` in a text-proto file."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(_text(path, "--model_config_file"), message)
    except text_format.ParseError as error:  # TF Serving's two lines, in one
        raise UserError(f"Invalid protobuf file: '{path}': Error parsing text-format "
                        f"tensorflow.serving.ModelServerConfig: {error}") from None
    return message


def missing_base_paths(sources: dict[str, ModelSource]) -> list[str]:
    return [f"{name} ({source.folder})" for name, source in sources.items() if not os.path.isdir(source.folder)]


# --- batching parameters ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    max_batch_size: int | None = None
    batch_timeout_micros: int | None = None
    max_enqueued_batches: int | None = None
    num_batch_threads: int | None = None


# BatchingParameters' fields (tensorflow_serving/servables/tensorflow/session_bundle_config.proto), which the
# tensorflow-serving-api package does not ship: the ones that map onto our batcher, and the rest accepted
# and reported as without effect rather than refused, so TF Serving's own files load.
_USED = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"}
_ACCEPTED = {"thread_pool_name", "allowed_batch_sizes", "pad_variable_length_inputs", "enable_large_batch_splitting",
             "max_execution_batch_size", "enable_lazy_split", "max_enqueued_batches_for_low_priority",
             "batch_padding_policy", "mixed_priority_batching_policy", "low_priority_max_batch_size",
             "low_priority_batch_timeout_micros", "low_priority_allowed_batch_sizes",
             "low_priority_max_enqueued_batches", "enable_priority_batching"}
_WRAPPED = re.compile(r"(\w+)\s*\{\s*value\s*:\s*([^\s}]+)\s*\}")   # max_batch_size { value: 128 }
_PLAIN = re.compile(r"(\w+)\s*:\s*([^\s{}]+)")                       # allowed_batch_sizes: 8


def read_batching_parameters(path: str) -> tuple[BatchingParameters, list[str]]:
    """The parameters our batcher uses, and the names of those it accepts without using."""
    text = re.sub(r"#[^\n]*", "", _text(path, "--batching_parameters_file"))
    values: dict[str, int] = {}
    unused: list[str] = []
    rest = text
    for pattern in (_WRAPPED, _PLAIN):
        for key, value in pattern.findall(rest):
            if key not in _USED | _ACCEPTED:
                raise UserError(f"--batching_parameters_file {path!r}: unknown field {key!r}; "
                                f"the fields used here are {', '.join(sorted(_USED))}")
            if key in _USED:
                try:
                    values[key] = int(value.strip('"'))
                except ValueError:
                    raise UserError(f"--batching_parameters_file {path!r}: {key} must be a whole number, "
                                    f"got {value!r}") from None
            elif key not in unused:
                unused.append(key)
        rest = pattern.sub(" ", rest)
    if rest.strip():
        raise UserError(f"--batching_parameters_file {path!r}: cannot read {rest.strip().splitlines()[0]!r}")
    for key, value in values.items():
        if value < (0 if key == "batch_timeout_micros" else 1):
            raise UserError(f"--batching_parameters_file {path!r}: {key} must be positive, got {value}")
    return BatchingParameters(**values), unused
