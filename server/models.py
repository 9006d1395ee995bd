"""Which models and versions are served: a source that watches the folders, a manager that loads and swaps.

TF Serving's design in small: the *source* lists the version folders of each model on disk and the
version policy picks the ones wanted; the *manager* loads a wanted version in the background beside the
ones serving, warms it up, and only then lets it take requests; a version no longer wanted is dropped once
a wanted one is available.  A version that fails to load is reported in the model's status (state END with
its error) and whatever served before goes on serving.  Our exports appear by an atomic rename, so a
version folder is complete when it is seen.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Callable

from core.errors import UserError
from server.errors import not_found
from exports.export import versions as version_folders

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


def parse_policy(text: str) -> str | frozenset[int]:
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
    """The versions the policy serves, out of those on disk."""
    if not on_disk:
        return set()
    if policy == "latest":
        return {max(on_disk)}
    if policy == "all":
        return set(on_disk)
    return set(on_disk) & set(policy)


def is_model_folder(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, str(v), "saved_model.pb"))
                                       for v in version_folders(path))


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


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: str
    error: str = ""
    servable: object = None  # the loaded Servable while AVAILABLE


class Model:
    """One model's versions and their states; thread-safe."""

    def __init__(self, name: str, folder: str):
        self.name, self.folder = name, folder
        self._versions: dict[int, VersionStatus] = {}
        self._lock = threading.Lock()

    def statuses(self) -> list[VersionStatus]:
        with self._lock:
            return [dataclasses.replace(s) for _, s in sorted(self._versions.items())]

    def set(self, version: int, state: str, *, error: str = "", servable=None) -> None:
        with self._lock:
            self._versions[version] = VersionStatus(version, state, error, servable)

    def available(self) -> dict[int, object]:
        with self._lock:
            return {v: s.servable for v, s in self._versions.items() if s.state == AVAILABLE}

    def servable(self, version: int | None = None):
        """The newest available version, or ``version``; NOT_FOUND as TF Serving words it otherwise."""
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
        bases: the folders given on the command line (model folders or base folders).
        policy: ``parse_policy``'s result.
        load: a version folder -> a ready Servable (raises on failure).
        on_change: called after each load or unload (logging, metrics).
    """

    def __init__(self, bases: list[str], policy, load: Callable[[str, str, int], object],
                 on_change: Callable[[str, int, str, str], None] | None = None):
        self.bases, self.policy, self._load = list(bases), policy, load
        self._on_change = on_change or (lambda name, version, state, error: None)
        self.models: dict[str, Model] = {}
        self._poll_lock = threading.Lock()
        self._failed: dict[tuple[str, int], float] = {}  # (model, version) -> folder mtime when it failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def model(self, name: str) -> Model:
        try:
            return self.models[name]
        except KeyError:
            raise not_found(f"Could not find any versions of model {name}") from None

    def poll(self) -> None:
        """One look at the folders: load what is newly wanted, then unload what is no longer needed."""
        with self._poll_lock:
            for name, folder in find_models(self.bases).items():
                self.models.setdefault(name, Model(name, folder))
            for model in list(self.models.values()):
                self._update(model)

    def _update(self, model: Model) -> None:
        on_disk = [v for v in version_folders(model.folder)
                   if os.path.isfile(os.path.join(model.folder, str(v), "saved_model.pb"))]
        wanted = wanted_versions(on_disk, self.policy)
        known = {s.version: s for s in model.statuses()}
        for version in sorted(wanted, reverse=True):  # the newest first: it is the one requests will want
            status = known.get(version)
            if status is None or (status.state == END and self._retry(model, version)):
                self._load_version(model, version)
        available = model.available()
        if any(v in wanted for v in available):
            for version in set(available) - wanted:
                self._unload(model, version)

    def _retry(self, model: Model, version: int) -> bool:
        # A version that failed is tried again only when its folder changes (re-copied by hand, say).
        key = (model.name, version)
        return key in self._failed and self._mtime(model, version) != self._failed[key]

    @staticmethod
    def _mtime(model: Model, version: int) -> float:
        try:
            return os.stat(os.path.join(model.folder, str(version), "saved_model.pb")).st_mtime
        except OSError:
            return -1.0

    def _load_version(self, model: Model, version: int) -> None:
        model.set(version, LOADING)
        self._on_change(model.name, version, LOADING, "")
        try:
            servable = self._load(model.name, os.path.join(model.folder, str(version)), version)
        except Exception as error:  # reported in the model's status; the versions serving go on
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            self._failed[(model.name, version)] = self._mtime(model, version)
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

    def start_polling(self, seconds: float) -> None:
        def loop():
            while not self._stop.wait(seconds):
                try:
                    self.poll()
                except Exception as error:  # a folder vanishing mid-scan: look again next time
                    self._on_change("*", 0, "POLL_ERROR", str(error).splitlines()[0] if str(error) else "")

        self._thread = threading.Thread(target=loop, name="version-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
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
