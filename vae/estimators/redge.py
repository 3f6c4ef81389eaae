"""``redge`` (Gourevitch, Janati et al., "Categorical Reparameterization using Denoising Diffusion
Models", arXiv 2601.00781, 2026): a few deterministic (DDIM) denoising steps from Gaussian noise
towards a one-hot point, straight-through gradients through the last denoised mean.

The diffusion ``x_t = alpha_t x_0 + sigma_t eps`` of a one-hot ``x_0 ~ q = softmax(l)`` per
variable has the posterior mean, for ``x_0`` over the K one-hot states,

    m_t(x_t) = E[x_0 | x_t] = softmax(l + alpha_t x_t / sigma_t^2)

(the likelihood of ``e_k`` is ``exp(alpha_t x_t[k] / sigma_t^2)`` up to a factor shared by every
k). On the schedule ``alpha_0 = 1``, ``alpha_1..alpha_{n-1}`` evenly from ``1 - t_1`` down to
1e-4 and ``sigma_t = 1 - alpha_t`` (the authors' flow-matching schedule), from
``x_{n-1} ~ N(0, I)`` each step ``t -> t-1`` moves ``x_{t-1} = alpha_{t-1} m + sigma_{t-1}
(x_t - alpha_t m) / sigma_t``, ``m = m_t(x_t)``; the last, at t = 1, leaves ``m_1``, and the
forward sample is ``z ~ Categorical(m_1)``, exactly one-hot, with the straight-through gradient
``z + m_1 - stop_gradient(m_1)``: the gradient reaches the logits through every denoiser call.
``t_1`` plays the temperature's part (near 0: ``m_1`` near one-hot, little bias, much variance).
With finitely many steps z is not exactly a sample of q (the deterministic steps approximate the
flow whose end has q's marginal): biased in the forward pass as well as the backward one. One
decoder evaluation; ``n - 1`` softmaxes. ``redge-cov`` (vae/estimators/redge_cov.py) scales the
diffusion by q's per-class variance. Defaults: the package's README's starting point
(``denoising_steps`` 5, ``t_1`` 0.5, PyPI ``redge`` 0.1.0), which the paper tunes on a grid;
tests/test_estimators.py compares both with that package's ``redge`` and ``redge_cov`` on the
same noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import Tensor

from vae.estimators.base import Estimator, Objective, refuse
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.numerics.gumbel import Generator, normal, softmax, widen


def schedule(steps: int, t_1: float) -> tuple[list[float], list[float]]:
    """``(alphas, sigmas)`` of the ``steps`` points: ``alpha_0 = 1``, then ``1 - t_1`` down to 1e-4."""
    start, end = 1.0 - t_1, 1e-4
    alphas = [1.0] + [start + (end - start) * i / max(steps - 2, 1) for i in range(steps - 1)]
    return alphas, [1.0 - a for a in alphas]


def denoised_mean(start: Tensor, posterior_logits: Callable[[Tensor, float, float], Tensor], steps: int,
                  t_1: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(m_1, its logits, x_1)`` after the DDIM steps from ``x_{n-1} = start`` (the module docstring),
    ``posterior_logits(x_t, alpha_t, sigma_t)`` the logits of ``m_t(x_t)``; differentiable in both."""
    alphas, sigmas = schedule(steps, t_1)
    x = start
    for t in range(steps - 1, 0, -1):
        pre = posterior_logits(x, alphas[t], sigmas[t])
        mean = softmax(pre)
        if t > 1:
            x = alphas[t - 1] * mean + (sigmas[t - 1] / sigmas[t]) * (x - alphas[t] * mean)
    return mean, pre, x


@register("redge")
class ReDGE(Estimator):
    """``redge``: forward a sample of the last denoised mean, backward ST through the denoising."""

    display_name = "ReDGE"
    family = "relaxation"
    year = 2026
    reference = ("Gourevitch, Janati et al., Categorical Reparameterization using Denoising Diffusion "
                 "Models, arXiv 2601.00781, 2026")
    summary = ("`denoising_steps` − 1 deterministic (DDIM) denoising steps of a one-hot diffusion from "
               "Gaussian noise, each through the posterior mean softmax(l + α_t x_t / σ_t²); forward a "
               "one-hot sample of the last mean m, backward ST through m and every step (`t_1` = 0.5, "
               "its temperature)")
    bias_note = "forward too: z is drawn from m, not q"

    @dataclass
    class Options:
        # the schedule's points n, n - 1 denoiser calls (the package's README: 3 to 9, start at 5)
        denoising_steps: int = 5
        # the least noisy step's noise sigma_1 = 1 - alpha_1: the temperature's part (the README: 0.3 to 0.9)
        t_1: float = 0.5

        def __post_init__(self) -> None:
            refuse(self.denoising_steps >= 2, "denoising_steps", "an integer >= 2", self.denoising_steps)
            refuse(0.0 < self.t_1 < 1.0, "t_1", "in (0, 1)", self.t_1)

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        wide = widen(logits)
        noise = normal(wide.shape, rng, logits.device).to(wide.dtype)            # [R, B, N, K]
        mean, pre, _ = denoised_mean(self.start(wide, noise), partial(self.posterior_logits, wide),
                                     self.options.denoising_steps, self.options.t_1)
        z = sample_one_hot(pre, rng).to(wide.dtype)                              # z ~ Categorical(m_1)
        loss = f((z + (mean - mean.detach())).to(logits.dtype))                  # [R, B], forward exactly z
        return loss, {"loss": loss.detach().mean(-1)}

    def start(self, logits: Tensor, noise: Tensor) -> Tensor:
        """``x_{n-1}`` from standard normal ``noise``: the noise itself."""
        return noise

    def posterior_logits(self, logits: Tensor, x: Tensor, alpha: float, sigma: float) -> Tensor:
        """The logits of ``m_t(x_t) = E[x_0 | x_t]``: ``l + alpha_t x_t / sigma_t^2``."""
        return logits + (alpha / sigma ** 2) * x
