"""``indecater`` (De Smet, Sansone & Zuidberg Dos Martires, "Differentiable Sampling of Categorical
Distributions Using the CatLog-Derivative Trick", NeurIPS 2023): for independent categorical
variables, each variable's K values are summed exactly while the others keep their sampled values.

With ``q(z | x) = prod_n q_n(z_n)`` and one-hot samples ``z^(s) ~ q``, s = 1..S, the CatLog
derivative trick gives the unbiased estimate

    grad E_q[f] ~= 1/S sum_s sum_n sum_k grad q_n(k) f(z^(s)_{-n}, z_n = k)

(the expectation over ``z_n`` is exact, that over the other variables is the sample's: a
Rao-Blackwellised REINFORCE; since ``sum_k grad q_n(k) = 0`` it needs no baseline). The surrogate's
value is ``1/S sum_s f(z^(s))``, and the decoder's gradient is that of f at the samples (both
unbiased). Cost: of the N K points of a sample, the N with ``z_n`` at its sampled value are the
sample itself, so f runs at the sample and at its ``N (K - 1)`` neighbours: ``S (N (K - 1) + 1)``
decoder passes per example (181 for the 20 x 10 VAE, 201 for the 200-unit Bernoulli one).
``estimator.options.samples`` sets S (default 1). The neighbours' values enter only the estimate
(their gradient is not needed), so they are evaluated without a graph, :data:`CHUNK` one-hot
entries at a time: an SBN's nested layers (``(N(K - 1) + 1)^2`` passes a step) fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.registry import register
from vae.estimators.sampling import sample_classes
from vae.numerics.gumbel import Generator, softmax, widen

# one-hot entries of the neighbours evaluated at once: memory bounded whatever N, K and the batch
CHUNK = 2 ** 23


@register("indecater")
class IndeCateR(Estimator):
    """``indecater``: per variable the exact sum over its K values, the others sampled."""

    display_name = "IndeCateR"
    unbiased = True
    family = "score function"
    year = 2023
    reference = ("De Smet, Sansone & Zuidberg Dos Martires, Differentiable Sampling of Categorical "
                 "Distributions Using the CatLog-Derivative Trick, NeurIPS 2023")
    summary = ("per variable n the exact sum over its K values with the others at their sampled values, Σ_n "
               "Σ_k ∇q_n(k) f(z₋ₙ, k) (the CatLog-derivative trick: Rao-Blackwellised REINFORCE, no baseline "
               "needed); `estimator.options.samples` = S (1)")

    @dataclass
    class Options:
        samples: int = 1  # S: samples of z per example, each with its N x K evaluations of f

    positive_options = ("samples",)

    @classmethod
    def decoder_passes(cls, cfg: EstimatorConfig, latent_shape: tuple[int, int]) -> float:
        n, k = latent_shape
        return float(cls.options_of(cfg).samples * (n * (k - 1) + 1))

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        r, b, n, k = logits.shape
        s = self.options.samples
        index = sample_classes(logits, rng, num_samples=s)                          # [R, S, B, N]
        z = F.one_hot(index, k).to(logits.dtype)                                    # [R, S, B, N, K]
        # neighbour (n, j), j < K - 1: z with variable n moved to the j-th of its other values
        other = torch.arange(k - 1, device=logits.device)
        other = other + (other >= index.unsqueeze(-1))                              # [R, S, B, N, K-1]
        # [N, N]: which variable moves
        moved = F.one_hot(torch.arange(n, device=logits.device), n).bool()
        moved = moved.view(n, 1, n, 1).expand(n, k - 1, n, 1).reshape(n * (k - 1), 1, n, 1)
        value = F.one_hot(other, k).to(logits.dtype)                                # [R, S, B, N, K-1, K]
        value = value.permute(0, 1, 3, 4, 2, 5).reshape(r, s, n * (k - 1), b, 1, k)
        # [R, S, B]: f(z), with its gradient
        at_sample = f(z)
        chunk = max(1, CHUNK // (r * s * b * n * k))                                # neighbours per call of f
        # only their values enter the estimate
        with torch.no_grad():
            at_neighbours = torch.cat([f(torch.where(moved[j:j + chunk], value[:, :, j:j + chunk],
                                                     z.unsqueeze(2)))
                                       for j in range(0, n * (k - 1), chunk)], 2)   # [R, S, N(K-1), B]
        at_neighbours = at_neighbours.view(r, s, n, k - 1, b).permute(0, 1, 4, 2, 3)
        # f(z_-n, k) at k = z_n ...
        loss = at_sample[..., None, None].expand(r, s, b, n, k).clone()
        loss.scatter_(-1, other, at_neighbours)                                     # ... and at the other k
        q = softmax(widen(logits)).unsqueeze(1)                       # [R, 1, B, N, K]
        # [R, S, B]: its gradient, the estimate
        catlog = (q * loss.detach()).sum((-1, -2))
        surrogate = (at_sample + catlog - catlog.detach()).mean(1)                  # value: mean f(z^(s))
        return surrogate, {"loss": at_sample.detach().mean((1, 2))}
