"""Held-out evaluation with discrete samples: the negative ELBO and the importance-weighted bound.

Both use exact one-hot samples ``z ~ q(z | x)`` (never relaxed ones, and no temperature):

* negative ELBO, one sample per example:
  ``-L(x) = -log p(x | z) + KL(q(z | x) || p(z))``, the KL analytic;
* importance-weighted bound with m samples (Burda et al. 2016), the number Table 1 compares:
  ``-L_m(x) = -log (1/m) sum_i p(x | z_i) p(z_i) / q(z_i | x)``, with the model's prior p(z).
  ``-L_m`` decreases towards ``-log p(x)`` as m grows; ``-L_1`` is the negative ELBO in expectation.
  Its samples are drawn by the inverse CDF, one uniform per latent
  (:func:`vae.estimators.sampling.sample_classes_by_inverse_cdf`).

Evaluation draws its noise from generators of its own (seeded from the run's seeds), so how often
a run evaluates never changes its training trajectory.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from vae.data.images import BinarizedImages
from vae.estimators.sampling import class_boundaries, sample_classes_by_inverse_cdf, sample_one_hot
from vae.models.discrete_vae import DiscreteVAE
from vae.numerics.replicas import ReplicaGenerator, derive_seed


def eval_generator(seeds: list[int], step: int, device: torch.device | str) -> ReplicaGenerator:
    """Generators for one evaluation, a function of (seed, step) only."""
    return ReplicaGenerator([derive_seed("eval", s, step) for s in seeds], device)


@torch.no_grad()
def negative_elbo(model: DiscreteVAE, data: BinarizedImages, split: str, rng: ReplicaGenerator,
                  batch_size: int, max_examples: int | None = None) -> Tensor:
    """Mean single-sample negative ELBO over the first ``max_examples`` of ``split`` (all if None),
    per replica: ``[R]`` (nats). The training split under dynamic binarization is binarized here,
    a fresh draw per replica from ``rng``."""
    total, count = 0.0, 0
    num_replicas = len(rng)
    fresh = split == "train" and data.binarization == "dynamic"
    for x in data.eval_batches(split, batch_size, max_examples):
        x = x.expand(num_replicas, -1, -1)                   # [R, B, 784]
        x = rng.bernoulli(x) if fresh else x
        logits = model.encode(x)                             # [R, B, N, K]
        z = sample_one_hot(logits, rng)                      # [R, B, N, K]
        loss = model.reconstruction_loss(z, x) + model.kl(logits)    # [R, B]
        total = total + loss.sum(-1)
        count += x.shape[1]
    return total / count


# samples per chunk of the m-sample bounds: with eval.iw_batch_size = 25 digits, 1,250 rows of 784
# pixel logits (4 MB) per pass, faster than 2,500 on this suite's CPU (vae/reporting/bench.py (d))
SAMPLE_CHUNK = 50


@torch.no_grad()
def negative_log_mean_weight(data: BinarizedImages, split: str, num_replicas: int, num_samples: int,
                             batch_size: int, sample_chunk: int,
                             log_weights: Callable[[Tensor], Callable[[int], Tensor]],
                             max_examples: int | None = None, progress: tqdm | None = None) -> Tensor:
    """Mean ``-log (1/m) sum_i w_i`` (m = ``num_samples``) over the first ``max_examples`` of
    ``split`` (all if None): ``[R]``. The one loop of every m-sample bound of the suite (VAE, SBN,
    M2): ``log_weights(x)`` for a batch ``x [R, B, 784]`` does the per-batch work once and returns
    ``draw(s)``, the log-weights of s more samples ``[R, S', B]`` (S' may be s times a sum the
    bound adds, e.g. M2's classes); samples come ``sample_chunk`` at a time and are combined with
    a running logsumexp, so memory does not grow with m."""
    total, count = 0.0, 0
    for x in data.eval_batches(split, batch_size, max_examples):
        x = x.expand(num_replicas, -1, -1)                   # [R, B, 784]
        draw = log_weights(x)
        log_w_sum = torch.full(x.shape[:2], -math.inf, device=x.device)  # [R, B]
        for start in range(0, num_samples, sample_chunk):
            log_w_sum = torch.logaddexp(log_w_sum,
                                        torch.logsumexp(draw(min(sample_chunk, num_samples - start)), dim=1))
        total = total - (log_w_sum - math.log(num_samples)).sum(-1)
        count += x.shape[1]
        if progress is not None:
            progress.update(x.shape[1])
    return total / count


def importance_weighted_bound(model: DiscreteVAE, data: BinarizedImages, split: str,
                              rng: ReplicaGenerator, num_samples: int, batch_size: int,
                              max_examples: int | None = None, sample_chunk: int = SAMPLE_CHUNK,
                              progress: tqdm | None = None) -> Tensor:
    """Mean ``-L_m(x)`` over the first ``max_examples`` of ``split`` (all if None): ``[R]``, with
    ``w = p(x, z) / q(z | x)``, ``z ~ q(z | x)`` drawn as classes (the one-hot z is never built:
    :meth:`DiscreteVAE.log_weight_function`); memory ``R x sample_chunk x batch_size x 784``."""
    def log_weights(x: Tensor) -> Callable[[int], Tensor]:
        logits = model.encode(x)                             # [R, B, N, K]
        class_dtype = torch.int64 if model.kind == "categorical" else x.dtype   # Bernoulli: the bits
        boundaries = class_boundaries(logits)                # [R, B, N, K - 1]
        log_weight = model.log_weight_function(logits, x)

        def draw(s: int) -> Tensor:
            index = sample_classes_by_inverse_cdf(boundaries, rng, num_samples=s, dtype=class_dtype)
            return log_weight(index)                         # [R, S, B]
        return draw

    return negative_log_mean_weight(data, split, len(rng), num_samples, batch_size, sample_chunk, log_weights,
                                    max_examples, progress)
