"""Run directories: one per training run, resumable, never silently overwritten.

    runs/<name>/config.json        the resolved configuration (written first)
    runs/<name>/backup/            Keras BackupAndRestore state while unfinished
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

# Configuration keys that only say where outputs go, or how the same computation is spread
# over devices (the batch size is global); changing them still resumes.
OUTPUT_KEYS = {"run_name", "runs_dir", "export_dir", "export", "verbose", "export_name", "strategy"}


def fingerprint(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in OUTPUT_KEYS}


def is_finished(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "metrics.json"))


def read_config(path: str) -> dict | None:
    try:
        with open(os.path.join(path, "config.json")) as f:
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


def completed_epochs(backup_dir: str) -> int:
    """Epochs that Keras' BackupAndRestore has saved state for."""
    try:
        with open(os.path.join(backup_dir, "training_metadata.json")) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def read_history(csv_path: str) -> list[dict]:
    if not os.path.isfile(csv_path):
        return []
    with open(csv_path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)]


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
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)
