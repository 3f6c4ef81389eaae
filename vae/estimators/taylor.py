"""Estimators built on the first-order Taylor expansion of f at the mean point: ``darn``, ``muprop``.

With ``mu = softmax(logits)`` (the mean of the one-hot z, ``[R, B, N, K]``), ``mu_bar`` the same
point detached, and ``g = df/dz (mu_bar)`` (one backward pass through f at a non-one-hot point):

* ``muprop`` (Gu et al. 2016), unbiased: control variate ``h(z) = f(mu_bar) + g . (z - mu_bar)``,

      grad = grad_phi f(z) + (f(z) - h(z)) grad log q(z) + g . grad mu

  (``E_q[h(z)]`` is ``f(mu_bar) + g . (mu - mu_bar)``, whose gradient is the last term).
* ``darn`` (Gregor et al. 2014, as written in Gu et al.'s related work), biased unless f is
  linear in z: the learning signal ``f(z) - f(mu_bar)`` is replaced by its Taylor term,

      grad = grad_phi f(z) + g . (z - mu_bar) grad log q(z)

  (Gregor et al. expanded binary units around 1/2; here, as in Jang et al. 2017, around mu.)

Both apply the paper's variance normalisation to the score-function term's signal (centre c,
scale s, :mod:`vae.estimators.signal`); the whole encoder gradient, including MuProp's analytic
term, is divided by s, so the estimate stays an unbiased one (MuProp) divided by s. ``f`` must
treat examples independently (``df(mu)_b / dmu_b'`` = 0 for b != b'), as per-example losses do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.sampling import sample_one_hot
from vae.estimators.score_function import score_surrogate
from vae.estimators.signal import SignalNormaliser
from vae.models import log_prob_one_hot
from vae.replicas import ReplicaGenerator


def mean_field_gradient(mean: Tensor, f: Objective) -> tuple[Tensor, Tensor]:
    """``(f(mean) [R, B], df/dz(mean) [R, B, N, K])`` at a detached point, both detached."""
    with torch.enable_grad():
        point = mean.detach().requires_grad_(True)
        value = f(point)
        (grad,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), grad


class MuProp(Estimator):
    """``muprop``: score function with the Taylor control variate plus its analytic mean."""

    unbiased = True
    #: Whether the Taylor term's expectation is added back (MuProp) or dropped (DARN).
    analytic_term = True

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__()
        self.normaliser = SignalNormaliser(num_replicas, cfg.ema_decay, cfg.variance_normalisation)

    def signal(self, loss: Tensor, at_mean: Tensor, taylor: Tensor) -> Tensor:
        """The raw learning signal ``[R, B]``: ``f(z) - h(z)``."""
        return loss - at_mean - taylor

    def forward(self, logits: Tensor, f: Objective, *, rng: ReplicaGenerator,
                tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mean = torch.softmax(logits.float(), dim=-1).to(logits.dtype)     # [R, B, N, K]
        at_mean, slope = mean_field_gradient(mean, f)                     # [R, B], [R, B, N, K]
        z = sample_one_hot(logits, rng).to(logits.dtype)                  # [R, B, N, K]
        loss = f(z)                                                       # [R, B]
        taylor = (slope * (z - mean.detach())).sum((-1, -2))              # [R, B]
        centre = self.normaliser.mean.clone()                             # [R] before the update
        signal, scale = self.normaliser(self.signal(loss.detach(), at_mean, taylor))
        surrogate = score_surrogate(loss, signal, log_prob_one_hot(logits, z))
        if self.analytic_term:
            analytic = (slope * (mean - mean.detach())).sum((-1, -2))     # [R, B], value 0
            surrogate = surrogate + analytic / scale[:, None]
        info = {"loss": loss.detach().mean(-1), "signal_centre": centre,
                "signal_scale": scale}
        return surrogate, info


class DARN(MuProp):
    """``darn``: learning signal ``g . (z - mu_bar)``, no analytic term (biased)."""

    unbiased = False
    analytic_term = False

    def signal(self, loss: Tensor, at_mean: Tensor, taylor: Tensor) -> Tensor:
        return taylor
