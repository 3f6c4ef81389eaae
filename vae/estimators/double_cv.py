"""``double-cv`` (Titsias & Shi, "Double Control Variates for Gradient Estimation in Discrete Latent
Variable Models", AISTATS 2022): RLOO's leave-one-out global baseline plus a linear (Taylor)
control variate whose expectation is added back in closed form.

With S samples ``z_1..z_S ~ q`` (one-hot, ``[N, K]`` each), ``f_s = f(z_s)``, the gradient of f
with respect to its one-hot input at each sample ``g_s = df/dz (z_s)`` (one backward pass through
the decoder per sample), their leave-one-out means ``g_-s = mean_{j != s} g_j``, the control variate
``c_s = alpha g_-s . (z_s - pi)`` and the score ``z_s - pi = d log q(z_s) / d logits``:

    grad = 1/S sum_s [(f_s + c_s) - mean_{j != s} (f_j + c_j)] (z_s - pi)  -  alpha Cov(z) g_bar,

``Cov(z) g_bar = pi * g_bar - pi (pi . g_bar)`` per variable (the covariance of a one-hot draw,
``diag pi - pi pi^T``), ``g_bar = mean_s g_s``: the exact expectation of the c_s terms, because
``g_-s`` does not depend on ``z_s`` (and ``c_j``'s own expectation given the others is zero), so
the estimate is unbiased for any alpha (tested against enumeration). The authors' code is for
binary units, ``b - theta`` and ``theta (1 - theta)``; this is the same construction on one-hot
categorical draws, of which a Bernoulli unit (logits ``(0, phi)``) is the K = 2 case. alpha, one
per replica from 0, is trained by the run's optimiser on the estimate's own variance (its
gradient ``d/d alpha mean_b ||grad_b||^2``, as the authors train theirs and as RELAX does here).

Cost: ``estimator.num_samples`` decoder passes (RLOO's), plus their backward pass for g. The VAE
only: on the SBN an upper layer's f is the lower layers' surrogate, whose input gradient is not f's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import leave_one_out_mean, tuning_term
from vae.numerics.gumbel import Generator, softmax, widen
from vae.numerics.replicas import ReplicaGenerator


@register("double-cv")
class DoubleControlVariate(Estimator):
    """``double-cv``: leave-one-out baseline plus a linear control variate added back exactly."""

    display_name = "Double CV"
    unbiased = True
    tasks = frozenset({"vae"})
    family = "control variate"
    year = 2022
    reference = ("Titsias & Shi, Double Control Variates for Gradient Estimation in Discrete Latent Variable "
                 "Models, AISTATS 2022")
    passes = "num_samples"
    summary = ("k samples (`num_samples`); RLOO's leave-one-out baseline on f + c plus a linear control "
               "variate c_s = α ḡ₋ₛ·(z_s − π) (ḡ₋ₛ: the other samples' ∂f/∂z), whose mean α Cov(z) ḡ is "
               "subtracted in closed form; α per replica descends the estimate's variance. The authors "
               "define it on binary units; here on one-hot draws (a Bernoulli unit is K = 2). VAE only")
    bias_note = "any α; tested at α = 0.7, −1.5"

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        self.alpha = nn.Parameter(torch.zeros(num_replicas))                    # [R]

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        wide = widen(logits)
        pi = softmax(wide).detach().unsqueeze(1)                   # [R, 1, B, N, K]
        z = sample_one_hot(logits, rng, num_samples=self.cfg.num_samples).to(logits.dtype)   # [R, S, B, N, K]
        z.requires_grad_(True)
        loss = f(z)                                                              # [R, S, B]
        (g,) = torch.autograd.grad(loss.sum(), z, retain_graph=True)
        g = widen(g.detach())                                                    # df/dz at each sample
        score = widen(z.detach()) - pi                                           # d log q(z_s) / d logits
        alpha = self.alpha.to(wide.dtype)[:, None, None, None, None]
        cv_unit = (leave_one_out_mean(g) * score).sum((-1, -2))                  # [R, S, B]: c_s / alpha
        g_bar = g.mean(1, keepdim=True)
        cov_g = pi * g_bar - pi * (pi * g_bar).sum(-1, keepdim=True)             # [R, 1, B, N, K]
        f_det = widen(loss.detach())

        def estimate_of(a: Tensor) -> Tensor:                                    # [R, B, N, K], linear in a
            signal = f_det + a[..., 0, 0] * cv_unit
            signal = signal - leave_one_out_mean(signal)
            return (signal[..., None, None] * score).mean(1) - (a * cov_g).squeeze(1)

        grad = estimate_of(alpha.detach())
        variance = estimate_of(alpha).square().sum((-1, -2)).mean(-1)            # [R]: alpha's objective
        tune = tuning_term(variance, [self.alpha])                               # [R], gradient: tuning
        injected = (wide * grad).sum((-1, -2))                                   # [R, B], gradient: grad
        surrogate = (loss.mean(1) + (injected - injected.detach()).to(logits.dtype)
                     + tune.to(logits.dtype)[:, None])
        return surrogate, {"loss": loss.detach().mean((1, 2)), "alpha": self.alpha.detach().clone()}
