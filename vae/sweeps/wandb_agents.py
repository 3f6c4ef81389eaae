"""The same sweep file on Weights & Biases agents, across machines.

    python -m experiments.sweep FILE --preset P --wandb              # register; print the agent command
    python -m experiments.sweep FILE --preset P --wandb --agents 2   # ... and start 2 agents here

W&B grid sweeps cannot express what a sweep file holds beyond a plain grid (presets, ``include``
entries, seeds trained together on the replica axis), so the translation is exact rather than
literal: one categorical parameter, ``point``, whose values are the names of the local runner's
points (``<slug>__<hash>``, their run directories), in the local runner's order. W&B hands each
agent the next name, and the agent runs the command the sweep registers,

    python -m experiments.sweep FILE --preset P --results-dir R --point NAME

which trains that one point through the same code into the same run directory of the machine's
own results store (a point already finished there is not trained again) and logs it to the
sweep's W&B run. Registering needs a W&B login and the network (``WANDB_MODE=online``); without
them ``--wandb`` is a one-line error and nothing is written. The local runner needs neither.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

POINT = "point"  # the one W&B sweep parameter: a point's name


class WandbSweepError(ValueError):
    """W&B cannot be reached or used; the message says what to do instead."""


def wandb_config(sweep_path: Path, name: str, metric: str, goal: str, preset: str, point_names: list[str],
                 results_dir: Path) -> dict[str, Any]:
    """The W&B sweep configuration of a sweep file's points under ``preset``."""
    return {
        "name": f"{name} ({preset})",
        "method": "grid",
        "metric": {"name": metric, "goal": goal},
        "parameters": {POINT: {"values": list(point_names)}},
        "command": ["${env}", "${interpreter}", "-m", "experiments.sweep", str(sweep_path), "--preset",
                    preset, "--results-dir", str(results_dir), "${args}"],
    }


def _client(client: ModuleType | None) -> ModuleType:
    if client is not None:
        return client
    try:
        return importlib.import_module("wandb")
    except ImportError as err:
        raise WandbSweepError("--wandb: the wandb package is not installed (pip install wandb)") from err


def register(config: dict[str, Any], project: str, client: ModuleType | None = None) -> str:
    """Register ``config`` with W&B in ``project``; returns ``entity/project/sweep_id``."""
    if os.environ.get("WANDB_MODE", "offline") != "online":
        raise WandbSweepError("--wandb: W&B sweeps are coordinated by the W&B server: set WANDB_MODE=online "
                              "and run `wandb login` first (the local runner, without --wandb, "
                              "needs neither)")
    wandb = _client(client)
    try:
        sweep_id = wandb.sweep(config, project=project)
        entity = wandb.Api().default_entity
    except Exception as err:  # no login, no network, a refused config: say so in one line
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise WandbSweepError(f"--wandb: W&B refused or could not be reached ({type(err).__name__}: "
                              f"{first}); "
                              "check `wandb login` and the network") from err
    return f"{entity}/{project}/{sweep_id}"


def agent_command(full_id: str) -> list[str]:
    """The command that starts one agent of the sweep ``entity/project/id`` on a machine."""
    return [sys.executable, "-m", "wandb", "agent", full_id]


def start_agents(full_id: str, count: int) -> int:
    """Start ``count`` agents here and wait for them; returns the worst exit status."""
    agents = [subprocess.Popen(agent_command(full_id)) for _ in range(count)]
    return max(agent.wait() for agent in agents)
