"""Score-function (REINFORCE) estimators: ``reinforce``, ``reinforce-ema``, ``nvil``, ``rloo``.

All are unbiased. With ``z ~ q(z | x)`` one-hot and a learning signal ``A`` that does not depend
on the draw's score, the surrogate is

    f(z) + A.detach() * (log q(z) - log q(z).detach())

whose value is ``f(z)`` and whose gradient is ``grad f(z)`` (decoder) ``+ A grad log q(z)``
(encoder). The estimators differ in ``A``:

* ``reinforce`` (Williams 1992): ``A = f(z)``.
* ``reinforce-ema`` (the paper's SF): ``A = f(z) - c``, moving-average centre c; with variance
  normalisation (on unless ``estimator.variance_normalisation=false``) the trainer divides the
  whole encoder gradient by the running std s (:mod:`vae.estimators.signal`).
* ``nvil`` (Mnih & Gregor 2014): ``A = f(z) - b(x) - c`` with an input-dependent baseline MLP
  ``b`` on ``context``, trained by the run's optimiser on ``(f(z) - b(x) - c)^2`` through an
  ``aux - aux.detach()`` term; variance normalisation as ``reinforce-ema``.
* ``rloo`` (Kool et al. 2019): k samples per example, ``A_i = f(z_i) - mean_{j != i} f(z_j)``,
  surrogate averaged over the k samples.

``vimco`` (Mnih & Rezende 2016) optimises another objective, the k-sample importance-weighted
bound ``L = log (1/k) sum_j w_j``, ``log w_j = -f(z_j)`` with f the whole negative log-weight
``-log p(x, z) + log q(z | x)`` (the trainer passes that f and adds no KL, see
:attr:`Estimator.multi_sample_bound`). Its gradient

    sum_j (L - L_{-j}) grad log q(z_j) + sum_j w~_j grad log w_j,    w~_j = w_j / sum_i w_i

uses per-sample leave-one-out signals: ``L_{-j}`` is L with ``log w_j`` replaced by the mean of
the others' (the geometric mean of their weights). Unbiased for the gradient of ``E[L]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.gumbel import Generator
from vae.estimators.config import EstimatorConfig
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import NormalisedSignalEstimator, leave_one_out_mean
from vae.models import log_prob_one_hot
from vae.replicas import ReplicaGenerator, ReplicaMLP


def score_surrogate(loss: Tensor, signal: Tensor, log_q: Tensor) -> Tensor:
    """``loss + signal.detach() * (log_q - log_q.detach())``: value ``loss``, all ``[R, *S, B]``."""
    return loss + signal.detach() * (log_q - log_q.detach())


class Reinforce(Estimator):
    """``reinforce``: ``A = f(z)``, no baseline."""

    display_name = "REINFORCE"
    unbiased = True
    family = "score function"
    year = 1992
    reference = ("Williams, Simple statistical gradient-following algorithms for connectionist reinforcement "
                 "learning, Machine Learning 1992")

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z = sample_one_hot(logits, rng).to(logits.dtype)          # [R, B, N, K]
        loss = f(z)                                               # [R, B]
        surrogate = score_surrogate(loss, loss, log_prob_one_hot(logits, z))
        return surrogate, {"loss": loss.detach().mean(-1)}


class ReinforceEMA(NormalisedSignalEstimator):
    """``reinforce-ema``: ``A = f(z) - c`` with a moving-average centre; variance normalisation."""

    display_name = "SF"
    unbiased = True
    family = "score function"
    year = 1992
    paper_column = 0
    reference = ("Williams 1992, with the moving-average baseline and variance normalisation of Mnih & Gregor, "
                 "Neural Variational Inference and Learning in Belief Networks, ICML 2014")

    def baseline(self, context: Tensor | None, loss: Tensor) -> Tensor:
        """Input-dependent baseline ``[R, B]``, shaped like the per-example ``loss`` (none here)."""
        return torch.zeros_like(loss)

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z = sample_one_hot(logits, rng).to(logits.dtype)          # [R, B, N, K]
        loss = f(z)                                               # [R, B]
        baseline = self.baseline(context, loss)                   # [R, B]
        signal, info = self.normaliser.centre(loss.detach() - baseline.detach())   # [R, B]; c, s before the update
        surrogate = score_surrogate(loss, signal, log_prob_one_hot(logits, z))
        aux = (loss.detach() - info["signal_centre"][:, None] - baseline).square()   # [R, B] baseline's loss
        surrogate = surrogate + (aux - aux.detach())                  # value unchanged
        return surrogate, {"loss": loss.detach().mean(-1), **info, "baseline_mse": aux.detach().mean(-1)}


class NVIL(ReinforceEMA):
    """``nvil``: ``reinforce-ema`` plus a learned input-dependent baseline ``b(x)``."""

    display_name = "NVIL"
    year = 2014
    paper_column = None
    reference = "Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014"

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        if context_dim < 1:
            raise ValueError("nvil: needs context_dim >= 1 (the size of the encoder's input x, which its "
                             "input-dependent baseline reads), got 0")
        self.baseline_net = ReplicaMLP([context_dim, cfg.baseline_hidden, 1], rng, torch.nn.Tanh)

    def baseline(self, context: Tensor | None, loss: Tensor) -> Tensor:
        if context is None:
            raise ValueError("nvil: needs context= (the encoder's input x) for its input-dependent baseline")
        weight = self.baseline_net[0].weight                              # the network's dtype
        return self.baseline_net(context.detach().to(weight.dtype)).squeeze(-1).to(loss.dtype)   # [R, B]


class RLOO(Estimator):
    """``rloo``: k samples per example, leave-one-out baseline, surrogate averaged over samples."""

    display_name = "RLOO"
    unbiased = True
    family = "score function"
    year = 2019
    reference = "Kool, van Hoof & Welling, Buy 4 REINFORCE Samples, Get a Baseline for Free!, ICLR workshop 2019"
    passes = "num_samples"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.cfg.num_samples
        z = sample_one_hot(logits, rng, num_samples=k).to(logits.dtype)   # [R, k, B, N, K]
        loss = f(z)                                                       # [R, k, B]
        surrogate = score_surrogate(loss, loss - leave_one_out_mean(loss), log_prob_one_hot(logits, z)).mean(1)
        return surrogate, {"loss": loss.detach().mean((1, 2))}


class VIMCO(Estimator):
    """``vimco``: k samples, the k-sample bound as objective, leave-one-out (geometric-mean) signals."""

    display_name = "VIMCO"
    unbiased = True
    multi_sample_bound = True
    tasks = frozenset({"vae"})          # the bound is a VAE's: log p(x, z) / q(z | x) over k samples
    family = "score function"
    year = 2016
    reference = "Mnih & Rezende, Variational inference for Monte Carlo objectives, ICML 2016"
    passes = "num_samples"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.cfg.num_samples
        z = sample_one_hot(logits, rng, num_samples=k).to(logits.dtype)   # [R, k, B, N, K]
        log_w = -f(z)                                                     # [R, k, B]
        bound = torch.logsumexp(log_w, dim=1) - math.log(k)               # [R, B]
        others = leave_one_out_mean(log_w)                                # [R, k, B] mean of the others
        eye = torch.eye(k, dtype=torch.bool, device=log_w.device)[None, :, :, None]   # [1, j, i, 1]
        replaced = torch.where(eye, others.detach().unsqueeze(2), log_w.detach().unsqueeze(1))  # [R, j, i, B]
        signal = bound.detach().unsqueeze(1) - (torch.logsumexp(replaced, dim=2) - math.log(k))  # [R, k, B]
        log_q = log_prob_one_hot(logits, z)                               # [R, k, B]
        surrogate = -(bound + (signal * (log_q - log_q.detach())).sum(1))  # value: -L
        return surrogate, {"loss": -bound.detach().mean(-1)}
