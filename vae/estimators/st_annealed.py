"""``st-annealed``, slope-annealed straight-through (Chung et al. 2016): ``st`` on the sharpened
posterior ``softmax(a * logits)``, ``a = min(max_slope, 1 + slope_rate * step)``. The slope is
applied by the model (:meth:`Estimator.logit_scale`), so the sample, the straight-through gradient,
the KL and the evaluation all use one distribution. Biased.
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.registry import register
from vae.estimators.straight_through import StraightThrough


@register("st-annealed")
class SlopeAnnealedST(StraightThrough):
    """``st-annealed``: ``st`` on ``softmax(a * logits)``, ``a = min(max_slope, 1 + slope_rate * step)``."""

    display_name = "Annealed ST"
    # it sharpens the posterior itself, which M2's q(y | x) is not built for
    tasks = frozenset({"vae", "sbn"})
    year = 2016
    paper_column = 4
    reference = ("Chung, Ahn & Bengio, Hierarchical Multiscale Recurrent Neural Networks, "
                 "ICLR 2017 (arXiv 2016)")
    summary = ("ST on the sharpened posterior softmax(a·logits), a = min(max_slope, 1 + rate·t): sampled, "
               "differentiated, regularised by the KL and evaluated under that one distribution")

    def logit_scale(self, step: int | Tensor) -> float | Tensor:
        slope = 1.0 + self.cfg.slope_rate * step
        return (slope.clamp(max=self.cfg.max_slope) if isinstance(slope, Tensor)
                else min(self.cfg.max_slope, slope))
