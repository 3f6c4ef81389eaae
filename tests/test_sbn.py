"""The stochastic binary network of Section 4.1: nested estimators through two stochastic layers
against the exact gradient (enumeration of every state of both layers), and its m-sample NLL.

Problems: two layers of 3 Bernoulli units (8 x 8 states), and two layers of 2 categorical
variables of 3 classes (9 x 9 states), on two binary digits. The oracle is the ``exact``
estimator at both layers, nested as the trainer nests any estimator (itself checked against an
``itertools.product`` enumeration). z-tests as in tests/test_estimators.py: the mean of 4,000
draws against the exact gradient, every coordinate of every layer's parameters, Bonferroni at
family-wise level 1e-3.
"""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from vae.diagnostics import replicate
from vae.estimators import EstimatorConfig, build_estimator
from vae.replicas import ReplicaGenerator
from vae.sbn import HALF, StochasticBinaryNetwork, training_loss

KINDS = {"bernoulli": (3, 2), "categorical": (2, 3)}
NUM_DRAWS = 4000
ALPHA = 1e-3
ABS_TOL = 1e-5
UNBIASED = ["reinforce", "reinforce-ema", "nvil", "rloo", "muprop", "rebar", "relax", "arm", "disarm"]
BIASED = ["gs", "st-gs", "st", "darn", "gumbel-rao"]


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    return zlib.crc32(request.node.name.encode())


def problem(kind: str, seed: int = 0) -> tuple[StochasticBinaryNetwork, Tensor]:
    n, k = KINDS[kind]
    model = StochasticBinaryNetwork(kind, n, k, [], 2, ReplicaGenerator([seed]))
    x = (torch.rand(1, 2, 2 * HALF, generator=torch.Generator().manual_seed(seed)) < 0.3).float()
    return model, x


def estimators(name: str, kind: str, model: StochasticBinaryNetwork, replicas: int = 1) -> list:
    n, k = KINDS[kind]
    widths = [HALF, n * (1 if kind == "bernoulli" else k)]      # each layer's input: its NVIL context
    cfg = EstimatorConfig(name=name, baseline_hidden=8, num_samples=2)   # 4,000 replicas: small networks, k = 2
    return [build_estimator(cfg, latent_shape=(n, k), num_replicas=replicas, context_dim=d) for d in widths]


def layer_grads(model: StochasticBinaryNetwork, loss: Tensor) -> dict[str, Tensor]:
    """Per-replica gradients of ``loss.sum()`` for each map: ``{map i: [R, P]}``."""
    groups = {f"map{i}": list(m.parameters()) for i, m in enumerate(model.maps)}
    grads = torch.autograd.grad(loss.sum(), [p for ps in groups.values() for p in ps])
    out, start = {}, 0
    for name, ps in groups.items():
        out[name] = torch.cat([g.reshape(g.shape[0], -1) for g in grads[start:start + len(ps)]], 1)
        start += len(ps)
    return out


def exact(model: StochasticBinaryNetwork, kind: str, x: Tensor) -> dict[str, Tensor]:
    loss, _ = training_loss(model, estimators("exact", kind, model), x, rng=ReplicaGenerator([0]), tau=1.0, step=0)
    return {k: v[0] for k, v in layer_grads(model, loss).items()}


def draws(name: str, kind: str, model: StochasticBinaryNetwork, x: Tensor, seed: int) -> dict[str, Tensor]:
    many = replicate(model, NUM_DRAWS)
    seeds = torch.randint(2**62, (NUM_DRAWS,), generator=torch.Generator().manual_seed(seed)).tolist()
    loss, _ = training_loss(many, estimators(name, kind, model, NUM_DRAWS), x.expand(NUM_DRAWS, -1, -1),
                            rng=ReplicaGenerator(seeds), tau=1.0, step=10**5)
    return layer_grads(many, loss)


def worst_z(got: dict[str, Tensor], want: dict[str, Tensor]) -> tuple[float, float]:
    coords = sum(g.shape[1] for g in got.values())
    z_crit = torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * coords), dtype=torch.float64)).item()
    worst = 0.0
    for name, g in got.items():
        se = g.std(0) / math.sqrt(g.shape[0])
        worst = max(worst, (((g.mean(0) - want[name]).abs() - ABS_TOL).clamp(min=0) / se.clamp(min=1e-12)).max().item())
    return worst, z_crit


@pytest.mark.parametrize("kind", KINDS)
def test_nested_exact_is_the_enumerated_expectation_over_both_layers(kind: str) -> None:
    model, x = problem(kind, seed=3)
    loss, _ = training_loss(model, estimators("exact", kind, model), x, rng=ReplicaGenerator([0]), tau=1.0, step=0)
    n, k = KINDS[kind]
    states = [F.one_hot(torch.tensor(s), k).float() for s in itertools.product(range(k), repeat=n)]
    upper, lower = x[..., :HALF], x[..., HALF:]
    q1 = torch.softmax(model.logits(0, upper), -1)                               # [1, B, n, k]
    manual = torch.zeros(1, x.shape[1])
    for h1 in states:
        p1 = (q1 * h1).sum(-1).prod(-1)                                          # [1, B]
        q2 = torch.softmax(model.logits(1, model.flat(h1.expand(1, x.shape[1], n, k))), -1)
        for h2 in states:
            p2 = (q2 * h2).sum(-1).prod(-1)
            manual = manual + p1 * p2 * model.output_loss(h2.expand(1, x.shape[1], n, k), lower)
    torch.testing.assert_close(loss, manual)


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n in UNBIASED for k in KINDS
                                            if k == "bernoulli" or n not in ("arm", "disarm")])
def test_unbiased_estimators_match_exact_through_two_stochastic_layers(name: str, kind: str, seed: int) -> None:
    model, x = problem(kind)
    worst, z_crit = worst_z(draws(name, kind, model, x, seed), exact(model, kind, x))
    assert worst <= z_crit, f"{name}: max z-score {worst:.2f} > {z_crit:.2f}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", BIASED)
def test_biased_estimators_have_a_measurable_bias_through_two_layers(name: str, kind: str, seed: int) -> None:
    """The z-test that passes the unbiased ones detects the bias; the mean still points the
    exact gradient's way for the first layer (cosine > 0.3)."""
    model, x = problem(kind)
    got, want = draws(name, kind, model, x, seed), exact(model, kind, x)
    worst, z_crit = worst_z(got, want)
    assert math.isfinite(worst) and worst > z_crit
    assert torch.cosine_similarity(got["map0"].mean(0), want["map0"], dim=0) > 0.3
