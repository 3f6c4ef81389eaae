"""The discrete-latent VAE of Jang et al. (2017), Section 4.2, on a replica axis.

Encoder ``784-[hidden]-(N*K)`` with ReLU between layers and *no* activation on the output logits;
decoder ``(N*K)-[reversed hidden]-784``, giving Bernoulli logits for the 784 pixels. ``hidden =
[512, 256]`` is the author's public notebook; ``hidden = []`` is the paper's own notation
(``784-200-784``, ``784-(20x10)-784``): affine maps, no deterministic hidden layer. The prior
over each latent's K classes is uniform, or learned (one logit vector per latent, shared by all
examples; the final arXiv version of the paper says "learned", earlier ones "uniform").

A Bernoulli latent (``kind="bernoulli"``) is the K = 2 categorical with logits ``(0, l)``: then
``softmax(0, l)[1] = sigmoid(l)``, and the Gumbel-softmax of the pair is the binary Concrete of
Maddison et al. (logistic noise), so every estimator serves both kinds unchanged. The encoder
emits N numbers ``l`` and the decoder reads only the "on" coordinate ``z[..., 1]``: the
Bernoulli VAE is exactly the paper's 200-unit model.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae.gumbel import concrete_log_prob, gumbel_noise, log_softmax, widen
from vae.replicas import ReplicaGenerator, ReplicaMLP, forward_classes

LatentKind = Literal["categorical", "bernoulli"]
PriorKind = Literal["uniform", "learned"]


class DiscreteVAE(nn.Module):
    """VAE with N discrete latents of K classes each, R replicas at once.

    Shapes: x ``[R, B, 784]`` in {0, 1}; logits ``[R, B, N, K]``; z ``[R, *S, B, N, K]``.

    ``logit_scale`` (a scalar buffer, 1 unless an estimator sets it, see
    :meth:`vae.estimators.base.Estimator.logit_scale`) multiplies the encoder's output: the
    posterior is ``q(z_n | x) = softmax(logit_scale * l_n)`` everywhere, in training, in the KL
    and in evaluation.
    """

    def __init__(self, kind: LatentKind, num_latents: int, num_classes: int,
                 hidden: list[int], rng: ReplicaGenerator, data_dim: int = 784,
                 prior: PriorKind = "uniform"):
        super().__init__()
        if kind == "bernoulli" and num_classes != 2:
            raise ValueError(f"model.num_classes must be 2 for Bernoulli latents, got {num_classes}")
        if prior not in ("uniform", "learned"):
            raise ValueError(f"model.prior must be 'uniform' or 'learned', got {prior!r}")
        self.kind = kind
        self.num_latents = num_latents
        self.num_classes = num_classes
        free = 1 if kind == "bernoulli" else num_classes              # free logits per latent
        self.encoder = ReplicaMLP([data_dim, *hidden, num_latents * free], rng)
        self.decoder = ReplicaMLP([num_latents * free, *reversed(hidden), data_dim], rng)
        self.register_buffer("logit_scale", torch.ones(()))
        # learned prior: free logits [R, 1, N, free], from the uniform prior
        self.prior_free = (nn.Parameter(torch.zeros(len(rng), 1, num_latents, free))
                           if prior == "learned" else None)

    def _as_logits(self, free: Tensor) -> Tensor:
        """Free logits ``[..., N, free]`` -> categorical logits ``[..., N, K]`` (Bernoulli: ``(0, l)``)."""
        if self.kind == "bernoulli":
            return torch.cat([torch.zeros_like(free), free], dim=-1)
        return free

    def encode(self, x: Tensor) -> Tensor:
        """``[R, B, D]`` -> latent logits ``[R, B, N, K]`` (no squashing of the output)."""
        out = self.encoder(x) * self.logit_scale                     # [R, B, N * free]
        return self._as_logits(out.unflatten(-1, (self.num_latents, -1)))

    def prior_logits(self) -> Tensor:
        """``[R, 1, N, K]`` logits of the prior, broadcasting over the batch (uniform: zeros ``[1, 1, N, K]``)."""
        if self.prior_free is None:
            return torch.zeros(1, 1, self.num_latents, self.num_classes, device=self.logit_scale.device)
        return self._as_logits(self.prior_free)

    def kl(self, logits: Tensor) -> Tensor:
        """Analytic ``KL(q(z | x) || p(z))`` summed over latents: ``[R, B, N, K] -> [R, B]``."""
        return categorical_kl(logits, self.prior_logits())

    def relaxed_kl(self, logits: Tensor, tau: float | Tensor, rng: ReplicaGenerator) -> Tensor:
        """One-sample Monte Carlo KL between the Concrete posterior and the Concrete prior, ``[R, B]``.

        ``log q_tau(y) - log p_tau(y)`` summed over latents at ``y ~ Concrete(logits, tau)``, drawn
        in log space (``log y = log_softmax((logits + g) / tau)``) so confident latents whose small
        coordinates underflow in y keep exact log-densities. Reparameterised: differentiable in the
        logits. The sample is independent of the one the reconstruction uses, which keeps the
        estimate of the relaxed objective unbiased.
        """
        log_y = log_softmax((widen(logits) + gumbel_noise(logits.shape, rng, logits.device)) / tau)
        prior = self.prior_logits().expand_as(logits)
        return (concrete_log_prob(log_y, logits, tau, check=False)          # the training loss: no host read
                - concrete_log_prob(log_y, prior, tau, check=False)).sum(-1)

    def log_prior(self, z: Tensor) -> Tensor:
        """``log p(z)`` for one-hot z ``[R, *S, B, N, K]`` -> ``[R, *S, B]``."""
        return log_prob_one_hot(self.prior_logits(), z)

    def decode(self, z: Tensor) -> Tensor:
        """``z [R, *S, B, N, K]`` (one-hot or relaxed) -> pixel logits ``[R, *S, B, D]``."""
        inputs = z[..., 1] if self.kind == "bernoulli" else z.flatten(-2)
        return self.decoder(inputs)

    def log_weight_of_classes(self, index: Tensor, logits: Tensor, x: Tensor) -> Tensor:
        """``log p(x | z) + log p(z) - log q(z | x)`` for the one-hot z of classes ``index [R, *S, B, N]``,
        posterior logits ``[R, B, N, K]`` and x ``[R, B, D]``: ``[R, *S, B]``, without building z (what
        the m-sample bound evaluates m times per digit, :func:`one_hot_log_likelihood`). Bernoulli
        latents are converted to their bits once, and ``log p - log q`` is linear in them:
        ``sum_n r_n0 + bit_n (r_n1 - r_n0)`` (r the per-class log-ratio), a product instead of a gather."""
        log_ratio = log_softmax(widen(self.prior_logits())) - log_softmax(widen(logits))   # [R, B, N, K]
        if self.kind == "categorical":
            return (one_hot_log_likelihood(self.decoder, index, x, self.num_classes, categorical=True)
                    + log_prob_of_classes(log_ratio, index, normalised=True))
        bits = index.to(x.dtype)                                                    # [R, *S, B, N]
        r, b, n = log_ratio.shape[:3]
        lead = [1] * (index.dim() - 3)                                              # the sample axes S
        slope = (log_ratio[..., 1] - log_ratio[..., 0]).view(r, *lead, b, n)
        offset = log_ratio[..., 0].sum(-1).view(r, *lead, b)
        return (one_hot_log_likelihood(self.decoder, bits, x, self.num_classes, categorical=False)
                + (bits * slope).sum(-1) + offset)

    def reconstruction_loss(self, z: Tensor, x: Tensor) -> Tensor:
        """``-log p(x | z)`` per example: z ``[R, *S, B, N, K]``, x ``[R, B, D]`` -> ``[R, *S, B]``."""
        pixel_logits = self.decode(z)
        x = x.reshape(x.shape[0], *([1] * (z.dim() - 4)), *x.shape[1:]).expand_as(pixel_logits)
        return F.binary_cross_entropy_with_logits(pixel_logits, x, reduction="none").sum(-1)


def categorical_kl(logits: Tensor, prior_logits: Tensor) -> Tensor:
    """Analytic ``KL(q || p)`` summed over latents: logits ``[R, B, N, K]``, prior logits
    broadcastable to them (zeros: uniform) -> ``[R, B]``.

    ``KL = sum_k q_k (log q_k - log p_k) >= 0``, zero exactly when q = p; for the uniform prior
    ``log p_k = -log K``.
    """
    log_q = log_softmax(widen(logits))
    log_p = log_softmax(prior_logits.to(log_q.dtype))
    return (log_q.exp() * (log_q - log_p)).sum((-1, -2))


def log_prob_of_classes(logits: Tensor, index: Tensor, normalised: bool = False) -> Tensor:
    """``log q(z)`` for the one-hot z of classes ``index [R, *S, B, N]`` (int64), logits ``[R, B, N, K]``
    (or broadcastable: ``[R, 1, N, K]``) -> ``[R, *S, B]``: :func:`log_prob_one_hot` as a gather.
    ``normalised=True``: ``logits`` are already the per-class terms to add (log-probabilities, or
    a difference of them, e.g. ``log p - log q`` in one gather)."""
    log_q = logits if normalised else log_softmax(widen(logits))
    log_q = log_q.reshape(log_q.shape[0], *([1] * (index.dim() - 3)), *log_q.shape[1:])
    log_q = log_q.expand(*index.shape, log_q.shape[-1])              # [R, *S, B, N, K]
    return log_q.gather(-1, index.unsqueeze(-1)).squeeze(-1).sum(-1)


def one_hot_log_likelihood(decoder: ReplicaMLP, index: Tensor, x: Tensor, num_classes: int,
                           categorical: bool) -> Tensor:
    """``log p(x | z) = sum_d x_d l_d - softplus(l_d)``, the pixel logits ``l = decoder(z)``, for the
    one-hot z of classes ``index [R, *S, B, N]`` (Bernoulli: int64 or the bits as floats) and binary
    x ``[R, B, D]``: ``[R, *S, B]``. The same number as ``-reconstruction_loss`` (to float round-off),
    in fewer passes over the ``S x B x D`` logits: the decoder's first layer adds N weight rows
    (:meth:`ReplicaLinear.forward_one_hot`; a Bernoulli decoder, ``categorical=False``, reads the
    0/1 index itself), ``x . l`` is ``h . (W x) + b . x`` through the last layer (weight W, bias
    b, input h), once per digit, and the softplus is summed in place (:func:`softplus_sum`)."""
    *hidden, last = [m for m in decoder]
    r, b = x.shape[:2]
    lead = [1] * (index.dim() - 3)                                      # the sample axes S
    w_x = torch.bmm(x, last.weight.transpose(1, 2)).view(r, *lead, b, -1)   # [R, 1.., B, in]: W x
    b_x = (x * last.bias).sum(-1).view(r, *lead, b)                     # [R, 1.., B]: b . x
    if hidden:
        h = forward_classes(hidden, index, num_classes, categorical)    # [R, *S, B, in]
        x_dot_l = (h * w_x).sum(-1)
        make_pixel_logits = partial(last, h)                            # called by softplus_sum
    else:                                                               # affine: h is z itself
        make_pixel_logits = partial(forward_classes, [last], index, num_classes, categorical)
        if categorical:                                                 # a one-hot: W x at its N rows
            rows = index + torch.arange(index.shape[-1], device=index.device) * num_classes
            x_dot_l = w_x.expand(*index.shape[:-1], -1).gather(-1, rows).sum(-1)
        else:
            x_dot_l = (index.to(x.dtype) * w_x).sum(-1)                 # no copy if index is the bits
    return x_dot_l + b_x - softplus_sum(make_pixel_logits)


def softplus_sum(make_logits: Callable[[], Tensor]) -> Tensor:
    """``sum_d log(1 + e^{l_d})`` over the last axis of the logits ``make_logits()`` returns (a new
    tensor, which this overwrites: the bound's chunks are used once, and in place there is no new
    4 MB tensor per pass: 5-10% of the bound's time; no gradient flows through it): ``[..., D] ->
    [...]``, in float32 (float64 for float64 logits; bfloat16 logits, under ``precision=bf16``, are
    widened first: in-place kernels do not autocast, and in bfloat16 ``1 + e^l`` would round at
    2^-8). As ``log(1 + exp(l))``, three elementwise kernels that take about half the time of
    torch's ``softplus`` or ``logaddexp(l, 0)`` and two thirds of ``log1p(exp(l))`` (``log1p`` is
    the slowest of them). In float32, rounding ``1 + e^l`` costs each term at most 2^-24 = 6e-8
    nats (absolute; where e^l < 2^-24 the term is 0 instead of e^l), at most 5e-5 over 784 pixels,
    far inside the float32 round-off of the sum (tests/test_bound.py). Where exp overflows (l > 88
    in float32) the logits are made again and summed as ``logaddexp(l, 0)``, accurate to round-off
    everywhere."""
    total = widen(make_logits()).exp_().add_(1.0).log_().sum(-1)
    if not bool(torch.isfinite(total).all()):          # a host sync per call: the bound's chunks only
        logits = widen(make_logits())
        total = torch.logaddexp(logits, logits.new_zeros(())).sum(-1)
    return total


def log_prob_one_hot(logits: Tensor, z: Tensor) -> Tensor:
    """``log q(z)`` for one-hot z: logits ``[R, B, N, K]``, z ``[R, *S, B, N, K]`` -> ``[R, *S, B]``."""
    log_q = log_softmax(widen(logits))
    log_q = log_q.reshape(log_q.shape[0], *([1] * (z.dim() - 4)), *log_q.shape[1:])
    return (z * log_q).sum((-1, -2))
