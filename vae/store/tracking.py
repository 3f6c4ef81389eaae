"""A run's metrics into its run directory (the source of truth; its format: :mod:`vae.store.run_dir`),
mirrored to Weights & Biases.

W&B gets the same numbers as ``<split>/<metric>`` (mean over replicas) and
``<split>/<metric>/seed<s>`` (only ``.../lr<lr>-seed<s>`` in a run with a learning rate per
replica). Its mode comes from ``$WANDB_MODE``: ``offline`` by default (no account, no network;
``wandb sync results/wandb/...`` uploads later), ``online`` after ``wandb login``, or ``disabled``. wandb is
imported only when the mode is not ``disabled``,
and it prints nothing to the console unless ``WANDB_SILENT=false``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from vae.store.run_dir import METRICS, read_metrics, write_config, write_metrics, write_summary


class RunTracker:
    """Appends metrics to the run directory and mirrors them to W&B."""

    def __init__(self, run_dir: Path, config: dict, seeds: list[int], project: str,
                 wandb_dir: Path, resume_step: int | None = None, final_metric: str = "iw_bound"):
        self.run_dir = Path(run_dir)
        self.seeds = seeds
        # W&B's name of each replica: seed<s>, or lr<lr>-seed<s> in a run with a learning rate per
        # replica (sweep --pack-lr), whose replicas are not seeds of one configuration: it gets no
        # mean over replicas either
        lrs = config.get("optim", {}).get("lr")
        self.one_config = not isinstance(lrs, list)
        self.names = ([f"seed{s}" for s in seeds] if self.one_config else
                      [f"lr{lr:g}-seed{s}" for s, lr in zip(seeds, lrs, strict=True)])
        if resume_step is not None:
            # drop what was logged after the checkpoint we resume from, and the end-of-run number
            # (`final_metric`, logged after the last checkpoint) of the end this run trains to:
            # no duplicated steps (a run trained further keeps the number of its old end)
            kept = [r for r in read_metrics(self.run_dir) if r["step"] <= resume_step
                    and not (r["metric"] == final_metric and r["step"] == config["steps"])]
            write_metrics(self.run_dir, kept)
        write_config(self.run_dir, config)
        self._file = open(self.run_dir / METRICS, "a")
        self._wandb = self._start_wandb(config, project, wandb_dir)

    def _start_wandb(self, config: dict, project: str, wandb_dir: Path) -> Any:
        mode = os.environ.get("WANDB_MODE", "offline")
        if mode == "disabled":
            return None
        import wandb  # only when logging is on

        # quiet on the console (no run summaries between a sweep's runs) unless WANDB_SILENT=false;
        # W&B's files are the same either way
        silent = os.environ.get("WANDB_SILENT", "true").lower() != "false"
        # a W&B sweep agent owns the run's id (it passes it in the environment); otherwise the id
        # is the run directory's, so a resumed run continues its W&B run
        own_id = {} if "WANDB_SWEEP_ID" in os.environ else {"id": wandb_id(self.run_dir), "resume": "allow"}
        return wandb.init(project=project, name=self.run_dir.name, group=self.run_dir.parent.name,
                          config=config, mode=mode, dir=str(wandb_dir),
                          settings=wandb.Settings(silent=silent), reinit="finish_previous", **own_id)

    def log(self, step: int, split: str, metrics: dict[str, list[float]]) -> None:
        """Record ``metrics[name][r]`` (one value per replica) for ``split`` at ``step``."""
        lines, flat = [], {}
        for name, values in metrics.items():
            for replica, (seed, value) in enumerate(zip(self.seeds, values, strict=True)):
                lines.append(json.dumps({"step": step, "split": split, "metric": name,
                                         "replica": replica, "seed": seed, "value": value}))
                flat[f"{split}/{name}/{self.names[replica]}"] = value
            if self.one_config:
                flat[f"{split}/{name}"] = sum(values) / len(values)
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._wandb is not None:
            self._wandb.log(flat, step=step)

    def finish(self, summary: dict | None) -> None:
        """Write ``summary.json`` (when given: a run that stopped early has none) and close."""
        if summary is not None:
            write_summary(self.run_dir, summary)
        if self._wandb is not None:
            if summary is not None:
                self._wandb.summary.update({k: v["mean"] if isinstance(v, dict) else v
                                            for k, v in summary.items()
                                            if self.one_config or not isinstance(v, dict)})
            self._wandb.finish(exit_code=0 if summary is not None else 1)
            self._wandb = None
        self._file.close()


def wandb_id(run_dir: Path) -> str:
    """A stable W&B run id for a run directory, so a resumed run continues the same W&B run: the
    directory's ``<experiment>-<run>`` with W&B's characters, and past W&B's 64 characters its
    first 55 and a hash of the whole (the start, which says what the run is, survives)."""
    full = "".join(c if c.isalnum() else "-" for c in f"{run_dir.parent.name}-{run_dir.name}")
    return full if len(full) <= 64 else f"{full[:55]}-{hashlib.sha256(full.encode()).hexdigest()[:8]}"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
