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

from dataclasses import replace

from vae.estimators.base import FAMILIES, Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.registry import ESTIMATORS, register
from vae.numerics.replicas import ReplicaGenerator

# The built-in estimators, one file each, registered by their own ``@register`` as they are imported:
# this order is the registry's.
from vae.estimators import (exact, gumbel_softmax, st_gumbel_softmax, straight_through,  # noqa: E402,F401
                            st_annealed, reinforce, reinforce_ema, nvil, rloo, darn, muprop, gumbel_rao,
                            reinmax, arm, disarm, arms, vimco, rebar, relax, indecater, zgr, gapped,
                            decoupled, double_cv, rodeo, unordered_set, redge, redge_cov,
                            reindge)


def applicable(*, task: str, kind: str, lowest_tau: float, latent_shape: tuple[int, int],
               cfg: EstimatorConfig | None = None) -> list[str]:
    """The registered estimators that can run on ``task`` with latents of ``kind`` and ``(N, K)``
    at a schedule reaching ``lowest_tau`` (their :meth:`Estimator.check`, at ``cfg``'s shared settings;
    ``cfg``'s options are its estimator's, the others are checked at their defaults)."""
    names = []
    cfg = cfg or EstimatorConfig()
    for name, cls in ESTIMATORS.items():
        try:
            cls.check(replace(cfg, name=name, options=cfg.options if name == cfg.name else {}), task=task,
                      kind=kind, lowest_tau=lowest_tau, latent_shape=latent_shape)
        except ValueError:
            continue
        names.append(name)
    return names


def check_applies(cfg: EstimatorConfig, *, task: str, kind: str, lowest_tau: float,
                  latent_shape: tuple[int, int], key: str = "estimator.name") -> None:
    """Raise ``ValueError`` in one line naming ``key`` if ``cfg.name`` cannot run there, listing the
    estimators that can (computed from the declarations, :func:`applicable`)."""
    try:
        ESTIMATORS[cfg.name].check(cfg, task=task, kind=kind, lowest_tau=lowest_tau,
                                   latent_shape=latent_shape)
    except ValueError as err:
        others = [n
                  for n in applicable(task=task, kind=kind, lowest_tau=lowest_tau, latent_shape=latent_shape,
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


def catalogue() -> str:
    """The markdown table of every registered estimator, in column order, from its declarations:
    name, :attr:`~Estimator.summary`, biased (:attr:`~Estimator.unbiased` and
    :attr:`~Estimator.bias_note`) and :attr:`~Estimator.reference`, each as the class itself
    declares it (a summary it lacks: its docstring's first line; vae/estimators/README.md
    "Estimators" shows it; ``python -m experiments.catalogue`` writes it there)."""
    rows = ["| name | what it is | biased? | reference |", "|---|---|---|---|"]
    for name in sorted(ESTIMATORS, key=column_order):
        cls = ESTIMATORS[name]
        own = vars(cls)            # a subclass's row says what it declares, not its parent's words
        summary = own.get("summary") or (cls.__doc__ or "").strip().split("\n")[0]
        biased = (("no" if cls.unbiased else "yes")
                  + (f" ({own['bias_note']})" if own.get("bias_note") else ""))
        cells = [f"`{name}`", summary, biased, own.get("reference") or "—"]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


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
        raise ValueError(f"build_estimator: latent_shape must be (N, K) with N, K >= 1, num_replicas >= 1 "
                         f"and context_dim >= 0, got {latent_shape}, {num_replicas}, {context_dim}")
    rng = rng if rng is not None else ReplicaGenerator([0] * num_replicas)
    return ESTIMATORS[cfg.name](cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                                context_dim=context_dim, rng=rng)


__all__ = ["ESTIMATORS", "Estimator", "EstimatorConfig", "Objective", "applicable", "build_estimator",
           "check_applies", "column_order", "display_name", "register"]
