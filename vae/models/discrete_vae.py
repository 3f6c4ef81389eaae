"""The discrete-latent VAE of Jang et al. (2017), Section 4.2, on a replica axis.

Encoder ``784-[hidden]-(N*K)`` with ReLU (``model.activation``: or LeakyReLU) between layers and *no*
activation on the output logits;
decoder ``(N*K)-[reversed hidden]-784``, giving Bernoulli logits for the 784 pixels. ``hidden =
[512, 256]`` is the author's public notebook; ``hidden = []`` is the paper's own notation
(``784-200-784``, ``784-(20x10)-784``): affine maps, no deterministic hidden layer. The prior
over each latent's K classes is uniform, or learned (one logit vector per latent, shared by all
examples; the final arXiv version of the paper says "learned", earlier ones "uniform").

A Bernoulli latent (``kind="bernoulli"``) is the K = 2 categorical with logits ``(0, l)``: then
``softmax(0, l)[1] = sigmoid(l)``, and the Gumbel-softmax of the pair is the binary Concrete of
Maddison et al. (logistic noise), so every estimator serves both kinds unchanged. The encoder
emits N numbers ``l`` and the decoder reads only the "on" coordinate ``z[..., 1]``: the
Bernoulli VAE is exactly the paper's 200-unit model.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae.numerics.gumbel import concrete_log_prob, gumbel_noise, log_prob_one_hot, log_softmax, widen
from vae.numerics.replicas import ACTIVATIONS, ReplicaGenerator, ReplicaMLP, forward_classes, with_sample_axes

LatentKind = Literal["categorical", "bernoulli"]
PriorKind = Literal["uniform", "learned"]
#: ``model.output_bias: data_mean`` clips the mean intensity to this before its logit (DisARM's).
OUTPUT_BIAS_CLIP = 1e-3


class DiscreteVAE(nn.Module):
    """VAE with N discrete latents of K classes each, R replicas at once.

    Shapes: x ``[R, B, 784]`` in {0, 1}; logits ``[R, B, N, K]``; z ``[R, *S, B, N, K]``.

    ``logit_scale`` (a scalar buffer, 1 unless an estimator sets it, see
    :meth:`vae.estimators.base.Estimator.logit_scale`) multiplies the encoder's output: the
    posterior is ``q(z_n | x) = softmax(logit_scale * l_n)`` everywhere, in training, in the KL
    and in evaluation.
    """

    def __init__(self, kind: LatentKind, num_latents: int, num_classes: int,
                 hidden: list[int], rng: ReplicaGenerator, data_dim: int = 784,
                 prior: PriorKind = "uniform", activation: str = "relu", pixel_mean: Tensor | None = None):
        super().__init__()
        if kind == "bernoulli" and num_classes != 2:
            raise ValueError(f"model.num_classes must be 2 for Bernoulli latents, got {num_classes}")
        if prior not in ("uniform", "learned"):
            raise ValueError(f"model.prior must be 'uniform' or 'learned', got {prior!r}")
        self.kind = kind
        self.num_latents = num_latents
        self.num_classes = num_classes
        free = 1 if kind == "bernoulli" else num_classes              # free logits per latent
        self.encoder = ReplicaMLP([data_dim, *hidden, num_latents * free], rng, ACTIVATIONS[activation])
        self.decoder = ReplicaMLP([num_latents * free, *reversed(hidden), data_dim], rng,
                                  ACTIVATIONS[activation])
        if pixel_mean is not None:      # the output bias starts at the data's logit, as the 2020 benchmark's
            with torch.no_grad():
                self.decoder[-1].bias.copy_(torch.logit(pixel_mean.clamp(OUTPUT_BIAS_CLIP,
                                                                         1 - OUTPUT_BIAS_CLIP))
                                            .expand_as(self.decoder[-1].bias))
        self.register_buffer("logit_scale", torch.ones(()))
        # learned prior: free logits [R, 1, N, free], from the uniform prior
        self.prior_free = (nn.Parameter(torch.zeros(len(rng), 1, num_latents, free))
                           if prior == "learned" else None)

    def _as_logits(self, free: Tensor) -> Tensor:
        """Free logits ``[..., N, free]`` -> categorical logits ``[..., N, K]`` (Bernoulli: ``(0, l)``)."""
        if self.kind == "bernoulli":
            return torch.cat([torch.zeros_like(free), free], dim=-1)
        return free

    def encode(self, x: Tensor) -> Tensor:
        """``[R, B, D]`` -> latent logits ``[R, B, N, K]`` (no squashing of the output)."""
        out = self.encoder(x) * self.logit_scale                     # [R, B, N * free]
        return self._as_logits(out.unflatten(-1, (self.num_latents, -1)))

    def prior_logits(self) -> Tensor:
        """``[R, 1, N, K]`` logits of the prior, broadcasting over the batch (uniform:
        zeros ``[1, 1, N, K]``)."""
        if self.prior_free is None:
            return torch.zeros(1, 1, self.num_latents, self.num_classes, device=self.logit_scale.device)
        return self._as_logits(self.prior_free)

    def kl(self, logits: Tensor) -> Tensor:
        """Analytic ``KL(q(z | x) || p(z))`` summed over latents: ``[R, B, N, K] -> [R, B]``."""
        return categorical_kl(logits, self.prior_logits())

    def relaxed_kl(self, logits: Tensor, tau: float | Tensor, rng: ReplicaGenerator) -> Tensor:
        """One-sample Monte Carlo KL between the Concrete posterior and the Concrete prior, ``[R, B]``.

        ``log q_tau(y) - log p_tau(y)`` summed over latents at ``y ~ Concrete(logits, tau)``, drawn
        in log space (``log y = log_softmax((logits + g) / tau)``) so confident latents whose small
        coordinates underflow in y keep exact log-densities. Reparameterised: differentiable in the
        logits. The sample is independent of the one the reconstruction uses, which keeps the
        estimate of the relaxed objective unbiased.
        """
        log_y = log_softmax((widen(logits) + gumbel_noise(logits.shape, rng, logits.device)) / tau)
        prior = self.prior_logits().expand_as(logits)
        return (concrete_log_prob(log_y, logits, tau, check=False)          # the training loss: no host read
                - concrete_log_prob(log_y, prior, tau, check=False)).sum(-1)

    def log_prior(self, z: Tensor) -> Tensor:
        """``log p(z)`` for one-hot z ``[R, *S, B, N, K]`` -> ``[R, *S, B]``."""
        return log_prob_one_hot(self.prior_logits(), z)

    def decode(self, z: Tensor) -> Tensor:
        """``z [R, *S, B, N, K]`` (one-hot or relaxed) -> pixel logits ``[R, *S, B, D]``."""
        inputs = z[..., 1] if self.kind == "bernoulli" else z.flatten(-2)
        return self.decoder(inputs)

    def log_weight_function(self, logits: Tensor, x: Tensor) -> Callable[[Tensor], Tensor]:
        """For posterior logits ``[R, B, N, K]`` and x ``[R, B, D]``: the function of classes ``index
        [R, *S, B, N]`` (Bernoulli: the bits, int64 or float) that gives ``log p(x | z) + log p(z) -
        log q(z | x)`` for their one-hot z, ``[R, *S, B]``, without building z: what the m-sample
        bound evaluates m times per digit. ``log p(z) - log q(z | x)`` is a term per class, added
        by :func:`log_likelihood_function` with the likelihood's own terms linear in z."""
        log_ratio = log_softmax(widen(self.prior_logits())) - log_softmax(widen(logits))   # [R, B, N, K]
        return log_likelihood_function(self.decoder, x, self.num_classes, self.kind == "categorical",
                                       log_ratio)

    def reconstruction_loss(self, z: Tensor, x: Tensor) -> Tensor:
        """``-log p(x | z)`` per example: z ``[R, *S, B, N, K]``, x ``[R, B, D]`` -> ``[R, *S, B]``."""
        pixel_logits = self.decode(z)
        x = with_sample_axes(x, z.dim() - 4).expand_as(pixel_logits)
        return F.binary_cross_entropy_with_logits(pixel_logits, x, reduction="none").sum(-1)


def categorical_kl(logits: Tensor, prior_logits: Tensor) -> Tensor:
    """Analytic ``KL(q || p)`` summed over latents: logits ``[R, B, N, K]``, prior logits
    broadcastable to them (zeros: uniform) -> ``[R, B]``.

    ``KL = sum_k q_k (log q_k - log p_k) >= 0``, zero exactly when q = p; for the uniform prior
    ``log p_k = -log K``.
    """
    log_q = log_softmax(widen(logits))
    log_p = log_softmax(prior_logits.to(log_q.dtype))
    return (log_q.exp() * (log_q - log_p)).sum((-1, -2))


def log_likelihood_function(decoder: ReplicaMLP, x: Tensor, num_classes: int, categorical: bool,
                           class_terms: Tensor | None = None) -> Callable[[Tensor], Tensor]:
    """For binary x ``[R, B, D]``: the function of classes ``index [R, *S, B, N]`` (Bernoulli,
    ``categorical=False``: the bits, int64 or float) that gives ``log p(x | z) + sum_n
    class_terms[..., n, index_n]`` for their one-hot z, ``[R, *S, B]``, where ``log p(x | z) =
    sum_d x_d l_d - softplus(l_d)`` at the pixel logits ``l = decoder(z)``: the same number as
    ``-reconstruction_loss`` (to float round-off), in fewer passes over the ``S x B x D`` logits.

    The work per digit is done once, here: ``x . l = h . (W x) + b . x`` through the last layer
    (weight W, bias b, input h), and ``class_terms [R, B, N, K]`` (optional, e.g. the bound's
    ``log p(z) - log q(z | x)``) as coefficients of the first layer's input, ``c``: the one-hot's
    N rows (categorical), or ``t_1 - t_0`` per bit plus ``sum_n t_0`` (Bernoulli). An affine
    decoder's ``W x`` joins ``c``, since there ``h`` is the input itself: one gather or one
    product per sample for both. Per sample, the first layer adds N weight rows
    (:meth:`ReplicaLinear.forward_one_hot`; a Bernoulli decoder reads the bits) and the softplus is
    summed in place (:func:`softplus_sum`). For evaluation only: the function's values carry no
    gradient."""
    *hidden, last = [m for m in decoder]
    w_x = widen(torch.bmm(x, last.weight.transpose(1, 2)))              # [R, B, in]: W x (summed in float32)
    offset = (x * last.bias).sum(-1)                                    # [R, B]: b . x
    coefficients = None if hidden else w_x                              # [R, B, inputs] of the first layer
    if class_terms is not None:
        if categorical:
            terms = class_terms.flatten(-2)
        else:
            terms = class_terms[..., 1] - class_terms[..., 0]
            offset = offset + class_terms[..., 0].sum(-1)
        coefficients = terms if coefficients is None else coefficients + terms

    @torch.no_grad()                                                    # evaluation only: no gradient at all
    def log_likelihood(index: Tensor) -> Tensor:
        def at_samples(t: Tensor) -> Tensor:                            # [R, B, ...] -> [R, 1.., B, ...]
            return with_sample_axes(t, index.dim() - 3)

        total = at_samples(offset)
        if coefficients is not None:
            total = total + input_dot(index, at_samples(coefficients), num_classes, categorical)
        if hidden:
            h = forward_classes(hidden, index, num_classes, categorical)    # [R, *S, B, in]
            total = total + (widen(h) * at_samples(w_x)).sum(-1)       # in float32 under bf16 too
        elif categorical:                                               # the bias is in the embedding bag
            return total - softplus_sum(partial(last.forward_one_hot, index, num_classes))
        else:
            h = index.to(x.dtype)                                       # no copy if index is the bits
        # a dense last layer: its product h W, the bias added inside the sum (no pass of its own)
        return total - softplus_sum(partial(last.forward_without_bias, h), at_samples(last.bias))
    return log_likelihood


def input_dot(index: Tensor, coefficients: Tensor, num_classes: int, categorical: bool) -> Tensor:
    """``u . c``, u the first layer's input for the classes ``index [R, *S, B, N]`` (categorical: the
    flat one-hot, so the sum of c at its N rows, a gather; Bernoulli: the bits) and c
    ``coefficients`` broadcastable to ``[R, *S, B, inputs]``: ``[R, *S, B]``."""
    if categorical:
        rows = index + torch.arange(index.shape[-1], device=index.device) * num_classes
        return coefficients.expand(*index.shape[:-1], -1).gather(-1, rows).sum(-1)
    return (index.to(coefficients.dtype) * coefficients).sum(-1)          # no copy if index is the bits


def softplus_sum(make_logits: Callable[[], Tensor], bias: Tensor | None = None) -> Tensor:
    """``sum_d log(1 + e^{l_d})`` over the last axis of the logits ``make_logits()`` returns (a new
    tensor, which this overwrites: the bound's chunks are used once, and in place there is no new
    4 MB tensor per pass: 5-10% of the bound's time; no gradient flows through it): ``[..., D] ->
    [...]``, in float32 (float64 for float64 logits; bfloat16 logits, under ``precision=bf16``, are
    widened first: in-place kernels do not autocast, and in bfloat16 ``1 + e^l`` would round at
    2^-8). As ``log(1 + exp(l))``, three elementwise kernels that take about half the time of
    torch's ``softplus`` or ``logaddexp(l, 0)`` and two thirds of ``log1p(exp(l))`` (``log1p`` is
    the slowest of them). In float32, rounding ``1 + e^l`` costs each term at most 2^-24 = 6e-8
    nats (absolute; where e^l < 2^-24 the term is 0 instead of e^l), at most 5e-5 over 784 pixels,
    far inside the float32 round-off of the sum (tests/test_bound.py). Where exp overflows (l > 88
    in float32) the logits are made again and summed as ``logaddexp(l, 0)``, accurate to round-off
    everywhere.

    With ``bias`` (``[..., D]``, broadcasting), the logits are ``make_logits() + bias``, summed as
    ``log(1 + e^p e^b)``: one fused multiply-add where adding the bias to the products first would
    be a pass of its own (about 5% of the bound), for one more rounding of ``e^l`` (2^-24 relative);
    where ``e^p`` overflows though ``p + b`` would not, the exact route above takes over."""
    values = widen(make_logits()).exp_()
    if bias is not None:
        values = torch.addcmul(values.new_ones(()), values, widen(bias).exp(), out=values)
    else:
        values = values.add_(1.0)
    total = values.log_().sum(-1)
    if not bool(torch.isfinite(total).all()):          # a host sync per call: the bound's chunks only
        logits = widen(make_logits())
        if bias is not None:
            logits = logits + widen(bias)
        total = torch.logaddexp(logits, logits.new_zeros(())).sum(-1)
    return total
