"""``disarm`` (Dong, Mnih & Tucker 2020; categorical latents: Dong, Mnih & Tucker 2021).

On a Bernoulli unit it is ``arm``'s antithetic pair (vae/estimators/arm.py) with the per-unit
weight ``1/2 (f(b) - f(b~)) (-1)^{b~_n} 1[b_n != b~_n] sigmoid(|phi_n|)``: ARM Rao-Blackwellised
over the pair, zero wherever the two samples agree. Unbiased.

``disarm`` on a K-class variable (Dong, Mnih & Tucker, "Coupled Gradient Estimators for Discrete
Latent Variables", NeurIPS 2021) writes it as K - 1 binary decisions by stick breaking: with its
logits sorted ascending (``l_1 <= ... <= l_K``; the authors' setting), decision i says "stop at
class i" with probability ``sigmoid(a_i) = pi_i / sum_{j >= i} pi_j``, ``a_i = l_i - logsumexp_{j > i}
l_j``, and the class is the first decision that says so (class K if none). One uniform ``u_i`` per
decision drives both chains, ``b_i = 1[u_i < sigmoid(a_i)]`` and ``b~_i = 1[1 - u_i < sigmoid(a_i)]``,
so z and z~ are each a sample of q. With ``d = f(z) - f(z~)``, the estimate of ``d E_q[f] / d a_i``:

    1/2 d (-1)^{b~_i} 1[b_i != b~_i] sigmoid(|a_i|)  for i <= min(z, z~)  (DisARM where both chains decide),
    1/2 d (b_i - sigmoid(a_i))                        for z~ < i <= z      (z's chain alone, z~ its baseline),
   -1/2 d (b~_i - sigmoid(a_i))                       for z < i <= z~,

and the gradient reaches the logits through the stick breaking and the sort. Unbiased (tested
against enumeration), two decoder passes; for K = 2 it is the Bernoulli estimator above.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae.estimators.arm import ARM
from vae.estimators.base import Objective
from vae.estimators.registry import register
from vae.numerics.gumbel import Generator, uniform, widen


@register("disarm")
class DisARM(ARM):
    """``disarm``: ARM averaged over the pair: ``1/2 (-1)^{b~} 1[b != b~] sigmoid(|phi|)`` per unit;
    on K > 2 classes, the same on the stick-breaking decisions (module docstring)."""

    display_name = "DisARM"
    kinds = frozenset({"bernoulli", "categorical"})
    year = 2020
    reference = ("Dong, Mnih & Tucker, DisARM: An Antithetic Gradient Estimator for Binary Latent Variables, "
                 "NeurIPS 2020; categorical: Dong, Mnih & Tucker, Coupled Gradient Estimators for Discrete "
                 "Latent Variables, NeurIPS 2021")
    summary = ("Bernoulli: ARM averaged over the pair, ½(f(b) − f(b̃))(−1)^b̃ 1[b ≠ b̃] σ(|φ|) per unit; "
               "categorical: the same on the K − 1 stick-breaking decisions of the ascending-sorted logits "
               '("stop at class i" with probability π_i / Σ_{j≥i} π_j), with REINFORCE terms for the '
               "decisions only one chain reaches; 2 decoder passes")

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if logits.shape[-1] == 2:
            return super().estimate(logits, f, rng=rng, tau=tau, step=step, context=context)
        k = logits.shape[-1]
        ordered, order = torch.sort(widen(logits), dim=-1)                   # ascending, [R, B, N, K]
        tail = torch.logcumsumexp(ordered.flip(-1), dim=-1).flip(-1)         # logsumexp_{j >= i} l_j
        a = ordered[..., :-1] - tail[..., 1:]                                # [R, B, N, K-1]: stop at i
        stop = torch.sigmoid(a.detach())
        u = uniform(a.shape, rng, a.device).to(a.dtype)
        b, b_anti = (u < stop), (1 - u < stop)
        last = torch.ones_like(b[..., :1])
        first = torch.cat([b, last], -1).to(torch.int8).argmax(-1)             # [R, B, N]: z's sorted class
        first_anti = torch.cat([b_anti, last], -1).to(torch.int8).argmax(-1)
        classes = torch.stack([first, first_anti], 1)                            # [R, 2, B, N]
        original = order.unsqueeze(1).expand(-1, 2, -1, -1, -1).gather(-1, classes.unsqueeze(-1)).squeeze(-1)
        loss = f(torch.nn.functional.one_hot(original, k).to(logits.dtype))     # [R, 2, B]
        d = (loss[:, 0] - loss[:, 1]).detach()[..., None, None]                  # [R, B, 1, 1]
        i = torch.arange(k - 1, device=a.device)
        z, z_anti = first.unsqueeze(-1), first_anti.unsqueeze(-1)                # [R, B, N, 1]
        bf, baf = b.to(a.dtype), b_anti.to(a.dtype)
        both = (i <= torch.minimum(z, z_anti)).to(a.dtype) * (b != b_anti).to(a.dtype)
        weight = (both * (1 - 2 * baf) * torch.sigmoid(a.detach().abs())
                  + ((z_anti < i) & (i <= z)).to(a.dtype) * (bf - stop)
                  - ((z < i) & (i <= z_anti)).to(a.dtype) * (baf - stop))
        injected = (a * (0.5 * d * weight)).sum((-1, -2))                        # [R, B]
        surrogate = loss.mean(1) + injected - injected.detach()
        return surrogate, {"loss": loss.detach().mean((1, 2))}

    def unit_weights(self, u: Tensor, b: Tensor, b_anti: Tensor, phi: Tensor) -> Tensor:
        sign = 1 - 2 * b_anti                                                  # (-1)^{b~}
        return 0.5 * sign * (b != b_anti).to(phi.dtype) * torch.sigmoid(phi.abs())
