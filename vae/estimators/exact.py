"""``exact``: the true gradient of ``E_q[f(z)]`` by enumerating all ``K^N`` latent states.

    surrogate = sum_z q(z | x) f(z),   z over {one-hot}^N,  q(z | x) = prod_n softmax(logits_n)[z_n]

Its gradient is exactly ``d/dtheta E_q[f(z)]`` (encoder through q, decoder through f). The states
go on one sample axis ``S = K^N`` of f, so cost and memory grow as ``K^N``; spaces larger than
``max_states`` are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.registry import register
from vae.numerics.gumbel import Generator, log_prob_one_hot
from vae.numerics.replicas import ReplicaGenerator


def all_states(num_latents: int, num_classes: int, device: torch.device | str = "cpu") -> Tensor:
    """Every one-hot configuration, ``[K^N, N, K]``, in lexicographic order (last latent fastest)."""
    index = torch.arange(num_classes ** num_latents, device=device)                 # [S]
    powers = num_classes ** torch.arange(num_latents - 1, -1, -1, device=device)    # [N]
    return F.one_hot(index[:, None] // powers % num_classes, num_classes).float()


@register("exact")
class Exact(Estimator):
    """``exact``: enumerate the latent space; zero variance, no bias."""

    display_name = "exact"
    unbiased = True
    family = "enumeration"
    reference = "the definition: the expectation summed over every state"
    summary = "the true gradient, enumerating all K^N states; refused above `max_states`"

    @dataclass
    class Options:
        max_states: int = 4096  # refuse latent spaces with more than this many K^N states

    positive_options = ("max_states",)

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        check_state_count(*latent_shape, self.options.max_states)

    @classmethod
    def decoder_passes(cls, cfg: EstimatorConfig, latent_shape: tuple[int, int]) -> float:
        n, k = latent_shape
        return float(k ** n)

    @classmethod
    def check(cls, cfg: EstimatorConfig, *, task: str, kind: str, lowest_tau: float,
              latent_shape: tuple[int, int]) -> None:
        super().check(cfg, task=task, kind=kind, lowest_tau=lowest_tau, latent_shape=latent_shape)
        reason = too_many_states(*latent_shape, cls.options_of(cfg).max_states)
        if reason:
            raise ValueError(reason)

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        r, b, n, k = logits.shape
        check_state_count(n, k, self.options.max_states)
        states = all_states(n, k, logits.device).to(logits.dtype)             # [S, N, K]
        z = states[None, :, None].expand(r, -1, b, n, k)                        # [R, S, B, N, K]
        loss = f(z)                                                             # [R, S, B]
        surrogate = (log_prob_one_hot(logits, z).exp() * loss).sum(1)           # [R, B]
        return surrogate, {"loss": surrogate.detach().mean(-1)}


def too_many_states(num_latents: int, num_classes: int, max_states: int) -> str:
    """Why ``exact`` refuses ``K^N > max_states`` states, or "" when it does not."""
    if num_classes ** num_latents > max_states:
        return (f"enumerates K^N = {num_classes}^{num_latents} states, more than "
                f"estimator.options.max_states = {max_states}")
    return ""


def check_state_count(num_latents: int, num_classes: int, max_states: int) -> None:
    """Raise ``ValueError`` if ``K^N > max_states``."""
    reason = too_many_states(num_latents, num_classes, max_states)
    if reason:
        raise ValueError(f"estimator.name: 'exact' {reason}")
