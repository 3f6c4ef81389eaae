"""``rodeo`` (Shi, Zhou, Hwang, Titsias & Mackey, "Gradient Estimation with Discrete Stein
Operators", NeurIPS 2022): RLOO whose baseline and score term carry control variates of mean zero
built with a discrete Stein operator, from a small learned network. Bernoulli units only, as the
authors' estimator (their ``discrete_stein_avg``, K = 2; ``discrete_stein_output_avg`` beyond).

k samples ``b_1..b_k ~ q`` (``estimator.num_samples``), theta = sigmoid(logits), ``f_s = f(b_s)``
and ``g_s = df/db (b_s)`` (the objective's input gradient along each unit, one backward pass). The
Gibbs Stein operator of q, averaged over the N units,

    (A h)(b) = 1/N sum_i rho_i(b) [h(b^(i)) - h(b)],   b^(i): b with unit i flipped,
                                                        rho_i(b) = q_i(1 - b_i),

has mean zero under q for every h (q(b) rho_i(b) is unchanged by flipping unit i). Sample s's
control functions see only the other samples: ``h_s(y) = mean_{j != s} H(g_j . (y - b_j), f_j)``,
H a network 2 -> ``estimator.options.baseline_hidden`` LeakyReLU(0.3) -> 2 (its two outputs h^0, h^1), so
``A h_s`` at b_s is a mean-zero control variate given the others. With the scalar one
``s_j = (A h^0_j)(b_j)`` and the vector one ``V_s = A[h^1_s(y) (y - theta)](b_s)`` (per unit d:
``(b_d - theta_d) sum_i a_i (h^1(b^(i)) - h^1(b)) + a_d h^1(b^(d)) (1 - 2 b_d)``, a_i = rho_i / N):

    grad = 1/k sum_s [(f_s - mean_{j != s} (f_j + alpha s_j)) (b_s - theta) + beta V_s].

Unbiased for any network, alpha and beta (tested at random ones against enumeration): the
leave-one-out terms are the score times something independent of b_s, and each ``A h`` has mean
zero given the samples h was built from. alpha and beta (one each per replica, from 0, where it is
RLOO) and the network are trained by the run's optimiser on the estimate's squared norm
(:func:`vae.estimators.signal.tuning_term`; the authors train them with Adam on the same objective,
averaged over units instead of summed). f is never evaluated at the neighbours b^(i): the network
is, k (k - 1) (N + 1) times per example. Cost: k decoder passes plus their backward pass for g. The
VAE only: on the SBN an upper layer's f is the lower layers' surrogate, whose input gradient is not
f's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.registry import register
from vae.estimators.sampling import sample_one_hot
from vae.estimators.signal import leave_one_out_mean, tuning_term
from vae.numerics.gumbel import Generator, softmax, widen
from vae.numerics.replicas import ACTIVATIONS, ReplicaGenerator, ReplicaMLP


@register("rodeo")
class RODEO(Estimator):
    """``rodeo``: RLOO with discrete-Stein control variates from a learned network (module docstring)."""

    display_name = "RODEO"
    kinds = frozenset({"bernoulli"})
    tasks = frozenset({"vae"})
    unbiased = True
    family = "control variate"
    year = 2022
    reference = ("Shi, Zhou, Hwang, Titsias & Mackey, Gradient Estimation with Discrete Stein Operators, "
                 "NeurIPS 2022")
    passes = "num_samples"
    summary = ("k samples (`num_samples`); RLOO's leave-one-out baseline plus two control variates of mean "
               "zero, a Gibbs Stein operator (one unit flipped at a time) applied to a network "
               "H(g_j·(y − b_j), f_j) of the other samples' values and input gradients (`baseline_hidden` "
               "LeakyReLU units), weighted by α and β; network, α and β descend the estimate's variance. "
               "Bernoulli units, VAE only")
    bias_note = "any network, α, β; tested at random ones"

    @dataclass
    class Options:
        baseline_hidden: int = 100  # hidden LeakyReLU units of the control variates' network H

    positive_options = ("baseline_hidden",)

    def __init__(self, cfg: EstimatorConfig, *, num_replicas: int, latent_shape: tuple[int, int],
                 context_dim: int, rng: ReplicaGenerator):
        super().__init__(cfg, num_replicas=num_replicas, latent_shape=latent_shape,
                         context_dim=context_dim, rng=rng)
        self.alpha = nn.Parameter(torch.zeros(num_replicas))                    # [R]: the scalar CV's weight
        self.beta = nn.Parameter(torch.zeros(num_replicas))                     # [R]: the vector CV's weight
        self.network = ReplicaMLP([2, self.options.baseline_hidden, 2], rng, ACTIVATIONS["leaky_relu"])
        k = cfg.num_samples
        others = [[j for j in range(k) if j != s] for s in range(k)]
        self.register_buffer("others", torch.tensor(others), persistent=False)  # [k, k - 1]

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        wide = widen(logits)
        n = logits.shape[-2]
        theta = softmax(wide)[..., 1].detach().unsqueeze(1)                     # [R, 1, B, N]
        z = sample_one_hot(logits, rng, num_samples=self.cfg.num_samples).to(logits.dtype)   # [R, k, B, N, 2]
        z.requires_grad_(True)
        loss = f(z)                                                              # [R, k, B]
        (g,) = torch.autograd.grad(loss.sum(), z, retain_graph=True)
        g = widen(g.detach())
        slope = g[..., 1] - g[..., 0]                                            # [R, k, B, N]: df/db
        b = widen(z.detach())[..., 1]                                            # [R, k, B, N]
        f_det = widen(loss.detach())                                             # [R, k, B]
        flip = 1 - 2 * b                                                         # b^(i)_i - b_i
        rho = theta + b * (1 - 2 * theta)                                        # q of the flipped value

        # H's inputs at b_s (last) and its N neighbours, for each other sample j: [R, k, k - 1, B, N + 1]
        slope_o, b_o, f_o = slope[:, self.others], b[:, self.others], f_det[:, self.others]
        linear = (slope_o * (b.unsqueeze(2) - b_o)).sum(-1)                      # g_j . (b_s - b_j)
        points = torch.cat([linear.unsqueeze(-1) + slope_o * flip.unsqueeze(2), linear.unsqueeze(-1)], -1)
        inputs = torch.stack([points, f_o.unsqueeze(-1).expand_as(points)], -1)
        weight = self.network[0].weight
        h = self.network(inputs.to(weight.dtype)).to(wide.dtype).mean(2)        # [R, k, B, N + 1, 2]
        a = rho / n
        change = h[..., :-1, :] - h[..., -1:, :]                                 # h(b^(i)) - h(b)
        scalar_cv = (a * change[..., 0]).sum(-1)                                 # [R, k, B]: (A h^0_s)(b_s)
        vector_cv = ((b - theta) * (a * change[..., 1]).sum(-1, keepdim=True)
                     + a * h[..., :-1, 1] * flip)                                # [R, k, B, N]
        alpha = self.alpha.to(wide.dtype)[:, None, None]
        beta = self.beta.to(wide.dtype)[:, None, None, None]
        signal = f_det - leave_one_out_mean(f_det + alpha * scalar_cv)           # [R, k, B]
        grad = (signal.unsqueeze(-1) * (b - theta) + beta * vector_cv).mean(1)   # [R, B, N]: d/d logit

        tune = tuning_term(grad.square().sum(-1).mean(-1), list(self.parameters()))   # [R], gradient: tuning
        injected = ((wide[..., 1] - wide[..., 0]) * grad.detach()).sum(-1)       # [R, B], gradient: grad
        surrogate = loss.mean(1) + (injected - injected.detach() + tune[:, None]).to(logits.dtype)
        info = {"loss": loss.detach().mean((1, 2)), "alpha": self.alpha.detach().clone(),
                "beta": self.beta.detach().clone()}
        return surrogate, info
