"""Run directories: one per training run, resumable, never silently overwritten.

    runs/<name>/config.json        the resolved configuration (written first)
    runs/<name>/backup/            checkpoints while unfinished (training.checkpoint), and
                                   run_identity.json: the class list, model and input shape they fit
    runs/<name>/metrics.json       written last: its presence means "finished"

Choosing the directory for a new command:
  * no directory of that name: start it;
  * unfinished, same configuration: resume it (the interrupted-run case);
  * finished, or unfinished with another configuration: use ``name-2``,
    ``name-3``, ... so nothing is overwritten or mixed;
  * in use by another process (its ``.lock``, see ``training.lock``): the
    same, unless the user named the run, which is then refused.

Every file here is written under a temporary name and renamed into place;
a full disk stops the run with one line (``core.errors.DiskFull``).
"""

from __future__ import annotations

import csv
import json
import os

from core.errors import UserError, size_of, writing
from training import lock

# Configuration keys that only say where outputs go, how strictly data are checked, or how the same
# computation is spread over devices (the batch size is global); changing them still resumes.
OUTPUT_KEYS = {"run_name", "runs_dir", "export_dir", "export", "verbose", "export_name", "strict", "strategy",
               "export_formats"}


def fingerprint(config: dict) -> dict:
    # A setting left unset (None) is the same as one the run's configuration does not name: an unfinished
    # run from before an option existed still resumes.
    return {k: v for k, v in config.items() if k not in OUTPUT_KEYS and v is not None}


def is_finished(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "metrics.json"))


def read_config(path: str) -> dict | None:
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_new(path: str) -> bool:
    """Nothing there yet, or only the lock file of a process that took the name and wrote nothing."""
    return not os.path.isdir(path) or not set(os.listdir(path)) - {lock.NAME}


def choose(runs_dir: str, base: str, config: dict, *, claim: bool = False,
           named: bool = False) -> tuple[str, bool, list[str]]:
    """Returns (run directory, resuming?, notes for the user).

    With ``claim`` the directory is locked for this process (``training.lock``)
    before it is judged, so two commands started together never share one: a
    directory in use by another process is passed over like a finished run,
    or, when the user ``named`` the run, refused with the holder's pid.
    """
    notes = []
    for index in range(1, 10_000):
        name = base if index == 1 else f"{base}-{index}"
        path = os.path.join(runs_dir, name)
        held = None
        if claim and not is_finished(path):
            try:
                held = lock.acquire(path, advice="wait for it to finish, or pass another --run-name")
            except lock.Busy as busy:
                if named:
                    raise
                who = f"process {busy.pid}" if busy.pid else "another process"
                notes.append(f"run {name!r} is in use by {who}; leaving it to it")
                continue
        if is_new(path):
            return path, False, notes
        if is_finished(path):
            if held:
                held.release()
            notes.append(f"run {name!r} already finished; keeping it")
            continue
        previous = read_config(path)
        if previous is not None and fingerprint(previous) == fingerprint(config):
            return path, True, notes
        if held:
            held.release()
        changed = sorted(k for k in set(fingerprint(previous or {})) | set(fingerprint(config))
                         if (previous or {}).get(k) != config.get(k))
        notes.append(f"run {name!r} is unfinished with a different configuration ({', '.join(changed[:5])}); "
                     "rerun its own command to resume it")
    raise RuntimeError(f"too many runs named {base!r} in {runs_dir}")


IDENTITY = os.path.join("backup", "run_identity.json")


def check_identity(run_dir: str, identity: dict) -> None:
    """Refuses to resume checkpoints made for other classes, another model or another input size.

    The configuration can be identical while the data changed: a class folder
    added to or removed from a folder dataset between the crash and the rerun.
    """
    try:
        with open(os.path.join(run_dir, IDENTITY), encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return  # a run from before identities were saved
    changes = []
    old, new = saved.get("class_names", []), identity["class_names"]
    if old != new:
        added, removed = [c for c in new if c not in old], [c for c in old if c not in new]
        parts = ([f"added {', '.join(map(repr, added))}"] if added else []) + \
                ([f"removed {', '.join(map(repr, removed))}"] if removed else [])
        changes.append(f"the class list changed ({'; '.join(parts) or 'same classes, new order'})")
    for key, what in (("model", "the model"), ("input_shape", "the input size")):
        if saved.get(key) != identity[key]:
            changes.append(f"{what} changed ({saved.get(key)} -> {identity[key]})")
    if changes:
        raise UserError(f"Cannot resume run {run_dir!r}: {', and '.join(changes)} since its checkpoints were "
                        f"saved; use --run-name NEW for a new run, or delete {run_dir}")


def write_identity(run_dir: str, identity: dict) -> None:
    os.makedirs(os.path.join(run_dir, "backup"), exist_ok=True)
    write_json(os.path.join(run_dir, IDENTITY), identity)


def read_history(csv_path: str) -> list[dict]:
    if not os.path.isfile(csv_path):
        return []
    rows = []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                rows.append({k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()
                             if k is not None and v not in ("", None)})
            except ValueError:
                pass  # a row torn by a crash mid-write; its epoch is rerun
    return [row for row in rows if "epoch" in row]


def trim_history(csv_path: str, epochs: int) -> list[dict]:
    """Drops rows of epochs the checkpoint does not cover (they will be rerun)."""
    rows = [row for row in read_history(csv_path) if row["epoch"] < epochs]
    if os.path.isfile(csv_path):
        with open(csv_path, newline="") as f:
            header = next(csv.reader(f), None)
        tmp = csv_path + ".tmp"
        with writing(csv_path, needed=size_of(csv_path), cleanup=[tmp]):
            with open(tmp, "w", newline="") as f:
                if header and rows:
                    writer = csv.DictWriter(f, fieldnames=header)
                    writer.writeheader()
                    writer.writerows(rows)
            os.replace(tmp, csv_path)
    return rows


def write_json(path: str, data: dict) -> None:
    """Writes ``data`` to a temporary file and renames it over ``path``: a reader sees the old file or the new.
    The temporary file is the process's own: the workers of a distributed search write the same search.json at
    once, and with one shared name a worker's rename found its file already renamed by another."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n"
    tmp = f"{path}.{os.getpid()}.tmp"
    with writing(path, needed=len(text.encode("utf-8")), cleanup=[tmp]):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
