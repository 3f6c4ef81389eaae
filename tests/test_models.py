"""The VAE's pieces: replica layers, the encoder's raw logits, the KL and the Bernoulli latents.

Comparisons of two computations of one quantity (against torch's layers and distributions) are
algebra, so they run in float64 with torch's float64 tolerances (rtol 1e-7): the sums of up to
784 terms they compare round off near 1e-14 whatever kernels the CPU picks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vae.models.discrete_vae import DiscreteVAE, categorical_kl
from vae.numerics.gumbel import log_prob_one_hot
from vae.numerics.replicas import ReplicaGenerator, ReplicaLinear, derive_seed


def test_replica_linear_is_r_independent_linear_maps():
    layer = ReplicaLinear(5, 3, ReplicaGenerator([0, 1, 2])).double()
    x = torch.randn(3, 4, 7, 5, dtype=torch.float64)
    y = layer(x)
    for r in range(3):
        torch.testing.assert_close(y[r], F.linear(x[r], layer.weight[r].T, layer.bias[r, 0]))


def test_replica_r_is_initialised_like_a_single_seed_run():
    many = DiscreteVAE("categorical", 4, 3, [8], ReplicaGenerator([5, 9]))
    one = DiscreteVAE("categorical", 4, 3, [8], ReplicaGenerator([9]))
    for (name, p_many), p_one in zip(many.named_parameters(), one.parameters()):
        assert torch.equal(p_many[1], p_one[0]), name


def test_derived_seeds_differ_where_the_low_32_bits_would_not():
    assert derive_seed("epoch", 3, 5) != derive_seed("epoch", 7, 5)
    assert 0 <= derive_seed("eval", 0, 0) < 2**32


def test_encoder_logits_are_not_squashed():
    model = DiscreteVAE("categorical", 20, 10, [64], ReplicaGenerator([0]))
    logits = model.encode(torch.bernoulli(torch.full((1, 50, 784), 0.3)))
    assert logits.shape == (1, 50, 20, 10) and (logits < 0).any() and (logits > 0).any()


def test_kl_to_uniform_matches_torch_and_is_zero_only_at_uniform():
    uniform = torch.zeros(1, 1, 20, 10, dtype=torch.float64)
    logits = 3 * torch.randn(2, 6, 20, 10, dtype=torch.float64)
    q = torch.distributions.Categorical(logits=logits)
    p = torch.distributions.Categorical(logits=torch.zeros(10, dtype=torch.float64))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(categorical_kl(logits, uniform), expected)
    assert (categorical_kl(logits, uniform) > 0).all()
    torch.testing.assert_close(categorical_kl(torch.full((1, 2, 20, 10), 4.2, dtype=torch.float64), uniform),
                               torch.zeros(1, 2, dtype=torch.float64))
    # extreme logits, in float32: still finite, and approaching N log K for one-hot posteriors
    extreme = categorical_kl(torch.tensor([1e4] + [0.0] * 9).expand(1, 1, 20, 10), uniform.float())
    torch.testing.assert_close(extreme, torch.tensor([[20 * math.log(10)]]))


@pytest.mark.parametrize("kind", ["categorical", "bernoulli"])
def test_learned_prior_is_trained_and_enters_the_kl_and_the_log_prior(kind: str):
    n, k = (4, 3) if kind == "categorical" else (5, 2)
    model = DiscreteVAE(kind, n, k, [8], ReplicaGenerator([0, 1]), prior="learned").double()
    assert any(p is model.prior_free for p in model.parameters())
    with torch.no_grad():
        model.prior_free.normal_()
    prior = model.prior_logits()                                          # [R, 1, N, K]
    assert prior.shape == (2, 1, n, k)
    if kind == "bernoulli":
        assert torch.equal(prior[..., 0], torch.zeros(2, 1, n, dtype=torch.float64))
    x = torch.bernoulli(torch.full((2, 6, 784), 0.3, dtype=torch.float64))
    logits = model.encode(x)
    q = torch.distributions.Categorical(logits=logits)
    p = torch.distributions.Categorical(logits=prior)
    torch.testing.assert_close(model.kl(logits), torch.distributions.kl_divergence(q, p).sum(-1))
    z = F.one_hot(q.sample(), k).double()
    torch.testing.assert_close(model.log_prior(z), p.log_prob(z.argmax(-1)).sum(-1))
    uniform = DiscreteVAE(kind, n, k, [8], ReplicaGenerator([0, 1])).double()
    torch.testing.assert_close(uniform.log_prior(z),
                               torch.full((2, 6), -n * math.log(k), dtype=torch.float64))
    with pytest.raises(ValueError, match="model.prior"):
        DiscreteVAE(kind, n, k, [8], ReplicaGenerator([0]), prior="flat")


def test_empty_hidden_gives_the_papers_affine_encoder_and_decoder():
    model = DiscreteVAE("categorical", 20, 10, [], ReplicaGenerator([0]))
    assert [type(m).__name__ for m in model.encoder] == ["ReplicaLinear"]
    assert [type(m).__name__ for m in model.decoder] == ["ReplicaLinear"]
    assert model.encoder[0].weight.shape == (1, 784, 200) and model.decoder[0].weight.shape == (1, 200, 784)


def test_bernoulli_latents_are_two_class_categoricals_with_sigmoid_probabilities():
    model = DiscreteVAE("bernoulli", 200, 2, [64], ReplicaGenerator([0])).double()
    x = torch.bernoulli(torch.full((1, 8, 784), 0.3, dtype=torch.float64))
    logits = model.encode(x)                                    # [1, 8, 200, 2]
    assert (logits.shape == (1, 8, 200, 2)
            and torch.equal(logits[..., 0], torch.zeros(1, 8, 200, dtype=torch.float64)))
    on = torch.softmax(logits, -1)[..., 1]
    torch.testing.assert_close(on, torch.sigmoid(logits[..., 1]))
    assert model.decoder[0].weight.shape[1] == 200              # the decoder reads 200 bits
    with pytest.raises(ValueError, match="num_classes must be 2"):
        DiscreteVAE("bernoulli", 200, 3, [64], ReplicaGenerator([0]))


def test_reconstruction_loss_broadcasts_sample_axes_and_is_bernoulli_nll():
    model = DiscreteVAE("categorical", 3, 4, [8], ReplicaGenerator([0, 1])).double()
    x = torch.bernoulli(torch.full((2, 5, 784), 0.5, dtype=torch.float64))
    z = F.one_hot(torch.randint(0, 4, (2, 7, 5, 3)), 4).double()  # [R, S, B, N, K]
    loss = model.reconstruction_loss(z, x)
    assert loss.shape == (2, 7, 5)
    pixel_logits = model.decode(z[:, 2])
    nll = -torch.distributions.Bernoulli(logits=pixel_logits).log_prob(x).sum(-1)
    torch.testing.assert_close(loss[:, 2], nll)


def test_log_prob_of_one_hot_samples():
    logits = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    z = F.one_hot(torch.tensor([[[0, 3, 1], [2, 2, 0]]]), 4).double()
    expected = torch.distributions.Categorical(logits=logits).log_prob(z.argmax(-1)).sum(-1)
    torch.testing.assert_close(log_prob_one_hot(logits, z), expected)


def test_the_2020_benchmark_model_leaky_relu_0_3_and_the_output_bias_at_the_data_mean_logit():
    """model.activation=leaky_relu puts LeakyReLU(0.3) between hidden layers (the Keras default
    DisARM's networks use, not torch's 0.01); model.output_bias=data_mean starts the decoder's last
    bias at logit(clip(mean, 0.001, 0.999)) for every replica, the weights as without it."""
    mean = torch.tensor([0.0, 0.5, 0.9, 1.0]).repeat(196)
    rng = ReplicaGenerator([3, 4])
    model = DiscreteVAE("bernoulli", 200, 2, [200, 200], rng, activation="leaky_relu", pixel_mean=mean)
    plain = DiscreteVAE("bernoulli", 200, 2, [200, 200], ReplicaGenerator([3, 4]))
    slopes = [m.negative_slope for m in model.decoder if isinstance(m, torch.nn.LeakyReLU)]
    assert slopes == [0.3, 0.3] and len([m for m in model.encoder if isinstance(m, torch.nn.LeakyReLU)]) == 2
    expected = torch.logit(mean.clamp(1e-3, 1 - 1e-3))
    for r in range(2):
        assert torch.equal(model.decoder[-1].bias[r, 0], expected)
    assert torch.equal(model.decoder[-1].weight, plain.decoder[-1].weight)
    assert model.decoder[-1].bias[0, 0, 0].item() == pytest.approx(math.log(1e-3 / (1 - 1e-3)), rel=1e-6)
