"""The run directory's format, and writing files so that a reader never sees half of one.

A run directory (``<out_dir>/<experiment>/<run>/``, or a sweep's ``<results>/sweeps/<sweep>/<preset>/<run>/``)
holds :data:`CONFIG` (the resolved config), :data:`METRICS` (one JSON object per value,
``{"step", "split", "metric", "replica", "seed", "value"}``, appended and flushed as it comes),
:data:`SUMMARY` (final numbers per key, ``{"per_seed", "mean", "std"}``, and the run's times),
:data:`CHECKPOINT` (the latest checkpoint) and, for a sweep's run, :data:`SWEEP_INFO` (which sweep,
preset and point, and the commit of the code that ended it) and, if it diverged, :data:`FAILED`
(why). Its readers and writers are the functions below; nothing else names these files.

Every file the suite writes that another process may read while it runs, or that a kill may
interrupt (checkpoints, the data cache, a run's config, metrics and summary, tables), goes through
:func:`atomic_write`: the bytes go to a temporary file beside the target, are flushed to disk, and
the temporary file is renamed over the target (an atomic step on POSIX file systems). On any
failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import torch
import yaml

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
SWEEP_INFO = "sweep.json"
FAILED = "failed.txt"


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(file)`` writes to a binary file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """``text`` (UTF-8) to ``path``, atomically."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def write_json_atomic(path: Path, record: dict, sort_keys: bool = False) -> Path:
    """``record`` as indented JSON to ``path`` (its folder made if missing), atomically: every
    record the suite writes (a run's summary, a bench's, a report)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path), json.dumps(record, indent=2, sort_keys=sort_keys) + "\n")
    return Path(path)


def atomic_save(obj: object, path: Path) -> None:
    """``torch.save(obj)`` to ``path``, atomically (read back with ``torch.load(weights_only=True)``)."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def write_config(run_dir: Path, config: dict) -> None:
    """The resolved config (``vae.config.to_dict``) as the run's :data:`CONFIG`."""
    write_text_atomic(Path(run_dir) / CONFIG, yaml.safe_dump(config, sort_keys=False))


def read_config_text(run_dir: Path) -> str | None:
    """The run's :data:`CONFIG` as written, or None if it has none."""
    path = Path(run_dir) / CONFIG
    return path.read_text() if path.is_file() else None


def write_metrics(run_dir: Path, rows: Iterable[dict]) -> None:
    """Replace the run's :data:`METRICS` by ``rows`` (a resumed run's kept rows, a pack's split)."""
    write_text_atomic(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: Path) -> list[dict]:
    """All rows of :data:`METRICS` (a torn last line from a killed run is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_summary(run_dir: Path, summary: dict) -> None:
    write_json_atomic(Path(run_dir) / SUMMARY, summary)


def load_summary(run_dir: Path) -> dict | None:
    """The run's :data:`SUMMARY`, or None while it is unfinished (or diverged)."""
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.exists() else None


def write_sweep_info(run_dir: Path, info: dict) -> None:
    write_json_atomic(Path(run_dir) / SWEEP_INFO, info)


def read_sweep_info(run_dir: Path) -> dict | None:
    path = Path(run_dir) / SWEEP_INFO
    return json.loads(path.read_text()) if path.exists() else None


def mark_failed(run_dir: Path, reason: str) -> None:
    """Mark the run as diverged (:data:`FAILED`, ``reason`` in it): a sweep skips it from then on."""
    write_text_atomic(Path(run_dir) / FAILED, reason.rstrip("\n") + "\n")
