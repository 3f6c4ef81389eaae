"""What the two estimators built on a first-order Taylor expansion of f, ``muprop`` and ``darn``,
share: :func:`gradient_at`, f and its derivative at a point that need not be one-hot.

Both read f's mean-field version (:func:`vae.estimators.base.mean_field`: f itself for the VAE;
for a network with stochastic layers below, its means propagated through them, the point Gu et
al. expand a multi-layer network at). Both centre the signal by a moving average
(:mod:`vae.estimators.signal`) and, with the paper's variance normalisation, have the trainer divide the whole
encoder gradient (MuProp's analytic term and the KL's included) by the signal's running std. ``f`` must treat
examples independently (``df(p)_b / dp_b'`` = 0 for b != b'), as per-example losses do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.base import Objective


def gradient_at(point: Tensor, f: Objective) -> tuple[Tensor, Tensor]:
    """``(f(point) [R, B], df/dz(point) [R, B, N, K])`` at a detached point, both detached."""
    with torch.enable_grad():
        point = point.detach().requires_grad_(True)
        value = f(point)
        (grad,) = torch.autograd.grad(value.sum(), point)
    return value.detach(), grad
