"""Gradient estimators for discrete latents: one registry from name to class, one builder.

Every estimator follows the contract of :mod:`vae.estimators.base`; its constructor takes the
config and the run's dimensions, so :func:`build_estimator` needs no per-name dispatch. The
registry, :data:`ESTIMATORS`, is the one list of names, and each class declares what is true of it
(where it applies, bias, cost, family): config validation (:func:`check_applies`, whose errors
list the estimators that do apply, :func:`applicable`), the trainer, the sweep runner, the tables
and figures (:func:`column_order`) and the tests read those declarations. An estimator of your own
joins it with :func:`register` in a module that the run's config names in ``plugins`` (README
"Your own estimator").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vae.estimators.antithetic import ARM, DisARM
from vae.estimators.base import FAMILIES, Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.control_variates import RELAX, REBAR
from vae.estimators.decoupled import DecoupledSTGumbelSoftmax
from vae.estimators.double_cv import DoubleControlVariate
from vae.estimators.exact import Exact
from vae.estimators.gapped import GappedStraightThrough
from vae.estimators.indecater import IndeCateR
from vae.estimators.relaxed import (GumbelRao, GumbelSoftmax, ReinMax, SlopeAnnealedST, StraightThrough,
                                   STGumbelSoftmax)
from vae.estimators.score_function import NVIL, RLOO, VIMCO, Reinforce, ReinforceEMA
from vae.estimators.taylor import DARN, MuProp
from vae.estimators.unordered_set import UnorderedSet
from vae.estimators.zgr import ZGR
from vae.replicas import ReplicaGenerator

ESTIMATORS: dict[str, type[Estimator]] = {
    "exact": Exact,
    "gs": GumbelSoftmax,
    "st-gs": STGumbelSoftmax,
    "st": StraightThrough,
    "st-annealed": SlopeAnnealedST,
    "reinforce": Reinforce,
    "reinforce-ema": ReinforceEMA,
    "nvil": NVIL,
    "rloo": RLOO,
    "darn": DARN,
    "muprop": MuProp,
    "gumbel-rao": GumbelRao,
    "reinmax": ReinMax,
    "arm": ARM,
    "disarm": DisARM,
    "vimco": VIMCO,
    "rebar": REBAR,
    "relax": RELAX,
    "indecater": IndeCateR,
    "zgr": ZGR,
    "gapped-st": GappedStraightThrough,
    "decoupled-st-gs": DecoupledSTGumbelSoftmax,
    "double-cv": DoubleControlVariate,
    "unordered-set": UnorderedSet,
}


def register(name: str) -> Callable[[type[Estimator]], type[Estimator]]:
    """Class decorator: add an :class:`Estimator` subclass to the registry as ``name``::

        @register("my-estimator")
        class MyEstimator(Estimator): ...
    """
    def add(cls: type[Estimator]) -> type[Estimator]:
        if not (isinstance(cls, type) and issubclass(cls, Estimator)):
            raise TypeError(f"register({name!r}): {cls!r} is not a subclass of vae.estimators.Estimator")
        if ESTIMATORS.get(name, cls) is not cls:
            raise ValueError(f"register({name!r}): the name is taken by {ESTIMATORS[name].__qualname__}")
        ESTIMATORS[name] = cls
        return cls
    return add


def applicable(*, task: str, kind: str, lowest_tau: float, latent_shape: tuple[int, int],
               cfg: EstimatorConfig | None = None) -> list[str]:
    """The registered estimators that can run on ``task`` with latents of ``kind`` and ``(N, K)``
    at a schedule reaching ``lowest_tau`` (their :meth:`Estimator.check`, at ``cfg``'s shared settings;
    ``cfg``'s options are its estimator's, the others are checked at their defaults)."""
    names = []
    cfg = cfg or EstimatorConfig()
    for name, cls in ESTIMATORS.items():
        try:
            cls.check(replace(cfg, name=name, options=cfg.options if name == cfg.name else {}), task=task, kind=kind,
                      lowest_tau=lowest_tau, latent_shape=latent_shape)
        except ValueError:
            continue
        names.append(name)
    return names


def check_applies(cfg: EstimatorConfig, *, task: str, kind: str, lowest_tau: float,
                  latent_shape: tuple[int, int], key: str = "estimator.name") -> None:
    """Raise ``ValueError`` in one line naming ``key`` if ``cfg.name`` cannot run there, listing the
    estimators that can (computed from the declarations, :func:`applicable`)."""
    try:
        ESTIMATORS[cfg.name].check(cfg, task=task, kind=kind, lowest_tau=lowest_tau, latent_shape=latent_shape)
    except ValueError as err:
        others = [n for n in applicable(task=task, kind=kind, lowest_tau=lowest_tau, latent_shape=latent_shape,
                                        cfg=cfg) if n != cfg.name]
        raise ValueError(f"{key}: {cfg.name!r} {err}; for task {task} with {kind} latents use "
                         f"{', '.join(others) or 'none of the registered estimators'}") from None


def column_order(name: str) -> tuple:
    """Sort key of an estimator in tables and figures: the paper's seven in its Table 1's order,
    then by family (:data:`vae.estimators.base.FAMILIES`), year and name."""
    cls = ESTIMATORS.get(name)
    if cls is None:
        return (2, len(FAMILIES), 0, name)
    if cls.paper_column is not None:
        return (0, cls.paper_column, 0, name)
    family = FAMILIES.index(cls.family) if cls.family in FAMILIES else len(FAMILIES)
    return (1, family, cls.year, name)


def display_name(name: str) -> str:
    """How tables and figures write the estimator ``name`` ("SF", "Gumbel-S.", or the name itself)."""
    return ESTIMATORS[name].display_name or name


def build_estimator(cfg: EstimatorConfig | str, *, latent_shape: tuple[int, int], num_replicas: int = 1,
                    context_dim: int = 0, rng: ReplicaGenerator | None = None) -> Estimator:
    """Validate ``cfg`` and build its estimator: ``build_estimator("rloo", latent_shape=(20, 10))``.

    Args:
        cfg: the estimator's config, or just its name (every other setting at its default).
        latent_shape: ``(N, K)``.
        num_replicas: R, the leading axis of every buffer and parameter (1 for plain tensors).
        context_dim: D, the feature size of the ``context`` the estimator is called with (nvil).
        rng: per-replica generators that initialise the estimator's parameters, if it has any
            (default: seed 0 for every replica).
    """
    cfg = EstimatorConfig(name=cfg) if isinstance(cfg, str) else cfg
    cfg.validate(ESTIMATORS)
    if len(latent_shape) != 2 or min(latent_shape) < 1 or num_replicas < 1 or context_dim < 0:
        raise ValueError(f"build_estimator: latent_shape must be (N, K) with N, K >= 1, num_replicas >= 1 and "
                         f"context_dim >= 0, got {latent_shape}, {num_replicas}, {context_dim}")
    rng = rng if rng is not None else ReplicaGenerator([0] * num_replicas)
    return ESTIMATORS[cfg.name](cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                                context_dim=context_dim, rng=rng)


__all__ = ["ESTIMATORS", "Estimator", "EstimatorConfig", "Objective", "applicable", "build_estimator",
           "check_applies", "column_order", "display_name", "register"]
