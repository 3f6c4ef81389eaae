"""``relax`` (Grathwohl et al. 2018): ``rebar``'s estimator (vae/estimators/rebar.py, where the
estimate is written out) with the control variate ``c(z) = eta f(softmax(z / lambda)) + r(z)``, r a
learned network (one hidden tanh layer of ``estimator.options.baseline_hidden``) trained, as eta and
lambda are, on the estimate's own variance. Unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from vae.estimators.config import EstimatorConfig
from vae.estimators.rebar import REBAR
from vae.estimators.registry import register
from vae.numerics.replicas import ReplicaGenerator, ReplicaMLP


@register("relax")
class RELAX(REBAR):
    """``relax``: REBAR's control variate plus a learned network ``r(z)`` (one hidden tanh layer)."""

    display_name = "RELAX"
    year = 2018
    reference = ("Grathwohl, Choi, Wu, Roeder & Duvenaud, Backpropagation through the Void: Optimizing "
                 "control variates for black-box gradient estimation, ICLR 2018")
    summary = ("`rebar` plus a learned control-variate network r(z) (one hidden tanh layer of "
               "`baseline_hidden`), trained on the same variance")

    @dataclass
    class Options:
        baseline_hidden: int = 100  # hidden units of the control-variate network r(z)

    positive_options = ("baseline_hidden",)

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape, context_dim=context_dim,
                         rng=rng)
        n, k = latent_shape
        self.network = ReplicaMLP([n * k, self.options.baseline_hidden, 1], rng, nn.Tanh)

    def control_variate(self, f_relaxed: Tensor, perturbed: Tensor) -> Tensor:
        weight = self.network[0].weight                                  # the network's dtype
        learned = self.network(perturbed.flatten(-2).to(weight.dtype)).squeeze(-1).to(f_relaxed.dtype)
        return super().control_variate(f_relaxed, perturbed) + learned
