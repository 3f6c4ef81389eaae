"""``rloo``, REINFORCE leave-one-out (Kool et al. 2019): k samples per example, ``A_i = f(z_i) -
mean_{j != i} f(z_j)``, the surrogate averaged over the k samples. Unbiased: the score-function
surrogate with this ``A`` (:func:`vae.estimators.signal.score_surrogate`).
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import leave_one_out_mean, score_surrogate
from vae.numerics.gumbel import Generator, log_prob_one_hot


@register("rloo")
class RLOO(Estimator):
    """``rloo``: k samples per example, leave-one-out baseline, surrogate averaged over samples."""

    display_name = "RLOO"
    unbiased = True
    family = "score function"
    year = 2019
    reference = ("Kool, van Hoof & Welling, Buy 4 REINFORCE Samples, Get a Baseline for Free!, "
                 "ICLR workshop 2019")
    passes = "num_samples"
    summary = "k samples per example, each with the mean of the other k−1 as baseline"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.cfg.num_samples
        z = sample_one_hot(logits, rng, num_samples=k).to(logits.dtype)   # [R, k, B, N, K]
        loss = f(z)                                                       # [R, k, B]
        surrogate = score_surrogate(loss, loss - leave_one_out_mean(loss),
                                    log_prob_one_hot(logits, z)).mean(1)
        return surrogate, {"loss": loss.detach().mean((1, 2))}
