"""``nvil`` (Mnih & Gregor 2014): ``reinforce-ema`` with ``A = f(z) - b(x) - c``, an
input-dependent baseline MLP ``b`` on ``context``, trained by the run's optimiser on
``(f(z) - b(x) - c)^2`` through an ``aux - aux.detach()`` term; variance normalisation as
``reinforce-ema``. Unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vae.estimators.config import EstimatorConfig
from vae.estimators.registry import register
from vae.estimators.reinforce_ema import ReinforceEMA
from vae.estimators.signal import SignalOptions
from vae.numerics.replicas import ReplicaGenerator, ReplicaMLP


@register("nvil")
class NVIL(ReinforceEMA):
    """``nvil``: ``reinforce-ema`` plus a learned input-dependent baseline ``b(x)``."""

    display_name = "NVIL"
    year = 2014
    paper_column = None
    reference = "Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014"
    summary = "`reinforce-ema` plus a learned input-dependent baseline MLP"
    bias_note = "up to the scale"

    @dataclass
    class Options(SignalOptions):
        baseline_hidden: int = 100  # hidden units of the input-dependent baseline MLP b(x)

    positive_options = ("baseline_hidden",)

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        if context_dim < 1:
            raise ValueError("nvil: needs context_dim >= 1 (the size of the encoder's input x, which its "
                             "input-dependent baseline reads), got 0")
        self.baseline_net = ReplicaMLP([context_dim, self.options.baseline_hidden, 1], rng, torch.nn.Tanh)

    def baseline(self, context: Tensor | None, loss: Tensor) -> Tensor:
        if context is None:
            raise ValueError("nvil: needs context= (the encoder's input x) for its input-dependent baseline")
        weight = self.baseline_net[0].weight                              # the network's dtype
        return self.baseline_net(context.detach().to(weight.dtype)).squeeze(-1).to(loss.dtype)   # [R, B]
