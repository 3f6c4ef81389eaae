"""``gumbel-rao`` (Paulus et al. 2021): ``st-gs`` with its backward pass averaged over M Gumbel
perturbations drawn *given* the hard sample D: ``D + (s - s.detach())``,
``s = mean_m softmax((log pi + G_m) / tau)``, ``G_m ~ G | argmax = D``
(:func:`vae.numerics.gumbel.conditional_gumbel`), the G_m held fixed (detached) as in the authors'
reference implementations. It is E[st-gs gradient | D]: the same mean (biased as ``st-gs`` is),
less variance, one decoder evaluation (the M draws only enter the softmax).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.numerics.gumbel import (Generator, conditional_gumbel, gumbel_noise, log_softmax, one_hot, softmax,
                                 widen)


@register("gumbel-rao")
class GumbelRao(Estimator):
    """``gumbel-rao``: forward D, backward the mean of M conditional Gumbel-softmax Jacobians."""

    display_name = "Gumbel-Rao"
    reads_tau = True
    family = "relaxation"
    year = 2021
    reference = ("Paulus, Maddison & Krause, Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient "
                 "Estimator, ICLR 2021")
    summary = ("`st-gs` whose backward pass averages the Gumbel-softmax Jacobian over `rao_samples` (M = 10) "
               "perturbations drawn given the hard sample (held fixed, as in the authors' code): the same "
               "mean as `st-gs`, less variance")

    @dataclass
    class Options:
        rao_samples: int = 10  # M: conditional Gumbel draws averaged in the backward pass

    positive_options = ("rao_samples",)

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        log_pi = log_softmax(widen(logits))                        # [R, B, N, K]
        hard = one_hot((log_pi.detach() + gumbel_noise(logits.shape, rng, logits.device)).argmax(-1),
                       logits.shape[-1], log_pi.dtype)                           # [R, B, N, K]
        draws = log_pi.detach().unsqueeze(1).expand(-1, self.options.rao_samples, *log_pi.shape[1:])
        perturbed = conditional_gumbel(draws, hard.unsqueeze(1).expand_as(draws), rng)  # [R, M, B, N, K]
        noise = perturbed - draws                                                # G_m given D, no gradient
        tau_ = tau.unsqueeze(1) if isinstance(tau, Tensor) else tau
        soft = softmax((log_pi.unsqueeze(1) + noise) / tau_).mean(1)   # [R, B, N, K]
        loss = f((hard + (soft - soft.detach())).to(logits.dtype))              # [R, B], forward exactly D
        return loss, {"loss": loss.detach().mean(-1)}
