"""Structured output prediction with a stochastic binary network (Jang et al. 2017, Section 4.1).

Predict the lower half of a binarized digit (``x_lower``, pixels 392..783) from its upper half
(``x_upper``, pixels 0..391) through L stochastic layers (the paper: two layers of 200 Bernoulli
units, ``392-200-200-392``, or of 20 categorical variables of 10 classes,
``392-(20x10)-(20x10)-392``): the logits of layer l are an affine function of the layer below
(``model.hidden`` adds deterministic ReLU layers in between; the paper's rows use none), and the
last layer gives the Bernoulli logits of ``x_lower``. Shapes as in the VAE: R replicas, latents
``[R, *S, B, N, K]`` (a Bernoulli layer is the 2-class categorical with logits ``(0, l)``).

Training minimises ``-log p(x_lower | h)`` at one sample ``h ~ p(h | x_upper)`` (the paper's m = 1
objective) with one estimator per stochastic layer, **nested**: the objective layer l's estimator
differentiates samples layer l+1 through layer l+1's estimator, so no estimator knows about
layers, and a score-function estimator's learning signal at layer l is everything downstream of
it. Estimators that expand the objective in a Taylor series (muprop, darn) read its mean-field
version (``f.mean_field``: means propagated deterministically through the layers below), the
point Gu et al. (2016) expand a multi-layer network at. What an estimator asks of the model
applies layer by layer, as the VAE applies it to its encoder: variance normalisation divides the
gradient of layer l's logits by layer l's estimator's scale, and slope-annealed ST's slope
multiplies layer l's logits, in training and in evaluation (``model.logit_scale``).

Evaluation: ``-log (1/m) sum_i p(x_lower | h_i)``, ``h_i ~ p(h | x_upper)`` (m = 1000 for Table 1
and Figure 3): an upper bound on ``-log p(x_lower | x_upper)`` that tightens as m grows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from vae.data.images import BinarizedImages
from vae.estimators import Estimator
from vae.estimators.glue import PassCounter, run_estimator
from vae.estimators.sampling import class_boundaries, sample_classes_by_inverse_cdf
from vae.models.discrete_vae import LatentKind, log_likelihood_function
from vae.models.evaluation import SAMPLE_CHUNK, negative_log_mean_weight
from vae.numerics.gumbel import Generator, softmax, widen
from vae.numerics.replicas import ReplicaGenerator, ReplicaMLP, forward_classes, with_sample_axes

HALF = 392  # pixels in the upper (input) and lower (output) half of a 28 x 28 digit


class StochasticBinaryNetwork(nn.Module):
    """``392 -> (N x K) -> ... -> (N x K) -> 392`` with ``layers`` stochastic layers, R replicas."""

    def __init__(self, kind: LatentKind, num_latents: int, num_classes: int, hidden: list[int], layers: int,
                 rng: ReplicaGenerator):
        super().__init__()
        if kind == "bernoulli" and num_classes != 2:
            raise ValueError(f"model.num_classes must be 2 for Bernoulli latents, got {num_classes}")
        self.kind, self.num_latents, self.num_classes, self.layers = kind, num_latents, num_classes, layers
        width = num_latents * (1 if kind == "bernoulli" else num_classes)     # a layer's free logits
        sizes = [HALF, *[width] * layers, HALF]
        self.maps = nn.ModuleList(ReplicaMLP([a, *hidden, b], rng) for a, b in zip(sizes[:-1], sizes[1:]))
        # the slope a_l of each stochastic layer (1 unless its estimator sets one: slope-annealed ST,
        # vae.estimators.base.Estimator.logit_scale): p(h_l | h_{l-1}) = softmax(a_l * logits)
        # everywhere, in training and in evaluation, as the VAE's posterior
        # (vae.models.discrete_vae.DiscreteVAE)
        self.register_buffer("logit_scale", torch.ones(layers))

    def flat(self, z: Tensor) -> Tensor:
        """A layer's sample ``[..., N, K]`` as the next map's input ``[..., N * free]``."""
        return z[..., 1] if self.kind == "bernoulli" else z.flatten(-2)

    def logits(self, layer: int, below: Tensor) -> Tensor:
        """Logits ``[R, ..., N, K]`` of stochastic layer ``layer`` (0-based) given the layer below
        (``x_upper`` for layer 0, else that layer's flat sample), times the layer's slope."""
        free = (self.maps[layer](below) * self.logit_scale[layer]).unflatten(-1, (self.num_latents, -1))
        return torch.cat([torch.zeros_like(free), free], dim=-1) if self.kind == "bernoulli" else free

    def logits_of_classes(self, layer: int, index: Tensor) -> Tensor:
        """:meth:`logits` of layer ``layer`` >= 1 given the one-hot sample of the layer below as its
        classes ``index [R, ..., N]`` (never built: :func:`vae.numerics.replicas.forward_classes`)."""
        net = forward_classes(list(self.maps[layer]), index, self.num_classes, self.kind == "categorical")
        free = (net * self.logit_scale[layer]).unflatten(-1, (self.num_latents, -1))
        return torch.cat([torch.zeros_like(free), free], dim=-1) if self.kind == "bernoulli" else free

    def output_log_likelihood_function(self, lower: Tensor) -> Callable[[Tensor], Tensor]:
        """For lower ``[R, B, 392]``: the function of the last layer's classes ``index [R, *S, B, N]``
        that gives ``log p(x_lower | h_L)`` at their one-hot sample, ``[R, *S, B]``, ``-output_loss``
        to round-off (:func:`vae.models.discrete_vae.log_likelihood_function`)."""
        return log_likelihood_function(self.maps[-1], lower, self.num_classes, self.kind == "categorical")

    def output_loss(self, z: Tensor, lower: Tensor) -> Tensor:
        """``-log p(x_lower | h_L)``: z ``[R, *S, B, N, K]``, lower ``[R, B, 392]`` -> ``[R, *S, B]``."""
        pixel_logits = self.maps[-1](self.flat(z))
        lower = with_sample_axes(lower, z.dim() - 4).expand_as(pixel_logits)
        return F.binary_cross_entropy_with_logits(pixel_logits, lower, reduction="none").sum(-1)


def _merge(t: Tensor, lead: int) -> Tensor:
    """``[R, *S, B, ...]`` with ``lead`` = len(S) + 1 axes after R merged into one: ``[R, S*B, ...]``."""
    return t.reshape(t.shape[0], -1, *t.shape[1 + lead:])


def training_loss(model: StochasticBinaryNetwork, estimators: list[Estimator], x: Tensor, *,
                  rng: Generator, tau: float | Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The per-example training loss ``[R, B]`` (value ``-log p(x_lower | h)`` at the sampled h) and
    the first layer's estimator info, for a batch ``x [R, B, 784]``; one estimator per layer. Sets
    ``model.logit_scale`` to the layers' estimators' slopes at ``step``. With variance normalisation
    (:meth:`Estimator.encoder_gradient_scale`, ``s_l [R]``) the whole gradient of layer l's logits,
    so of its map, is divided by its estimator's s_l, as the VAE's encoder's (vae.models.objectives); the
    output map's is not. The info adds ``decoder_evals``: output-layer evaluations per example, the
    mean-field passes of MuProp and DARN included (the step's cost)."""
    for layer, estimator in enumerate(estimators):
        model.logit_scale[layer].fill_(estimator.logit_scale(step))      # in place: no copy to the device
    upper, lower = x[..., :HALF], x[..., HALF:]
    counter = PassCounter()                        # every layer's output-layer passes, counted once

    def layer_surrogate(layer: int, layer_logits: Tensor, lower: Tensor,
                        context: Tensor) -> tuple[Tensor, dict]:
        """Layer ``layer``'s estimator on logits ``[R, B', N, K]`` (B' may hold sample axes of the
        layers above, merged into the batch), its objective nested over the layers below; the
        logits' gradient divided by the layer's own scale (vae.estimators.glue)."""
        last = layer == model.layers - 1

        def f(z: Tensor) -> Tensor:                                   # [R, *S, B', N, K] -> [R, *S, B']
            if last:
                return model.output_loss(z, lower)
            lead = z.dim() - 3                                        # len(S) + 1
            below = model.flat(z)                                     # [R, *S, B', N * free]
            repeated = with_sample_axes(lower, lead - 1)
            repeated = repeated.expand(*below.shape[:-1], lower.shape[-1])
            surrogate, _ = layer_surrogate(layer + 1, _merge(model.logits(layer + 1, below), lead),
                                           _merge(repeated, lead), _merge(below, lead))
            return surrogate.reshape(z.shape[:-2])

        f.mean_field = lambda point: mean_field_loss(model, layer, point, lower)   # counted as f is
        _, surrogate, info = run_estimator(estimators[layer], layer_logits, lambda _: f, rng=rng, tau=tau,
                                           step=step, context=context, counter=counter, nested=not last)
        return surrogate, info

    surrogate, info = layer_surrogate(0, model.logits(0, upper), lower, upper)
    info["decoder_evals"] = counter.per_example(surrogate)
    return surrogate, info


def mean_field_loss(model: StochasticBinaryNetwork, layer: int, point: Tensor, lower: Tensor) -> Tensor:
    """``-log p(x_lower | .)`` with the layers below ``layer`` at their means given ``point``
    (layer ``layer``'s value, ``[R, *S, B, N, K]``): the deterministic network Taylor expansions use."""
    for below in range(layer + 1, model.layers):
        point = softmax(widen(model.logits(below, model.flat(point)))).to(point.dtype)
    return model.output_loss(point, lower)


def negative_log_likelihood(model: StochasticBinaryNetwork, data: BinarizedImages, split: str,
                            rng: ReplicaGenerator, num_samples: int, batch_size: int,
                            max_examples: int | None = None, sample_chunk: int = SAMPLE_CHUNK,
                            progress: tqdm | None = None) -> Tensor:
    """Mean ``-log (1/m) sum_i p(x_lower | h_i)``, ``h_i ~ p(h | x_upper)``, over the first
    ``max_examples`` of ``split`` (all if None):
    ``[R]`` nats (vae.models.evaluation.negative_log_mean_weight)."""
    def log_weights(x: Tensor) -> Callable[[int], Tensor]:
        upper, lower = x[..., :HALF], x[..., HALF:]
        top = class_boundaries(model.logits(0, upper))                        # [R, B, N, K - 1]
        log_likelihood = model.output_log_likelihood_function(lower)
        class_dtype = torch.int64 if model.kind == "categorical" else x.dtype  # Bernoulli: the bits

        def draw(s: int) -> Tensor:                                           # samples as their classes
            # [R, S, B, N]
            h = sample_classes_by_inverse_cdf(top, rng, num_samples=s, dtype=class_dtype)
            for layer in range(1, model.layers):
                h = sample_classes_by_inverse_cdf(class_boundaries(model.logits_of_classes(layer, h)), rng,
                                                  dtype=class_dtype)
            return log_likelihood(h)                                          # [R, S, B]
        return draw

    return negative_log_mean_weight(data, split, len(rng), num_samples, batch_size, sample_chunk, log_weights,
                                    max_examples, progress)
