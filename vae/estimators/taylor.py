"""Estimators built on a first-order Taylor expansion of f: ``muprop`` and ``darn``.

With ``mu = softmax(logits)`` (the mean of the one-hot z, ``[R, B, N, K]``), ``mu_bar`` the same
point detached, and ``f'(p) = df/dz (p)`` (one backward pass through f at a point p that need not
be one-hot):

* ``muprop`` (Gu et al. 2016), unbiased: control variate ``h(z) = f(mu_bar) + f'(mu_bar) . (z - mu_bar)``,

      grad = grad_phi f(z) + (f(z) - h(z)) grad log q(z) + f'(mu_bar) . grad mu

  (``E_q[h(z)]`` is ``f(mu_bar) + f'(mu_bar) . (mu - mu_bar)``, whose gradient is the last term).
* ``darn`` (Gregor et al. 2014), biased: each latent variable n is treated as the model's only
  unit ("the 1/2 estimator", Gu et al. 2016, Sec. 4.2): its own learning signal is a first-order
  Taylor term, with no analytic correction,

      grad = grad_phi f(z) + sum_n A_n grad log q(z_n),   A_n = f'_n(p) . (z_n - z_bar_n)

  ``estimator.darn_point`` picks the point:

  - ``uniform`` (the default): ``z_bar = 1/K`` in every class and the derivative at the sample,
    ``p = z`` -- Gu et al.'s eq. 5: ``z_bar = 1/2`` for binary units (Gregor et al.'s choice),
    1/K for categorical ones (what Gu et al. used); unbiased when f is quadratic in binary z;
  - ``mean``: ``z_bar = p = mu_bar``, the Taylor term at the mean; its expectation is the
    mean-field gradient ``f'(mu_bar) . grad mu`` (unbiased when f is linear in z).

Both read f's mean-field version (:func:`vae.estimators.base.mean_field`: f itself for the VAE;
for a network with stochastic layers below, its means propagated through them, the point Gu et
al. expand a multi-layer network at). Both centre the signal by a moving average (:mod:`vae.estimators.signal`) and, with the paper's
variance normalisation, have the trainer divide the whole encoder gradient (MuProp's analytic
term and the KL's included) by the signal's running std. ``f`` must treat examples independently
(``df(p)_b / dp_b'`` = 0 for b != b'), as per-example losses do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.base import Objective, mean_field
from vae.gumbel import Generator, log_softmax, softmax, widen
from vae.estimators.sampling import sample_one_hot
from vae.estimators.score_function import score_surrogate
from vae.estimators.signal import NormalisedSignalEstimator
from vae.models import log_prob_one_hot


def gradient_at(point: Tensor, f: Objective) -> tuple[Tensor, Tensor]:
    """``(f(point) [R, B], df/dz(point) [R, B, N, K])`` at a detached point, both detached."""
    with torch.enable_grad():
        point = point.detach().requires_grad_(True)
        value = f(point)
        (grad,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), grad


class MuProp(NormalisedSignalEstimator):
    """``muprop``: score function with the Taylor control variate at the mean, plus its analytic mean."""

    display_name = "MuProp"
    unbiased = True
    family = "Taylor"
    year = 2016
    paper_column = 2
    reference = "Gu, Levine, Sutskever & Mnih, MuProp: Unbiased Backpropagation for Stochastic Neural Networks, ICLR 2016"
    passes = 2                                                  # the sample and the mean-field point

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


class DARN(NormalisedSignalEstimator):
    """``darn``: per-variable learning signals ``f'_n(p) . (z_n - z_bar_n)``, no analytic term (biased)."""

    display_name = "DARN"
    family = "Taylor"
    year = 2014
    paper_column = 1
    reference = "Gregor, Danihelka, Mnih, Blundell & Wierstra, Deep AutoRegressive Networks, ICML 2014"
    passes = 2                                                  # the sample and the Taylor point

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        log_q = log_softmax(widen(logits))                  # [R, B, N, K]
        z = sample_one_hot(logits, rng).to(logits.dtype)                  # [R, B, N, K]
        if self.cfg.darn_point == "uniform":  # derivative at the sample, point 1/K
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
