"""``reinforce-ema``, the paper's SF: the score function with ``A = f(z) - c``, c a moving-average
centre; with variance normalisation (on unless ``estimator.options.variance_normalisation=false``) the
trainer divides the whole encoder gradient by the running std s (:mod:`vae.estimators.signal`).
Unbiased: the score-function surrogate with this ``A``
(:func:`vae.estimators.signal.score_surrogate`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.base import Objective
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import NormalisedSignalEstimator, score_surrogate
from vae.numerics.gumbel import Generator, log_prob_one_hot


@register("reinforce-ema")
class ReinforceEMA(NormalisedSignalEstimator):
    """``reinforce-ema``: ``A = f(z) - c`` with a moving-average centre; variance normalisation."""

    display_name = "SF"
    unbiased = True
    family = "score function"
    year = 1992
    paper_column = 0
    reference = ("Williams 1992, with the moving-average baseline and variance normalisation of Mnih & "
                 "Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014")
    summary = "score function with a moving-average baseline and variance normalisation (the paper's SF)"
    bias_note = "up to the variance-normalisation scale"

    def baseline(self, context: Tensor | None, loss: Tensor) -> Tensor:
        """Input-dependent baseline ``[R, B]``, shaped like the per-example ``loss`` (none here)."""
        return torch.zeros_like(loss)

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z = sample_one_hot(logits, rng).to(logits.dtype)          # [R, B, N, K]
        loss = f(z)                                               # [R, B]
        baseline = self.baseline(context, loss)                   # [R, B]
        # [R, B]; c, s before the update
        signal, info = self.normaliser.centre(loss.detach() - baseline.detach())
        surrogate = score_surrogate(loss, signal, log_prob_one_hot(logits, z))
        aux = (loss.detach() - info["signal_centre"][:, None] - baseline).square()   # [R, B] baseline's loss
        surrogate = surrogate + (aux - aux.detach())                  # value unchanged
        return surrogate, {"loss": loss.detach().mean(-1), **info, "baseline_mse": aux.detach().mean(-1)}
