"""Relaxation and straight-through estimators: ``gs``, ``st-gs``, ``st``, ``st-annealed``,
``gumbel-rao``, ``reinmax``.

All backpropagate through a sample instead of weighting a score; none is unbiased for the
discrete objective ``E_q[f(z)]`` in general.

* ``gs`` (Jang et al. 2017; Maddison et al. 2017): ``y = softmax((logits + g) / tau)``, surrogate
  ``f(y)``: the exact gradient of the *relaxed* objective ``E_g[f(y)]``, evaluated off the one-hot
  vertices.
* ``st-gs``: the forward pass uses ``one_hot(argmax y)`` (an exact sample of q), the backward pass
  the gradient of ``y``.
* ``st`` (Bengio et al. 2013, as in Jang et al.): forward an exact one-hot sample ``z ~ q``,
  backward the gradient of ``softmax(logits)``: ``z + (p - p.detach())`` (exactly z forward).
* ``st-annealed`` (Chung et al. 2016): ``st`` on the sharpened posterior ``softmax(a * logits)``,
  ``a = min(max_slope, 1 + slope_rate * step)``. The slope is applied by the model
  (:meth:`Estimator.logit_scale`), so the sample, the straight-through gradient, the KL and the
  evaluation all use one distribution.
* ``gumbel-rao`` (Paulus et al. 2021): ``st-gs`` with its backward pass averaged over M Gumbel
  perturbations drawn *given* the hard sample D: ``D + s - s.detach()``,
  ``s = mean_m softmax((log pi + G_m) / tau)``, ``G_m ~ G | argmax = D``
  (:func:`vae.gumbel.conditional_gumbel`), the G_m held fixed (detached) as in the authors'
  reference implementations. It is E[st-gs gradient | D]: the same mean, less variance, one
  decoder evaluation (the M draws only enter the softmax).
* ``reinmax`` (Liu et al. 2023): forward an exact one-hot sample D, backward the gradient of
  ``pi_2 = 2 pi_1 - pi_0 / 2`` with ``pi_0 = softmax(logits)`` and
  ``pi_1 = (D + softmax(logits / tau)) / 2`` (differentiated as ``softmax`` of logits shifted by a
  constant): Heun's method where straight-through is Euler's. At tau = 1 it is exact for f
  quadratic in z; it needs tau >= 1 (below, its bias grows; its authors' code refuses tau < 1).
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.sampling import sample_one_hot
from vae.gumbel import (Generator, conditional_gumbel, gumbel_noise, gumbel_softmax, log_softmax, one_hot, softmax,
                        widen)


class GumbelSoftmax(Estimator):
    """``gs``: surrogate ``f(softmax((logits + g) / tau))`` with Gumbel noise g."""

    display_name = "Gumbel-S."
    reads_tau = True
    family = "relaxation"
    year = 2017
    paper_column = 5
    relaxed_kl = True
    reference = ("Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017; Maddison, "
                 "Mnih & Teh, The Concrete Distribution, ICLR 2017")
    hard = False

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # no per-step host sync: tau is validated with the config, losses are checked every
        # log_every steps by the training loop
        z = gumbel_softmax(logits, tau, hard=self.hard, generator=rng, check=False)   # [R, B, N, K]
        loss = f(z)                                             # [R, B]
        return loss, {"loss": loss.detach().mean(-1)}


class STGumbelSoftmax(GumbelSoftmax):
    """``st-gs``: forward ``one_hot(argmax(logits + g))``, backward the gradient of ``gs``."""

    display_name = "ST Gumbel-S."
    paper_column = 6
    relaxed_kl = False
    reference = "Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017"
    hard = True


class StraightThrough(Estimator):
    """``st``: forward an exact one-hot sample, backward the gradient of ``softmax(logits)``."""

    display_name = "ST"
    family = "relaxation"
    year = 2013
    paper_column = 3
    reference = ("Bengio, Léonard & Courville, Estimating or Propagating Gradients Through Stochastic Neurons "
                 "for Conditional Computation, arXiv 1308.3432, 2013")

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        probs = softmax(widen(logits))            # [R, B, N, K]
        z = sample_one_hot(logits, rng)                         # [R, B, N, K]
        loss = f((z + (probs - probs.detach())).to(logits.dtype))  # [R, B], forward exactly z
        info = {"loss": loss.detach().mean(-1),
                "slope": loss.new_zeros(loss.shape[:1]) + self.logit_scale(step)}
        return loss, info


class SlopeAnnealedST(StraightThrough):
    """``st-annealed``: ``st`` on ``softmax(a * logits)``, ``a = min(max_slope, 1 + slope_rate * step)``."""

    display_name = "Annealed ST"
    tasks = frozenset({"vae", "sbn"})   # it sharpens the posterior itself, which M2's q(y | x) is not built for
    year = 2016
    paper_column = 4
    reference = "Chung, Ahn & Bengio, Hierarchical Multiscale Recurrent Neural Networks, ICLR 2017 (arXiv 2016)"

    def logit_scale(self, step: int | Tensor) -> float | Tensor:
        slope = 1.0 + self.cfg.slope_rate * step
        return slope.clamp(max=self.cfg.max_slope) if isinstance(slope, Tensor) else min(self.cfg.max_slope, slope)


class GumbelRao(Estimator):
    """``gumbel-rao``: forward D, backward the mean of M conditional Gumbel-softmax Jacobians."""

    display_name = "Gumbel-Rao"
    reads_tau = True
    family = "relaxation"
    year = 2021
    reference = ("Paulus, Maddison & Krause, Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient "
                 "Estimator, ICLR 2021")

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        log_pi = log_softmax(widen(logits))                        # [R, B, N, K]
        hard = one_hot((log_pi.detach() + gumbel_noise(logits.shape, rng, logits.device)).argmax(-1),
                       logits.shape[-1], log_pi.dtype)                           # [R, B, N, K]
        draws = log_pi.detach().unsqueeze(1).expand(-1, self.cfg.rao_samples, *log_pi.shape[1:])
        perturbed = conditional_gumbel(draws, hard.unsqueeze(1).expand_as(draws), rng)  # [R, M, B, N, K]
        noise = perturbed - draws                                                # G_m given D, no gradient
        tau_ = tau.unsqueeze(1) if isinstance(tau, Tensor) else tau
        soft = softmax((log_pi.unsqueeze(1) + noise) / tau_).mean(1)   # [R, B, N, K]
        loss = f((hard + soft - soft.detach()).to(logits.dtype))                # [R, B], forward exactly D
        return loss, {"loss": loss.detach().mean(-1)}


class ReinMax(Estimator):
    """``reinmax``: forward D, backward the gradient of ``2 pi_1 - pi_0 / 2`` (tau >= 1)."""

    display_name = "ReinMax"
    reads_tau = True
    family = "relaxation"
    year = 2023
    min_tau = 1.0       # its authors' choice: at tau = 1 exact for quadratic f; below 1 its bias grows
    reference = "Liu, Liu, Gao, Zhao & Chen, Bridging Discrete and Backpropagation: Straight-Through and Beyond, NeurIPS 2023"

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not isinstance(tau, Tensor) and tau < 1:     # a learned tau is kept >= 1 by the config check
            raise ValueError(f"reinmax: needs tau >= 1 (its authors' choice, see README), got {tau}")
        wide = widen(logits)
        hard = sample_one_hot(wide, rng)                                         # [R, B, N, K]
        pi0 = softmax(wide)
        pi1 = (hard + softmax(wide / tau)) / 2
        pi1 = softmax((pi1.log() - wide).detach() + wide)           # value pi_1, Jacobian of a softmax
        pi2 = 2 * pi1 - pi0 / 2
        loss = f((hard + pi2 - pi2.detach()).to(logits.dtype))                   # [R, B], forward exactly D
        return loss, {"loss": loss.detach().mean(-1)}
