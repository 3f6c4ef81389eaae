"""The discrete-latent VAE of Jang et al. (2017), Section 4.2, on a replica axis.

Encoder ``784-512-256-(N*K)`` with ReLU between layers and *no* activation on the output logits;
decoder ``(N*K)-256-512-784`` mirrored, giving Bernoulli logits for the 784 pixels. The prior is
uniform over each latent's K classes.

A Bernoulli latent (``kind="bernoulli"``) is the K = 2 categorical with logits ``(0, l)``: then
``softmax(0, l)[1] = sigmoid(l)``, and the Gumbel-softmax of the pair is the binary Concrete of
Maddison et al. (logistic noise), so every estimator serves both kinds unchanged. The encoder
emits N numbers ``l`` and the decoder reads only the "on" coordinate ``z[..., 1]``: the
Bernoulli VAE is exactly the paper's 200-unit model.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae.gumbel import concrete_log_prob, gumbel_noise
from vae.replicas import ReplicaGenerator, ReplicaMLP

LatentKind = Literal["categorical", "bernoulli"]


class DiscreteVAE(nn.Module):
    """VAE with N discrete latents of K classes each, R replicas at once.

    Shapes: x ``[R, B, 784]`` in {0, 1}; logits ``[R, B, N, K]``; z ``[R, *S, B, N, K]``.
    """

    def __init__(self, kind: LatentKind, num_latents: int, num_classes: int,
                 hidden: list[int], rng: ReplicaGenerator, data_dim: int = 784):
        super().__init__()
        if kind == "bernoulli" and num_classes != 2:
            raise ValueError(f"model.num_classes must be 2 for Bernoulli latents, got {num_classes}")
        self.kind = kind
        self.num_latents = num_latents
        self.num_classes = num_classes
        encoder_out = num_latents * (1 if kind == "bernoulli" else num_classes)
        decoder_in = num_latents * (1 if kind == "bernoulli" else num_classes)
        self.encoder = ReplicaMLP([data_dim, *hidden, encoder_out], rng)
        self.decoder = ReplicaMLP([decoder_in, *reversed(hidden), data_dim], rng)

    def encode(self, x: Tensor) -> Tensor:
        """``[R, B, D]`` -> latent logits ``[R, B, N, K]`` (no squashing of the output)."""
        out = self.encoder(x)
        if self.kind == "bernoulli":
            on = out.unsqueeze(-1)                                   # [R, B, N, 1]
            return torch.cat([torch.zeros_like(on), on], dim=-1)     # logits (0, l)
        return out.unflatten(-1, (self.num_latents, self.num_classes))

    def decode(self, z: Tensor) -> Tensor:
        """``z [R, *S, B, N, K]`` (one-hot or relaxed) -> pixel logits ``[R, *S, B, D]``."""
        inputs = z[..., 1] if self.kind == "bernoulli" else z.flatten(-2)
        return self.decoder(inputs)

    def reconstruction_loss(self, z: Tensor, x: Tensor) -> Tensor:
        """``-log p(x | z)`` per example: z ``[R, *S, B, N, K]``, x ``[R, B, D]`` -> ``[R, *S, B]``."""
        pixel_logits = self.decode(z)
        x = x.reshape(x.shape[0], *([1] * (z.dim() - 4)), *x.shape[1:]).expand_as(pixel_logits)
        return F.binary_cross_entropy_with_logits(pixel_logits, x, reduction="none").sum(-1)


def kl_to_uniform(logits: Tensor) -> Tensor:
    """Analytic ``KL(q || Uniform(K))`` summed over latents: ``[R, B, N, K] -> [R, B]``.

    ``KL = sum_k q_k (log q_k + log K) >= 0``, zero exactly when q is uniform.
    """
    log_q = torch.log_softmax(logits.float(), dim=-1)
    return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum((-1, -2))


def relaxed_kl_to_uniform(logits: Tensor, tau: float | Tensor, rng: ReplicaGenerator) -> Tensor:
    """One-sample Monte Carlo ``KL(Concrete(logits, tau) || Concrete(uniform, tau))``: ``[R, B]``.

    ``log q_tau(y) - log p_tau(y)`` summed over latents at ``y ~ Concrete(logits, tau)``, drawn in
    log space (``log y = log_softmax((logits + g) / tau)``) so confident latents whose small
    coordinates underflow in y keep exact log-densities. Reparameterised: differentiable in logits.
    The sample is independent of the one the reconstruction uses, which keeps the estimate of the
    relaxed objective unbiased.
    """
    log_y = torch.log_softmax((logits.float() + gumbel_noise(logits.shape, rng)) / tau, dim=-1)
    return (concrete_log_prob(log_y, logits, tau)
            - concrete_log_prob(log_y, torch.zeros_like(logits), tau)).sum(-1)


def log_prob_one_hot(logits: Tensor, z: Tensor) -> Tensor:
    """``log q(z)`` for one-hot z: logits ``[R, B, N, K]``, z ``[R, *S, B, N, K]`` -> ``[R, *S, B]``."""
    log_q = torch.log_softmax(logits.float(), dim=-1)
    log_q = log_q.reshape(log_q.shape[0], *([1] * (z.dim() - 4)), *log_q.shape[1:])
    return (z * log_q).sum((-1, -2))
