"""Runs side by side from the local results store: find them, read them, tabulate their final numbers
and the settings they differ in, plot a curve of each (``python -m experiments.compare``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import yaml

from vae.config import ConfigError, config_from_dict, read_yaml, to_dict
from vae.estimators import ESTIMATORS
from vae.reporting.figures import band, save
from vae.reporting.tables import to_markdown
from vae.store.records import final
from vae.store.run_dir import CONFIG, load_summary
from vae.sweeps.definition import changed_options, flat_settings
from vae.training.tasks import TASKS

IGNORED = ("out_dir", "experiment",          # where a run was written, not what it is
           "estimator.name", "ssl.y",        # the estimator column (the task's reading of them)
           "tau.schedule", "steps", "seeds") # their own columns (seeds as a count)


class CompareError(ValueError):
    """Bad input: the message is the one line printed."""


@dataclass(frozen=True)
class Run:
    path: Path
    estimator: str             # what the run trains with (the task's reading: ssl.y for the ssl task)
    settings: dict[str, Any]   # the resolved config, dotted keys
    summary: dict | None       # None while unfinished


def find_runs(path: Path) -> list[Path]:
    """``path`` if it is a run directory, else every run directory under it, sorted by path."""
    if (path / CONFIG).is_file():
        return [path]
    if not path.is_dir():
        raise CompareError(f"{path}: no such directory")
    found = []
    for root, dirs, files in os.walk(path):
        if CONFIG in files:
            found.append(Path(root))
            dirs.clear()   # a run directory's own subfolders hold no runs
    if not found:
        raise CompareError(f"{path}: holds no run (no directory with {CONFIG} under it)")
    return sorted(found)


def load_run(run_dir: Path) -> Run:
    """The run's validated config (flattened) and its summary."""
    try:
        tree = read_yaml((run_dir / CONFIG).read_text())
        if not isinstance(tree, dict):
            raise ConfigError("not a mapping of keys")
        cfg = config_from_dict(tree)
        # the options at their defaults left out: another estimator's are no difference
        settings = {k: v for k, v in flat_settings(to_dict(cfg)).items()
                    if not k.startswith("estimator.options.")}
        settings |= {f"estimator.options.{k}": v for k, v in changed_options(cfg).items()}
        return Run(run_dir, TASKS[cfg.task].estimator_name(cfg), settings, load_summary(run_dir))
    except (ConfigError, yaml.YAMLError, json.JSONDecodeError) as err:
        raise CompareError(f"{run_dir}: unreadable run ({str(err).splitlines()[0]})") from err


def _cell(summary: dict | None, key: str) -> str:
    if summary is None:
        return "unfinished"
    value = final(summary, key) if isinstance(summary.get(key), dict) else None
    return "–" if value is None else f"{value[0]:.2f} ± {value[1]:.2f}"


def differing(runs: list[Run]) -> list[str]:
    """The dotted config keys whose values are not the same in all ``runs`` (in config order)."""
    keys = dict.fromkeys(k for r in runs for k in r.settings if k not in IGNORED)
    return [k for k in keys if len({repr(r.settings.get(k)) for r in runs}) > 1]


def _reads_tau(run: Run) -> bool:
    """Whether the run's estimator reads tau (its declaration; one not registered here, a plugin's,
    is taken to): else its schedule is not shown."""
    cls = ESTIMATORS.get(run.estimator)
    return cls is None or cls.reads_tau


def compare_table(runs: list[Run], metrics: list[str]) -> str:
    """The markdown table: one row per run, the metrics, then the settings that differ."""
    keys = differing(runs)
    header = ["estimator", "τ schedule", "steps", "seeds", *metrics, *keys]
    rows = [(r.path.name, [r.estimator, r.settings["tau.schedule"] if _reads_tau(r) else "– (reads none)",
                           str(r.settings["steps"]),
                           str(len(r.settings["seeds"])), *(_cell(r.summary, m) for m in metrics),
                           *(f"{v:g}" if isinstance(v := r.settings.get(k), float) else str(v)
                             for k in keys)])
            for r in runs]
    caption = (f"{len(runs)} runs; metrics: final value, mean ± std over seeds ('unfinished': no "
               f"summary.json yet, '–': not in the run's summary); settings in which the runs differ: "
               f"{', '.join(keys) or 'none'}.")
    return to_markdown(header, rows, caption)


def legend_labels(runs: list[Run]) -> list[str]:
    """One label per run: its estimator and the settings that set it apart from the other runs
    (``gs lr=0.001 schedule=constant``), whole; the run directory's name where two would be equal."""
    keys = [k for k in differing(runs) + ["tau.schedule", "steps", "seeds"]
            if len({repr(r.settings.get(k)) for r in runs}) > 1]
    labels = [" ".join([r.estimator, *(f"{k.rsplit('.', 1)[-1]}={r.settings.get(k)}" for k in keys
                                       if _reads_tau(r) or not k.startswith("tau."))]) for r in runs]
    return [label if labels.count(label) == 1 else r.path.name for label, r in zip(labels, runs)]


def plot(runs: list[Run], key: str, stem: Path, footer: str) -> list[Path]:
    """Mean ± std over seeds of ``key`` against training steps, one band per run; ``stem``.png, .pdf."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
    for i, (run, label) in enumerate(zip(runs, legend_labels(runs))):
        band(ax, run.path, key, color=colours[i % len(colours)], label=label, marker=".")
    ax.set_xlabel("training step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    ax.set_title(f"{key} during training, mean ± std over seeds")
    return save(fig, stem.parent, stem.name, footer)
