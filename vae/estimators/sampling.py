"""Exact samples of the factorised categorical ``q(z | x)``: one-hot by the Gumbel-max trick (what
the estimators draw, so their relaxations share its noise), and classes by the inverse CDF (what
the m-sample bounds draw: one uniform per variable instead of K Gumbels)."""

from __future__ import annotations

import torch
from torch import Tensor

from vae.numerics.gumbel import Generator, gumbel_noise, one_hot, softmax, uniform, widen


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
        (float64 for float64 logits, :func:`vae.numerics.gumbel.widen`).
    """
    index = sample_classes(logits, rng, num_samples)                           # [R, (S,) B, N]
    return one_hot(index, logits.shape[-1], widen(logits).dtype)


def class_boundaries(logits: Tensor) -> Tensor:
    """The inner edges of the K classes on [0, 1): the cumulative probabilities
    ``softmax(logits)[..., :k + 1].sum(-1)`` for k < K - 1, ``[..., K] -> [..., K - 1]`` (float32;
    float64 for float64 logits), what :func:`sample_classes_by_inverse_cdf` reads."""
    return softmax(widen(logits)).cumsum(-1)[..., :-1]


def sample_classes_by_inverse_cdf(boundaries: Tensor, rng: Generator, num_samples: int | None = None,
                                  dtype: torch.dtype = torch.int64) -> Tensor:
    """Classes ``z ~ Categorical(softmax(logits))`` from the :func:`class_boundaries` of the logits
    ``[R, B, N, K - 1]`` (or ``[R, *S, B, N, K - 1]`` with ``num_samples`` None): ``[R, (S,) B, N]``
    as ``dtype`` (int64; a float dtype gives K = 2's classes as the bits a Bernoulli decoder reads,
    the comparison written straight into them). One uniform u per variable; the class is the number of edges
    at or below u, so class k is drawn with probability ``edge_k - edge_{k-1}`` (a class of probability 0
    never), exact up to u's float32 resolution 2^-24 (Gumbel-max in float32 resolves no better: its noise ends
    at ``-log(-log(1 - 2^-24)) = 16.6``)."""
    # a comparison that casts as it writes is ten times slower on a strided one
    boundaries = boundaries.contiguous()
    shape = boundaries.shape[:-1] if num_samples is None else (
        boundaries.shape[0], num_samples, *boundaries.shape[1:-1])
    edges = boundaries if num_samples is None else boundaries.unsqueeze(1)
    u = uniform((*shape, 1), rng, boundaries.device).to(boundaries.dtype)
    if boundaries.shape[-1] == 1:                                                 # K = 2: one comparison
        # no bool tensor between
        return torch.ge(u, edges, out=u.new_empty(u.shape, dtype=dtype)).squeeze(-1)
    return (u >= edges).sum(-1, dtype=dtype)
