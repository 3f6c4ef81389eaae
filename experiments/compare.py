"""Which of these runs is better? Compare any runs side by side, from the local results store.

    python -m experiments.compare PATH [PATH ...] [--metric KEY ...] [--plot] [--curve KEY] [--out STEM]

    python -m experiments.compare results/sweeps/table1
    python -m experiments.compare results/runs/vae_categorical/RUN_A results/runs/vae_categorical/RUN_B \\
        --metric test/iw_bound --metric valid/neg_elbo --plot --out results/figures/a_vs_b

Each PATH is a run directory (it holds ``config.yaml``) or any directory above run directories (a
sweep's ``results/sweeps/<sweep>/``, an experiment's ``results/runs/<experiment>/``): every run under
it is compared, sorted by path. Prints a markdown table, one row per run: estimator, tau schedule,
steps and number of seeds, then per metric the final ``mean ± std`` over seeds from ``summary.json``
(``unfinished`` while the run has none, ``–`` where it lacks the key), then every other config setting
in which the compared runs differ. ``--metric KEY`` (repeatable) picks the metrics; default: every
``valid/`` and ``test/`` key of the summaries. ``--plot`` also draws a curve (``--curve KEY``, default
``test/neg_elbo``, or ``test/nll`` for SBN runs) against training steps, mean ± std over seeds per
run, to ``STEM.png`` and ``STEM.pdf`` (``--out STEM``, default ``results/figures/compare``). Bad input
(a path with no run, a metric or curve no run has) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import yaml

from vae.figures import band, save
from vae.sweeps import flat_settings
from vae.tables import to_markdown
from vae.config import ConfigError, config_from_dict, read_yaml, to_dict
from vae.estimators.config import did_you_mean
from vae.estimators import ESTIMATORS
from vae.results import curve, final, git_commit
from vae.store import CONFIG, load_summary
from vae.tasks import TASKS

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
        return Run(run_dir, TASKS[cfg.task].estimator_name(cfg), flat_settings(to_dict(cfg)), load_summary(run_dir))
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
                           *(f"{v:g}" if isinstance(v := r.settings.get(k), float) else str(v) for k in keys)])
            for r in runs]
    caption = (f"{len(runs)} runs; metrics: final value, mean ± std over seeds ('unfinished': no summary.json yet, "
               f"'–': not in the run's summary); settings in which the runs differ: {', '.join(keys) or 'none'}.")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run directories, or directories above runs")
    parser.add_argument("--metric", action="append", metavar="KEY", help="summary key, e.g. test/iw_bound (repeatable)")
    parser.add_argument("--plot", action="store_true", help="also draw a curve metric against training steps")
    parser.add_argument("--curve", metavar="KEY", help="the plotted key (default test/neg_elbo, else test/nll)")
    parser.add_argument("--out", default="results/figures/compare", metavar="STEM", help="figure path without suffix")
    args = parser.parse_args(argv)
    try:
        run_dirs = list(dict.fromkeys(d for p in args.paths for d in find_runs(Path(p))))
        runs = [load_run(d) for d in run_dirs]
        summaries = [r.summary for r in runs if r.summary is not None]
        there = sorted({k for s in summaries for k, v in s.items() if isinstance(v, dict)})
        metrics = args.metric or [k for k in there if k.startswith(("valid/", "test/"))]
        for key in metrics:
            if key not in there:
                raise CompareError(f"--metric {key}: no compared run's summary.json has this metric"
                                   f"{did_you_mean(key, there)}; they have {', '.join(there) or 'none'}")
        if args.curve is not None and "/" not in args.curve:
            raise CompareError(f"--curve {args.curve}: a key is split/metric, e.g. test/neg_elbo")
        if args.plot:
            key = args.curve or ("test/neg_elbo" if any(curve(r.path, "test/neg_elbo").steps for r in runs)
                                 else "test/nll")
            if not any(curve(r.path, key).steps for r in runs):
                raise CompareError(f"--curve {key}: no compared run logged it in its metrics.jsonl")
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(compare_table(runs, metrics))
    if args.plot:
        footer = f"python -m experiments.compare {' '.join(args.paths)} | drawn at commit {git_commit()}"
        for path in plot(runs, key, Path(args.out), footer):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
