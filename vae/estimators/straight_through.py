"""``st``, straight-through (Bengio et al. 2013, as in Jang et al.): forward an exact one-hot
sample ``z ~ q``, backward the gradient of ``softmax(logits)``: ``z + (p - p.detach())`` (exactly z
forward). Biased.
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.numerics.gumbel import Generator, softmax, widen


@register("st")
class StraightThrough(Estimator):
    """``st``: forward an exact one-hot sample, backward the gradient of ``softmax(logits)``."""

    display_name = "ST"
    family = "relaxation"
    year = 2013
    paper_column = 3
    reference = ("Bengio, Léonard & Courville, Estimating or Propagating Gradients Through Stochastic "
                 "Neurons for Conditional Computation, arXiv 1308.3432, 2013")
    summary = "exact one-hot sample forward, gradient of softmax(logits) backward"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        probs = softmax(widen(logits))            # [R, B, N, K]
        z = sample_one_hot(logits, rng)                         # [R, B, N, K]
        loss = f((z + (probs - probs.detach())).to(logits.dtype))  # [R, B], forward exactly z
        info = {"loss": loss.detach().mean(-1),
                "slope": loss.new_zeros(loss.shape[:1]) + self.logit_scale(step)}
        return loss, info
