"""Antithetic estimators for Bernoulli latents: ``arm`` (Yin & Zhou 2019), ``disarm`` (Dong et al. 2020).

A Bernoulli unit is the 2-class categorical with logits ``(0, phi)``, ``P(b = 1) = sigmoid(phi)``.
With one uniform ``u [R, B, N]`` per unit, two antithetic samples, each marginally ``q``:

    b = 1[u > sigmoid(-phi)],    b~ = 1[u < sigmoid(phi)]

and per unit n the estimate of ``d E_q[f] / d phi_n`` (f is the loss, so it is minimised):

* ``arm``:    ``(f(b) - f(b~)) (u_n - 1/2)``
* ``disarm``: ``1/2 (f(b) - f(b~)) (-1)^{b~_n} 1[b_n != b~_n] sigmoid(|phi_n|)`` -- ARM
  Rao-Blackwellised over the antithetic pair: zero wherever the two samples agree.

Both are unbiased. The decoder gets ``grad 1/2 (f(b) + f(b~))`` (both samples are draws of q), and
the surrogate's value is that mean. Categorical latents have no such pair here: both declare
Bernoulli latents only (``kinds``), and building either for K > 2 is a ``ValueError``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.gumbel import Generator, uniform, widen
from vae.replicas import ReplicaGenerator


class ARM(Estimator):
    """``arm``: the antithetic pair's difference times ``u - 1/2``, per unit."""

    display_name = "ARM"
    unbiased = True
    kinds = frozenset({"bernoulli"})
    passes = 2                          # the antithetic pair
    family = "antithetic"
    year = 2019
    reference = "Yin & Zhou, ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary Networks, ICLR 2019"

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        if latent_shape[1] != 2:
            raise ValueError(f"estimator.name: {cfg.name!r} is for Bernoulli latents (K = 2), got K = {latent_shape[1]}")

    def unit_weights(self, u: Tensor, b: Tensor, b_anti: Tensor, phi: Tensor) -> Tensor:
        """``[R, B, N]``: what multiplies ``f(b) - f(b~)`` for each unit."""
        return u - 0.5

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        phi = widen(logits[..., 1]) - widen(logits[..., 0])                    # [R, B, N]
        u = uniform(phi.shape, rng, phi.device)
        b = (u > torch.sigmoid(-phi)).to(phi.dtype)
        b_anti = (u < torch.sigmoid(phi)).to(phi.dtype)
        pair = torch.stack([b, b_anti], dim=1)                                 # [R, 2, B, N]
        loss = f(torch.stack([1 - pair, pair], dim=-1).to(logits.dtype))       # [R, 2, B]
        difference = (loss[:, 0] - loss[:, 1]).detach()                        # [R, B]
        grad = difference[..., None] * self.unit_weights(u, b, b_anti, phi.detach())   # [R, B, N]
        # value: the pair's mean loss; gradient: the decoder's through it, phi's exactly `grad`
        injected = (phi * grad).sum(-1)
        surrogate = loss.mean(1) + injected - injected.detach()
        return surrogate, {"loss": loss.detach().mean((1, 2))}


class DisARM(ARM):
    """``disarm``: ARM averaged over the pair: ``1/2 (-1)^{b~} 1[b != b~] sigmoid(|phi|)`` per unit."""

    display_name = "DisARM"
    year = 2020
    reference = ("Dong, Mnih & Tucker, DisARM: An Antithetic Gradient Estimator for Binary Latent Variables, "
                 "NeurIPS 2020")

    def unit_weights(self, u: Tensor, b: Tensor, b_anti: Tensor, phi: Tensor) -> Tensor:
        sign = 1 - 2 * b_anti                                                  # (-1)^{b~}
        return 0.5 * sign * (b != b_anti).to(phi.dtype) * torch.sigmoid(phi.abs())
