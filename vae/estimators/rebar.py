"""``rebar`` (Tucker et al. 2017): the score function with a reparameterised control variate;
``relax`` (vae/estimators/relax.py) is this class with a learned network added to it. Both are
unbiased, for any value of their own parameters.


With ``log pi = log_softmax(logits)``, Gumbel noise g, the perturbed log-probabilities
``z = log pi + g``, the hard sample ``b = one_hot(argmax z)`` (an exact sample of q), the same
perturbation drawn again *given* b, ``z~ ~ p(z | b)`` (:func:`vae.numerics.gumbel.conditional_gumbel`,
reparameterised in the logits), and a control variate c:

    grad = [f(b) - c(z~)] grad log q(b) + grad c(z) - grad c(z~)

(``grad log q(b) = b - pi`` per variable). REBAR's control variate is the relaxed objective
``c(z) = eta f(softmax(z / lambda))``; RELAX adds a learned network, ``c(z) = eta f(softmax(z /
lambda)) + r(z)`` (its paper writes eta = 1; its code scales the whole of c; here eta scales the
REBAR term only, so REBAR is RELAX with r = 0). The estimator's parameters -- eta, log lambda and
r's weights, one set per replica, from eta = 1, lambda = 0.5 -- are trained by the run's optimiser
on the estimate's own variance: the surrogate adds a term whose gradient, for them alone, is
``d/dparams mean_b ||grad_b||^2`` (a single-draw estimate of the variance's gradient, by double
backpropagation), with ``grad_b`` the estimate for example b's logits, as in the authors' RELAX code
(the REBAR code uses the model parameters' gradient instead).

The decoder's gradient is that of ``f(b)``; the surrogate's value is ``f(b)``. Cost: f is
evaluated three times (at b, ``softmax(z / lambda)`` and ``softmax(z~ / lambda)``) and
differentiated twice more.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.registry import register
from vae.estimators.signal import tuning_term
from vae.numerics.gumbel import Generator, conditional_gumbel, gumbel_noise, log_softmax, softmax, widen
from vae.numerics.replicas import ReplicaGenerator


@register("rebar")
class REBAR(Estimator):
    """``rebar``: control variate ``eta f(softmax(z / lambda))``, eta and lambda tuned online."""

    display_name = "REBAR"
    unbiased = True
    family = "control variate"
    year = 2017
    one_hot_forward = False
    reference = ("Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein, REBAR: Low-variance, unbiased gradient "
                 "estimates for discrete latent variable models, NeurIPS 2017")
    # f at b, softmax(z / lambda), softmax(z~ / lambda)
    passes = 3
    summary = ("score function with the control variate η·f(softmax(z/λ)) at the Gumbel perturbation z and "
               "at z̃ drawn given the hard sample; η and log λ descend the estimate's variance (double "
               "backprop)")

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        self.eta = nn.Parameter(torch.ones(num_replicas))                               # [R]
        self.log_temperature = nn.Parameter(torch.full((num_replicas,), math.log(0.5)))  # [R] log lambda

    def control_variate(self, f_relaxed: Tensor, perturbed: Tensor) -> Tensor:
        """``c [R, S, B]`` from f at the relaxed points ``[R, S, B]`` and the perturbations
        ``[R, S, B, N, K]``."""
        return self.eta[:, None, None] * f_relaxed

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        wide = widen(logits)
        log_pi = log_softmax(wide)                                  # [R, B, N, K]
        z = log_pi + gumbel_noise(logits.shape, rng, logits.device)               # [R, B, N, K]
        hard = F.one_hot(z.detach().argmax(-1), logits.shape[-1]).to(wide.dtype)   # b
        z_given = conditional_gumbel(wide, hard, rng)                             # z~ | b
        perturbed = torch.stack([z, z_given], dim=1)                              # [R, 2, B, N, K]
        lam = self.log_temperature.exp().to(wide.dtype)[:, None, None, None, None]
        # [R, 3, B]
        values = f(torch.cat([hard.unsqueeze(1), softmax(perturbed / lam)], dim=1).to(logits.dtype))
        f_hard = values[:, 0]                                                     # [R, B]
        c = self.control_variate(values[:, 1:], perturbed)                        # [R, 2, B]
        (pathwise,) = torch.autograd.grad((c[:, 0] - c[:, 1]).sum(), wide, create_graph=True)
        score = hard - log_pi.exp().detach()                                      # grad log q(b)
        grad = (f_hard.detach() - c[:, 1])[..., None, None] * score + pathwise    # [R, B, N, K]

        variance = grad.square().sum((-1, -2)).mean(-1)                           # [R]
        tune = tuning_term(variance, list(self.parameters()))                    # [R], gradient: tuning
        injected = (wide * grad.detach()).sum((-1, -2))                           # [R, B], gradient: grad
        surrogate = (f_hard + (injected - injected.detach()) + tune[:, None]).to(logits.dtype)
        info = {"loss": f_hard.detach().mean(-1), "eta": self.eta.detach().clone(),
                "temperature": self.log_temperature.detach().exp(), "grad_sq": variance.detach()}
        return surrogate, info
