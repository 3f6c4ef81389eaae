"""Semi-supervised classification with the M2 model of Kingma et al. (2014) (Jang et al. 2017,
Section 4.3), on a replica axis.

Generative model, C classes and a D-dimensional Gaussian "style":

    p(y) = 1 / C,   p(z) = N(0, I_D),   p(x | y, z) = prod_i Bernoulli(x_i; sigmoid(decoder(y, z)_i))

inferred with ``q(y | x) = Cat(softmax(classifier(x)))`` and ``q(z | x, y) = N(mu, diag exp(s))``,
``(mu, s) = style(x, y)``, reparameterised: ``z = mu + exp(s / 2) * eps``, ``eps ~ N(0, I)``. Per
image, in nats (lower is better):

    labelled     -L(x, y) = -log p(x | y, z) + KL(q(z | x, y) || p(z)) + log C       one z ~ q(z | x, y)
    unlabelled   -U(x)    = E_{q(y | x)}[ f(y) ] + KL(q(y | x) || p(y)),
                  f(y)    = -log p(x | y, z) + KL(q(z | x, y) || p(z))               one z ~ q(z | x, y)
                          (so -U = E_q[-L(x, y)] - H(q(y | x)))
    classifier   -log q(y | x) on labelled images

with the Gaussian KL in closed form, ``1/2 sum_d (mu_d^2 + exp(s_d) - 1 - s_d)``. The expectation
over y is an estimator's (vae/estimators, ``ssl.y``), y being one latent variable of C classes:
``marginal`` is the registry's ``exact`` estimator (f at every one-hot y, weighted by q(y | x): the
sum Kingma et al. compute, C decoder passes per image); ``gs``, ``st-gs`` and the others pass one
relaxed or one-hot sample of y into q(z | x, y) and p(x | y, z) (one decoder pass).

Training loss per replica and step (:func:`training_loss`), on B_u unlabelled and B_l labelled images:

    mean_u[-U(x_u)] + mean_l[-L(x_l, y_l)] + alpha * mean_l[-log q(y_l | x_l)]

Kingma et al. write the objective as a sum over the data set, ``sum_l -L + sum_u -U + alpha' *
mean_l[-log q]`` with ``alpha' = 0.1 N``; per image (divided by N) their classification weight is
``alpha' / N = 0.1``: our ``alpha`` (default 0.1; the Gumbel paper chose it from {0.1, 0.2, 0.3,
0.8, 1.0}). Their labelled ELBO weighs N_l / N per image; here it is a batch mean of its own
(weight 1), so each step fits the labelled and the unlabelled batch alike.

Networks (the paper gives them only as a figure; these sizes train on a CPU). ``ssl.channels =
(c1, c2, c3)``, default (16, 32, 64); ReLU between layers, none on the outputs:

    q(y | x):     x 1x28x28 -conv 4x4/2-> c1x14x14 -conv 4x4/2-> c2x7x7 -conv 3x3/2-> c3x4x4
                  -> linear -> C logits
    q(z | x, y):  three conv layers as above (weights of their own) -> h, 16 c3 features;
                  [h, y] -linear-> 256 -linear-> (mu, s), 2 D.  The first linear map is computed as
                  ``(W_h h + b) + W_y y``: the conv layers and ``W_h h`` run once per image, only
                  ``W_y y`` once per class
    p(x | y, z):  [y, z] as a (C + D)x1x1 image -convT 4x4/1-> c3x4x4 -convT 3x3/2-> c2x7x7
                  -convT 4x4/2-> c1x14x14 -convT 4x4/2-> 1x28x28 Bernoulli logits

Every layer holds R independent replicas (grouped convolutions, vae/numerics/replicas.py). The labelled
training images travel with the model (:class:`LabelledSet`).

Evaluation (:func:`evaluate`, :func:`importance_weighted_bound`), with exact one-hot y only:
``-U(x)`` with y summed exactly and one z per class (an unbiased estimate of the negative ELBO),
the accuracy of ``argmax q(y | x)``, and the m-sample importance-weighted bound with y summed exactly,

    -log sum_y p(y) (1/m) sum_i p(x | y, z_iy) p(z_iy) / q(z_iy | x, y),   z_iy ~ q(z | x, y)

(m samples of z per class; C * m decoder passes per image).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from vae.config import Config, ConfigError, SSLConfig, config_from_dict
from vae.data.images import BinarizedImages
from vae.estimators import Estimator, EstimatorConfig, build_estimator
from vae.estimators.glue import run_estimator
from vae.models.discrete_vae import categorical_kl
from vae.models.evaluation import negative_log_mean_weight
from vae.numerics.gumbel import log_softmax, one_hot, widen
from vae.numerics.replicas import (ReplicaConv2d, ReplicaGenerator, ReplicaLinear, derive_seed, from_groups,
                                   to_groups, with_sample_axes)

SIDE = 28            # images are SIDE x SIDE
STYLE_HIDDEN = 256   # hidden units of q(z | x, y) after [h, y]
PAIRS_PER_CHUNK = 2_500   # (image, class, sample) triples per decoder call of the importance-weighted bound


class LabelledSet(nn.Module):
    """The labelled training images of every replica: ``x [R, L, 784]`` ({0, 1} pixels, or the
    intensities under dynamic binarization, binarized per batch) and their classes ``y [R, L]``.

    Buffers, not saved with the model: they are a function of the seeds and the data.
    """

    def __init__(self, x: Tensor, y: Tensor, seeds: list[int], dynamic: bool):
        super().__init__()
        self.register_buffer("x", x, persistent=False)
        self.register_buffer("y", y, persistent=False)
        self.seeds, self.dynamic = list(seeds), dynamic

    @classmethod
    def choose(cls, images: Tensor, labels: Tensor, seeds: list[int], num_labelled: int, num_classes: int,
               dynamic: bool) -> LabelledSet:
        """Replica r's ``num_labelled`` images out of ``images [n, 784]``: ``num_labelled / C`` per
        class, the first of that class in a permutation of the n images drawn from ``seeds[r]``."""
        index = torch.stack([labelled_indices(labels, seed, num_labelled // num_classes, num_classes)
                             for seed in seeds])                                        # [R, L]
        return cls(images[index], labels[index], seeds, dynamic)

    def batch(self, step: int, batch_size: int, rng: ReplicaGenerator) -> tuple[Tensor, Tensor]:
        """Labelled batch ``(x [R, B, 784], y [R, B])`` at ``step``; as the unlabelled batches, a pure
        function of (seed, step): a fresh permutation of the L images per epoch, the last incomplete
        batch dropped."""
        total = self.y.shape[1]
        epoch, position = divmod(step, total // batch_size)
        order = torch.stack([torch.randperm(total, generator=torch.Generator().manual_seed(
            derive_seed("labelled-epoch", seed, epoch))) for seed in self.seeds]).to(self.y.device)
        index = order[:, position * batch_size:(position + 1) * batch_size]              # [R, B]
        x = self.x.gather(1, index.unsqueeze(-1).expand(-1, -1, self.x.shape[-1]))
        return (rng.bernoulli(x) if self.dynamic else x), self.y.gather(1, index)


def labelled_indices(labels: Tensor, seed: int, per_class: int, num_classes: int) -> Tensor:
    """``[C * per_class]`` indices into ``labels [n]``: the first ``per_class`` images of each class
    in a permutation of the n drawn from ``seed``, class by class."""
    order = torch.randperm(labels.shape[0],
                           generator=torch.Generator().manual_seed(derive_seed("labelled", seed)))
    ordered = labels.cpu()[order]
    chosen = [order[ordered == c][:per_class] for c in range(num_classes)]
    short = [c for c, index in enumerate(chosen) if len(index) < per_class]
    if short:
        raise ConfigError(f"ssl.num_labelled: class {short[0]} has {len(chosen[short[0]])} training images, "
                          f"fewer than num_labelled / C = {per_class}")
    return torch.cat(chosen).to(labels.device)


def class_labels(data: BinarizedImages, split: str, cfg: SSLConfig) -> Tensor:
    """The classes of ``split``'s images, int64 ``[n]``: the digits (``labels=mnist``), or one
    uniform draw in [0, C) per image (``labels=random``), fixed by the split and C, the same for
    every seed."""
    if cfg.labels == "mnist":
        return data.labels[split]
    images = data.splits[split]
    generator = torch.Generator().manual_seed(derive_seed("random-labels", split, cfg.num_classes))
    return torch.randint(cfg.num_classes, images.shape[:1], generator=generator).to(images.device)


def conv_layers(channels: list[int], rng: ReplicaGenerator) -> nn.Sequential:
    """``1x28x28 -> c1x14x14 -> c2x7x7 -> c3x4x4``, ReLU after each, in the grouped layout."""
    c1, c2, c3 = channels
    return nn.Sequential(ReplicaConv2d(1, c1, 4, 2, 1, rng), nn.ReLU(), ReplicaConv2d(c1, c2, 4, 2, 1, rng),
                         nn.ReLU(), ReplicaConv2d(c2, c3, 3, 2, 1, rng), nn.ReLU())


class M2(nn.Module):
    """Classifier q(y | x), style encoder q(z | x, y) and decoder p(x | y, z), R replicas at once
    (sizes in the module docstring).

    Shapes: x ``[R, B, 784]``; y ``[R, *S, B, C]`` one-hot or relaxed; z ``[R, *S, B, D]``.
    """

    def __init__(self, num_classes: int, latent_dim: int, channels: list[int], rng: ReplicaGenerator,
                 labelled: LabelledSet | None = None):
        super().__init__()
        c1, c2, c3 = channels
        self.num_classes, self.latent_dim = num_classes, latent_dim
        features = c3 * 4 * 4
        self.classifier_convs = conv_layers(channels, rng)
        self.classifier_out = ReplicaLinear(features, num_classes, rng)
        self.style_convs = conv_layers(channels, rng)
        self.style_hidden = ReplicaLinear(features + num_classes, STYLE_HIDDEN, rng)    # reads [h, y]
        self.style_out = ReplicaLinear(STYLE_HIDDEN, 2 * latent_dim, rng)
        self.decoder = nn.Sequential(
            ReplicaConv2d(num_classes + latent_dim, c3, 4, 1, 0, rng, transposed=True), nn.ReLU(),
            ReplicaConv2d(c3, c2, 3, 2, 1, rng, transposed=True), nn.ReLU(),
            ReplicaConv2d(c2, c1, 4, 2, 1, rng, transposed=True), nn.ReLU(),
            ReplicaConv2d(c1, 1, 4, 2, 1, rng, transposed=True))
        self.labelled = labelled

    def classify(self, x: Tensor) -> Tensor:
        """Logits of q(y | x): ``[R, B, 784] -> [R, B, C]``."""
        return self.classifier_out(from_groups(self.classifier_convs(to_groups(x, 1, SIDE)), x.shape[0]))

    def style_features(self, x: Tensor) -> Tensor:
        """``W_h h(x) + b``, the part of q(z | x, y)'s hidden layer that y does not enter:
        ``[R, B, 784] -> [R, B, 256]``."""
        h = from_groups(self.style_convs(to_groups(x, 1, SIDE)), x.shape[0])             # [R, B, 16 c3]
        return torch.baddbmm(self.style_hidden.bias, h, self.style_hidden.weight[:, :h.shape[-1]])

    def style(self, from_x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x, y): ``from_x [R, B, 256]`` (:meth:`style_features`), ``y [R, *S, B, C]`` ->
        ``(mu, s = log sigma^2)``, each ``[R, *S, B, D]`` in float32 (float64 for a float64 model)."""
        r, c = y.shape[0], y.shape[-1]
        from_y = torch.bmm(y.reshape(r, -1, c), self.style_hidden.weight[:, -c:]).reshape(*y.shape[:-1], -1)
        from_x = with_sample_axes(from_x, y.dim() - 3)                              # [R, 1.., B, 256]
        mu, log_var = widen(self.style_out(torch.relu(from_x + from_y))).chunk(2, dim=-1)
        return mu, log_var

    def decode(self, y: Tensor, z: Tensor) -> Tensor:
        """p(x | y, z): ``y [R, *S, B, C]``, ``z [R, *S, B, D]`` -> pixel logits ``[R, *S, B, 784]``."""
        yz = torch.cat([y.to(z.dtype), z], dim=-1)
        r, width = yz.shape[0], yz.shape[-1]
        pixels = from_groups(self.decoder(to_groups(yz.reshape(r, -1, width), width, 1)), r)
        return pixels.reshape(*yz.shape[:-1], -1)

    def reconstruction_loss(self, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
        """``-log p(x | y, z)``: x ``[R, B, 784]``, y and z ``[R, *S, B, .]`` -> ``[R, *S, B]``."""
        logits = widen(self.decode(y, z))
        x = with_sample_axes(x, logits.dim() - 3).expand_as(logits)
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """``KL(N(mu, diag exp(log_var)) || N(0, I))`` summed over the last axis."""
    return 0.5 * (mu.square() + log_var.exp() - 1 - log_var).sum(-1)


def class_loss(model: M2, x: Tensor, from_x: Tensor, y: Tensor, rng: ReplicaGenerator) -> Tensor:
    """``f(y) = -log p(x | y, z) + KL(q(z | x, y) || p(z))`` at one ``z ~ q(z | x, y)`` per y:
    x ``[R, B, 784]``, ``from_x = model.style_features(x)``, y ``[R, *S, B, C]`` -> ``[R, *S, B]``."""
    mu, log_var = model.style(from_x, y)
    z = mu + (0.5 * log_var).exp() * rng.normal(mu.shape)
    return model.reconstruction_loss(x, y, z) + gaussian_kl(mu, log_var)


def unlabelled_loss(model: M2, estimator: Estimator, x: Tensor, *, rng: ReplicaGenerator, tau: float | Tensor,
                    step: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """``-U(x)`` per image ``[R, B]`` (its value at the estimator's sample of y; the exact sum over
    the classes for ``exact``), ``KL(q(y | x) || p(y))`` ``[R, B]`` (detached) and the estimator's
    info, for ``x [R, B, 784]``. y is one latent of C classes: logits ``[R, B, 1, C]``.

    Variance normalisation (:meth:`Estimator.encoder_gradient_scale`) divides the classifier's
    gradient from this term, the estimator's and the KL's, as for the VAE's encoder. The info adds
    ``decoder_evals``: decoder passes per image (the step's cost: C for ``exact``, 1 for ``gs``).
    """
    from_x = model.style_features(x)                                         # [R, B, 256]

    def f(y: Tensor) -> Tensor:                                              # [R, *S, B, 1, C] -> [R, *S, B]
        return class_loss(model, x, from_x, y.squeeze(-2), rng)

    logits, surrogate, info = run_estimator(estimator, model.classify(x).unsqueeze(-2), lambda _: f, rng=rng,
                                            tau=tau, step=step, context=x)   # logits [R, B, 1, C]
    kl = categorical_kl(logits, torch.zeros_like(logits))                    # uniform p(y)
    return surrogate + kl, kl.detach(), info


def labelled_loss(model: M2, x: Tensor, y: Tensor, rng: ReplicaGenerator) -> tuple[Tensor, Tensor]:
    """``(-L(x, y), -log q(y | x))``, each ``[R, B]``, for x ``[R, B, 784]`` and classes y ``[R, B]``."""
    y_hot = one_hot(y, model.num_classes, x.dtype)
    negative_elbo = class_loss(model, x, model.style_features(x), y_hot, rng) + math.log(model.num_classes)
    cross_entropy = -(log_softmax(widen(model.classify(x))) * y_hot).sum(-1)
    return negative_elbo, cross_entropy


def training_loss(model: M2, estimator: Estimator, x: Tensor, labelled_x: Tensor, labelled_y: Tensor, *,
                  rng: ReplicaGenerator, tau: float | Tensor, step: int,
                  alpha: float) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The per-image training loss ``[R, B_u]`` for unlabelled ``x [R, B_u, 784]`` and a labelled
    batch ``(labelled_x [R, B_l, 784], labelled_y [R, B_l])``: ``-U(x_b)`` plus the labelled
    batch's ``mean_l[-L + alpha * (-log q(y | x))]``, so that its mean over b is the step's loss
    (module docstring). Also ``KL(q(y | x) || p(y))`` ``[R, B_u]`` and the info, which adds the
    labelled batch's ``labelled_nelbo`` and ``labelled_ce`` ``[R]``."""
    unlabelled, kl, info = unlabelled_loss(model, estimator, x, rng=rng, tau=tau, step=step)
    negative_elbo, cross_entropy = labelled_loss(model, labelled_x, labelled_y, rng)
    labelled = (negative_elbo + alpha * cross_entropy).mean(-1, keepdim=True)    # [R, 1]
    info.update(labelled_nelbo=negative_elbo.detach().mean(-1), labelled_ce=cross_entropy.detach().mean(-1))
    return unlabelled + labelled, kl, info


def load_model(checkpoint: Path) -> tuple[M2, Config]:
    """The trained M2 of a run's checkpoint (on the CPU, every replica) and the run's config."""
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    cfg = config_from_dict(state["config"])
    s = cfg.ssl
    model = M2(s.num_classes, s.latent_dim, s.channels, ReplicaGenerator(cfg.seeds))
    model.load_state_dict(state["model"])
    return model, cfg


def logit_gradients(model: M2, estimator: Estimator, x: Tensor, *, rng: ReplicaGenerator, tau: float,
                    step: int, draws: int, images_per_pass: int = 1000) -> Tensor:
    """``[draws, R, B, C]``: independent draws of the gradient of ``-U(x_b)`` (:func:`unlabelled_loss`, as the
    trainer computes it: the estimator's term and the exact KL) with respect to the logits of
    ``q(y | x_b)``, for ``x [R, B, 784]``: what the classifier learns from each unlabelled image. The
    images of a batch do not interact, so the draws are copies of the batch side by side, at most
    ``images_per_pass`` images per forward pass, and the gradient of the sum holds each copy's own.
    With :func:`marginal` the draws differ only in z's noise: their mean tends to the exact gradient."""
    captured: list[Tensor] = []

    def as_leaf(module: nn.Module, inputs: tuple[Tensor], logits: Tensor) -> Tensor:   # the loss's logits
        captured.append(logits.detach().requires_grad_())
        return captured[-1]

    hook = model.classifier_out.register_forward_hook(as_leaf)
    r, b = x.shape[:2]
    per_pass = max(1, images_per_pass // b)
    gradients = []
    try:
        for done in range(0, draws, per_pass):
            copies = min(per_pass, draws - done)
            captured.clear()
            loss, _, _ = unlabelled_loss(model, estimator, x.repeat(1, copies, 1), rng=rng, tau=tau,
                                         step=step)
            grad = torch.autograd.grad(loss.sum(), captured[0])[0]                  # [R, copies * B, C]
            gradients.append(grad.reshape(r, copies, b, -1).transpose(0, 1))
    finally:
        hook.remove()
    return torch.cat(gradients)


def gradient_agreement(draws: Tensor, exact: Tensor) -> dict[str, float]:
    """How well draws ``[D, R, B, C]`` of a per-image gradient estimate the exact one ``exact [R, B, C]``.
    Per replica, the batch's B x C gradient as one vector (so each image counts by its gradient's
    size: a confident q(y | x) has all but no gradient), with ``g = mean_d g_d``, averaged over R:

        cosine      cos(g, g*)
        top_class   the share of ||g*|| (summed over images) on images where argmin_c g_c = argmin_c g*_c:
                    both raise the same class's logit most in a descent step
        bias        ||g - g*|| / ||g*||
        spread      sqrt(mean_d ||g_d - g||^2) / ||g*||   (one draw's error about the mean, relative)
    """
    mean = draws.mean(0)                                                      # [R, B, C]
    size = exact.flatten(1).norm(dim=1)                                       # [R]
    per_image = exact.norm(dim=-1)                                            # [R, B]
    same = (mean.argmin(-1) == exact.argmin(-1)).float()
    stats = {"cosine": torch.cosine_similarity(mean.flatten(1), exact.flatten(1), dim=1),
             "top_class": (same * per_image).sum(1) / per_image.sum(1),
             "bias": (mean - exact).flatten(1).norm(dim=1) / size,
             "spread": (draws - mean).flatten(2).square().sum(-1).mean(0).sqrt() / size}
    return {key: value.mean().item() for key, value in stats.items()}


def marginal(num_classes: int, num_replicas: int) -> Estimator:
    """``ssl.y=marginal``: the ``exact`` estimator on y's C classes (the sum over y)."""
    return build_estimator(EstimatorConfig(name="exact", options={"max_states": num_classes}),
                           latent_shape=(1, num_classes), num_replicas=num_replicas)


def y_estimator(y: str, settings: EstimatorConfig, num_classes: int, num_replicas: int,
                rng: ReplicaGenerator | None = None) -> Estimator:
    """The estimator of the unlabelled images' class, ``ssl.y``: :func:`marginal`, or the registry's
    estimator ``y`` with the ``estimator.*`` ``settings`` (``rng`` initialises its parameters, if any)."""
    if y == "marginal":
        return marginal(num_classes, num_replicas)
    return build_estimator(dataclasses.replace(settings, name=y), num_replicas=num_replicas,
                           latent_shape=(1, num_classes), context_dim=SIDE * SIDE, rng=rng)


@torch.no_grad()
def evaluate(model: M2, data: BinarizedImages, split: str, labels: Tensor, rng: ReplicaGenerator,
             batch_size: int, max_examples: int | None = None) -> dict[str, Tensor]:
    """Over the first ``max_examples`` of ``split`` (all if None), per replica ``[R]``:
    ``neg_elbo``, the mean ``-U(x)`` with y summed exactly and one z per class, and ``accuracy``,
    the fraction of images whose ``argmax q(y | x)`` is their class in ``labels [n]``."""
    num_replicas = len(rng)
    exact = marginal(model.num_classes, num_replicas).to(labels.device)
    total, correct, count = 0.0, 0.0, 0
    for x in data.eval_batches(split, batch_size, max_examples):
        x = x.expand(num_replicas, -1, -1)                                   # [R, B, 784]
        loss, _, _ = unlabelled_loss(model, exact, x, rng=rng, tau=1.0, step=0)
        total = total + loss.sum(-1)
        correct = correct + (model.classify(x).argmax(-1) == labels[count:count + x.shape[1]]).sum(-1)
        count += x.shape[1]
    return {"neg_elbo": total / count, "accuracy": correct / count}


def importance_weighted_bound(model: M2, data: BinarizedImages, split: str, rng: ReplicaGenerator,
                              num_samples: int, batch_size: int, max_examples: int | None = None,
                              progress: tqdm | None = None) -> Tensor:
    """Mean m-sample bound on ``-log p(x)`` with y summed exactly (module docstring) over the first
    ``max_examples`` of ``split`` (all if None): ``[R]``. Samples of z are drawn in chunks of at most
    ``PAIRS_PER_CHUNK`` (image, class, sample) triples (vae.models.evaluation.negative_log_mean_weight)."""
    r, c = len(rng), model.num_classes

    def log_weights(x: Tensor) -> Callable[[int], Tensor]:
        from_x, b = model.style_features(x), x.shape[1]

        def draw(s: int) -> Tensor:
            # [R, S, C, B, C]
            y = torch.eye(c, dtype=x.dtype, device=x.device)[None, None, :, None].expand(r, s, c, b, c)
            mu, log_var = model.style(from_x, y)                             # [R, S, C, B, D]
            eps = rng.normal(mu.shape)
            z = mu + (0.5 * log_var).exp() * eps
            # log p(z) - log q(z | x, y) = -1/2 sum_d (z^2 - eps^2 - log_var); log p(y) = -log C
            log_w = (-model.reconstruction_loss(x, y, z) - 0.5 * (z.square() - eps.square() - log_var).sum(-1)
                     - math.log(c))                                          # [R, S, C, B]
            # the classes summed with the samples
            return log_w.flatten(1, 2)
        return draw

    chunk = max(1, PAIRS_PER_CHUNK // (c * batch_size))
    return negative_log_mean_weight(data, split, r, num_samples, batch_size, chunk, log_weights, max_examples,
                                    progress)
