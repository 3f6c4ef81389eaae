"""``muprop`` (Gu et al. 2016), unbiased: the score function with a first-order Taylor control
variate. With ``mu = softmax(logits)`` (the mean of the one-hot z, ``[R, B, N, K]``), ``mu_bar`` the same
point detached, and ``f'(p) = df/dz (p)`` (one backward pass through f at a point p that need not
be one-hot, :func:`vae.estimators.taylor.gradient_at`, which says what both Taylor estimators share):
control variate ``h(z) = f(mu_bar) + f'(mu_bar) . (z - mu_bar)``,

    grad = grad_phi f(z) + (f(z) - h(z)) grad log q(z) + f'(mu_bar) . grad mu

(``E_q[h(z)]`` is ``f(mu_bar) + f'(mu_bar) . (mu - mu_bar)``, whose gradient is the last term).
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.base import Objective, mean_field
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import NormalisedSignalEstimator, score_surrogate
from vae.estimators.taylor import gradient_at
from vae.numerics.gumbel import Generator, log_prob_one_hot, softmax, widen


@register("muprop")
class MuProp(NormalisedSignalEstimator):
    """``muprop``: score function with the Taylor control variate at the mean, plus its analytic mean."""

    display_name = "MuProp"
    unbiased = True
    family = "Taylor"
    year = 2016
    paper_column = 2
    one_hot_forward = False
    reference = ("Gu, Levine, Sutskever & Mnih, MuProp: Unbiased Backpropagation for Stochastic Neural "
                 "Networks, ICLR 2016")
    passes = 2                                                  # the sample and the mean-field point
    summary = ("score function with the first-order Taylor control variate at μ = softmax(logits), plus its "
               "analytic mean-field gradient")
    bias_note = "up to the scale"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mean = softmax(widen(logits)).to(logits.dtype)      # [R, B, N, K]
        at_mean, slope = gradient_at(mean, mean_field(f))                 # [R, B], [R, B, N, K]
        z = sample_one_hot(logits, rng).to(logits.dtype)                  # [R, B, N, K]
        loss = f(z)                                                       # [R, B]
        taylor = (slope * (z - mean.detach())).sum((-1, -2))              # [R, B]
        signal, info = self.normaliser.centre(loss.detach() - at_mean - taylor)   # [R, B]
        surrogate = score_surrogate(loss, signal, log_prob_one_hot(logits, z))
        analytic = (slope * (mean - mean.detach())).sum((-1, -2))         # [R, B], value 0
        return surrogate + analytic, {"loss": loss.detach().mean(-1), **info}
