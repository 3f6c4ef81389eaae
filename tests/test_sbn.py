"""The stochastic binary network of Section 4.1: nested estimators through two stochastic layers
against the exact gradient (enumeration of every state of both layers), and its m-sample NLL.

Problems: two layers of 3 Bernoulli units (8 x 8 states), and two layers of 2 categorical
variables of 3 classes (9 x 9 states), on two binary digits. The oracle is the ``exact``
estimator at both layers, nested as the trainer nests any estimator (itself checked against an
``itertools.product`` enumeration). z-tests as in tests/test_estimators.py: the mean of 4,000
draws against the exact gradient, every coordinate of every layer's parameters, Bonferroni at
family-wise level 1e-3; in float64, as there, so no CPU's float32 kernels can move a z-score.
"""

from __future__ import annotations

import copy
import itertools
import math
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from conftest import BUILT_IN, NORMALISED, accepted_tau, estimator_cases, estimator_config, small_networks
from vae.estimators import Estimator, build_estimator
from vae.models.sbn import HALF, StochasticBinaryNetwork, training_loss
from vae.numerics.replicas import ReplicaGenerator
from vae.training.diagnostics import replicate

KINDS = {"bernoulli": (3, 2), "categorical": (2, 3)}
NUM_DRAWS = 4000
ALPHA = 1e-3
DTYPE = torch.float64
ABS_TOL = 1e-10   # float64 round-off of gradients of size ~10 summed over 64-81 states: ~1e-13
# st-annealed's biased gradient through two layers has its own test below (its slopes); ReinMax and
# ZGR are exact for objectives quadratic in z, and through these two small layers their bias is
# below what 4,000 draws resolve (the VAE's toy problem detects it, tests/test_estimators.py).
UNRESOLVED_BIAS = {"reinmax", "zgr"}
BIASED = [case for case in estimator_cases("sbn", unbiased=False)
          if BUILT_IN[case[0]].logit_scale is Estimator.logit_scale and case[0] not in UNRESOLVED_BIAS]


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    return zlib.crc32(request.node.name.encode())


def problem(kind: str, seed: int = 0) -> tuple[StochasticBinaryNetwork, Tensor]:
    n, k = KINDS[kind]
    model = StochasticBinaryNetwork(kind, n, k, [], 2, ReplicaGenerator([seed])).to(DTYPE)
    x = (torch.rand(1, 2, 2 * HALF, generator=torch.Generator().manual_seed(seed)) < 0.3).to(DTYPE)
    return model, x


def estimators(name: str, kind: str, model: StochasticBinaryNetwork, replicas: int = 1, **settings) -> list:
    n, k = KINDS[kind]
    widths = [HALF, n * (1 if kind == "bernoulli" else k)]      # each layer's input: its NVIL context
    # 4,000 replicas: small networks, k = 2
    cfg = estimator_config(name, num_samples=2, **small_networks(name), **settings)
    return [build_estimator(cfg, latent_shape=(n, k), num_replicas=replicas, context_dim=d).to(DTYPE)
            for d in widths]


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
    loss, _ = training_loss(model, estimators("exact", kind, model), x, rng=ReplicaGenerator([0]), tau=1.0,
                            step=0)
    return {k: v[0] for k, v in layer_grads(model, loss).items()}


def draws(name: str, kind: str, model: StochasticBinaryNetwork, x: Tensor, seed: int,
          **settings) -> dict[str, Tensor]:
    many = replicate(model, NUM_DRAWS)
    seeds = torch.randint(2**62, (NUM_DRAWS,), generator=torch.Generator().manual_seed(seed)).tolist()
    loss, _ = training_loss(many, estimators(name, kind, model, NUM_DRAWS, **settings),
                            x.expand(NUM_DRAWS, -1, -1),
                            rng=ReplicaGenerator(seeds), tau=accepted_tau(name), step=10**5)
    return layer_grads(many, loss)


def worst_z(got: dict[str, Tensor], want: dict[str, Tensor]) -> tuple[float, float]:
    coords = sum(g.shape[1] for g in got.values())
    z_crit = torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * coords), dtype=torch.float64)).item()
    worst = 0.0
    for name, g in got.items():
        se = g.std(0) / math.sqrt(g.shape[0])
        worst = max(worst, (((g.mean(0) - want[name]).abs() - ABS_TOL).clamp(min=0)
                            / se.clamp(min=1e-12)).max().item())
    return worst, z_crit


@pytest.mark.parametrize("kind", KINDS)
def test_nested_exact_is_the_enumerated_expectation_over_both_layers(kind: str) -> None:
    model, x = problem(kind, seed=3)
    loss, _ = training_loss(model, estimators("exact", kind, model), x, rng=ReplicaGenerator([0]), tau=1.0,
                            step=0)
    n, k = KINDS[kind]
    states = [F.one_hot(torch.tensor(s), k).to(DTYPE) for s in itertools.product(range(k), repeat=n)]
    upper, lower = x[..., :HALF], x[..., HALF:]
    q1 = torch.softmax(model.logits(0, upper), -1)                               # [1, B, n, k]
    manual = torch.zeros(1, x.shape[1], dtype=DTYPE)
    for h1 in states:
        p1 = (q1 * h1).sum(-1).prod(-1)                                          # [1, B]
        q2 = torch.softmax(model.logits(1, model.flat(h1.expand(1, x.shape[1], n, k))), -1)
        for h2 in states:
            p2 = (q2 * h2).sum(-1).prod(-1)
            manual = manual + p1 * p2 * model.output_loss(h2.expand(1, x.shape[1], n, k), lower)
    torch.testing.assert_close(loss, manual)


@pytest.mark.parametrize(("name", "kind"), estimator_cases("sbn", unbiased=True))
def test_unbiased_estimators_match_exact_through_two_stochastic_layers(name: str, kind: str,
                                                                       seed: int) -> None:
    model, x = problem(kind)
    worst, z_crit = worst_z(draws(name, kind, model, x, seed), exact(model, kind, x))
    assert worst <= z_crit, f"{name}: max z-score {worst:.2f} > {z_crit:.2f}"


#: Options at which an estimator's bias is tested here, where its defaults leave it too near the
#: threshold: ReinDGE's bias through two layers at its defaults is 3 to 6 standard errors at this
#: budget (seed 0: z 3.1 Bernoulli, 6.1 categorical, against 5.1 and 5.2), at 2 steps 143 and 34
#: (its bias at its defaults is tested on the VAE, tests/test_estimators.py).
BIAS_SHOWN_AT = {"reindge": {"denoising_steps": 2}}


@pytest.mark.parametrize(("name", "kind"), BIASED)
def test_biased_estimators_have_a_measurable_bias_through_two_layers(name: str, kind: str, seed: int) -> None:
    """The z-test that passes the unbiased ones detects the bias; the mean still points the
    exact gradient's way for the first layer (cosine > 0.3)."""
    model, x = problem(kind)
    got, want = draws(name, kind, model, x, seed, **BIAS_SHOWN_AT.get(name, {})), exact(model, kind, x)
    worst, z_crit = worst_z(got, want)
    assert math.isfinite(worst) and worst > z_crit
    assert torch.cosine_similarity(got["map0"].mean(0), want["map0"], dim=0) > 0.3


@pytest.mark.parametrize("kind", KINDS)
def test_slope_annealed_st_samples_every_layer_from_its_sharpened_distribution(kind: str) -> None:
    """``st-annealed`` at slope a (here 1 + 0.5 * 4 = 3) is ``st`` on the network whose stochastic
    layers' logits are a times larger: the same loss from the same noise, gradients a times the
    sharpened network's for the stochastic layers' maps, and afterwards the same logits (what the
    evaluation samples from)."""
    model, x = problem(kind, seed=5)
    n, k = KINDS[kind]
    annealed = estimators("st-annealed", kind, model, slope_rate=0.5, max_slope=5.0)
    sharp = copy.deepcopy(model)
    with torch.no_grad():
        for stochastic_layer in sharp.maps[:-1]:         # affine maps: 3 W, 3 b give 3 x the logits
            for p in stochastic_layer.parameters():
                p.mul_(3.0)
    loss, _ = training_loss(model, annealed, x, rng=ReplicaGenerator([7]), tau=1.0, step=4)
    plain, _ = training_loss(sharp, estimators("st", kind, sharp), x, rng=ReplicaGenerator([7]), tau=1.0,
                             step=4)
    torch.testing.assert_close(loss, plain)
    got, want = layer_grads(model, loss), layer_grads(sharp, plain)
    for name, factor in (("map0", 3.0), ("map1", 3.0), ("map2", 1.0)):
        torch.testing.assert_close(got[name], factor * want[name])
    upper, h = x[..., :HALF], torch.rand(1, x.shape[1], n * (1 if kind == "bernoulli" else k), dtype=DTYPE)
    torch.testing.assert_close(model.logits(0, upper), sharp.logits(0, upper))
    torch.testing.assert_close(model.logits(1, h), sharp.logits(1, h))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NORMALISED)
def test_variance_normalisation_divides_each_stochastic_layers_gradient_by_its_own_scale(name: str,
                                                                                         kind: str) -> None:
    """With normalisation on and running variances giving scales s = (2, 5) to the two layers'
    estimators, the training loss's gradient for layer l's map is the one with normalisation off
    (same noise, same moving averages, same baselines) divided by s_l; the output map's is the
    same: each layer's whole gradient, as the VAE's encoder's (tests/test_estimators.py)."""
    model, x = problem(kind, seed=6)
    on, off = estimators(name, kind, model), estimators(name, kind, model, variance_normalisation=False)
    for a, b, s in zip(on, off, (2.0, 5.0)):
        a.normaliser.var.fill_(s ** 2)
        a.normaliser.mean.fill_(3.0)
        b.load_state_dict(a.state_dict())
    loss_on, _ = training_loss(model, on, x, rng=ReplicaGenerator([9]), tau=1.0, step=0)
    got = layer_grads(model, loss_on)              # before the next loss: a step sets the slopes in place
    loss_off, _ = training_loss(model, off, x, rng=ReplicaGenerator([9]), tau=1.0, step=0)
    want = layer_grads(model, loss_off)
    torch.testing.assert_close(loss_on, loss_off)
    assert want["map0"].abs().max() > 0 and want["map1"].abs().max() > 0
    for name_, divisor in (("map0", 2.0), ("map1", 5.0), ("map2", 1.0)):
        torch.testing.assert_close(got[name_], want[name_] / divisor)


@pytest.mark.parametrize("kind", ["bernoulli", "categorical"])
def test_decoder_evals_count_every_output_layer_pass_mean_field_ones_too(kind: str) -> None:
    """The cost row of Table 1: ST runs the output layer once per example; MuProp and DARN three
    times (the sample, and the mean-field pass of each layer's Taylor expansion: layer 2's inside
    layer 1's sample, layer 1's through the means of layer 2), as the VAE's MuProp counts its
    Taylor point."""
    model, x = problem(kind)
    for name, passes in (("st", 1), ("muprop", 3), ("darn", 3)):
        _, info = training_loss(model, estimators(name, kind, model), x, rng=ReplicaGenerator([0]), tau=1.0,
                                step=0)
        assert info["decoder_evals"].tolist() == [passes], name
