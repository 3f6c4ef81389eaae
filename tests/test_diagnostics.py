"""Gradient diagnostics on enumerable problems and on a (tiny) VAE run, in float64: the
identities checked (mse = bias^2 + variance, the undoing of variance normalisation) are algebra,
which float64 keeps to ~1e-13 whatever float32 kernels a CPU would pick."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import BUILT_IN, NORMALISED, accepted_tau, estimator_cases, estimator_config
from vae.estimators import EstimatorConfig, build_estimator
from vae.models.discrete_vae import DiscreteVAE
from vae.numerics.replicas import ReplicaGenerator
from vae.reporting.gradient_quality import quality
from vae.training.diagnostics import (encoder_gradient_moments, encoder_gradient_variance, gradient_errors,
                                      make_toy_problem)

NUM_DRAWS = 4000
DTYPE = torch.float64


def build(name: str, latent_shape: tuple[int, int], num_replicas: int = 1, data_dim: int = 5, **settings):
    return build_estimator(estimator_config(name, **settings), num_replicas=num_replicas,
                           latent_shape=latent_shape, context_dim=data_dim,
                           rng=ReplicaGenerator(list(range(num_replicas)))).to(DTYPE)


def test_exact_has_no_bias_and_no_variance() -> None:
    model, x = make_toy_problem("categorical", 3, 4, dtype=DTYPE)
    errors = gradient_errors(model, build("exact", (3, 4)), x, tau=1.0, num_draws=8, seed=0)
    for group in ("encoder", "decoder"):
        assert errors[f"{group}/bias"] < 1e-5
        assert errors[f"{group}/variance"] < 1e-10
        assert errors[f"{group}/cosine"] > 1 - 1e-5


@pytest.mark.parametrize("name", ["reinforce", "gs"])
def test_mse_is_squared_bias_plus_variance(name: str) -> None:
    model, x = make_toy_problem("bernoulli", 6, 2, dtype=DTYPE)
    errors = gradient_errors(model, build(name, (6, 2)), x, tau=1.0, num_draws=500, seed=1)
    for group in ("encoder", "decoder"):
        total = errors[f"{group}/bias"] ** 2 + errors[f"{group}/variance"]
        torch.testing.assert_close(errors[f"{group}/mse"], total)   # float64 defaults: rtol 1e-7


@pytest.mark.parametrize(("kind", "latent_shape"), [("categorical", (3, 4)), ("bernoulli", (6, 2))])
def test_reinforce_has_more_variance_than_rloo_at_equal_cost(kind: str, latent_shape) -> None:
    """RLOO with k = 4 samples against REINFORCE averaged over 4 draws (variance / 4).

    With D = 4000 draws the relative standard error of a variance estimate is about
    sqrt((kurtosis - 1) / D), well under 50% even for kurtosis 100, so a factor of 10 between the
    two is far outside the noise.
    """
    model, x = make_toy_problem(kind, *latent_shape, dtype=DTYPE)
    reinforce = gradient_errors(model, build("reinforce", latent_shape), x, tau=1.0,
                                num_draws=NUM_DRAWS, seed=2)
    rloo = gradient_errors(model, build("rloo", latent_shape), x, tau=1.0,
                           num_draws=NUM_DRAWS, seed=3)
    k = EstimatorConfig().num_samples
    assert reinforce["encoder/variance"] / k > 10 * rloo["encoder/variance"]


@pytest.mark.parametrize("name", ["gs", "st-gs"])
def test_relaxation_bias_shrinks_and_variance_grows_as_tau_falls(name: str) -> None:
    """Theory: the relaxation's bias vanishes as tau -> 0 while its variance grows. The bias
    norm's Monte Carlo noise is about sqrt(variance / D); the margins below exceed 4 times it."""
    model, x = make_toy_problem("categorical", 3, 4, dtype=DTYPE)
    cold, hot = (gradient_errors(model, build(name, (3, 4)), x, tau=tau, num_draws=NUM_DRAWS,
                                 seed=4) for tau in (0.5, 2.0))
    noise = math.sqrt(max(cold["encoder/variance"], hot["encoder/variance"]) / NUM_DRAWS)
    assert cold["encoder/bias"] + 4 * noise < hot["encoder/bias"]
    assert cold["encoder/variance"] > 2 * hot["encoder/variance"]


def tiny_vae(num_replicas: int) -> tuple[DiscreteVAE, torch.Tensor]:
    model = DiscreteVAE("categorical", 3, 4, [8], ReplicaGenerator(list(range(num_replicas))),
                        data_dim=5).to(DTYPE)
    x = (torch.rand(num_replicas, 6, 5, generator=torch.Generator().manual_seed(0)) < 0.5).to(DTYPE)
    return model, x


def test_encoder_gradient_variance_is_per_replica_and_side_effect_free() -> None:
    model, x = tiny_vae(2)
    estimator = build("nvil", (3, 4), num_replicas=2).train()
    estimator.normaliser.mean.fill_(1.0)
    before = {k: v.clone() for k, v in estimator.state_dict().items()}
    var = encoder_gradient_variance(model, estimator, x, rng=ReplicaGenerator([5, 6]), tau=1.0,
                                    step=0, num_draws=16)
    assert var.shape == (2,) and torch.isfinite(var).all() and (var > 0).all()
    assert all(p.grad is None for p in [*model.parameters(), *estimator.parameters()])
    assert estimator.training
    for key, value in estimator.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_encoder_gradient_variance_of_exact_is_zero_and_of_reinforce_is_not() -> None:
    model, x = tiny_vae(2)
    exact, reinforce = (encoder_gradient_variance(model, build(name, (3, 4), num_replicas=2), x,
                                                  rng=ReplicaGenerator([7, 8]), tau=1.0, step=0,
                                                  num_draws=8)
                        for name in ("exact", "reinforce"))
    assert (exact < 1e-10).all()
    assert (reinforce > 1e-4).all()


@pytest.mark.parametrize("name", NORMALISED)
def test_encoder_gradient_variance_is_measured_before_variance_normalisation(name: str) -> None:
    """With the same noise and the same signal centre, the variance with normalisation on (the
    trainer divides the encoder gradient by s = 3 and 1.5) equals that with it off: the
    diagnostic undoes the division. Without the undoing they differ by s^2 = 9 and 2.25."""
    model, x = tiny_vae(2)
    variances = []
    for normalise in (True, False):
        estimator = build(name, (3, 4), num_replicas=2, variance_normalisation=normalise)
        estimator.normaliser.mean.fill_(2.0)
        estimator.normaliser.var.copy_(torch.tensor([9.0, 2.25]))
        variances.append(encoder_gradient_variance(model, estimator, x, rng=ReplicaGenerator([3, 4]),
                                                   tau=1.0, step=0, num_draws=8))
    assert (variances[0] > 1e-4).all()
    # float32 output of a float64 sum
    torch.testing.assert_close(variances[0], variances[1], rtol=1e-6, atol=0)


def test_encoder_gradient_variance_needs_two_draws() -> None:
    model, x = tiny_vae(1)
    with pytest.raises(ValueError, match="num_draws"):
        encoder_gradient_variance(model, build("gs", (3, 4)), x, rng=ReplicaGenerator([0]),
                                  tau=1.0, step=0, num_draws=1)


@pytest.mark.parametrize("kind, shape", [("categorical", (3, 4)), ("bernoulli", (6, 2))])
def test_gradient_quality_tells_bias_from_sampling_noise_against_the_exact_gradient(kind: str, shape) -> None:
    """vae.reporting.gradient_quality.quality on an enumerable problem, the exact gradient the reference
    (noise 0), every unbiased estimator of the registry and the two relaxations. An unbiased
    estimator's squared relative error has expectation noise^2 exactly (the squared error of a
    mean of 300 draws, summed over the encoder's 102 or 156 coordinates), so its ratio to the noise stays
    near 1: below 2.5 (measured 0.5-1.8). The relaxations at tau = 1 are biased beyond their
    sampling noise: above 3.5 (measured 4.2-6.8; the ratio grows as sqrt(draws)). Against a
    reference of 1500 RLOO draws instead of the exact gradient (its noise in the formula), the
    unbiased estimators stay below 2.5, and RLOO's 1500 draws against the exact gradient too."""
    model, x = make_toy_problem(kind, *shape, dtype=DTYPE)

    def moments(name: str, draws: int, seed: int):
        mean, variance = encoder_gradient_moments(model, build(name, shape), x, rng=ReplicaGenerator([seed]),
                                                  tau=accepted_tau(name), step=0, num_draws=draws)
        return mean[0], variance[0]

    exact, zero = moments("exact", 2, 0)
    assert float(zero) < 1e-20
    sampled = moments("rloo", 1500, 7)
    own = quality(*sampled, 1500, exact, zero, 1)
    assert own["relative_error"] < 2.5 * own["noise"]
    for name, k in estimator_cases("vae"):
        if k != kind or name not in ("gs", "st-gs") and not BUILT_IN[name].unbiased:
            continue
        mean, variance = moments(name, 300, 1)
        q = quality(mean, variance, 300, exact, zero, 1)
        assert math.isclose(q["log10_variance"], math.log10(float(variance)))
        ratio = q["relative_error"] / q["noise"]
        if BUILT_IN[name].unbiased:
            assert ratio < 2.5, (name, q)
            noisy = quality(mean, variance, 300, *sampled, 1500)
            assert noisy["relative_error"] < 2.5 * noisy["noise"], (name, noisy)
        else:
            assert ratio > 3.5 and q["cosine"] < 1, (name, q)
