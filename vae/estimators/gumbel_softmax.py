"""``gs``, the Gumbel-softmax estimator (Jang et al. 2017; Maddison et al. 2017): the surrogate
``f(y)`` at the relaxed sample ``y = softmax((logits + g) / tau)``, g Gumbel noise. Its gradient is
the exact gradient of the *relaxed* objective ``E_g[f(y)]``, evaluated off the one-hot vertices: a
biased estimate of the gradient of the discrete objective ``E_q[f(z)]``.
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.registry import register
from vae.numerics.gumbel import Generator, gumbel_softmax


@register("gs")
class GumbelSoftmax(Estimator):
    """``gs``: surrogate ``f(softmax((logits + g) / tau))`` with Gumbel noise g."""

    display_name = "Gumbel-S."
    reads_tau = True
    family = "relaxation"
    year = 2017
    paper_column = 5
    relaxed_kl = True
    one_hot_forward = False
    reference = ("Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017; Maddison, "
                 "Mnih & Teh, The Concrete Distribution, ICLR 2017")
    hard = False
    summary = "backpropagates through the soft sample softmax((logits+g)/τ)"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # no per-step host sync: tau is validated with the config, losses are checked every
        # log_every steps by the training loop
        z = gumbel_softmax(logits, tau, hard=self.hard, generator=rng, check=False)   # [R, B, N, K]
        loss = f(z)                                             # [R, B]
        return loss, {"loss": loss.detach().mean(-1)}
