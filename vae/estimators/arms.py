"""``arms``, Antithetic-REINFORCE-Multi-Sample (Dimitriev & Zhou, ICML 2021), for Bernoulli latents.

RLOO's k samples (vae/estimators/rloo.py) made antithetic: per unit, the k uniforms that decide
the k samples come from a Dirichlet copula, ``d ~ Dirichlet(1, ..., 1)`` over the samples and
``u_i = (1 - d_i)^(k-1)``. Each ``u_i`` is uniform (``d_i ~ Beta(1, k - 1)``), so each sample is a
draw of q, and any two are negatively dependent, with joint CDF ``C(a, b) = (a^(1/(k-1)) +
b^(1/(k-1)) - 1)_+^(k-1)``. A unit of probability ``p = sigmoid(phi)`` takes ``b_i = 1[u_i < p]``
when ``p <= 1/2`` and ``b_i = 1[1 - u_i < p]`` when ``p > 1/2`` (the paper's ARMS-D: the copula
on the rarer value), units independently.

The coupling biases RLOO's average ``1/k sum_i (f(b_i) - mean_{j != i} f(b_j)) (b_i - p)`` towards
zero: its mean is ``(r - C(r, r))`` times ``dE_q[f]/dp`` per unit, with ``r = min(p, 1 - p)``
(``P(b_i = b_j = 1)`` enters the cross terms), against the true ``p (1 - p) dE_q[f]/dp``. So ARMS
multiplies it by ``p (1 - p) / (r - C(r, r))``: unbiased (tested against enumeration), k decoder
passes (``estimator.num_samples``). For k = 2 the copula is the antithetic pair ``(u, 1 - u)``
and the estimate is DisARM's (vae/estimators/disarm.py; tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.estimators.signal import leave_one_out_mean
from vae.numerics.gumbel import Generator, uniform, widen


def dirichlet_copula(shape: tuple[int, ...], rng: Generator, device: torch.device) -> Tensor:
    """``[R, k, ...]`` uniforms, each ``U(0, 1)``, dependent along axis 1 through the Dirichlet
    copula: ``u_i = (1 - d_i)^(k-1)``, ``d = e / sum(e)``, e standard exponentials."""
    e = -torch.log1p(-uniform(shape, rng, device))          # U[0, 1) -> finite Exp(1)
    d = e / e.sum(1, keepdim=True)
    return (1 - d) ** (shape[1] - 1)


def copula_debias(low: Tensor, k: int) -> Tensor:
    """``p (1 - p) / (r - C(r, r))`` for ``r = low = min(p, 1 - p)``; ``1 - r`` where ``C(r, r) = 0``
    (every ``r <= 2^-(k-1)``: no two samples take the rarer value together), so no 0 / 0."""
    joint = (2 * low ** (1 / (k - 1)) - 1).clamp(min=0) ** (k - 1)
    return torch.where(joint > 0, low * (1 - low) / (low - joint), 1 - low)


def arms_unit_gradient(loss: Tensor, b: Tensor, p: Tensor, low: Tensor) -> Tensor:
    """``[R, B, N]``: the estimate of ``dE_q[f] / dphi`` from the k coupled samples ``b [R, k, B, N]``
    and their losses ``loss [R, k, B]``: RLOO's average over the samples of ``(f(b_i) - mean_{j != i}
    f(b_j)) (b_i - p)`` times :func:`copula_debias`."""
    advantage = (loss - leave_one_out_mean(loss)).detach()[..., None]      # [R, k, B, 1]
    return (advantage * (b - p.unsqueeze(1))).mean(1) * copula_debias(low, b.shape[1])


@register("arms")
class ARMS(Estimator):
    """``arms``: k samples per unit coupled by a Dirichlet copula, RLOO's estimate with the
    coupling's bias divided out (module docstring)."""

    display_name = "ARMS"
    unbiased = True
    kinds = frozenset({"bernoulli"})
    passes = "num_samples"
    family = "antithetic"
    year = 2021
    reference = ("Dimitriev & Zhou, ARMS: Antithetic-REINFORCE-Multi-Sample Gradient for Binary Variables, "
                 "ICML 2021")
    summary = ("Bernoulli only: k samples per unit from a Dirichlet copula (pairwise antithetic), RLOO's "
               "estimate times p(1 − p) / (r − C(r, r)), r = min(p, 1 − p), which removes the coupling's "
               "bias; DisARM at k = 2; k decoder passes")

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.cfg.num_samples
        phi = widen(logits[..., 1]) - widen(logits[..., 0])                    # [R, B, N]
        p, low = torch.sigmoid(phi.detach()), torch.sigmoid(-phi.detach().abs())
        r, *rest = phi.shape
        u = dirichlet_copula((r, k, *rest), rng, phi.device).to(phi.dtype)     # [R, k, B, N]
        b = ((u < low.unsqueeze(1)) != (p > 0.5).unsqueeze(1)).to(phi.dtype)  # the copula on the rarer value
        loss = f(torch.stack([1 - b, b], dim=-1).to(logits.dtype))             # [R, k, B]
        # value: the samples' mean loss; gradient: the decoder's through it, phi's exactly ARMS's
        injected = (phi * arms_unit_gradient(loss, b, p, low)).sum(-1)
        surrogate = loss.mean(1) + injected - injected.detach()
        return surrogate, {"loss": loss.detach().mean((1, 2))}
