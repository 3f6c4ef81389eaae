"""``reinmax`` (Liu et al. 2023): forward an exact one-hot sample D, backward the gradient of
``pi_2 = 2 pi_1 - pi_0 / 2`` with ``pi_0 = softmax(logits)`` and
``pi_1 = (D + softmax(logits / tau)) / 2`` (differentiated as ``softmax`` of logits shifted by a
constant): Heun's method where straight-through is Euler's. At tau = 1 it is exact for f
quadratic in z; it needs tau >= 1 (below, its bias grows; its authors' code refuses tau < 1).
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.numerics.gumbel import Generator, softmax, widen


@register("reinmax")
class ReinMax(Estimator):
    """``reinmax``: forward D, backward the gradient of ``2 pi_1 - pi_0 / 2`` (tau >= 1)."""

    display_name = "ReinMax"
    reads_tau = True
    family = "relaxation"
    year = 2023
    min_tau = 1.0       # its authors' choice: at tau = 1 exact for quadratic f; below 1 its bias grows
    reference = ("Liu, Liu, Gao, Zhao & Chen, Bridging Discrete and Backpropagation: "
                 "Straight-Through and Beyond, NeurIPS 2023")
    summary = ("one-hot sample forward; backward the gradient of 2π₁ − π₀/2, π₀ = softmax(l), π₁ = (D + "
               "softmax(l/τ))/2: Heun's rule where ST is Euler's; needs τ ≥ 1; at τ = 1 the same gradient as "
               "`zgr`, draw for draw (tested)")
    bias_note = "exact for quadratic f at τ = 1"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not isinstance(tau, Tensor) and tau < 1:     # a learned tau is kept >= 1 by the config check
            raise ValueError(f"reinmax: needs tau >= 1 (its authors' choice, see README), got {tau}")
        wide = widen(logits)
        hard = sample_one_hot(wide, rng)                                         # [R, B, N, K]
        pi0 = softmax(wide)
        pi1 = (hard + softmax(wide / tau)) / 2
        pi1 = softmax((pi1.log() - wide).detach() + wide)           # value pi_1, Jacobian of a softmax
        pi2 = 2 * pi1 - pi0 / 2
        loss = f((hard + (pi2 - pi2.detach())).to(logits.dtype))                 # [R, B], forward exactly D
        return loss, {"loss": loss.detach().mean(-1)}
