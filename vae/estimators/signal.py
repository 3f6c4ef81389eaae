"""Moving-average centring and the variance-normalisation scale of a score-function learning signal.

For a learning signal ``L [R, *S, B]`` (after any input-dependent baseline), with per-replica
moving averages ``c`` (mean) and ``v`` (variance) held as ``[R]`` buffers (Mnih & Gregor 2014):

    A = L - c,    s = max(1, sqrt(v)) if variance normalisation is on, else 1

and, in training mode only, *after* A is formed (so c and v never depend on the current draw and
the centring keeps the estimator unbiased), without gradients:

    c <- d c + (1 - d) mean(L),    v <- d v + (1 - d) mean((L - c_old)^2)

over all axes but R. The scale s is not applied here: the estimators hand it to the trainer
(:meth:`vae.estimators.base.Estimator.encoder_gradient_scale`), which divides the *whole* encoder
gradient of the training loss by it (:func:`divide_gradient` on the logits) -- the score term and
the analytic KL's encoder gradient alike, as when the KL is part of NVIL's learning signal
``log p(x, z) - log q(z | x)``; in a network of several stochastic layers (vae.models.sbn), each layer's
logits by its own estimator's s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vae.estimators.base import Estimator, refuse
from vae.estimators.config import EstimatorConfig
from vae.numerics.replicas import ReplicaGenerator


def score_surrogate(loss: Tensor, signal: Tensor, log_q: Tensor) -> Tensor:
    """``loss + signal.detach() * (log_q - log_q.detach())``: value ``loss``, all ``[R, *S, B]``.

    The score-function surrogate: with ``z ~ q(z | x)`` one-hot, ``loss = f(z)`` and a learning
    signal ``A`` that does not depend on the draw's score, its value is ``f(z)`` and its gradient
    ``grad f(z)`` (decoder) ``+ A grad log q(z)`` (encoder); ``reinforce``, ``reinforce-ema``,
    ``rloo``, ``muprop`` differ in ``A``."""
    return loss + signal.detach() * (log_q - log_q.detach())


def leave_one_out_mean(values: Tensor, dim: int = 1) -> Tensor:
    """Each entry's baseline from the others along the sample axis ``dim`` (k >= 2 entries):
    ``(sum_j v_j - v_i) / (k - 1)``, the same shape as ``values`` (RLOO's, VIMCO's)."""
    k = values.shape[dim]
    return (values.sum(dim, keepdim=True) - values) / (k - 1)


def tuning_term(objective: Tensor, params: list[nn.Parameter]) -> Tensor:
    """``[R]`` of value 0 whose gradient, for ``params`` (each with a leading replica axis) alone, is
    ``d objective / d params``: what an estimator adds to its surrogate so that the run's optimiser
    moves its own parameters down ``objective`` (the estimate's squared norm, whose gradient is a
    single-draw estimate of its variance's, by double backpropagation) while the model's receive the
    estimate. REBAR's, RELAX's, Double CV's and RODEO's control variates are tuned this way."""
    tuning = torch.autograd.grad(objective.sum(), params, retain_graph=True, allow_unused=True)
    tune = sum((p * g.detach()).reshape(p.shape[0], -1).sum(-1)
               for p, g in zip(params, tuning) if g is not None)
    return tune - tune.detach()


def divide_gradient(x: Tensor, scale: Tensor) -> Tensor:
    """Value ``x [R, ...]``, gradient divided by ``scale [R]`` (per replica): how a model applies
    an estimator's ``encoder_gradient_scale`` to the logits it hands the estimator."""
    s = scale.reshape(-1, *([1] * (x.dim() - 1)))
    return x.detach() + (x - x.detach()) / s


class SignalNormaliser(nn.Module):
    """Centre a learning signal by its moving average; keep its running std as the scale ``s``."""

    def __init__(self, num_replicas: int, decay: float, normalise: bool):
        super().__init__()
        self.decay = decay
        self.normalise = normalise
        self.register_buffer("mean", torch.zeros(num_replicas))      # [R] c
        self.register_buffer("var", torch.zeros(num_replicas))       # [R] v

    def scale(self) -> Tensor:
        """``[R]`` the divisor ``s`` (ones when normalisation is off)."""
        if not self.normalise:
            return torch.ones_like(self.var)
        return self.var.sqrt().clamp(min=1.0)

    def centre(self, signal: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``A = L - c`` (:meth:`forward`) and the info entries of every estimator that normalises
        its signal: c and s as they were before this draw's update (``[R]`` each)."""
        info = {"signal_centre": self.mean.clone(), "signal_scale": self.scale()}
        return self(signal), info

    def forward(self, signal: Tensor) -> Tensor:
        """``L [R, *S, B]`` -> ``A = L - c [R, *S, B]``; updates c and v in training mode."""
        signal = signal.detach()
        view = (-1, *([1] * (signal.dim() - 1)))
        centred = signal - self.mean.view(view)
        if self.training:
            dims = tuple(range(1, signal.dim()))
            # the buffers keep their dtype (float32 at least)
            self.mean.lerp_(signal.mean(dims).to(self.mean.dtype), 1.0 - self.decay)
            self.var.lerp_(centred.square().mean(dims).to(self.var.dtype), 1.0 - self.decay)
        return centred


@dataclass
class SignalOptions:
    """The options of every :class:`NormalisedSignalEstimator` (an estimator's own extend them)."""

    ema_decay: float = 0.9  # decay d of the learning signal's moving averages (its centre and variance)
    # divide the whole encoder gradient by the signal's running std (Mnih & Gregor 2014; the paper's)
    variance_normalisation: bool = True

    def __post_init__(self) -> None:
        refuse(0.0 <= self.ema_decay < 1.0, "ema_decay", "in [0, 1)", self.ema_decay)


class NormalisedSignalEstimator(Estimator):
    """What every estimator with a moving-average centre and variance normalisation shares (SF,
    NVIL, MuProp, DARN): the :class:`SignalNormaliser` of its options ``ema_decay`` and
    ``variance_normalisation`` (:class:`SignalOptions`), and the scale it hands the trainer."""

    Options = SignalOptions

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape, context_dim=context_dim,
                         rng=rng)
        self.normaliser = SignalNormaliser(num_replicas, self.options.ema_decay,
                                           self.options.variance_normalisation)

    def encoder_gradient_scale(self) -> Tensor | None:
        return self.normaliser.scale() if self.normaliser.normalise else None
