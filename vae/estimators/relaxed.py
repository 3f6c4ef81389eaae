"""Relaxation and straight-through estimators: ``gs``, ``st-gs``, ``st``, ``st-annealed``.

All four backpropagate through a sample instead of weighting a score; none is unbiased for the
discrete objective ``E_q[f(z)]``.

* ``gs`` (Jang et al. 2017; Maddison et al. 2017): ``y = softmax((logits + g) / tau)``, surrogate
  ``f(y)``: the exact gradient of the *relaxed* objective ``E_g[f(y)]``, evaluated off the one-hot
  vertices.
* ``st-gs``: the forward pass uses ``one_hot(argmax y)`` (an exact sample of q), the backward pass
  the gradient of ``y``.
* ``st`` (Bengio et al. 2013, as in Jang et al.): forward an exact one-hot sample ``z ~ q``,
  backward the gradient of ``softmax(logits)``: ``z + (p - p.detach())`` (exactly z forward).
* ``st-annealed`` (Chung et al. 2016): ``st`` on the sharpened posterior ``softmax(a * logits)``,
  ``a = min(max_slope, 1 + slope_rate * step)``. The slope is applied by the model
  (:meth:`Estimator.logit_scale`), so the sample, the straight-through gradient, the KL and the
  evaluation all use one distribution.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.sampling import sample_one_hot
from vae.gumbel import Generator, gumbel_softmax
from vae.replicas import ReplicaGenerator


class GumbelSoftmax(Estimator):
    """``gs``: surrogate ``f(softmax((logits + g) / tau))`` with Gumbel noise g."""

    hard = False

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__()

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # no per-step host sync: tau is validated with the config, losses are checked every
        # log_every steps by the training loop
        z = gumbel_softmax(logits, tau, hard=self.hard, generator=rng, check=False)   # [R, B, N, K]
        loss = f(z)                                             # [R, B]
        return loss, {"loss": loss.detach().mean(-1)}


class STGumbelSoftmax(GumbelSoftmax):
    """``st-gs``: forward ``one_hot(argmax(logits + g))``, backward the gradient of ``gs``."""

    hard = True


class StraightThrough(Estimator):
    """``st``: forward an exact one-hot sample, backward the gradient of ``softmax(logits)``."""

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__()

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        probs = torch.softmax(logits.float(), dim=-1)           # [R, B, N, K]
        z = sample_one_hot(logits, rng)                         # [R, B, N, K]
        loss = f((z + (probs - probs.detach())).to(logits.dtype))  # [R, B], forward exactly z
        info = {"loss": loss.detach().mean(-1),
                "slope": torch.full(loss.shape[:1], self.logit_scale(step), device=loss.device)}
        return loss, info


class SlopeAnnealedST(StraightThrough):
    """``st-annealed``: ``st`` on ``softmax(a * logits)``, ``a = min(max_slope, 1 + slope_rate * step)``."""

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        self.slope_rate = cfg.slope_rate
        self.max_slope = cfg.max_slope

    def logit_scale(self, step: int) -> float:
        return min(self.max_slope, 1.0 + self.slope_rate * step)
