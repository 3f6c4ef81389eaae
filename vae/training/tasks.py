"""The two tasks of the paper's Section 4 behind one interface, so the trainer has no branch per task.

* ``vae`` (Section 4.2): the discrete VAE of vae/models/discrete_vae.py, one estimator; logs the one-sample
  negative ELBO along training and the m-sample importance-weighted bound at the end.
* ``sbn`` (Section 4.1): the stochastic binary network of vae/models/sbn.py, one estimator per stochastic
  layer (nested); logs the m-sample NLL of the lower half along training (``nll``, m =
  ``eval.curve_samples``) and at the end (``iw_nll``, m = ``eval.iw_samples``).
* ``ssl`` (Section 4.3): semi-supervised classification with the M2 model of vae/models/m2.py, y of the
  unlabelled images summed (``ssl.y=marginal``) or sampled through an estimator; the trainer's
  batch is the unlabelled one, the labelled batch is drawn from the labelled set the model holds;
  the KL term it returns is the unlabelled images' ``KL(q(y | x) || p(y))``. Logs the negative
  ELBO (y summed exactly) and the classification accuracy along training (``neg_elbo``,
  ``accuracy``) and the m-sample bound at the end (``iw_bound``).

A task checks the rules of its own (which keys it reads, which estimators apply to its latents:
their declarations, vae.estimators.check_applies), builds its model and estimator(s) from a config
(and the data), computes the per-example training loss, and evaluates held-out data. Everything
else -- data, optimiser, temperature, checkpoints, logging, divergence checks, resume -- is the
trainer's (vae/training/trainer.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from vae.config import Config, ConfigError
from vae.data.images import BinarizedImages
from vae.estimators import ESTIMATORS, build_estimator, check_applies
from vae.models import m2, sbn
from vae.models.discrete_vae import DiscreteVAE
from vae.models.evaluation import importance_weighted_bound, negative_elbo
from vae.models.objectives import training_loss
from vae.numerics.replicas import ReplicaGenerator
from vae.training.schedules import lowest_tau

Batch = Tensor | tuple[Tensor, ...]   # what a task's batch() gives and its loss() takes


def _images(data: BinarizedImages, step: int, rng: ReplicaGenerator, cfg: Config) -> Tensor:
    return data.train_batch(cfg.seeds, step, cfg.data.batch_size, rng)   # [R, B, 784]


class Task(Protocol):
    curve_metric: str   # the principal metric of curve(), logged for valid and test every eval.every steps
    final_metric: str   # logged for test at the end: the number the paper's tables compare
    # whether the estimator sees one encoder's logits, whose gradient the leaderboard's gradient-quality
    # columns measure (vae/reporting/gradient_quality.py): the VAE's; the SBN has an encoder per layer,
    # M2 q(y | x) too
    one_encoder: bool

    def validate(self, cfg: Config) -> None:
        """Raise ``ValueError`` (one line naming the key) if ``cfg`` breaks a rule of this task."""

    def estimator_name(self, cfg: Config) -> str:
        """What treats the discrete latents: the name run directories, summaries and progress bars carry."""

    def decoder_passes(self, cfg: Config) -> float:
        """Decoder passes per example and step of ``cfg``'s training loss, from the estimator's
        declaration (what the trainer counts and logs as ``train/est/decoder_evals``)."""

    def build(self, cfg: Config, rng: ReplicaGenerator, data: BinarizedImages) -> tuple[nn.Module, nn.Module]:
        """(model, estimator module) for ``cfg``, R = len(cfg.seeds) replicas."""

    def batch(self, model: nn.Module, data: BinarizedImages, step: int, rng: ReplicaGenerator,
              cfg: Config) -> Batch:
        """The training batch of ``step``, what :meth:`loss` takes: the images ``[R, B, 784]`` (the
        ssl task: with a labelled batch beside them). Drawn before the step's loss, outside the
        compiled step's graph (vae/training/compiled_step.py)."""

    def loss(self, model: nn.Module, estimator: nn.Module, batch: Batch, *, rng: ReplicaGenerator,
             tau: float | Tensor, step: int | Tensor,
             cfg: Config) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(per-example loss [R, B], its KL term [R, B], estimator info) for a batch of :meth:`batch`."""

    def curve(self, model: nn.Module, data: BinarizedImages, split: str, rng: ReplicaGenerator,
              cfg: Config) -> dict[str, Tensor]:
        """``{metric: [R]}`` on ``split``: ``curve_metric`` and any others the task logs beside it."""

    def final(self, model: nn.Module, data: BinarizedImages, rng: ReplicaGenerator, cfg: Config,
              progress: tqdm | None) -> Tensor:
        """``[R]``: the final metric on the test set (m = eval.iw_samples on eval.iw_examples digits)."""


def _estimator_applies(cfg: Config, task: str) -> None:
    """The estimator of the model's latents applies to ``task`` (its declarations)."""
    m = cfg.model
    check_applies(cfg.estimator, task=task, kind=m.kind, lowest_tau=lowest_tau(cfg.tau, cfg.steps),
                  latent_shape=(m.num_latents, m.num_classes))


def _latent_passes(cfg: Config) -> float:
    m = cfg.model
    return ESTIMATORS[cfg.estimator.name].decoder_passes(cfg.estimator, (m.num_latents, m.num_classes))


def _vae_keys_at_defaults(cfg: Config, task: str) -> None:
    """The keys only the VAE reads keep their defaults in another task."""
    m = cfg.model
    if cfg.gradvar_every != 0:
        raise ValueError(f"gradvar_every: the gradient-variance measurement is the VAE's; "
                         f"set 0 for task={task}")
    if m.activation != "relu" or m.output_bias != "default":
        raise ValueError(f"model.activation / model.output_bias: "
                         f"other than relu / default only for task vae, not {task}")
    if cfg.eval.train_elbo:
        raise ValueError(f"eval.train_elbo: only for task vae, not {task}")
    if cfg.optim.prior_lr is not None:
        raise ValueError(f"optim.prior_lr: only with task vae (and model.prior=learned), not {task}")
    if cfg.data.binarization == "none":
        raise ValueError(f"data.binarization: none is for task vae, not {task}")


class VAETask:
    curve_metric = "neg_elbo"
    final_metric = "iw_bound"
    one_encoder = True

    def validate(self, cfg: Config) -> None:
        _estimator_applies(cfg, "vae")

    def estimator_name(self, cfg: Config) -> str:
        return cfg.estimator.name

    def decoder_passes(self, cfg: Config) -> float:
        return _latent_passes(cfg)

    def build(self, cfg: Config, rng: ReplicaGenerator, data: BinarizedImages) -> tuple[nn.Module, nn.Module]:
        m = cfg.model
        pixel_mean = data.splits["train"].mean(0) if m.output_bias == "data_mean" else None
        model = DiscreteVAE(m.kind, m.num_latents, m.num_classes, m.hidden, rng, prior=m.prior,
                            activation=m.activation, pixel_mean=pixel_mean)
        estimator = build_estimator(cfg.estimator, num_replicas=len(cfg.seeds),
                                    latent_shape=(m.num_latents, m.num_classes), context_dim=784, rng=rng)
        return model, estimator

    def batch(self, model, data, step, rng, cfg):
        return _images(data, step, rng, cfg)

    def loss(self, model, estimator, x, *, rng, tau, step, cfg):
        return training_loss(model, estimator, x, rng=rng, tau=tau, step=step, kl=cfg.kl)

    def curve(self, model, data, split, rng, cfg):
        return {self.curve_metric: negative_elbo(model, data, split, rng, cfg.eval.batch_size,
                                                 cfg.eval.curve_examples)}

    def final(self, model, data, rng, cfg, progress):
        e = cfg.eval
        return importance_weighted_bound(model, data, "test", rng, e.iw_samples, e.iw_batch_size,
                                         e.iw_examples, progress=progress)


_SBN_PASSES: dict[str, float] = {}   # SBNTask.decoder_passes' counts by model and estimator settings


class SBNTask:
    curve_metric = "nll"       # m = eval.curve_samples
    final_metric = "iw_nll"    # m = eval.iw_samples (the paper's m = 1000)
    one_encoder = False

    def validate(self, cfg: Config) -> None:
        if cfg.kl != "analytic" or cfg.model.prior != "uniform":
            raise ValueError("task: 'sbn' has no prior and no KL (kl and model.prior keep their defaults)")
        _vae_keys_at_defaults(cfg, "sbn")
        if cfg.model.layers < 1:
            raise ValueError(f"model.layers: must be >= 1, got {cfg.model.layers}")
        _estimator_applies(cfg, "sbn")

    def estimator_name(self, cfg: Config) -> str:
        return cfg.estimator.name

    def decoder_passes(self, cfg: Config) -> float:
        """Counted on one example by the training loss itself: the nesting (a layer's every pass
        runs the layers below) and the Taylor estimators' mean-field passes make a formula fragile.
        Counted once per model and estimator settings (a sweep's expansion asks for every point)."""
        # a plugin's class too
        key = repr((cfg.model, cfg.estimator, id(ESTIMATORS.get(cfg.estimator.name))))
        if key not in _SBN_PASSES:
            one, rng = replace(cfg, seeds=[0]), ReplicaGenerator([0])
            model, estimators = self.build(one, rng, None)
            _, _, info = self.loss(model, estimators, torch.zeros(1, 1, 784), rng=rng, tau=1.0, step=0,
                                   cfg=one)
            _SBN_PASSES[key] = float(info["decoder_evals"][0])
        return _SBN_PASSES[key]

    def build(self, cfg: Config, rng: ReplicaGenerator, data: BinarizedImages) -> tuple[nn.Module, nn.Module]:
        m = cfg.model
        model = sbn.StochasticBinaryNetwork(m.kind, m.num_latents, m.num_classes, m.hidden, m.layers, rng)
        width = m.num_latents * (1 if m.kind == "bernoulli" else m.num_classes)
        estimators = nn.ModuleList(
            build_estimator(cfg.estimator, num_replicas=len(cfg.seeds),
                            latent_shape=(m.num_latents, m.num_classes),
                            context_dim=sbn.HALF if layer == 0 else width, rng=rng)
            for layer in range(m.layers))
        return model, estimators

    def batch(self, model, data, step, rng, cfg):
        return _images(data, step, rng, cfg)

    def loss(self, model, estimator, x, *, rng, tau, step, cfg):
        loss, info = sbn.training_loss(model, list(estimator), x, rng=rng, tau=tau, step=step)
        return loss, torch.zeros_like(loss.detach()), info

    def curve(self, model, data, split, rng, cfg):
        return {self.curve_metric: sbn.negative_log_likelihood(model, data, split, rng,
                                                               cfg.eval.curve_samples,
                                                               cfg.eval.batch_size, cfg.eval.curve_examples)}

    def final(self, model, data, rng, cfg, progress):
        e = cfg.eval
        return sbn.negative_log_likelihood(model, data, "test", rng, e.iw_samples, e.iw_batch_size,
                                           e.iw_examples, progress=progress)


class SSLTask:
    # y summed exactly, one z per class; logged beside "accuracy" of argmax q(y | x)
    curve_metric = "neg_elbo"
    final_metric = "iw_bound"  # m = eval.iw_samples samples of z per class, y summed exactly
    one_encoder = False

    def validate(self, cfg: Config) -> None:
        if cfg.kl != "analytic":
            raise ValueError("kl: task 'ssl' has the analytic KLs of M2 (kl keeps its default)")
        _vae_keys_at_defaults(cfg, "ssl")
        if cfg.data.name != "mnist":
            raise ValueError(f"data.name: task ssl (M2, Table 2) runs on mnist, not {cfg.data.name}")
        c = cfg.ssl.num_classes
        if cfg.ssl.y != "marginal":          # y: one latent of C classes, a Bernoulli one when C = 2
            check_applies(replace(cfg.estimator, name=cfg.ssl.y), task="ssl", key="ssl.y",
                          lowest_tau=lowest_tau(cfg.tau, cfg.steps),
                          kind="bernoulli" if c == 2 else "categorical", latent_shape=(1, c))

    def estimator_name(self, cfg: Config) -> str:
        return cfg.ssl.y

    def decoder_passes(self, cfg: Config) -> float:
        c = cfg.ssl.num_classes
        if cfg.ssl.y == "marginal":
            return float(c)
        return ESTIMATORS[cfg.ssl.y].decoder_passes(replace(cfg.estimator, name=cfg.ssl.y), (1, c))

    def build(self, cfg: Config, rng: ReplicaGenerator, data: BinarizedImages) -> tuple[nn.Module, nn.Module]:
        s, r = cfg.ssl, len(cfg.seeds)
        labelled = m2.LabelledSet.choose(data.splits["train"], m2.class_labels(data, "train", s), cfg.seeds,
                                         s.num_labelled, s.num_classes,
                                         dynamic=data.binarization == "dynamic")
        model = m2.M2(s.num_classes, s.latent_dim, s.channels, rng, labelled)
        estimator = m2.y_estimator(s.y, cfg.estimator, s.num_classes, r, rng)
        return model, estimator

    def batch(self, model, data, step, rng, cfg):
        """(unlabelled images, labelled images, their labels): the unlabelled batch first, as the
        trainer always drew it, then the labelled one."""
        return (_images(data, step, rng, cfg), *model.labelled.batch(step, cfg.ssl.labelled_batch_size, rng))

    def loss(self, model, estimator, batch, *, rng, tau, step, cfg):
        x, labelled_x, labelled_y = batch
        return m2.training_loss(model, estimator, x, labelled_x, labelled_y, rng=rng, tau=tau, step=step,
                                alpha=cfg.ssl.alpha)

    def curve(self, model, data, split, rng, cfg):
        return m2.evaluate(model, data, split, m2.class_labels(data, split, cfg.ssl), rng,
                           cfg.eval.batch_size, cfg.eval.curve_examples)

    def final(self, model, data, rng, cfg, progress):
        e = cfg.eval
        return m2.importance_weighted_bound(model, data, "test", rng, e.iw_samples, e.iw_batch_size,
                                            e.iw_examples, progress=progress)


TASKS: dict[str, Task] = {"vae": VAETask(), "sbn": SBNTask(), "ssl": SSLTask()}


def check(cfg: Config) -> Config:
    """``cfg`` (valid as a config: vae.config) checked against the rules of its task: what every
    run, sweep point and printed config passes before it is used; raises ``ConfigError``."""
    if cfg.task not in TASKS:
        raise ConfigError(f"task: {cfg.task!r}; allowed: {', '.join(TASKS)}")
    try:
        TASKS[cfg.task].validate(cfg)    # which keys it reads, which estimators apply
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg


def at_equal_cost(cfg: Config, reference: str) -> Config:
    """``cfg`` with the decoder evaluations of the same run with the estimator ``reference``: its
    step counts (``steps``, ``log_every``, ``checkpoint_every``, ``eval.every``) scaled by
    ``passes(reference) / passes(cfg)`` (and ``gradvar_every``; fewer steps for a dearer estimator, more for a
    cheaper one; batch, data, learning rate and temperature schedule stay as they are),
    rounded to whole steps."""
    task = TASKS[cfg.task]
    if reference not in ESTIMATORS:
        raise ValueError(f"equal_cost: unknown estimator {reference!r}; known: {', '.join(ESTIMATORS)}")
    ratio = task.decoder_passes(replace(cfg, estimator=replace(cfg.estimator, name=reference, options={}))) \
        / task.decoder_passes(cfg)
    log_every = max(1, round(cfg.log_every * ratio))
    every = None if cfg.eval.every is None else max(1, round(cfg.eval.every * ratio))
    gradvar = 0 if cfg.gradvar_every == 0 else max(1, round(cfg.gradvar_every * ratio))
    return replace(cfg, steps=max(1, round(cfg.steps * ratio)), log_every=log_every,
                   checkpoint_every=log_every * max(1, cfg.checkpoint_every // cfg.log_every),
                   eval=replace(cfg.eval, every=every), gradvar_every=gradvar)
