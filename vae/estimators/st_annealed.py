"""``st-annealed``, slope-annealed straight-through (Chung et al. 2016): ``st`` on the sharpened
posterior ``softmax(a * logits)``, ``a = min(max_slope, 1 + slope_rate * step)``. The slope is
applied by the model (:meth:`Estimator.logit_scale`), so the sample, the straight-through gradient,
the KL and the evaluation all use one distribution. Biased.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vae.estimators.base import refuse
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

    @dataclass
    class Options:
        # the slope's growth per step; 8e-5 = Chung et al.'s 0.04 per epoch of 500 steps
        slope_rate: float = 8e-5
        max_slope: float = 5.0  # the slope's ceiling (Chung et al. 2016 used 5)

        def __post_init__(self) -> None:
            refuse(self.slope_rate >= 0.0, "slope_rate", ">= 0", self.slope_rate)
            refuse(self.max_slope >= 1.0, "max_slope", ">= 1", self.max_slope)

    def logit_scale(self, step: int | Tensor) -> float | Tensor:
        slope = 1.0 + self.options.slope_rate * step
        return (slope.clamp(max=self.options.max_slope) if isinstance(slope, Tensor)
                else min(self.options.max_slope, slope))
