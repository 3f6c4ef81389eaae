"""``darn`` (Gregor et al. 2014), biased: each latent variable n is treated as the model's only
unit ("the 1/2 estimator", Gu et al. 2016, Sec. 4.2): its own learning signal is a first-order
Taylor term, with no analytic correction. With ``mu = softmax(logits)`` (the mean of the one-hot z,
``[R, B, N, K]``), ``mu_bar`` the same point detached, and ``f'(p) = df/dz (p)`` (one backward pass through f
at a point p that need not be one-hot, :func:`vae.estimators.taylor.gradient_at`,
which says what both Taylor estimators share):

    grad = grad_phi f(z) + sum_n A_n grad log q(z_n),   A_n = f'_n(p) . (z_n - z_bar_n)

``estimator.options.darn_point`` picks the point:

- ``uniform`` (the default): ``z_bar = 1/K`` in every class and the derivative at the sample,
  ``p = z`` -- Gu et al.'s eq. 5: ``z_bar = 1/2`` for binary units (Gregor et al.'s choice),
  1/K for categorical ones (what Gu et al. used); unbiased when f is quadratic in binary z;
- ``mean``: ``z_bar = p = mu_bar``, the Taylor term at the mean; its expectation is the
  mean-field gradient ``f'(mu_bar) . grad mu`` (unbiased when f is linear in z).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vae.estimators.base import Objective, mean_field, refuse
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import NormalisedSignalEstimator, SignalOptions
from vae.estimators.taylor import gradient_at
from vae.numerics.gumbel import Generator, log_softmax, widen


@register("darn")
class DARN(NormalisedSignalEstimator):
    """``darn``: per-variable learning signals ``f'_n(p) . (z_n - z_bar_n)``, no analytic term (biased)."""

    display_name = "DARN"
    family = "Taylor"
    year = 2014
    paper_column = 1
    one_hot_forward = False
    reference = "Gregor, Danihelka, Mnih, Blundell & Wierstra, Deep AutoRegressive Networks, ICML 2014"
    passes = 2                                                  # the sample and the Taylor point
    summary = ("each latent variable n its own score-function learning signal, a first-order Taylor term "
               'f′_n(z)·(z_n − 1/K) with the derivative at the sample (Gu et al.\'s "1/2 estimator", their '
               "eq. 5); `darn_point=mean`: f′_n(μ)·(z_n − μ_n)")
    bias_note = "unbiased only for f quadratic in binary z; `mean`: only for f linear"

    @dataclass
    class Options(SignalOptions):
        # the Taylor point: "uniform" (1/K, the derivative at the sample; Gregor et al.'s 1/2) or
        # "mean" (softmax(logits), the derivative there)
        darn_point: str = "uniform"

        def __post_init__(self) -> None:
            super().__post_init__()
            refuse(self.darn_point in ("uniform", "mean"), "darn_point", "uniform or mean", self.darn_point)

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        log_q = log_softmax(widen(logits))                  # [R, B, N, K]
        z = sample_one_hot(logits, rng).to(logits.dtype)                  # [R, B, N, K]
        if self.options.darn_point == "uniform":  # derivative at the sample, point 1/K
            bar = torch.full_like(z, 1.0 / z.shape[-1])
            _, slope = gradient_at(z, mean_field(f))                      # [R, B, N, K]
        else:                                # derivative and point at the mean
            bar = log_q.detach().exp().to(logits.dtype)
            _, slope = gradient_at(bar, mean_field(f))
        loss = f(z)                                                       # [R, B]
        signal, info = self.normaliser.centre((slope * (z - bar)).sum(-1))   # [R, B, N] one per variable
        log_q_z = (z * log_q).sum(-1)                                     # [R, B, N] log q(z_n)
        surrogate = loss + (signal * (log_q_z - log_q_z.detach())).sum(-1)   # value f(z)
        return surrogate, {"loss": loss.detach().mean(-1), **info}
