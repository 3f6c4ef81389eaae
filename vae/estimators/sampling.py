"""Exact one-hot samples of the factorised categorical ``q(z | x)`` by the Gumbel-max trick."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vae.gumbel import Generator, gumbel_noise, widen


def sample_classes(logits: Tensor, rng: Generator, num_samples: int | None = None) -> Tensor:
    """The classes of :func:`sample_one_hot`'s samples, from the same noise: ``[R, (S,) B, N]`` (int64).

    ``argmax(logits + g)``, the first maximum on ties; as ``max(-1).indices`` (the same index,
    a faster kernel over a short last axis), and for K = 2 as one comparison."""
    r, *rest = logits.shape
    shape = (r, *rest) if num_samples is None else (r, num_samples, *rest)
    target = widen(logits.detach()) if num_samples is None else widen(logits.detach()).unsqueeze(1)
    perturbed = gumbel_noise(shape, rng, logits.device).add_(target)              # [R, (S,) B, N, K]
    if perturbed.shape[-1] == 2:
        return (perturbed[..., 1] > perturbed[..., 0]).long()
    return perturbed.max(-1).indices


def sample_one_hot(logits: Tensor, rng: Generator, num_samples: int | None = None) -> Tensor:
    """One-hot ``z ~ Categorical(softmax(logits))``: ``one_hot(argmax(logits + g))``, g Gumbel.

    Args:
        logits: ``[R, B, N, K]``.
        rng: per-replica generators (or a torch.Generator, or None: torch's global one).
        num_samples: if given, draw that many independent samples on a new axis after R.

    Returns:
        ``[R, B, N, K]``, or ``[R, S, B, N, K]`` with ``S = num_samples``; no gradient; float32
        (float64 for float64 logits, :func:`vae.gumbel.widen`).
    """
    index = sample_classes(logits, rng, num_samples)                           # [R, (S,) B, N]
    return F.one_hot(index, logits.shape[-1]).to(widen(logits).dtype)
