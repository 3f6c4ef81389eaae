"""The estimator's configuration: its name, the shared sample count and its own options."""

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
    """Which gradient estimator runs: its name, the samples per example that many estimators and
    the benchmarks' equal-cost cells share, and the settings the estimator declares itself."""

    name: str = "gs"  # a name of the registry, vae.estimators.ESTIMATORS
    # samples per example of the multi-sample estimators (rloo, vimco, arms, double-cv, rodeo,
    # unordered-set: k >= 2); a benchmark sets it for a whole cell, so every estimator takes it
    num_samples: int = 4
    # the settings the estimator declares in its Options dataclass, estimator.options.<field>
    # (vae/estimators/README.md "Options"; `python -m experiments.train --keys` lists them)
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self, known: Collection[str]) -> None:
        """Raise ``ValueError`` naming the first invalid field as ``estimator.<field>``; ``known``:
        the registered names (vae.estimators.ESTIMATORS, with the estimators of loaded plugins).
        The options are their estimator's to check (:meth:`vae.estimators.base.Estimator.options_of`)."""
        if self.name not in known:
            raise ValueError(f"estimator.name: unknown {self.name!r}{did_you_mean(self.name, known)}; "
                             f"allowed: {', '.join(known)} (an estimator of your own: "
                             f"name its module in `plugins`)")
        if self.num_samples < 2:
            raise ValueError(f"estimator.num_samples: must be an integer >= 2, "
                             f"got {self.num_samples}")


#: The settings :class:`EstimatorConfig` held for some estimators until each declared its own
#: (December 2026), with the defaults they had: config files and records from before name them at
#: the section's top level (``estimator.ema_decay``). Reading one, the config moves such a key into
#: ``estimator.options`` where the estimator declares it, drops it where it is at this default
#: (every old record carries all of them), and refuses it otherwise (vae.config.translate_estimator).
FORMER_SHARED_SETTINGS: dict[str, Any] = {
    "ema_decay": 0.9, "variance_normalisation": None, "baseline_hidden": 100, "slope_rate": 8e-5,
    "max_slope": 5.0, "max_states": 4096, "rao_samples": 10, "darn_point": "uniform"}
