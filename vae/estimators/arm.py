"""``arm``, Augment-REINFORCE-Merge (Yin & Zhou 2019), for Bernoulli latents.

A Bernoulli unit is the 2-class categorical with logits ``(0, phi)``, ``P(b = 1) = sigmoid(phi)``.
With one uniform ``u [R, B, N]`` per unit, two antithetic samples, each marginally ``q``:

    b = 1[u > sigmoid(-phi)],    b~ = 1[u < sigmoid(phi)]

and per unit n the estimate of ``d E_q[f] / d phi_n`` (f is the loss, so it is minimised) is
``(f(b) - f(b~)) (u_n - 1/2)``: unbiased. The decoder gets ``grad 1/2 (f(b) + f(b~))`` (both samples
are draws of q), and the surrogate's value is that mean. ``disarm`` (vae/estimators/disarm.py) is
this class with other per-unit weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.numerics.gumbel import Generator, uniform, widen


@register("arm")
class ARM(Estimator):
    """``arm``: the antithetic pair's difference times ``u - 1/2``, per unit."""

    display_name = "ARM"
    unbiased = True
    kinds = frozenset({"bernoulli"})
    passes = 2                          # the antithetic pair
    family = "antithetic"
    year = 2019
    reference = "Yin & Zhou, ARM: Augment-REINFORCE-Merge Gradient for Stochastic Binary Networks, ICLR 2019"
    summary = ("Bernoulli only: antithetic pair b = 1[u > σ(−φ)], b̃ = 1[u < σ(φ)], gradient (f(b) − "
               "f(b̃))(u − ½) per unit")

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
