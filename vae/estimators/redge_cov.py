"""``redge-cov`` (Gourevitch, Janati et al. 2026, ReDGE-Cov): ``redge`` (vae/estimators/redge.py, where
the denoising is written out) with the diffusion scaled by q's per-class variance
``v = max(p (1 - p), 0.1)``, ``p = softmax(l)``: it starts at ``x_{n-1} = p + sqrt(v) eps`` and the
denoiser's logits are ``l + (alpha_t x_t - alpha_t sigma_t p - alpha_t^2 / 2) / (v sigma_t^2)``, the
gradient flowing through p in both, as in the authors' package (PyPI ``redge`` 0.1.0,
``redge_cov``; tests/test_estimators.py compares the two on the same noise). Biased, one decoder
evaluation.
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.redge import ReDGE
from vae.estimators.registry import register
from vae.numerics.gumbel import softmax


@register("redge-cov")
class ReDGECov(ReDGE):
    """``redge-cov``: ReDGE whose diffusion starts at q's mean with q's per-class variance."""

    display_name = "ReDGE-Cov"
    summary = ("`redge` with the diffusion scaled by q's per-class variance v = max(p(1 − p), 0.1), p = "
               "softmax(l): it starts at p + √v ε and its denoiser's logits are l + (α_t x_t − α_t σ_t p − "
               "α_t²/2) / (v σ_t²), as in the authors' package")

    #: the floor of the per-class variance p(1 - p) (the package's MIN_VAR)
    min_variance = 0.1

    def variance(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(p, v)``: q's probabilities and their floored per-class variance."""
        p = softmax(logits)
        return p, (p * (1 - p)).clamp(min=self.min_variance)

    def start(self, logits: Tensor, noise: Tensor) -> Tensor:
        p, v = self.variance(logits)
        return p + v.sqrt() * noise

    def posterior_logits(self, logits: Tensor, x: Tensor, alpha: float, sigma: float) -> Tensor:
        p, v = self.variance(logits)
        return logits + (alpha * x - alpha * sigma * p - alpha ** 2 / 2) / (v * sigma ** 2)
