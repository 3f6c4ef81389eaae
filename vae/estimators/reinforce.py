"""``reinforce``, the score-function estimator (Williams 1992) with the raw objective as its learning
signal, ``A = f(z)``, no baseline. Unbiased: the score-function surrogate with this ``A``
(:func:`vae.estimators.signal.score_surrogate`).
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import score_surrogate
from vae.numerics.gumbel import Generator, log_prob_one_hot


@register("reinforce")
class Reinforce(Estimator):
    """``reinforce``: ``A = f(z)``, no baseline."""

    display_name = "REINFORCE"
    unbiased = True
    family = "score function"
    year = 1992
    reference = ("Williams, Simple statistical gradient-following algorithms for connectionist reinforcement "
                 "learning, Machine Learning 1992")
    summary = "score function, the raw objective as learning signal, no baseline"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z = sample_one_hot(logits, rng).to(logits.dtype)          # [R, B, N, K]
        loss = f(z)                                               # [R, B]
        surrogate = score_surrogate(loss, loss, log_prob_one_hot(logits, z))
        return surrogate, {"loss": loss.detach().mean(-1)}
