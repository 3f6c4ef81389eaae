"""``gapped-st`` (Fan, Chi, Rudnicky & Ramadge, "Training Discrete Deep Generative Models via Gapped
Straight-Through Estimator", ICML 2022): straight-through whose backward softmax is taken at
logits moved so that the sample is their argmax, with a gap to every other class.

Forward: an exact one-hot sample ``D ~ q`` (class i of each variable). Backward: the gradient of
``softmax(l' / tau)`` with ``l' = l + sg(delta)``, where the constant ``delta`` raises the sampled
class's logit to the largest logit ``m`` and lowers every other class j to at most ``m - gap``:

    l'_i = m,    l'_j = min(l_j, m - gap)  (j != i),

so the relaxation ``softmax(l' / tau)`` agrees with D's argmax, as Gumbel-softmax's would with a
perturbation that has the sample as its argmax, without drawing one (the authors' reference code,
``gst-1.0``: the gap is a constant, default 1). One decoder pass, biased (a straight-through
family member). ``estimator.options.gap`` sets the gap; tau is the run's temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.numerics.gumbel import Generator, softmax, widen


@register("gapped-st")
class GappedStraightThrough(Estimator):
    """``gapped-st``: forward an exact sample, backward ``softmax`` at logits gapped around it."""

    display_name = "Gapped ST"
    reads_tau = True
    family = "relaxation"
    year = 2022
    reference = ("Fan, Chi, Rudnicky & Ramadge, Training Discrete Deep Generative Models via Gapped "
                 "Straight-Through Estimator, ICML 2022")
    summary = ("exact one-hot sample forward; backward softmax(l′/τ) at logits moved by a constant so the "
               "sample is their argmax with a gap to every other class: l′_i = max l, l′_j = min(l_j, max l "
               "− gap) (`estimator.options.gap`, default 1)")

    @dataclass
    class Options:
        gap: float = 1.0  # the least distance of the sample's moved logit to every other class's

    positive_options = ("gap",)

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        gap = self.options.gap
        wide = widen(logits)
        z = sample_one_hot(logits, rng)                                   # [R, B, N, K]
        with torch.no_grad():
            top = wide.max(-1, keepdim=True).values
            delta = torch.where(z.bool(), top, torch.minimum(wide, top - gap)) - wide
        soft = softmax((wide + delta) / tau)
        loss = f((z + (soft - soft.detach())).to(logits.dtype))           # [R, B], forward exactly z
        return loss, {"loss": loss.detach().mean(-1)}
