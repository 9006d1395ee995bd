"""Which models and versions are served: a source that watches the folders, a manager that loads and swaps.

TF Serving's design in small: the *source* lists the version folders of each model on disk (any all-digit
name, ``00000123`` included) and the model's version policy picks the ones wanted; the *manager* loads a
wanted version in the background beside the ones serving, warms it up, and only then lets it take requests;
a version no longer wanted is dropped once a wanted one is available.  A version that fails to load is
reported in the model's status (state END with its error) and whatever served before goes on serving.

The models come from one of two places: the folders named on the command line, looked at again on every poll
(``train.py serve saved_models``: a new model folder appears by itself), or TF Serving's model list
(``--model_name``/``--model_base_path`` or ``--model_config_file``), which ``reconfigure`` replaces whole
(HandleReloadConfigRequest); a model dropped from the list is unloaded.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Callable

from core.errors import UserError
from exports.export import version_dirs
from server.errors import ServingError, not_found

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


def parse_policy(text: str):
    """``latest``, ``all`` or a comma-separated list of version numbers (``--versions``)."""
    text = text.strip().lower()
    if text in ("latest", "all"):
        return text
    try:
        numbers = frozenset(int(part) for part in text.split(","))
    except ValueError:
        numbers = frozenset()
    if not numbers or min(numbers) < 1:
        raise UserError(f"--versions {text!r}: give latest, all, or version numbers such as 1,3")
    return numbers


def wanted_versions(on_disk: list[int], policy) -> set[int]:
    """The versions the policy serves, out of those on disk: ``latest``, ``("latest", N)`` (the newest N, as
    TF Serving's ``latest { num_versions: N }``), ``all``, or a set of numbers (``specific``)."""
    if not on_disk:
        return set()
    if policy == "latest":
        return {max(on_disk)}
    if isinstance(policy, tuple) and policy[0] == "latest":
        return set(sorted(on_disk)[-max(1, policy[1]):])
    if policy == "all":
        return set(on_disk)
    return set(on_disk) & set(policy)


def _versions_on_disk(folder: str) -> dict[int, str]:
    return {v: name for v, name in version_dirs(folder).items()
            if os.path.isfile(os.path.join(folder, name, "saved_model.pb"))}


def is_model_folder(path: str) -> bool:
    return os.path.isdir(path) and bool(_versions_on_disk(path))


def find_models(bases: list[str]) -> dict[str, str]:
    """``{name: model folder}`` for each argument: a model folder (``saved_models/NAME``), or a base folder
    whose model folders are all served."""
    models = {}
    for base in bases:
        if os.path.isfile(os.path.join(base, "saved_model.pb")):
            parent = os.path.dirname(os.path.normpath(base))
            raise UserError(f"{base!r} is one version of a model; serve the model folder {parent!r} "
                            "(--versions picks versions)")
        if is_model_folder(base):
            models[os.path.basename(os.path.normpath(base))] = base
        elif os.path.isdir(base):
            for entry in sorted(os.listdir(base)):
                if not entry.startswith(".") and is_model_folder(os.path.join(base, entry)):
                    models[entry] = os.path.join(base, entry)
        else:
            raise UserError(f"Model folder {base!r} does not exist; exports are written to saved_models/ "
                            "by python train.py")
    return models


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One model as the manager is told of it: where its versions are, which to serve, their labels."""
    folder: str
    policy: object = "latest"
    labels: dict = dataclasses.field(default_factory=dict)   # label -> version (TF Serving's version_labels)


def folder_sources(bases: list[str], policy) -> Callable[[], dict[str, ModelSource]]:
    """The models found under folders, looked for again on every poll."""
    return lambda: {name: ModelSource(folder, policy) for name, folder in find_models(bases).items()}


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: str
    error: str = ""
    servable: object = None  # the loaded Servable while AVAILABLE


class Model:
    """One model's versions and their states; thread-safe."""

    def __init__(self, name: str, source: ModelSource):
        self.name, self.source = name, source
        self._versions: dict[int, VersionStatus] = {}
        self._lock = threading.Lock()

    @property
    def folder(self) -> str:
        return self.source.folder

    def statuses(self) -> list[VersionStatus]:
        with self._lock:
            return [dataclasses.replace(s) for _, s in sorted(self._versions.items())]

    def set(self, version: int, state: str, *, error: str = "", servable=None) -> None:
        with self._lock:
            self._versions[version] = VersionStatus(version, state, error, servable)

    def available(self) -> dict[int, object]:
        with self._lock:
            return {v: s.servable for v, s in self._versions.items() if s.state == AVAILABLE}

    def version_of(self, label: str) -> int:
        """The version a label names (TF Serving's version_labels), or NOT_FOUND as TF Serving words it."""
        if label not in self.source.labels:
            raise not_found(f"Unrecognized servable version label: {label}")
        return self.source.labels[label]

    def servable(self, version: int | None = None, label: str | None = None):
        """The newest available version, or the one ``version`` or ``label`` names; NOT_FOUND as TF Serving
        words it otherwise."""
        if label is not None:
            version = self.version_of(label)
        ready = self.available()
        if version is None:
            if not ready:
                raise not_found(f"Servable not found for request: Latest({self.name})")
            return ready[max(ready)]
        if version not in ready:
            raise not_found(f"Servable not found for request: Specific({self.name}, {version})")
        return ready[version]


class Manager:
    """Loads the wanted versions of every model, swaps them in when ready, and drops the rest.

    Args:
        bases: the folders given on the command line (model folders or base folders); or
        sources: instead of ``bases``, a function giving ``{name: ModelSource}`` (TF Serving's model list).
        policy: ``parse_policy``'s result, for the models found under ``bases``.
        load: (name, version folder, version) -> a ready Servable (raises on failure).
        on_change: called after each load or unload (logging, metrics).
    """

    def __init__(self, bases: list[str] | None, policy, load: Callable[[str, str, int], object],
                 on_change: Callable[[str, int, str, str], None] | None = None, *,
                 sources: Callable[[], dict[str, ModelSource]] | None = None):
        self.bases = list(bases or [])
        self.policy, self._load = policy, load
        self._sources = sources or folder_sources(self.bases, policy)
        self._on_change = on_change or (lambda name, version, state, error: None)
        self.models: dict[str, Model] = {}
        self._poll_lock = threading.Lock()
        self._failed: dict[tuple[str, int], float] = {}  # (model, version) -> folder mtime when it failed
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            raise not_found(f"Could not find any versions of model {name}") from None

    def servable(self, name: str, version: int | None = None, label: str | None = None):
        model = self.models.get(name)
        if model is None:
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise not_found(f"Servable not found for request: {what}")
        return model.servable(version, label)

    def reconfigure(self, sources: Callable[[], dict[str, ModelSource]]) -> None:
        """A new model list (TF Serving's config reload): new models load, dropped ones unload, and the
        call returns once every listed model has had its wanted versions tried."""
        with self._poll_lock:
            self._sources = sources
        self.poll()

    def poll(self) -> None:
        """One look at the folders: load what is newly wanted, then unload what is no longer needed."""
        with self._poll_lock:
            wanted = self._sources()
            for name, source in wanted.items():
                model = self.models.setdefault(name, Model(name, source))
                model.source = source
            for name, model in list(self.models.items()):
                if name in wanted:
                    self._update(model)
                else:
                    for version in model.available():
                        self._unload(model, version)

    def _update(self, model: Model) -> None:
        on_disk = _versions_on_disk(model.folder)
        wanted = wanted_versions(list(on_disk), model.source.policy)
        known = {s.version: s for s in model.statuses()}
        for version in sorted(wanted, reverse=True):  # the newest first: it is the one requests will want
            status = known.get(version)
            if status is None or (status.state == END and self._retry(model, version, on_disk[version])):
                self._load_version(model, version, on_disk[version])
        available = model.available()
        if any(v in wanted for v in available):
            for version in set(available) - wanted:
                self._unload(model, version)

    def _retry(self, model: Model, version: int, folder: str) -> bool:
        # A version that failed is tried again only when its folder changes (re-copied by hand, say); one
        # unloaded because it was no longer wanted is loaded again when it is wanted again.
        key = (model.name, version)
        return key not in self._failed or self._mtime(model, folder) != self._failed[key]

    @staticmethod
    def _mtime(model: Model, folder: str) -> float:
        try:
            return os.stat(os.path.join(model.folder, folder, "saved_model.pb")).st_mtime
        except OSError:
            return -1.0

    def _load_version(self, model: Model, version: int, folder: str) -> None:
        model.set(version, LOADING)
        self._on_change(model.name, version, LOADING, "")
        try:
            servable = self._load(model.name, os.path.join(model.folder, folder), version)
        except Exception as error:  # reported in the model's status; the versions serving go on
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            self._failed[(model.name, version)] = self._mtime(model, folder)
            model.set(version, END, error=message)
            self._on_change(model.name, version, END, message)
            return
        self._failed.pop((model.name, version), None)
        model.set(version, AVAILABLE, servable=servable)
        self._on_change(model.name, version, AVAILABLE, "")

    def _unload(self, model: Model, version: int) -> None:
        servable = model.available().get(version)
        model.set(version, UNLOADING)
        self._on_change(model.name, version, UNLOADING, "")
        if servable is not None:
            servable.close()  # queued requests finish first; requests holding it keep it alive until done
        model.set(version, END)
        self._on_change(model.name, version, END, "")

    def every(self, seconds: float, work: Callable[[], None], name: str) -> None:
        """Runs ``work`` every ``seconds`` in a thread of its own until ``stop``; an error is reported and
        the next round tries again (a folder vanishing mid-scan, a config file half written)."""
        def loop():
            while not self._stop.wait(seconds):
                try:
                    work()
                except (Exception, ServingError) as error:
                    self._on_change("*", 0, "POLL_ERROR", str(error).splitlines()[0] if str(error) else "")

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def start_polling(self, seconds: float) -> None:
        self.every(seconds, self.poll, "version-source")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for model in self.models.values():
            for servable in model.available().values():
                servable.close()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Polls ``predicate`` (tests, start-up); True once it holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()
