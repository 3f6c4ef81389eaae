"""Exact one-hot samples of the factorised categorical ``q(z | x)`` by the Gumbel-max trick."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vae.gumbel import Generator, gumbel_noise, widen


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
    r, *rest = logits.shape
    shape = (r, *rest) if num_samples is None else (r, num_samples, *rest)
    target = widen(logits.detach()) if num_samples is None else widen(logits.detach()).unsqueeze(1)
    index = (target + gumbel_noise(shape, rng, logits.device)).argmax(-1)       # [R, (S,) B, N]
    return F.one_hot(index, logits.shape[-1]).to(target.dtype)
