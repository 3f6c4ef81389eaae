"""The estimator contract shared by every gradient estimator of the suite.

An estimator turns the encoder's logits and a per-example objective ``f`` into a *surrogate*
whose value is the objective at the sample(s) drawn and whose gradient, for the encoder (through
``logits``) and for ``f``'s own parameters (the decoder), is the estimator's gradient estimate of

    d/dtheta E_{z ~ q(z | x)} [ f(z) ],   q(z | x) = prod_n Categorical(z_n; softmax(logits_n)).

Shapes (R = replicas/seeds, B = batch, N = latent variables, K = classes):

    logits     [R, B, N, K]   unnormalised log-probabilities; a Bernoulli latent is the K = 2
                              categorical with logits (0, l), so sigmoid(l) = P(z = 1)
    f(z)       z [R, *S, B, N, K] -> [R, *S, B]; an estimator may add sample axes S after R
                              (f broadcasts them) and may call f on non-one-hot points
    surrogate  [R, B]         the training loop adds the analytic KL and calls backward on the sum

Training-loop code never needs to know which estimator runs::

    surrogate, info = estimator(logits, f, rng=rng, tau=tau, step=step, context=x)

and on plain tensors, with no replica axis and torch's global generator::

    surrogate, info = estimator(logits_bnk, f)      # logits [B, N, K], f(z [..., B, N, K]) -> [..., B]

Estimators with parameters of their own (baseline networks) are ``nn.Module`` children trained
by the run's optimiser: their own loss enters the surrogate as ``aux - aux.detach()``, which adds
its gradient without changing the surrogate's value. State such as moving averages lives in
buffers, so it is checkpointed with ``state_dict()``.

Two hooks let an estimator change what the trainer does around it (``vae.models.objectives``):

* :meth:`Estimator.encoder_gradient_scale` -- variance normalisation (Mnih & Gregor 2014): the
  *whole* encoder gradient of the training loss (the estimator's score term and the analytic
  KL's encoder gradient alike) is divided by the learning signal's running std; the decoder's is
  not. The estimate of ``E_q[f]``'s gradient returned by the surrogate itself stays unscaled.
* :meth:`Estimator.logit_scale` -- the slope ``a`` of slope-annealed ST: the posterior is
  ``softmax(a * logits)`` in sampling, in the backward pass, in the KL and in evaluation.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor, nn

from vae.estimators.config import EstimatorConfig
from vae.numerics.gumbel import Generator, widen
from vae.numerics.replicas import ReplicaGenerator

Objective = Callable[[Tensor], Tensor]
"""``f(z)``: z ``[R, *S, B, N, K]`` -> per-example loss ``[R, *S, B]`` (lower is better)."""

KINDS = ("categorical", "bernoulli")   # latent kinds: K classes, or K = 2 with logits (0, l)
TASKS = ("vae", "sbn", "ssl")          # the tasks of vae.training.tasks.TASKS
#: Families, in the order tables and figures group the estimators the paper did not compare.
FAMILIES = ("score function", "Taylor", "control variate", "antithetic", "relaxation", "enumeration", "other")


def mean_field(f: Objective) -> Objective:
    """The deterministic version of ``f`` that Taylor expansions (muprop, darn) differentiate:
    ``f.mean_field`` when f has one (a network with stochastic layers below propagates their means
    through them, vae/models/sbn.py), else f itself."""
    return getattr(f, "mean_field", f)


def refuse(ok: bool, option: str, allowed: str, value: Any) -> None:
    """Unless ``ok``, raise the one-line ``ValueError`` of an option's rule: ``estimator.options.<option>:
    must be <allowed>, got <value>`` (what an :attr:`Estimator.Options`' ``__post_init__`` calls)."""
    if not ok:
        raise ValueError(f"estimator.options.{option}: must be {allowed}, got {value!r}")


class Estimator(nn.Module, abc.ABC):
    """Base class: subclasses implement :meth:`estimate` (see :meth:`forward` for its arguments).

    A subclass declares everything the rest of the suite needs to know about it as class
    attributes and class methods (config validation, the tables, the figures and the tests read
    them; no list of names elsewhere): where it applies (:attr:`kinds`, :attr:`tasks`,
    :attr:`min_tau`, :meth:`check`), what it is (:attr:`unbiased`, :attr:`multi_sample_bound`,
    :attr:`family`, :attr:`year`, :attr:`paper_column`, :attr:`reference`, :attr:`summary`), what it costs
    (:meth:`decoder_passes`) and its own settings (:attr:`Options`).
    """

    #: The estimator's name in tables and figure legends ("SF", "Gumbel-S."); empty: its registry name.
    display_name: str = ""
    #: The latent kinds it applies to (:data:`KINDS`): the antithetic pairs exist for binary units only.
    kinds: frozenset[str] = frozenset(KINDS)
    #: The tasks it applies to (:data:`TASKS`).
    tasks: frozenset[str] = frozenset(TASKS)
    #: Whether it reads the relaxation temperature tau (a relaxed sample or Jacobian: ``gs``,
    #: ``st-gs``, ``gumbel-rao``, ...): then tau must be > 0, and the progress bar shows it.
    reads_tau: bool = False
    #: The lowest relaxation temperature it accepts, or None: any (``reinmax``: 1).
    min_tau: float | None = None
    #: Its family (:data:`FAMILIES`): how tables order and figures colour the later estimators.
    family: str = "other"
    #: The year of its paper (tables order a family's members by it); 0: unpublished.
    year: int = 0
    #: Its column in Table 1 of Jang et al. (2017), 0-6 (SF, DARN, MuProp, ST, Annealed ST,
    #: Gumbel-S., ST Gumbel-S.), or None: the paper did not compare it. Those seven come first.
    paper_column: int | None = None
    #: The paper that defines it (authors, title, venue and year), for the catalogue.
    reference: str = ""
    #: What it computes, in one markdown sentence, for the catalogue (vae/estimators/README.md,
    #: generated by ``python -m experiments.catalogue``); empty: its docstring's first line.
    summary: str = ""
    #: What qualifies the catalogue's "biased?" cell, the yes or no of :attr:`unbiased` ("up to the
    #: variance-normalisation scale"), or empty.
    bias_note: str = ""
    #: Whether the training loss may use the relaxed Monte Carlo KL (``kl=relaxed``): only an
    #: estimator that hands f the relaxed sample itself (``gs``).
    relaxed_kl: bool = False
    #: Its evaluations of f per example and step: a number (ARM's pair: 2), or ``"num_samples"``:
    #: one per sample of ``estimator.num_samples`` (RLOO: k); an estimator whose cost depends on
    #: more overrides :meth:`decoder_passes` instead (IndeCateR: N (K - 1) + 1 per sample).
    passes: int | Literal["num_samples"] = 1
    #: Its own settings, beyond the name and ``num_samples`` of :class:`EstimatorConfig`: a
    #: dataclass whose fields, each with its comment (the catalogue and ``--keys`` print it), are
    #: set as ``estimator.options.<field>`` and typed like every config key; a rule beyond the type
    #: is :attr:`positive_options` or the dataclass's ``__post_init__`` (:func:`refuse`). The
    #: estimator reads them as ``self.options`` (:meth:`options_of`). None: it has none.
    Options: type | None = None
    #: The fields of :attr:`Options` that must be > 0 (:meth:`options_of` refuses them otherwise).
    positive_options: tuple[str, ...] = ()

    #: Whether the estimate's mean equals the true gradient of ``E_q[f(z)]``.
    unbiased: bool = False
    #: Whether every point it hands f is an exact one-hot state (a sample of q, or a neighbour of
    #: one): what the straight-through estimators promise their forward pass. Not for a relaxed
    #: point (``gs``; REBAR's control variate) or a Taylor point at the mean (``muprop``, ``darn``).
    one_hot_forward: bool = True
    #: Whether the objective is a multi-sample bound: then f must be the whole negative log-weight
    #: ``-log p(x, z) + log q(z | x)`` (differentiable in the logits) and the surrogate is the
    #: negative bound, so the trainer adds no KL (``vimco``).
    multi_sample_bound: bool = False

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        """The registry's one constructor: it keeps the settings and dimensions (``self.cfg``, R =
        ``self.num_replicas``, ``(N, K)`` = ``self.latent_shape``, D = ``self.context_dim``) and refuses
        K > 2 for an estimator whose :attr:`kinds` are Bernoulli only; an estimator with state or
        parameters of its own extends it (``rng`` initialises them)."""
        super().__init__()
        if latent_shape[1] != 2 and "categorical" not in self.kinds:
            raise ValueError(f"estimator.name: {cfg.name!r} is for Bernoulli latents (K = 2), "
                             f"got K = {latent_shape[1]}")
        self.cfg, self.num_replicas, self.latent_shape, self.context_dim = (cfg, num_replicas, latent_shape,
                                                                            context_dim)
        self.options = self.options_of(cfg)

    @classmethod
    def options_of(cls, cfg: EstimatorConfig) -> Any:
        """Its :attr:`Options` at ``cfg.options`` (the others at their defaults), or None where it
        declares none; ``ValueError`` naming ``estimator.options.<field>`` for a field it lacks or a
        value its rules refuse."""
        declared = {f.name for f in dataclasses.fields(cls.Options)} if cls.Options is not None else set()
        if (unknown := sorted(set(cfg.options) - declared)):
            raise ValueError(f"estimator.options.{unknown[0]}: {cfg.name!r} has no such option; allowed: "
                             f"{', '.join(sorted(declared)) or 'none'}")
        if cls.Options is None:
            return None
        options = cls.Options(**cfg.options)
        for name in cls.positive_options:
            value = getattr(options, name)
            refuse(value > 0, name, "> 0", value)
        return options

    @classmethod
    def decoder_passes(cls, cfg: EstimatorConfig, latent_shape: tuple[int, int]) -> float:
        """Its cost: evaluations of f (decoder passes) per example and step, for ``cfg`` and ``(N, K)``
        (what the trainer then counts and logs as ``decoder_evals``; tested for every estimator)."""
        return float(cfg.num_samples if cls.passes == "num_samples" else cls.passes)

    @classmethod
    def check(cls, cfg: EstimatorConfig, *, task: str, kind: str, lowest_tau: float,
              latent_shape: tuple[int, int]) -> None:
        """Raise ``ValueError`` with a one-line reason (no key: the caller names it) if the estimator
        cannot run on ``task`` with latents of ``kind`` and shape ``(N, K)``, at a temperature schedule
        that reaches ``lowest_tau``. Here: :attr:`tasks`, :attr:`kinds` and :attr:`min_tau`; an
        estimator with a rule of its own extends it (its options' own rules: :meth:`options_of`)."""
        if task not in cls.tasks:
            raise ValueError(f"is for task {' or '.join(sorted(cls.tasks))}, not {task}")
        if kind not in cls.kinds:
            raise ValueError(f"is for {' or '.join(sorted(cls.kinds))} latents, not {kind} ones")
        if cls.min_tau is not None and lowest_tau < cls.min_tau:
            raise ValueError(f"needs tau >= {cls.min_tau:g} throughout, "
                             f"but the schedule reaches {lowest_tau:g}")

    def encoder_gradient_scale(self) -> Tensor | None:
        """``[R]`` divisor of the whole encoder gradient of the training loss, or None (no scaling).

        It must not depend on the coming draw (it is read before the estimator is called)."""
        return None

    def logit_scale(self, step: int | Tensor) -> float | Tensor:
        """The factor ``a`` on the encoder's logits at ``step``: ``q = softmax(a * logits)`` (1 here).
        The compiled step (vae/training/compiled_step.py) passes the step as a device tensor, so that a
        slope that changes with it gives a tensor the graph reads, not a number it would be
        recompiled for."""
        return 1.0

    def forward(self, logits: Tensor, f: Objective, *, rng: Generator = None, tau: float | Tensor = 1.0,
                step: int = 0, context: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Return ``(surrogate [R, B], info)``; ``info`` holds detached tensors for logging.

        Any float dtype and device: f is called with z in the logits' dtype and device, and the
        surrogate comes back in the logits' dtype, or float32 for narrower ones (a loss of ~100 nats
        in bfloat16 would round at 0.5 nats); state stays in the estimator's own dtype.

        Args:
            logits: ``[R, B, N, K]`` encoder output, or ``[B, N, K]`` without a replica axis (then
                ``f`` takes ``[..., B, N, K]`` and the surrogate is ``[B]``).
            f: per-example objective, see the module docstring.
            rng: where random draws come from: per-replica generators, a torch.Generator, or
                None (torch's global generator).
            tau: relaxation temperature (used by relaxation-based estimators only).
            step: global training step (for estimators with their own schedules).
            context: ``[R, B, D]`` (or ``[B, D]``) the encoder's input, for input-dependent
                baselines (``nvil`` needs it).
        """
        self._check_inputs(logits, tau)
        if logits.dim() == 3:                                  # no replica axis: add one of size 1
            inner = f
            surrogate, info = self.forward(logits.unsqueeze(0), lambda z: inner(z.squeeze(0)).unsqueeze(0),
                                           rng=rng, tau=tau, step=step,
                                           context=None if context is None else context.unsqueeze(0))
            return surrogate.squeeze(0), {k: v.squeeze(0) for k, v in info.items()}
        surrogate, info = self.estimate(logits, f, rng=rng, tau=tau, step=step, context=context)
        return surrogate.to(widen(logits).dtype), info

    def _check_inputs(self, logits: Tensor, tau: float | Tensor) -> None:
        """What the config path checks, for a call on plain tensors: one ``ValueError`` naming the
        argument. Shapes and dtypes only, and tau when it is a number (a tensor tau is not read
        back: no host synchronisation in the training step)."""
        name, (n, k) = type(self).__name__, self.latent_shape
        if not isinstance(logits, Tensor) or not logits.is_floating_point():
            raise ValueError(f"logits: {name} needs a floating-point tensor, got "
                             f"{getattr(logits, 'dtype', type(logits).__name__)}")
        if logits.dim() not in (3, 4) or tuple(logits.shape[-2:]) != (n, k):
            raise ValueError(f"logits: {name} needs [B, {n}, {k}] or [R, B, {n}, {k}] (batch, latents, "
                             f"classes: the latent_shape it was built with), got shape {tuple(logits.shape)}")
        if self.reads_tau and not isinstance(tau, Tensor) and not (0 < tau < math.inf):
            raise ValueError(f"tau: {name} reads the temperature, which must be > 0 and finite, got {tau}")

    @abc.abstractmethod
    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator, tau: float | Tensor, step: int,
                 context: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`forward` on ``[R, B, N, K]`` logits: what each estimator implements."""
