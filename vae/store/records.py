"""Read the local results store for figures and tables (never the W&B files).

A run directory's files and their readers are :mod:`vae.store.run_dir`'s. This module turns them into
curves (mean and spread over seeds per step), final values, a per-group best run (the paper's
learning-rate selection), and the provenance line every figure and table carries.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vae.store.run_dir import load_summary, read_metrics, read_sweep_info, write_text_atomic
from vae.store.tracking import mean_std

CODE_PATHS = ("vae", "experiments", "configs", "Makefile", "pyproject.toml")  # what a "-dirty" commit means

T = TypeVar("T")


def git_commit(repo: Path | None = None) -> str:
    """Short commit hash of the code, with ``-dirty`` when the code differs from it; ``unknown``
    outside a git checkout. Changes under ``results/`` do not count as dirty."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHS], cwd=repo,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if changes else commit


def final(summary: dict | None, key: str) -> tuple[float, float] | None:
    """(mean, std over seeds) of ``key`` (``split/metric``) in a summary, or None if absent."""
    if summary is None or key not in summary:
        return None
    return summary[key]["mean"], summary[key]["std"]


def held_out_lines(summary: dict) -> list[str]:
    """The final held-out numbers of a run, one line each: ``test/iw_bound 105.31 ± 0.12 (2 seeds)``,
    ``test/iw_bound 105.31 (1 seed)`` (one seed has no spread to show)."""
    seeds = len(summary["seeds"])
    return [f"{key} {value['mean']:.2f}"
            + (f" ± {value['std']:.2f} ({seeds} seeds)" if seeds > 1 else " (1 seed)")
            for key, value in sorted(summary.items()) if key.startswith(("valid/", "test/"))]


@dataclass(frozen=True)
class Curve:
    """A metric along training: per logged step, the mean and standard deviation over seeds."""

    steps: list[int]
    mean: list[float]
    std: list[float]


def curve(run_dir: Path, key: str) -> Curve:
    """``key`` (``split/metric``, e.g. ``test/neg_elbo``) of a run, averaged over its seeds."""
    split, metric = key.split("/", 1)
    per_step: dict[int, list[float]] = {}
    for row in read_metrics(Path(run_dir)):
        if row["split"] == split and row["metric"] == metric:
            per_step.setdefault(row["step"], []).append(row["value"])
    steps = sorted(per_step)
    stats = [mean_std(per_step[s]) for s in steps]
    return Curve(steps, [m for m, _ in stats], [s for _, s in stats])


def select_best(runs: Sequence[T], group: Callable[[T], Hashable],
                score: Callable[[T], float | None]) -> dict[Hashable, T]:
    """Per group, the run with the lowest score (runs scoring None, e.g. unfinished, never win).

    The paper's learning-rate selection: group by everything but the learning rate, score by the
    validation negative ELBO. A group whose runs all score None keeps its first run.
    """
    best: dict[Hashable, tuple[float, T]] = {}
    for run in runs:
        value = score(run)
        key = group(run)
        rank = float("inf") if value is None else value
        if key not in best or rank < best[key][0]:
            best[key] = (rank, run)
    return {key: run for key, (_, run) in best.items()}


def _joined(values: set) -> str:
    return ", ".join(map(str, sorted(values))) if values else "none"


DRAWN = re.compile(r"drawn at commit (\S+)")   # the drawing commit in a provenance line


def write_drawing(path: Path, text: str) -> None:
    """Write a drawn table's ``text`` to ``path`` atomically, unless the file there differs from it
    only in the provenance lines' ``drawn at commit``: a redraw of unchanged records at a new commit
    leaves a committed table (and the tree) as it is. (Figures: :func:`vae.reporting.figures.save`.)"""
    if path.exists() and DRAWN.sub("", path.read_text()) == DRAWN.sub("", text):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def provenance(run_dirs: Sequence[Path], preset: str) -> str:
    """One line saying what made a figure or table: preset, seeds, steps, device, run time and commits.

    Seeds, steps, devices and seconds are read from the finished runs' summaries; the runs' commits
    from their ``sweep.json`` (both, where seeds were added to a record later: ``sweep --seeds``);
    the drawing commit is the current one.
    """
    seeds, steps, devices, commits = set(), set(), set(), set()
    finished, seconds = 0, 0.0
    for run_dir in run_dirs:
        summary = load_summary(run_dir)
        if summary is not None:
            finished += 1
            seeds.add(len(summary["seeds"]))
            steps.add(summary["steps"])
            devices.add(summary["device"])
            seconds += summary.get("train_seconds", 0.0) + summary.get("iw_seconds", 0.0)
        info = read_sweep_info(run_dir)
        if info is not None:        # a record with seeds added later names the commit that trained them too
            commits.add(info["commit"])
            if "seeds_added" in info:
                commits.add(info["seeds_added"]["commit"])
    return (f"preset {preset} | {finished}/{len(run_dirs)} runs finished | seeds per run: {_joined(seeds)}"
            f" | steps: {_joined(steps)} | device: {_joined(devices)} | run time {seconds / 3600:.1f} h"
            f" (training and test bound, summed over runs) | runs from commit {_joined(commits)}"
            f" | drawn at commit {git_commit()}")
