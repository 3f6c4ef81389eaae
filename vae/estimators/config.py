"""The estimator's configuration: its name and every hyperparameter any estimator reads."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to a mistyped ``word``, or '': what every
    "unknown name" error of the config adds."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class EstimatorConfig:
    """Which gradient estimator runs, and its hyperparameters (each read only by some)."""

    name: str = "gs"  # a name of the registry, vae.estimators.ESTIMATORS
    num_samples: int = 4  # rloo, vimco: samples per example (k >= 2) for the leave-one-out baselines
    ema_decay: float = 0.9  # reinforce-ema/nvil/darn/muprop: decay of the signal's moving averages
    # reinforce-ema/nvil/darn/muprop: divide the whole encoder
    # gradient by the signal's running std; null = on (the paper's)
    variance_normalisation: bool | None = None
    # nvil: hidden units of the input-dependent baseline MLP; relax, rodeo: of the control-variate network
    baseline_hidden: int = 100
    # st-annealed: slope = min(max_slope, 1 + slope_rate *
    # step); 8e-5 = Chung et al.'s 0.04 per epoch of 500 steps
    slope_rate: float = 8e-5
    max_slope: float = 5.0  # st-annealed: the slope's ceiling (Chung et al. 2016 used 5)
    max_states: int = 4096  # exact: refuse latent spaces with more than this many K^N states
    rao_samples: int = 10  # gumbel-rao: conditional Gumbel draws M averaged in the backward pass
    # darn: Taylor point, "uniform" (1/K; Gregor et al.'s 1/2) or "mean" (softmax(logits))
    darn_point: str = "uniform"
    # settings the estimator declares itself (its Options dataclass)
    options: dict[str, Any] = field(default_factory=dict)

    def normalises(self) -> bool:
        """Whether variance normalisation is on (null means on, as in the paper)."""
        return True if self.variance_normalisation is None else self.variance_normalisation

    def validate(self, known: Collection[str]) -> None:
        """Raise ``ValueError`` naming the first invalid field as ``estimator.<field>``; ``known``:
        the registered names (vae.estimators.ESTIMATORS, with the estimators of loaded plugins)."""
        if self.name not in known:
            raise ValueError(f"estimator.name: unknown {self.name!r}{did_you_mean(self.name, known)}; "
                             f"allowed: {', '.join(known)} (an estimator of your own: "
                             f"name its module in `plugins`)")
        if self.num_samples < 2:
            raise ValueError(f"estimator.num_samples: must be an integer >= 2, "
                             f"got {self.num_samples}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"estimator.ema_decay: must be in [0, 1), got {self.ema_decay}")
        if self.baseline_hidden < 1:
            raise ValueError(f"estimator.baseline_hidden: must be an integer >= 1, "
                             f"got {self.baseline_hidden}")
        if not self.slope_rate >= 0.0:
            raise ValueError(f"estimator.slope_rate: must be >= 0, got {self.slope_rate}")
        if not self.max_slope >= 1.0:
            raise ValueError(f"estimator.max_slope: must be >= 1, got {self.max_slope}")
        if self.rao_samples < 1:
            raise ValueError(f"estimator.rao_samples: must be an integer >= 1, got {self.rao_samples}")
        if self.darn_point not in ("uniform", "mean"):
            raise ValueError(f"estimator.darn_point: {self.darn_point!r}; allowed: uniform, mean")
        if self.max_states < 1:
            raise ValueError(f"estimator.max_states: must be an integer >= 1, "
                             f"got {self.max_states}")
