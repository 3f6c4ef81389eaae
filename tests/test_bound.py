"""The m-sample bound's fast path (samples as their classes, drawn by the inverse CDF; the
likelihood in fewer passes) against what it replaced, on the same samples.

The pieces are algebra, so they are compared in float64 with torch's float64 tolerances: the
classes are the argmax of the one-hot samples, the embedding bag is the product with the one-hot
input, the log-likelihood is minus ``binary_cross_entropy_with_logits`` summed, the gathers are
the products with z. The whole bound is compared in float32, as the trainer computes it, against
:func:`vae.reporting.bench.reference_bound` (the replaced implementation) on the same generator
streams (the replaced arithmetic on the suite's samples): a log-weight sums 784 pixel terms (plus N latent
terms), so the two agree to ``float32_rtol(784 + N)`` of its size (tests/conftest.py), which the bound (a mean
of log-mean-exps of log-weights) inherits.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import float32_rtol
from vae.data.images import BinarizedImages
from vae.estimators.sampling import (class_boundaries, sample_classes, sample_classes_by_inverse_cdf,
                                     sample_one_hot)
from vae.models import sbn
from vae.models.discrete_vae import DiscreteVAE, log_likelihood_function, softplus_sum
from vae.models.evaluation import importance_weighted_bound
from vae.numerics.gumbel import log_prob_one_hot
from vae.numerics.replicas import ReplicaGenerator, ReplicaLinear
from vae.reporting.bench import inverse_cdf_classes, reference_bound

MODELS = [("categorical", 20, 10, []), ("categorical", 20, 10, [64, 32]), ("bernoulli", 30, 2, []),
          ("bernoulli", 30, 2, [64, 32])]


def digits(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.rand(n, 784, generator=torch.Generator().manual_seed(seed)) < 0.3).to(dtype)


def test_classes_are_the_argmax_of_the_one_hot_samples_from_the_same_noise():
    for k in (2, 10):
        logits = torch.randn(2, 5, 7, k, generator=torch.Generator().manual_seed(k))
        index = sample_classes(logits, ReplicaGenerator([1, 2]), num_samples=30)
        z = sample_one_hot(logits, ReplicaGenerator([1, 2]), num_samples=30)
        assert index.shape == (2, 30, 5, 7) and torch.equal(index, z.argmax(-1))


def test_inverse_cdf_samples_have_the_softmax_frequencies_and_never_a_class_of_probability_zero():
    """Frequencies of S = 40,000 draws per variable against softmax(logits), for K = 10 (one class
    at logit -1e4: probability 0) and K = 2 (the Bernoulli latents). Each frequency is within 5
    standard errors sqrt(p (1 - p) / S) of p (a seeded draw; 5 SE over 2 x 3 x 4 x K cells fails
    with probability < 1e-4 for a correct sampler), plus 2^-24 for u's float32 resolution."""
    s = 40_000
    for k in (10, 2):
        logits = torch.randn(2, 3, 4, k, generator=torch.Generator().manual_seed(k)) * 2
        if k == 10:
            logits[..., 3] = -1e4
        index = sample_classes_by_inverse_cdf(class_boundaries(logits), ReplicaGenerator([1, 2]),
                                              num_samples=s)
        assert index.shape == (2, s, 3, 4) and index.dtype == torch.int64
        frequency = F.one_hot(index, k).double().mean(1)                      # [R, B, N, K]
        p = torch.softmax(logits.double(), -1)
        assert torch.all((frequency - p).abs() <= 5 * (p * (1 - p) / s).sqrt() + 2.0 ** -24)
        if k == 10:
            assert not bool((index == 3).any())
        # as floats (the bits a Bernoulli decoder reads): the same classes from the same stream
        as_floats = sample_classes_by_inverse_cdf(class_boundaries(logits), ReplicaGenerator([1, 2]),
                                                  num_samples=s, dtype=torch.float32)
        assert as_floats.dtype == torch.float32 and torch.equal(as_floats, index.float())
        # per-sample boundaries (a layer of the SBN given the layer above): one draw each
        one = sample_classes_by_inverse_cdf(class_boundaries(logits.unsqueeze(1).expand(2, 5, 3, 4, k)),
                                            ReplicaGenerator([1, 2]))
        assert one.shape == (2, 5, 3, 4) and int(one.max()) < k


def test_softplus_sum_is_the_softplus_summed_where_exp_overflows_too():
    """softplus_sum overwrites the logits it is given: each call makes a copy."""
    for scale in (1.0, 30.0, 200.0):                      # 200: logits far past exp's float32 overflow at 88
        logits = torch.randn(3, 5, 784, generator=torch.Generator().manual_seed(int(scale))) * scale
        torch.testing.assert_close(softplus_sum(logits.double), F.softplus(logits.double()).sum(-1))
        # float32, as the bound computes it: a sum of 784 terms (tests/conftest.py)
        torch.testing.assert_close(softplus_sum(logits.clone), F.softplus(logits.double()).sum(-1).float(),
                                   rtol=float32_rtol(784), atol=float32_rtol(784))
        # the bias added inside the sum (e^p e^b); then where e^p alone overflows (p = 90, b = -5),
        # which the exact route computes
        bias = torch.randn(784, generator=torch.Generator().manual_seed(2)) * 3
        logits = logits.clamp(max=70.0)                       # e^p e^b finite: the fast route
        for _ in range(2):
            torch.testing.assert_close(softplus_sum(logits.clone, bias),
                                       F.softplus(logits.double() + bias.double()).sum(-1).float(),
                                       rtol=float32_rtol(784), atol=float32_rtol(784))
            bias[0], logits[..., 0] = -5.0, 90.0
    assert torch.isnan(softplus_sum(torch.tensor([0.0, float("nan")]).clone)).item()
    # bfloat16 logits (precision=bf16's autocast) are summed in float32, not rounded at bfloat16's
    # 2^-8: mostly negative logits, as a digit's background pixels have
    low = (torch.randn(200, 784, generator=torch.Generator().manual_seed(1)) * 3 - 6).bfloat16()
    widened = softplus_sum(low.clone)
    assert widened.dtype == torch.float32
    torch.testing.assert_close(widened, F.softplus(low.double()).sum(-1).float(), rtol=float32_rtol(784),
                               atol=float32_rtol(784))


def test_embedding_bag_is_the_product_with_the_one_hot_input():
    layer = ReplicaLinear(6 * 4, 9, ReplicaGenerator([0, 1])).double()
    index = torch.randint(0, 4, (2, 3, 5, 6))                                 # [R, S, B, N]
    one_hot = F.one_hot(index, 4).double().flatten(-2)
    torch.testing.assert_close(layer.forward_one_hot(index, 4), layer(one_hot))


@pytest.mark.parametrize("kind, n, k, hidden", MODELS)
def test_log_likelihood_and_log_weight_function_are_those_of_the_one_hot(kind, n, k, hidden):
    """In float64, for the classes as int64 and (Bernoulli) as the float bits the bound draws."""
    model = DiscreteVAE(kind, n, k, hidden, ReplicaGenerator([0, 1]), prior="learned").double()
    with torch.no_grad():
        model.prior_free.normal_()
    x = digits(2 * 4, dtype=torch.float64).view(2, 4, 784)
    logits = model.encode(x)
    index = torch.randint(0, k, (2, 3, 4, n))                                 # [R, S, B, N]
    z = F.one_hot(index, k).double()
    log_likelihood = log_likelihood_function(model.decoder, x, k, kind == "categorical")
    log_weight = model.log_weight_function(logits, x)
    expected = -model.reconstruction_loss(z, x) + model.log_prior(z) - log_prob_one_hot(logits, z)
    for classes in [index] + ([index.double()] if kind == "bernoulli" else []):
        torch.testing.assert_close(log_likelihood(classes), -model.reconstruction_loss(z, x))
        torch.testing.assert_close(log_weight(classes), expected)
        torch.testing.assert_close(log_weight(classes[:, 0]), expected[:, 0])       # no sample axis


def test_the_bound_s_likelihood_of_grey_levels_is_the_training_loss_s():
    """data.binarization=none: pixels in [0, 1] are the Bernoulli likelihood's targets, and the
    bound's log-likelihood function gives -reconstruction_loss (binary cross-entropy with soft
    targets) for them too (float64; the formula x . l - softplus(l) needs no binary x)."""
    model = DiscreteVAE("bernoulli", 6, 2, [8], ReplicaGenerator([0, 1])).double()
    x = torch.rand(2, 4, 784, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    index = torch.randint(0, 2, (2, 3, 4, 6))
    z = F.one_hot(index, 2).double()
    log_likelihood = log_likelihood_function(model.decoder, x, 2, False)
    torch.testing.assert_close(log_likelihood(index), -model.reconstruction_loss(z, x))


@pytest.mark.parametrize("kind, n, k, hidden", MODELS)
def test_vae_bound_equals_the_replaced_implementation_on_the_same_samples(kind, n, k, hidden):
    model = DiscreteVAE(kind, n, k, hidden, ReplicaGenerator([3, 4]))
    data = BinarizedImages({"test": digits(30)}, "static")
    with torch.no_grad():
        new, old = (bound(model, data, "test", ReplicaGenerator([5, 6]), 250, 7, 30)
                    for bound in (importance_weighted_bound,
                                  lambda *a: reference_bound(*a, sample=inverse_cdf_classes)))
    assert new.shape == (2,) and not torch.equal(new[0], new[1])
    torch.testing.assert_close(new, old, rtol=float32_rtol(784 + n), atol=0)


@pytest.mark.parametrize("kind, n, k", [("bernoulli", 8, 2), ("categorical", 4, 5)])
def test_sbn_nll_equals_the_one_hot_computation_on_the_same_samples(kind, n, k):
    """Against the one-hot path written out (one-hot samples of the same classes, the map's matmul, BCE),
    in float64."""
    model = sbn.StochasticBinaryNetwork(kind, n, k, [16], 2, ReplicaGenerator([1, 2])).double()
    data = BinarizedImages({"test": digits(12, dtype=torch.float64)}, "static")

    def one_hot_nll(rng: ReplicaGenerator) -> torch.Tensor:
        x = data.splits["test"].expand(2, -1, -1)
        upper, lower = x[..., :sbn.HALF], x[..., sbn.HALF:]
        h = F.one_hot(inverse_cdf_classes(model.logits(0, upper), rng, 50), k).double()
        h = F.one_hot(sample_classes_by_inverse_cdf(class_boundaries(model.logits(1, model.flat(h))), rng),
                      k).double()
        log_w = -model.output_loss(h, lower)                                  # [R, S, B]
        return -(torch.logsumexp(log_w, 1) - torch.log(torch.tensor(50.0))).mean(-1)

    with torch.no_grad():
        fast = sbn.negative_log_likelihood(model, data, "test", ReplicaGenerator([7, 8]), 50, 12,
                                           sample_chunk=50)
        torch.testing.assert_close(fast, one_hot_nll(ReplicaGenerator([7, 8])))
