"""Run directories: one per training run, resumable, never silently overwritten.

    runs/<name>/config.json        the resolved configuration (written first)
    runs/<name>/backup/            checkpoints while unfinished (training.checkpoint), and
                                   run_identity.json: the class list, model and input shape they fit
    runs/<name>/metrics.json       written last: its presence means "finished"

Choosing the directory for a new command:
  * no directory of that name: start it;
  * unfinished, same configuration: resume it (the interrupted-run case);
  * finished, or unfinished with another configuration: use ``name-2``,
    ``name-3``, ... so nothing is overwritten or mixed.
"""

from __future__ import annotations

import csv
import json
import os

from training.errors import UserError

# Configuration keys that only say where outputs go, how strictly data are checked, or how the same
# computation is spread over devices (the batch size is global); changing them still resumes.
OUTPUT_KEYS = {"run_name", "runs_dir", "export_dir", "export", "verbose", "export_name", "strict", "strategy"}


def fingerprint(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in OUTPUT_KEYS}


def is_finished(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "metrics.json"))


def read_config(path: str) -> dict | None:
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def choose(runs_dir: str, base: str, config: dict) -> tuple[str, bool, list[str]]:
    """Returns (run directory, resuming?, notes for the user)."""
    notes = []
    for index in range(1, 10_000):
        name = base if index == 1 else f"{base}-{index}"
        path = os.path.join(runs_dir, name)
        if not os.path.exists(path):
            return path, False, notes
        if is_finished(path):
            notes.append(f"run {name!r} already finished; keeping it")
            continue
        previous = read_config(path)
        if previous is not None and fingerprint(previous) == fingerprint(config):
            return path, True, notes
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
        with open(tmp, "w", newline="") as f:
            if header and rows:
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
        os.replace(tmp, csv_path)
    return rows


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
