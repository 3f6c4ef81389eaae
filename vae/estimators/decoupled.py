"""``decoupled-st-gs`` (Shah, Yan, Mozer & Liu, "Improving Discrete Optimisation Via Decoupled
Straight-Through Gumbel-Softmax", arXiv 2410.13331, 2024): straight-through Gumbel-softmax with one
temperature for the forward sample and another for the backward relaxation.

With one Gumbel draw g per variable and the parameterisation ``softmax(l / tau + g)`` (the paper's,
under which a temperature changes the hard sample too):

    forward:  z = one_hot(argmax(l / tau_f + g)),   a sample of softmax(l / tau_f);
    backward: the gradient of softmax(l / tau_b + g).

``tau_b`` is the run's temperature (its schedule); ``estimator.options.forward_tau`` is ``tau_f``
(default 1: the forward sample is exactly q's, so the objective is the suite's; another value
samples a tempered q). The method section of the paper was not available to this suite: this is
the definition its abstract and reviews state (separate forward and backward temperatures, the
``l / tau + g`` form), with the same g in both passes; say so when citing its numbers. One decoder
pass, biased.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.numerics.gumbel import Generator, gumbel_noise, one_hot, softmax, widen


@register("decoupled-st-gs")
class DecoupledSTGumbelSoftmax(Estimator):
    """``decoupled-st-gs``: forward the argmax at ``tau_f``, backward the softmax at ``tau_b``."""

    display_name = "Decoupled ST-GS"
    reads_tau = True
    family = "relaxation"
    year = 2024
    reference = ("Shah, Yan, Mozer & Liu, Improving Discrete Optimisation Via Decoupled Straight-Through "
                 "Gumbel-Softmax, arXiv 2410.13331, 2024")
    summary = ("ST-GS with a forward temperature τ_f (`estimator.options.forward_tau`, default 1: q's own "
               "sample) and the run's τ backward, in the l/τ + g form: forward one_hot(argmax(l/τ_f + g)), "
               "backward softmax(l/τ + g); the method section was not available, see the module's docstring")

    @dataclass
    class Options:
        forward_tau: float = 1.0  # tau_f of the hard sample (1: exactly q's sample)

    positive_options = ("forward_tau",)

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        forward_tau = self.options.forward_tau
        wide = widen(logits)
        g = gumbel_noise(wide.shape, rng, wide.device).to(wide.dtype)
        z = one_hot((wide.detach() / forward_tau + g).argmax(-1), wide.shape[-1], wide.dtype)
        soft = softmax(wide / tau + g)
        loss = f((z + (soft - soft.detach())).to(logits.dtype))           # [R, B], forward exactly z
        return loss, {"loss": loss.detach().mean(-1)}
