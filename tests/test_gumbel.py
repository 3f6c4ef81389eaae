"""The Gumbel-softmax core: exact sampling, straight-through, numerics, and the Concrete density."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vae.numerics import gumbel
from vae.numerics.gumbel import (concrete_log_prob, conditional_gumbel, gumbel_noise, gumbel_softmax,
                                 log_softmax, softmax)
from vae.numerics.replicas import ReplicaGenerator

# Upper 0.1% points of the chi-square distribution (statistical tables): the tests below fail
# by chance with probability 0.001 for a correct sampler, and their seeds are fixed.
CHI2_999 = {2: 13.816, 9: 27.877}


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("tau", [0.1, 1.0, 10.0])
def test_hard_samples_follow_softmax_of_logits(tau):
    """Gumbel-max: the argmax class is distributed as softmax(logits), whatever tau."""
    logits = torch.tensor([0.7, 0.2, 0.1])
    y = gumbel_softmax(logits.expand(100_000, 3), tau, generator=ReplicaGenerator([0]), hard=True)
    assert chi_square(y.sum(0), torch.softmax(logits, -1)) < CHI2_999[2]


def test_hard_samples_follow_softmax_for_random_logits_k10():
    logits = 2 * torch.randn(10, generator=torch.Generator().manual_seed(3))
    y = gumbel_softmax(logits.expand(100_000, 10), 0.5, generator=ReplicaGenerator([1]), hard=True)
    assert chi_square(y.sum(0), torch.softmax(logits, -1)) < CHI2_999[9]


def test_straight_through_is_one_hot_with_the_soft_gradient():
    # float64: the same algebra both ways
    logits = torch.randn(64, 5, 7, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(64, 5, 7, dtype=torch.float64)
    hard = gumbel_softmax(logits, 0.7, generator=ReplicaGenerator([5]), hard=True)
    soft = gumbel_softmax(logits, 0.7, generator=ReplicaGenerator([5]), hard=False)  # same noise
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard.sum(-1), torch.ones(64, 5, dtype=torch.float64))
    assert torch.equal(hard.argmax(-1), soft.argmax(-1))
    (g_hard,) = torch.autograd.grad((weights * hard).sum(), logits)
    (g_soft,) = torch.autograd.grad((weights * soft).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tau", [1e-3, 1.0, 1e3])
def test_no_inf_or_nan_for_extreme_logits_and_tau(dtype, tau):
    """10^7 sampled coordinates with logits of +-1e4: samples and gradients stay finite."""
    gen = torch.Generator().manual_seed(0)
    logits = (1e4 * torch.sign(torch.randn(1_000_000, 10, generator=gen))).to(dtype).requires_grad_()
    for hard in (False, True):
        y = gumbel_softmax(logits, tau, generator=ReplicaGenerator([7]), hard=hard)
        assert y.dtype == dtype
        assert torch.isfinite(y).all()
        (grad,) = torch.autograd.grad(y[:1000].float().pow(2).sum(), logits)
        assert torch.isfinite(grad).all()


def test_gumbel_noise_is_finite_even_at_the_ends_of_the_uniform():
    class Ends:  # a generator stand-in that returns exactly 0 and the largest float below 1
        def uniform(self, shape):
            return torch.tensor([0.0, 1.0 - 2**-24, 1.0]).expand(shape).clone()

    g = gumbel_noise((4, 3), Ends())
    assert torch.isfinite(g).all()


def test_matches_torch_gumbel_softmax_in_distribution():
    """Mean soft sample per class equals torch's within 5 standard errors of the difference."""
    n, logits = 200_000, torch.tensor([1.5, 0.0, -1.0, 0.3])
    ours = gumbel_softmax(logits.expand(n, 4), 0.5, generator=ReplicaGenerator([11]))
    torch.manual_seed(12)
    theirs = F.gumbel_softmax(logits.expand(n, 4), tau=0.5)
    se = torch.sqrt(ours.var(0) / n + theirs.var(0) / n)
    assert ((ours.mean(0) - theirs.mean(0)).abs() < 5 * se).all()


@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf, torch.tensor([1.0, 0.0])])
def test_invalid_tau_is_a_value_error(tau):
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax(torch.zeros(2, 2), tau, generator=ReplicaGenerator([0]))


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_logits_are_a_value_error(bad):
    with pytest.raises(ValueError, match="logits"):
        gumbel_softmax(torch.tensor([0.0, bad]), 1.0, generator=ReplicaGenerator([0]))


def test_concrete_density_matches_torch_relaxed_one_hot():
    """In float64 (the two formulas agree to float64 round-off, with torch's float64 tolerances)."""
    logits, tau = torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float64), 0.6
    dist = torch.distributions.RelaxedOneHotCategorical(torch.tensor(tau, dtype=torch.float64), logits=logits)
    y = dist.sample((1000,))
    torch.testing.assert_close(concrete_log_prob(y.log(), logits, tau), dist.log_prob(y))


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_binary_concrete_density_integrates_to_one(tau):
    """For K = 2 the density of y_1 on (0, 1) must integrate to 1 (midpoint rule on a log grid)."""
    t = torch.linspace(-30, 30, 200_001, dtype=torch.float64)   # y_1 = sigmoid(t), dy = y(1-y) dt
    y1 = torch.sigmoid(t)
    log_y = torch.stack([F.logsigmoid(t), F.logsigmoid(-t)], -1)
    density = concrete_log_prob(log_y, torch.tensor([0.4, -0.3]), tau).double().exp()
    integral = (density * y1 * (1 - y1)).sum() * (t[1] - t[0])
    assert abs(float(integral) - 1.0) < 1e-3


def test_called_like_torch_with_the_global_generator_or_a_torch_generator():
    """No generator: torch's global one, so torch.manual_seed makes it repeatable, as for
    F.gumbel_softmax; a torch.Generator gives its own stream."""
    logits = torch.randn(5, 4)
    torch.manual_seed(3)
    first = gumbel_softmax(logits, 0.5, hard=True)
    torch.manual_seed(3)
    assert torch.equal(first, gumbel_softmax(logits, 0.5, hard=True))
    own = [gumbel_softmax(logits, 0.5, generator=torch.Generator().manual_seed(9)) for _ in range(2)]
    assert torch.equal(own[0], own[1]) and own[0].shape == logits.shape


def test_conditional_gumbel_draws_the_perturbed_logits_given_their_argmax():
    """Per argmax class b, the conditional draws have the argmax b and the mean of the
    unconditional perturbed log-probabilities that ended at b (5 standard errors of the difference)."""
    n, logits = 200_000, torch.tensor([0.5, -1.0, 2.0, 0.0])
    z = torch.log_softmax(logits, -1) + gumbel_noise((n, 4), torch.Generator().manual_seed(1))
    hard = F.one_hot(z.argmax(-1), 4).float()
    given = conditional_gumbel(logits.expand(n, 4), hard, torch.Generator().manual_seed(2))
    assert torch.equal(given.argmax(-1), z.argmax(-1))
    for b in range(4):
        rows = hard[:, b].bool()
        se = torch.sqrt(z[rows].var(0) / rows.sum() + given[rows].var(0) / rows.sum())
        assert ((z[rows].mean(0) - given[rows].mean(0)).abs() < 5 * se).all(), b


@pytest.mark.parametrize("composite", [True, False])
def test_softmax_and_log_softmax_are_torchs_on_either_path(monkeypatch, composite):
    """Both paths of :func:`vae.numerics.gumbel.log_softmax` (``x - logsumexp(x)`` on the CPUs whose torch
    kernel is slow, torch's elsewhere), forward and backward: equal to torch's in float64 to its
    tolerances, a class at -inf included (probability 0, no NaN), logits of 1e3 (no overflow)."""
    monkeypatch.setattr(gumbel, "_LOGSUMEXP_ON_CPU", composite)
    x = torch.randn(3, 7, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 5
    x[0, 0, 3], x[1, 2] = -math.inf, x[1, 2] + 1e3
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.testing.assert_close(log_softmax(a), torch.log_softmax(b, -1))
    torch.testing.assert_close(softmax(a), torch.softmax(b, -1))
    weights = torch.rand(3, 7, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (softmax(a) * weights).sum().backward()
    (torch.softmax(b, -1) * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert softmax(a)[0, 0, 3] == 0 and torch.isfinite(a.grad).all()


@pytest.mark.parametrize("num_classes, dtype", [(2, torch.float32), (10, torch.float64), (3, torch.bfloat16)])
def test_one_hot_is_torchs_without_reading_the_indices_on_the_host(num_classes, dtype):
    """``gumbel.one_hot`` (every sampler's) equals ``F.one_hot(...).to(dtype)`` exactly, and runs
    no operator that reads a tensor back to the host (``F.one_hot`` checks the indices' range:
    ``aminmax`` and two scalar reads, a device synchronisation per training step on a GPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    index = torch.randint(0, num_classes, (3, 4, 5))
    with Ops() as ops:
        ours = gumbel.one_hot(index, num_classes, dtype)
    assert ours.dtype == dtype and torch.equal(ours, F.one_hot(index, num_classes).to(dtype))
    assert not [n for n in ops.names if "local_scalar" in n or "aminmax" in n], ops.names
    with Ops() as theirs:
        F.one_hot(index, num_classes)
    assert [n for n in theirs.names if "local_scalar" in n]      # the check would notice torch's host read


def test_logaddexp_is_torchs_with_and_without_a_gradient():
    """``gumbel.logaddexp`` (the conditional Gumbel draws' of Gumbel-Rao, REBAR and RELAX) is
    ``torch.logaddexp``: values, broadcasting and infinities, in place without a gradient and out of
    place with one, whose gradient is torch's; compared in float64 (the algebra, 1e-12)."""
    a = torch.randn(6, 4, 3, dtype=torch.float64) * 10
    b = torch.randn(6, 4, 1, dtype=torch.float64) * 10
    with torch.no_grad():
        torch.testing.assert_close(gumbel.logaddexp(a, b), torch.logaddexp(a, b), rtol=1e-12, atol=1e-12)
    inf = math.inf
    x = torch.tensor([inf, -inf, inf, -inf, 1.0, -inf, 0.0])
    y = torch.tensor([inf, -inf, -inf, inf, -inf, 2.0, 0.0])
    assert torch.equal(gumbel.logaddexp(x, y), torch.logaddexp(x, y))
    a.requires_grad_(True), b.requires_grad_(True)
    ours = torch.autograd.grad(gumbel.logaddexp(a, b).square().sum(), (a, b))
    theirs = torch.autograd.grad(torch.logaddexp(a, b).square().sum(), (a, b))
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, rtol=1e-12, atol=1e-12)
