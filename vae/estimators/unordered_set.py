"""``unordered-set`` (Kool, van Hoof & Welling, "Estimating Gradients for Discrete Random Variables by
Sampling without Replacement", ICLR 2020): k distinct samples of the joint q(z | x), the unordered
set estimator with its built-in baseline.

**Sampling without replacement from the factorised joint** ``q(z) = prod_n q_n(z_n)`` (K^N states)
is stochastic beam search, as the paper does for structured domains: the top k of the Gumbel-
perturbed log-probabilities ``log q(z) + G_z`` of all states, found variable by variable. A beam
holds a prefix, its log-probability ``phi`` and the largest perturbed value ``G~`` among its
completions; its K children get fresh Gumbels ``G_c = phi + log q_n(c) + g_c``, shifted so their
largest equals ``G~`` (``G~_c = -log(exp(-G~) - exp(-max_c G_c) + exp(-G_c))``, in the stable form
of Kool et al. 2019), and the k largest of all children are kept. After the N-th variable the k
beams are an exact sample without replacement of size k (so the space must hold at least k
states; with fewer than k children at the first variables some beams wait, empty).

**The estimator.** With ``S = {z_1..z_k}``, ``p_s = q(z_s)``, ``f_s = f(z_s)`` and ``P^{D\\A}(B)`` the
probability that sampling without replacement from q restricted to ``D \\ A`` yields the set B,

    R_s = P^{D\\{s}}(S \\ {s}) / P(S),
    R_{s,s'} = P^{D\\{s,s'}}(S \\ {s,s'}) / P^{D\\{s}}(S \\ {s})  (R_{s,s} = 1),

    E_q[f] ~= sum_s p_s R_s f_s,
    grad ~= sum_s R_s grad p_s (f_s - b_s),   b_s = sum_{s'} p_{s'} R_{s,s'} f_{s'},

both unbiased (the baseline b_s has expectation zero against R_s grad p_s); with k states spanning
all of q's mass it is the exact gradient, and in a space where the k samples carry almost none of
it, RLOO. The set probabilities are one integral each (the paper's numerical integration): with
``a_s = p_s / (1 - sum_{s' in S} p_{s'})``,

    P^{D\\A}(S \\ A) = int_0^inf exp(-t) prod_{s in S\\A} (1 - exp(-a_s t)) dt,

computed in float64 in log space by the trapezoid rule in ``log t`` (:data:`LOG_T`: from e^-30,
where the integrand has vanished like t^k, to e^4.6, where exp(-t) has; equal to the sums over
the orders of S of Plackett-Luce probabilities to 1e-9, tested); when S holds all but
1e-9 of q's mass the ratios are 1. The surrogate's value is the unbiased ``sum_s p_s R_s f_s``,
through which the decoder gets its gradient. Cost: k = ``estimator.num_samples`` decoder passes
(RLOO's), and N small sequential beam steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae.estimators.base import Estimator, Objective
from vae.estimators.config import EstimatorConfig
from vae.estimators.registry import register
from vae.numerics.gumbel import Generator, gumbel_noise, log_prob_one_hot, log_softmax, one_hot, widen

# the integrals' grid in log t (2e-13 of 4001 points')
LOG_T = torch.linspace(-30.0, 4.6, 201, dtype=torch.float64)
_LOG_SPACING = math.log(float(LOG_T[1] - LOG_T[0]))   # at import: the step reads no tensor back to the host
FULL = 1e-9   # when the samples leave less than this of q's mass, the ratios are 1


def _shift(top: Tensor, g: Tensor) -> Tensor:
    """Gumbels ``g [..., K]`` conditioned on their maximum being ``top [..., 1]`` (Kool et al. 2019,
    appendix B, stable form of ``-log(exp(-top) - exp(-max g) + exp(-g))``)."""
    z = g.max(-1, keepdim=True).values
    v = top - g + torch.log1p(-torch.exp(g - z))
    return top - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))


def sample_without_replacement(logits: Tensor, rng: Generator, k: int) -> Tensor:
    """``[R, k, B, N]``: the classes of k distinct states of ``prod_n softmax(logits_n)``, logits
    ``[R, B, N, K]``, by stochastic beam search (module docstring)."""
    r, b, n, num_classes = logits.shape
    log_q = log_softmax(widen(logits.detach()))
    phi = torch.full((r, b, k), -torch.inf, dtype=log_q.dtype, device=log_q.device)
    phi[..., 0] = 0.0                                          # one root beam; the others empty
    top = torch.where(phi == 0, 0.0, -torch.inf)               # the root's largest perturbed value: 0
    parents, values = [], []                                   # per variable: each beam's parent and class
    for variable in range(n):
        child = phi.unsqueeze(-1) + log_q[:, :, variable].unsqueeze(2)                       # [R, B, k, K]
        g = child + gumbel_noise(child.shape, rng, child.device).to(child.dtype)
        live = torch.isfinite(phi).unsqueeze(-1)
        shifted = torch.where(live, _shift(top.unsqueeze(-1), torch.where(live, g, 0.0)), -torch.inf)
        best = shifted.flatten(-2).topk(k, dim=-1).indices                                    # [R, B, k]
        parents.append(best // num_classes)
        values.append(best % num_classes)
        phi, top = child.flatten(-2).gather(-1, best), shifted.flatten(-2).gather(-1, best)
    beam = torch.arange(k, device=log_q.device).expand(r, b, k)
    classes = []
    # back from the last
    for parent, value in zip(reversed(parents), reversed(values)):
        classes.append(value.gather(-1, beam))
        beam = parent.gather(-1, beam)
    return torch.stack(classes[::-1], -1).transpose(1, 2)                                    # [R, k, B, N]


def set_ratios(log_p: Tensor) -> tuple[Tensor, Tensor]:
    """``(R [R, k, B], R2 [R, k, k, B])`` of the module docstring from ``log p_s [R, k, B]``."""
    log_p = log_p.double().transpose(1, -1)                                                  # [R, B, k]
    k = log_p.shape[-1]
    log_rest = torch.log1p(-torch.exp(torch.logsumexp(log_p, -1, keepdim=True)).clamp(max=1 - FULL))
    log_t = LOG_T.to(log_p.device)
    # a_s t: [R, B, k, G]
    x = torch.exp(log_p - log_rest).unsqueeze(-1) * torch.exp(log_t)
    # log(1 - exp(-a_s t))
    terms = torch.log(-torch.expm1(-x))
    weight = log_t - torch.exp(log_t) + _LOG_SPACING
    weight[0], weight[-1] = weight[0] - 0.6931471805599453, weight[-1] - 0.6931471805599453  # trapezoid ends
    total = terms.sum(-2)                                                                    # [R, B, G]
    without_one = total.unsqueeze(-2) - terms                                                # [R, B, k, G]
    log_all = torch.logsumexp(total + weight, -1)                                            # [R, B]
    log_one = torch.logsumexp(without_one + weight, -1)                                      # [R, B, k]
    log_two = torch.stack([torch.logsumexp(without_one[..., s:s + 1, :] - terms + weight, -1)  # [R, B, k, k']
                           for s in range(k)], -2)
    r1 = torch.exp(log_one - log_all.unsqueeze(-1))
    r2 = torch.exp(log_two - log_one.unsqueeze(-1))
    r2 = torch.where(torch.eye(k, dtype=torch.bool, device=r2.device), 1.0, r2)
    full = (log_rest <= torch.log(torch.tensor(FULL, dtype=log_rest.dtype))).squeeze(-1)     # [R, B]
    r1 = torch.where(full.unsqueeze(-1), 1.0, r1)
    r2 = torch.where(full[..., None, None], 1.0, r2)
    return r1.permute(0, 2, 1), r2.permute(0, 2, 3, 1)


@register("unordered-set")
class UnorderedSet(Estimator):
    """``unordered-set``: k samples without replacement, weights from the set's probability, the
    other samples as a built-in baseline."""

    display_name = "Unordered set"
    unbiased = True
    family = "score function"
    year = 2020
    reference = ("Kool, van Hoof & Welling, Estimating Gradients for Discrete Random Variables by Sampling "
                 "without Replacement, ICLR 2020")
    passes = "num_samples"
    summary = ("k = `num_samples` distinct samples of the joint q(z | x) without replacement (stochastic "
               "beam search: Gumbel-top-k over the factorised posterior, as the paper does for structured "
               "domains); Σ_s R_s ∇p_s (f_s − b_s) with R_s = P^{D∖s}(S∖s)/P(S) and the built-in baseline "
               "b_s = Σ_s′ p_s′ R_s,s′ f_s′, the set probabilities by the paper's numerical integration "
               "(tested against Plackett–Luce enumeration); RLOO's cost")
    bias_note = "z-tested at k = 2, 4"

    @classmethod
    def check(cls, cfg: EstimatorConfig, *, task: str, kind: str, lowest_tau: float,
              latent_shape: tuple[int, int]) -> None:
        super().check(cfg, task=task, kind=kind, lowest_tau=lowest_tau, latent_shape=latent_shape)
        n, k = latent_shape
        if k ** n < cfg.num_samples:
            raise ValueError(f"needs estimator.num_samples <= K^N = {k ** n} states, got {cfg.num_samples}")

    def estimate(self, logits: Tensor, f: Objective, *, rng: Generator,
                 tau: float | Tensor, step: int, context: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        k = self.cfg.num_samples
        z = one_hot(sample_without_replacement(logits, rng, k), logits.shape[-1], logits.dtype)
        loss = f(z)                                                        # [R, k, B]
        log_p = log_prob_one_hot(logits, z)                                # [R, k, B], with its gradient
        r1, r2 = set_ratios(log_p.detach())
        p = log_p.detach().double().exp()
        f_det = loss.detach().double()
        baseline = (p.unsqueeze(1) * r2 * f_det.unsqueeze(1)).sum(2)       # [R, k, B]: b_s
        weight = (p * r1).to(log_p.dtype)                                  # p_s R_s
        signal = (weight * (f_det - baseline).to(log_p.dtype))
        surrogate = ((weight.to(loss.dtype) * loss).sum(1)
                     + (signal * (log_p - log_p.detach())).sum(1).to(loss.dtype))
        return surrogate, {"loss": loss.detach().mean((1, 2))}
