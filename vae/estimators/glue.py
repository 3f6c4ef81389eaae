"""The glue between a task's logits and an estimator: the same for the VAE, the SBN and M2.

    logits, surrogate, info = run_estimator(estimator, logits, objective, rng=rng, tau=tau, step=step,
                                            context=x)

does what every task must do around the estimator contract (vae/estimators/base.py), once:

* variance normalisation: the logits' gradient is divided by the estimator's
  ``encoder_gradient_scale()`` (read just before the estimator is called), so the *whole* encoder
  gradient of the training loss built on the returned ``logits`` (the estimator's term and a KL
  computed from them alike) is divided, and the decoder's is not;
* the objective is built on the logits the estimator sees (``objective(logits)`` returns f: a
  multi-sample bound's f reads ``log q(z | x)`` from them);
* the cost: every per-example loss f (or its mean-field version) returns is counted, and
  ``info["decoder_evals"]`` is the decoder passes per example (``[R]``, Python numbers: no device
  sync). A network of several stochastic layers shares one :class:`PassCounter` between its
  nested calls and reads the count at the top; an upper layer's f, which runs the layers below
  (counted there), is not counted itself (``nested=True``), its mean-field version is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.signal import divide_gradient
from vae.numerics.gumbel import Generator


class PassCounter:
    """The decoder passes of one training loss: the per-example losses its objectives return."""

    def __init__(self) -> None:
        self.evaluated: list[int] = []     # loss.numel() per call of f or of its mean-field version

    def __call__(self, f: Objective, nested: bool = False) -> Objective:
        """``f`` counting what it returns (not when ``nested``: its passes are counted below), and
        its ``mean_field`` version, if it has one, counting what that returns."""
        def counted(z: Tensor) -> Tensor:
            loss = f(z)
            if not nested:
                self.evaluated.append(loss.numel())
            return loss

        if hasattr(f, "mean_field"):
            counted.mean_field = self(f.mean_field)
        return counted

    def per_example(self, surrogate: Tensor) -> Tensor:
        """``[R]``: the counted losses over the ``[R, B]`` examples of ``surrogate``."""
        return torch.full(surrogate.shape[:1], sum(self.evaluated) / surrogate.numel(),
                          device=surrogate.device)


def run_estimator(estimator: Estimator, logits: Tensor, objective: Callable[[Tensor], Objective], *,
                  rng: Generator, tau: float | Tensor, step: int, context: Tensor | None,
                  counter: PassCounter | None = None,
                  nested: bool = False) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """``(logits, surrogate [R, B], info)`` of ``estimator`` on ``logits [R, B, N, K]`` with the
    objective ``objective(logits)``: the returned logits carry the divided gradient (module
    docstring); ``info["decoder_evals"]`` is set when this call owns the count (no ``counter``);
    ``nested``: f runs stochastic layers below, whose passes they count."""
    scale = estimator.encoder_gradient_scale()
    if scale is not None:
        logits = divide_gradient(logits, scale)
    own = counter is None
    counter = PassCounter() if counter is None else counter
    surrogate, info = estimator(logits, counter(objective(logits), nested), rng=rng, tau=tau, step=step,
                                context=context)
    if own:
        info["decoder_evals"] = counter.per_example(surrogate)
    return logits, surrogate, info
