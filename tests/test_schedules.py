"""Temperature schedules against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from vae.config import TauConfig
from vae.training.schedules import Temperature, scheduled_tau


@pytest.mark.parametrize("step, expected", [
    (0, 1.0), (999, 1.0),                        # held for N = 1000 steps
    (1000, math.exp(-3e-5 * 1000)),              # 0.970446
    (12_345, math.exp(-3e-5 * 12_000)),          # 0.697676: t is held at 12,000
    (23_000, 0.5015760),                         # exp(-0.69) just above the floor
    (24_000, 0.5), (50_000, 0.5),                # exp(-0.72) = 0.4868 < floor
])
def test_paper_exp_schedule(step, expected):
    cfg = TauConfig(schedule="exp", tau0=1.0, floor=0.5, rate=3e-5, update_every=1000)
    assert scheduled_tau(cfg, step, 50_000) == pytest.approx(expected, rel=1e-6)


def test_constant_linear_and_cosine():
    const = TauConfig(schedule="constant", tau0=0.7)
    assert scheduled_tau(const, 12345, 50_000) == 0.7
    lin = TauConfig(schedule="linear", tau0=2.0, floor=0.5, update_every=10, anneal_steps=100)
    assert [scheduled_tau(lin, t, 1000) for t in (0, 9, 10, 50, 100, 500)] == pytest.approx(
        [2.0, 2.0, 1.85, 1.25, 0.5, 0.5])
    cos = TauConfig(schedule="cosine", tau0=2.0, floor=0.5, update_every=1)
    assert [scheduled_tau(cos, t, 100) for t in (0, 50, 100, 200)] == pytest.approx([2.0, 1.25, 0.5, 0.5])


def test_learned_temperature_is_a_trainable_parameter_per_replica_above_the_floor():
    temp = Temperature(TauConfig(schedule="learned", tau0=1.5, floor=0.5), num_replicas=3, total_steps=10)
    tau = temp(0)
    assert tau.shape == (3, 1, 1, 1) and torch.allclose(tau, torch.tensor(1.5))
    (tau * torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)).sum().backward()
    # tau = floor + softplus(raw): dtau/draw = sigmoid(raw) = 1 - exp(-(tau - floor)) = 1 - 1/e
    slope = 1 - math.exp(-1.0)
    assert temp.learned.raw.grad.flatten().tolist() == pytest.approx([slope, 2 * slope, 3 * slope])
    assert temp.value(0) == pytest.approx([1.5] * 3)
    with torch.no_grad():
        temp.learned.raw.fill_(-1e4)
    assert torch.all(temp(0) >= 0.5)


def test_schedules_are_functions_of_the_step_only():
    """No hidden state: asking in any order gives the same values (no per-epoch reset)."""
    temp = Temperature(TauConfig(schedule="exp", rate=1e-4, update_every=500), 2, 50_000)
    forward = [temp(t) for t in range(0, 30_000, 250)]
    backward = [temp(t) for t in reversed(range(0, 30_000, 250))][::-1]
    assert forward == backward and temp.value(7000) == [temp(7000)] * 2


def test_the_lowest_tau_is_the_one_the_run_reaches():
    """``lowest_tau`` (what ``min_tau`` is checked against) within a run's steps: the default exp
    schedule is still 1 for a run of 1,000 steps and 0.5 from step 23,105 on; constant is tau0;
    learned, or no steps given, the floor."""
    from vae.training.schedules import lowest_tau

    default = TauConfig()
    assert (lowest_tau(default, 1000) == 1.0
            and lowest_tau(default, 2001) == pytest.approx(math.exp(-3e-5 * 2000)))
    assert lowest_tau(default, 50_000) == 0.5 == lowest_tau(default)
    assert lowest_tau(TauConfig(schedule="constant", tau0=2.0), 10) == 2.0
    assert lowest_tau(TauConfig(schedule="learned", tau0=2.0, floor=0.5), 10) == 0.5


def test_a_schedule_that_ends_far_from_its_floor_says_so_with_a_fix_that_reaches_it():
    """The defaults' exp schedule is at 0.97 after 2,000 steps: the note names it and settings that
    reach the floor within the run, which they do; a run that reaches the floor, a constant or a
    learned tau get no note."""
    from dataclasses import replace

    from vae.training.schedules import short_of_floor

    note = short_of_floor(TauConfig(), 2000)
    assert note.startswith("tau: the exp schedule is at 0.97 at the last of 2,000 steps, "
                           "far from its floor 0.5")
    fix = dict(item.split("=") for item in note.split("this short, ")[1].split(" reaches")[0].split())
    fixed = replace(TauConfig(), rate=float(fix["tau.rate"]),
                    update_every=int(fix.get("tau.update_every", 1000)))
    assert (scheduled_tau(fixed, 1999, 2000) == pytest.approx(0.5, abs=1e-3)
            and short_of_floor(fixed, 2000) is None)
    assert short_of_floor(TauConfig(), 50_000) is None
    assert short_of_floor(TauConfig(schedule="constant", tau0=0.7), 100) is None
    assert short_of_floor(TauConfig(schedule="learned"), 100) is None
    linear = short_of_floor(TauConfig(schedule="linear", anneal_steps=10_000), 2000)
    assert "tau.anneal_steps=null" in linear
