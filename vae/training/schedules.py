"""Temperature schedules: tau as a pure function of the global step t.

Every deterministic schedule reads the step held at the last update, ``t_N = N * floor(t / N)``
(``N = tau.update_every``), so tau changes only every N steps, as in the paper:

* ``constant``: ``tau0``
* ``exp``:      ``max(floor, tau0 * exp(-rate * t_N))``       (Jang et al. 2017, Section 4.2)
* ``linear``:   ``tau0 + (floor - tau0) * min(1, t_N / T)``    (T = ``anneal_steps``)
* ``cosine``:   ``floor + (tau0 - floor) * (1 + cos(pi * min(1, t_N / T))) / 2``
* ``learned``:  ``tau = floor + softplus(raw)``, one parameter per replica, starting at ``tau0``
  and trained by the run's optimiser on the training loss (:class:`LearnedTemperature`). Only
  estimators that use tau (gs, st-gs) move it.

Being functions of t (not of an epoch counter, and not a compounding multiplication), they
survive resumes and never reset.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae.config import TauConfig


def scheduled_tau(cfg: TauConfig, step: int, total_steps: int) -> float:
    """Temperature at ``step`` for the deterministic schedules (not ``learned``)."""
    held = cfg.update_every * (step // cfg.update_every)
    horizon = cfg.anneal_steps or total_steps
    progress = min(1.0, held / horizon)
    if cfg.schedule == "constant":
        return cfg.tau0
    if cfg.schedule == "exp":
        return max(cfg.floor, cfg.tau0 * math.exp(-cfg.rate * held))
    if cfg.schedule == "linear":
        return cfg.tau0 + (cfg.floor - cfg.tau0) * progress
    if cfg.schedule == "cosine":
        return cfg.floor + (cfg.tau0 - cfg.floor) * (1 + math.cos(math.pi * progress)) / 2
    raise ValueError(f"tau.schedule: {cfg.schedule!r} is not a deterministic schedule")


def lowest_tau(cfg: TauConfig, steps: int | None = None) -> float:
    """The lowest temperature the schedule reaches: within a run of ``steps`` steps when given (a
    deterministic schedule only falls, so its value at the last step), else ever (its floor); a
    learned tau is kept above its floor. What an estimator's ``min_tau`` is checked against."""
    if cfg.schedule == "constant":
        return cfg.tau0
    if steps is None or cfg.schedule == "learned":
        return min(cfg.tau0, cfg.floor)
    return scheduled_tau(cfg, steps - 1, steps)


def short_of_floor(cfg: TauConfig, steps: int) -> str | None:
    """A one-line note when an annealed schedule ends a run of ``steps`` far from its floor (more
    than 5 % of the way from tau0 to it left), with settings that reach it within the run; None
    when it gets there (or does not anneal). An annealing study on the defaults' exp schedule (r =
    3e-5, updated every 1,000 steps: 0.97 after 2,000 steps, the floor 0.5 at step 23,105)
    otherwise compares schedules that never moved."""
    if cfg.schedule not in ("exp", "linear", "cosine") or cfg.tau0 <= cfg.floor:
        return None
    last = scheduled_tau(cfg, steps - 1, steps)
    if last - cfg.floor <= 0.05 * (cfg.tau0 - cfg.floor):
        return None
    if cfg.schedule == "exp":
        every = cfg.update_every if cfg.update_every <= steps // 10 else max(1, steps // 10)
        held = every * ((steps - 1) // every)
        fix = (f"tau.rate={math.log(cfg.tau0 / cfg.floor) / held:.3g}"
               + ("" if every == cfg.update_every else f" tau.update_every={every}"))
    else:
        fix = "tau.anneal_steps=null (the run's last step)"
    return (f"tau: the {cfg.schedule} schedule is at {last:.3g} at the last of {steps:,} steps, far from its "
            f"floor {cfg.floor:g}: for an annealing study this short, {fix} reaches the floor within the run")


class LearnedTemperature(nn.Module):
    """``tau = floor + softplus(raw)`` with ``raw`` of shape ``[R, 1, 1, 1]`` (one per replica).

    Starts at ``tau0`` and never goes below ``floor`` (a tau near 0 makes relaxed gradients
    explode). Broadcasts against logits ``[R, B, N, K]``.
    """

    def __init__(self, tau0: float, floor: float, num_replicas: int):
        super().__init__()
        self.floor = floor
        start = math.log(math.expm1(tau0 - floor))          # softplus^-1(tau0 - floor)
        self.raw = nn.Parameter(torch.full((num_replicas, 1, 1, 1), start))

    def forward(self) -> Tensor:
        return self.floor + F.softplus(self.raw)


class Temperature(nn.Module):
    """The run's temperature: ``temperature(step)`` gives a float, or a tensor when learned."""

    def __init__(self, cfg: TauConfig, num_replicas: int, total_steps: int):
        super().__init__()
        self.cfg = cfg
        self.total_steps = total_steps
        self.num_replicas = num_replicas
        self.learned = (LearnedTemperature(cfg.tau0, cfg.floor, num_replicas)
                        if cfg.schedule == "learned" else None)

    def forward(self, step: int) -> float | Tensor:
        return self.learned() if self.learned is not None else scheduled_tau(
            self.cfg, step, self.total_steps)

    def value(self, step: int) -> list[float]:
        """Per-replica tau at ``step`` as plain floats, for logging."""
        tau = self(step)
        if isinstance(tau, Tensor):
            return tau.detach().flatten().tolist()
        return [tau] * self.num_replicas
