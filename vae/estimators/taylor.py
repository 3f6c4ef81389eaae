"""Estimators built on the first-order Taylor expansion of f at the mean point: ``darn``, ``muprop``.

With ``mu = softmax(logits)`` (the mean of the one-hot z, ``[R, B, N, K]``), ``mu_bar`` the same
point detached, and ``g = df/dz (mu_bar)`` (one backward pass through f at a non-one-hot point):

* ``muprop`` (Gu et al. 2016), unbiased: control variate ``h(z) = f(mu_bar) + g . (z - mu_bar)``,

      grad = grad_phi f(z) + (f(z) - h(z)) grad log q(z) + g . grad mu

  (``E_q[h(z)]`` is ``f(mu_bar) + g . (mu - mu_bar)``, whose gradient is the last term).
* ``darn`` (Gregor et al. 2014), biased unless f is linear in z: the learning signal
  ``f(z) - f(z_bar)`` is replaced by its first-order Taylor term at a fixed point ``z_bar``,

      grad = grad_phi f(z) + g(z_bar) . (z - z_bar) grad log q(z)

  ``estimator.darn_point`` picks ``z_bar``: ``uniform`` (1/K in every class: Gregor et al.'s 1/2
  for binary units, the default) or ``mean`` (``mu_bar``, the point MuProp expands at).

Both centre the signal by a moving average (:mod:`vae.estimators.signal`) and, with the paper's
variance normalisation, have the trainer divide the whole encoder gradient (MuProp's analytic
term and the KL's included) by the signal's running std. ``f`` must treat examples independently
(``df(mu)_b / dmu_b'`` = 0 for b != b'), as per-example losses do.
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
        self.normaliser = SignalNormaliser(num_replicas, cfg.ema_decay, cfg.normalises())

    def encoder_gradient_scale(self) -> Tensor | None:
        return self.normaliser.scale() if self.normaliser.normalise else None

    def expansion_point(self, mean: Tensor) -> Tensor:
        """The Taylor point ``[R, B, N, K]``: the mean-field point ``mu`` (MuProp)."""
        return mean

    def signal(self, loss: Tensor, at_point: Tensor, taylor: Tensor) -> Tensor:
        """The raw learning signal ``[R, B]``: ``f(z) - h(z)``."""
        return loss - at_point - taylor

    def forward(self, logits: Tensor, f: Objective, *, rng: ReplicaGenerator,
                tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mean = torch.softmax(logits.float(), dim=-1).to(logits.dtype)     # [R, B, N, K]
        point = self.expansion_point(mean).detach()                       # [R, B, N, K]
        at_point, slope = mean_field_gradient(point, f)                   # [R, B], [R, B, N, K]
        z = sample_one_hot(logits, rng).to(logits.dtype)                  # [R, B, N, K]
        loss = f(z)                                                       # [R, B]
        taylor = (slope * (z - point)).sum((-1, -2))                      # [R, B]
        centre, scale = self.normaliser.mean.clone(), self.normaliser.scale()   # [R] before the update
        signal = self.normaliser(self.signal(loss.detach(), at_point, taylor))
        surrogate = score_surrogate(loss, signal, log_prob_one_hot(logits, z))
        if self.analytic_term:
            analytic = (slope * (mean - mean.detach())).sum((-1, -2))     # [R, B], value 0
            surrogate = surrogate + analytic
        info = {"loss": loss.detach().mean(-1), "signal_centre": centre,
                "signal_scale": scale}
        return surrogate, info


class DARN(MuProp):
    """``darn``: learning signal ``g(z_bar) . (z - z_bar)``, no analytic term (biased)."""

    unbiased = False
    analytic_term = False

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        self.point = cfg.darn_point

    def expansion_point(self, mean: Tensor) -> Tensor:
        """``uniform``: 1/K in every class (1/2 for binary units); ``mean``: ``mu``."""
        return torch.full_like(mean, 1.0 / mean.shape[-1]) if self.point == "uniform" else mean

    def signal(self, loss: Tensor, at_point: Tensor, taylor: Tensor) -> Tensor:
        return taylor
