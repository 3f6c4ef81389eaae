"""``zgr`` (Shekhovtsov, "Cold Analysis of Rao-Blackwellized Straight-Through Gumbel-Softmax Gradient
Estimator", ICML 2023): Gumbel-Rao's limit as its temperature goes to zero, in closed form.

Forward: an exact one-hot sample ``z ~ q``, ``q = softmax(logits)`` per variable. Backward: the
Jacobian of z is taken as the average of straight-through's and a DARN-like score term,

    dz/dlogits := 1/2 (d p / d logits + (z - p) d log q(z) / d logits),   p = softmax(logits),

so the encoder's gradient is ``1/2 [f'(z) . dp + (f'(z) . (z - p)) d log q(z)]`` per variable. No
temperature, one decoder pass; biased in general, exact in expectation for f quadratic in z
(tested), where straight-through is not. ReinMax at tau = 1 computes this same gradient, draw
for draw: their Jacobians differ by diag(z) - z z^T, zero for a one-hot z (tested).
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.numerics.gumbel import Generator, log_softmax, widen


@register("zgr")
class ZGR(Estimator):
    """``zgr``: forward an exact sample, backward the mean of ST's and a DARN-like Jacobian."""

    display_name = "ZGR"
    family = "relaxation"
    year = 2023
    reference = ("Shekhovtsov, Cold Analysis of Rao-Blackwellized Straight-Through Gumbel-Softmax Gradient "
                 "Estimator, ICML 2023")
    summary = ("one-hot sample forward; backward the mean of ST's Jacobian and a DARN-like one, ½(∂p + (z − "
               "p) ∂log q(z)): Gumbel-Rao as τ → 0, no temperature")
    bias_note = "exact for f quadratic in z"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        log_p = log_softmax(widen(logits))                  # [R, B, N, K]
        p = log_p.exp()
        z = sample_one_hot(logits, rng)                                   # [R, B, N, K]
        log_q_z = (z * log_p).sum(-1, keepdim=True)                       # [R, B, N, 1] log q_n(z_n)
        # value irrelevant: only its gradient
        jacobian = (p + (z - p.detach()) * log_q_z) / 2
        loss = f((z + (jacobian - jacobian.detach())).to(logits.dtype))   # [R, B], forward exactly z
        return loss, {"loss": loss.detach().mean(-1)}
