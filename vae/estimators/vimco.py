"""``vimco`` (Mnih & Rezende 2016) optimises another objective than the others, the k-sample
importance-weighted bound ``L = log (1/k) sum_j w_j``, ``log w_j = -f(z_j)`` with f the whole
negative log-weight ``-log p(x, z) + log q(z | x)`` (the trainer passes that f and adds no KL, see
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
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import leave_one_out_mean
from vae.numerics.gumbel import Generator, log_prob_one_hot


@register("vimco")
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
    summary = ("k samples; objective the k-sample importance-weighted bound (the trainer passes f = −log w "
               "and adds no KL); per-sample leave-one-out signals with the geometric mean")
    bias_note = "for its own bound"

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
