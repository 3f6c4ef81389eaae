"""``reindge`` (Gourevitch, Janati et al. 2026, ReinDGE): ``redge``'s denoising (vae/estimators/redge.py)
with a ReinMax-like gradient at its last step. The sample z ~ Categorical(m_1) is handed to f as
``z + m_1(x_1; sg(l)) - sg(.)``: the straight-through gradient reaches the logits only through the
noisy state ``x_1`` and the steps before it; the last step's own dependence on the logits is
replaced by ZGR's form (ReinMax at tau = 1, vae/estimators/zgr.py) at m = m_1(sg(x_1); l),

    1/2 (dm/dl^T g + (g . (z - m)) (z - m)),   g = df/dz at z,

as the authors' package adds it to the logits' gradient (PyPI ``redge`` 0.1.0, ``reindge`` with
``ddim_mod``; tests/test_estimators.py compares the two on the same noise; at ``denoising_steps`` 2
the package's sample does not depend on the logits, so its hook never runs and the logits get no
gradient, where this file still gives the last step's term). Here it is the gradient
of ``1/2 sum_n [g_n . m_n + (g_n . (z_n - m_n)) log m_n(z_n)]`` with g and the factor held fixed;
g comes from one more backward pass through f at z (no second decoder evaluation). Biased; one
decoder evaluation.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from vae.estimators.base import Objective
from vae.estimators.redge import ReDGE, denoised_mean, schedule
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.numerics.gumbel import Generator, log_softmax, normal, softmax, widen


@register("reindge")
class ReinDGE(ReDGE):
    """``reindge``: ReDGE's sample, ST through the denoising chain, ZGR's gradient at its last step."""

    display_name = "ReinDGE"
    summary = ("`redge`'s sample z of the last denoised mean m; ST through the chain of noisy states, and "
               "at the last step ZGR's ½(∂m g + (g·(z − m))(z − m)), g = ∂f/∂z (ReinMax at τ = 1 on m)")

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        wide = widen(logits)
        steps, t_1 = self.options.denoising_steps, self.options.t_1
        noise = normal(wide.shape, rng, logits.device).to(wide.dtype)            # [R, B, N, K]
        _, pre, x_1 = denoised_mean(self.start(wide, noise), partial(self.posterior_logits, wide), steps, t_1)
        alphas, sigmas = schedule(steps, t_1)
        through_chain = softmax(self.posterior_logits(wide.detach(), x_1, alphas[1], sigmas[1]))
        last_step = self.posterior_logits(wide, x_1.detach(), alphas[1], sigmas[1])   # logits of m
        z = sample_one_hot(pre, rng).to(wide.dtype).requires_grad_(True)        # z ~ Categorical(m_1)
        loss = f((z + (through_chain - through_chain.detach())).to(logits.dtype))   # [R, B]
        with torch.enable_grad():
            (g,) = torch.autograd.grad(loss.sum(), z, retain_graph=True)
        g, z, m = widen(g), z.detach(), softmax(last_step)
        projection = (g * (z - m.detach())).sum(-1)                             # [R, B, N] g . (z - m)
        zgr = (g * m).sum(-1) + projection * (z * log_softmax(last_step)).sum(-1)
        surrogate = loss + 0.5 * (zgr - zgr.detach()).sum(-1)                   # value f(z)
        return surrogate, {"loss": loss.detach().mean(-1)}
