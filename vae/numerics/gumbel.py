"""Gumbel noise, Gumbel-softmax (soft and straight-through) samples, and the Concrete density.

For logits ``l`` over K classes and ``g_k = -log(-log u_k)``, ``u_k ~ U(0, 1)``:

* ``argmax_k (l_k + g_k)`` is an exact sample of ``Categorical(softmax(l))`` (Gumbel-max trick);
* ``y = softmax((l + g) / tau)`` is a Gumbel-softmax (Concrete) sample: continuous, differentiable
  in ``l``, and a biased stand-in for the one-hot sample;
* the straight-through sample is ``one_hot(argmax y) - y.detach() + y``: exactly one-hot in the
  forward pass, with the gradient of the soft sample ``y`` in the backward pass.

All arithmetic is done in float32, or float64 for float64 logits (:func:`widen`: the logits are
cast up and the sample back to their dtype), so float16 / bfloat16 cannot produce inf or NaN here
and float64 stays exact to float64 round-off (what the tests of the algebra compare in).

Every function that draws noise takes a ``generator``: None (torch's global generator, as
``torch.nn.functional.gumbel_softmax``), a ``torch.Generator``, or a
:class:`vae.numerics.replicas.ReplicaGenerator`, with which replica ``r`` of a multi-seed run draws exactly
the noise a single-seed run with seed ``r`` would.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae.numerics.replicas import NoiseSource, with_sample_axes

# Uniform draws are clamped into [TINY, 1 - EPS/2]: -log(u) is then in [5.96e-8, 87.3] and
# g = -log(-log u) in [-4.47, 16.6]; neither log can see 0, so g is always finite.
_U_MIN = torch.finfo(torch.float32).tiny
_U_MAX = 1.0 - torch.finfo(torch.float32).eps / 2


Generator = NoiseSource | torch.Generator | None


def widen(x: Tensor) -> Tensor:
    """``x`` in the dtype the suite computes probabilities in: float64 stays float64, every
    narrower float (float32, float16, bfloat16) becomes float32."""
    return x if x.dtype == torch.float64 else x.float()


# torch's CPU kernels of softmax and log_softmax over a short last axis are slow in its AVX-512 and
# its portable (DEFAULT) builds: 310 and 260 us for a [1, 100, 20, 10] batch of the categorical
# VAE's logits, against about 50 us for the same numbers as ``x - logsumexp(x)`` (this project's
# Xeon, torch 2.14.1, 2026-12-01; a fifth of a GS step); in the AVX2 build torch's take 48 and
# 32 us. So on such CPUs the suite computes them as ``x - logsumexp(x)``, elsewhere with torch's.
_LOGSUMEXP_ON_CPU = torch.backends.cpu.get_cpu_capability() in ("AVX512", "DEFAULT")


def log_softmax(x: Tensor) -> Tensor:
    """``log_softmax`` over the last axis (the classes), as torch's to float round-off, by the
    faster kernels of this CPU (the note above)."""
    if _LOGSUMEXP_ON_CPU and x.device.type == "cpu":
        return x - torch.logsumexp(x, -1, keepdim=True)
    return torch.log_softmax(x, dim=-1)


def softmax(x: Tensor) -> Tensor:
    """``softmax`` over the last axis (the classes), as torch's to float round-off (:func:`log_softmax`)."""
    if _LOGSUMEXP_ON_CPU and x.device.type == "cpu":
        return log_softmax(x).exp()
    return torch.softmax(x, dim=-1)


def logaddexp(a: Tensor, b: Tensor) -> Tensor:
    """``torch.logaddexp(a, b)`` to float round-off (broadcasting). Where no gradient is asked for
    (Gumbel-Rao's detached draws) and the step is not being compiled, as ``max(a, b) + log1p(exp(-|a
    - b|))``, the formula of torch's own kernel, in vectorised passes in place: torch's eager CPU
    kernel of it is about 4x slower on either kernel path (2.6 ms against 0.6 ms for Gumbel-Rao's
    200,000 perturbed values, this project's Xeon, torch 2.14.1, AVX-512 and AVX2 alike,
    2026-12-06), the largest part of that estimator's eager step. With a gradient (REBAR's, RELAX's)
    or in a compiled step, whose own kernel of torch's is faster than the passes, torch's. Equal
    infinities give themselves, as torch's does."""
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)):
        return torch.logaddexp(a, b)
    gap = (a - b).abs_().nan_to_num_(nan=math.inf)     # inf - inf: the two are equal, the gap none
    return gap.neg_().exp_().log1p_().add_(torch.maximum(a, b))


def uniform(shape: torch.Size | tuple[int, ...], generator: Generator = None,
            device: torch.device | str = "cpu") -> Tensor:
    """``U[0, 1)`` float32 draws of ``shape`` from ``generator`` (None: torch's global one, on ``device``)."""
    return _draws("uniform", shape, generator, device)


def normal(shape: torch.Size | tuple[int, ...], generator: Generator = None,
           device: torch.device | str = "cpu") -> Tensor:
    """Standard normal float32 draws of ``shape`` from ``generator``, as :func:`uniform`."""
    return _draws("normal", shape, generator, device)


def _draws(kind: str, shape: torch.Size | tuple[int, ...], generator: Generator,
           device: torch.device | str) -> Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        draw = torch.rand if kind == "uniform" else torch.randn
        return draw(shape, generator=generator, device=device if generator is None else generator.device)
    return getattr(generator, kind)(shape)


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: Generator = None,
                 device: torch.device | str = "cpu") -> Tensor:
    """Standard Gumbel(0, 1) noise of ``shape`` in float32, always finite.

    ``g = -log(-log u)`` with ``u`` clamped away from 0 and 1 (see module constants).
    """
    u = uniform(shape, generator, device).clamp_(_U_MIN, _U_MAX)
    return u.log_().neg_().log_().neg_()          # -log(-log u), in place: the same bits, no temporaries


def check_tau(tau: float | Tensor) -> None:
    """Raise ``ValueError`` unless ``tau`` is a finite number > 0 (a float or a tensor)."""
    ok = bool(torch.all(torch.isfinite(tau) & (tau > 0))) if isinstance(tau, Tensor) else (
        math.isfinite(tau) and tau > 0)
    if not ok:
        raise ValueError(f"tau must be finite and > 0, got {tau}")


def check_logits(logits: Tensor) -> None:
    """Raise ``ValueError`` if ``logits`` hold inf or NaN (a host sync on accelerators)."""
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits must be finite; got inf or NaN (did training diverge?)")


def relax(logits: Tensor, gumbel: Tensor, tau: float | Tensor) -> Tensor:
    """Soft sample ``softmax((logits + gumbel) / tau)`` over the last axis, in float32 (float64
    for float64 logits)."""
    return softmax((widen(logits) + gumbel) / tau)


def one_hot(index: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``F.one_hot(index, num_classes).to(dtype)`` without its host read and its int64 tensor: ones
    scattered into zeros of ``dtype``, ``[...] -> [..., num_classes]``. (``F.one_hot`` checks the
    indices' range on the host: a device synchronisation per call, in the training step's hot
    path.) ``index`` must lie in [0, num_classes), as a sampler's classes do."""
    out = torch.zeros(*index.shape, num_classes, dtype=dtype, device=index.device)
    return out.scatter_(-1, index.unsqueeze(-1), 1.0)


def straight_through(soft: Tensor) -> Tensor:
    """One-hot ``argmax(soft)`` in the forward pass, gradient of ``soft`` in the backward pass."""
    hard = one_hot(soft.argmax(dim=-1), soft.shape[-1], soft.dtype)
    return hard - soft.detach() + soft


def gumbel_softmax(logits: Tensor, tau: float | Tensor = 1.0, hard: bool = False,
                   generator: Generator = None, *, check: bool = True) -> Tensor:
    """A Gumbel-softmax sample of ``Categorical(softmax(logits))``, same shape and dtype.

    Called like ``torch.nn.functional.gumbel_softmax(logits, tau, hard)`` (classes on the last
    axis), with finite noise for any uniform draw and float32 arithmetic for any dtype.

    Args:
        logits: ``[..., K]`` unnormalised log-probabilities (any float dtype; finite).
        tau: temperature > 0 (float, or a tensor broadcastable to ``logits[..., :1]``).
        hard: if True, the straight-through sample (forward exactly one-hot, backward the
            gradient of the soft sample); if False, the soft sample.
        generator: where the noise comes from (None: torch's global generator).
        check: validate tau and the logits (raising ``ValueError``). Checking finiteness reads
            the logits back to the host; the training loop passes False and instead checks its
            losses every ``log_every`` steps, so a GPU step needs no synchronisation.

    Raises:
        ValueError: tau <= 0 or not finite, or logits not finite.
    """
    if check:
        check_tau(tau)
        check_logits(logits)
    soft = relax(logits, gumbel_noise(logits.shape, generator, logits.device), tau)
    sample = straight_through(soft) if hard else soft
    return sample.to(logits.dtype)


def concrete_log_prob(log_y: Tensor, logits: Tensor, tau: float | Tensor, *, check: bool = True) -> Tensor:
    """Log-density of the Concrete (Gumbel-softmax) distribution at a point of the simplex.

    With ``log_alpha = log_softmax(logits)`` and ``y`` on the (K-1)-simplex (Maddison et al. 2017,
    Jang et al. 2017, eq. 3):

        log p(y) = log((K-1)!) + (K-1) log tau + sum_k (log_alpha_k - (tau + 1) log y_k)
                   - K logsumexp_k (log_alpha_k - tau log y_k)

    Args:
        log_y: ``[..., K]`` the point, as log-probabilities (``log_softmax`` of the relaxed
            logits): taking the log first keeps tiny coordinates at small tau finite.
        logits: ``[..., K]`` the distribution's logits.
        tau: temperature > 0 (a float, or a tensor broadcastable to ``log_y[..., :1]``).
        check: validate tau (``ValueError``); for a tensor tau that reads it back to the host,
            so the training loss (``kl=relaxed``, whose tau the config has checked) passes False.

    Returns:
        ``[...]`` the log-density (w.r.t. Lebesgue measure on the first K-1 coordinates).
    """
    if check:
        check_tau(tau)
    k = logits.shape[-1]
    log_alpha = log_softmax(widen(logits))
    log_y = log_y.to(log_alpha.dtype)
    tau_t = torch.as_tensor(tau, dtype=log_alpha.dtype, device=logits.device).expand_as(log_y[..., :1])
    return (math.lgamma(k) + (k - 1) * torch.log(tau_t[..., 0])
            + (log_alpha - (tau_t + 1) * log_y).sum(-1)
            - k * torch.logsumexp(log_alpha - tau_t * log_y, dim=-1))



def conditional_gumbel(logits: Tensor, hard: Tensor, generator: Generator = None) -> Tensor:
    """Perturbed log-probabilities ``log_softmax(logits) + g`` drawn given their argmax: ``[..., K]``.

    For ``hard`` one-hot at class b (the argmax of ``log pi + g`` for some Gumbel g) this samples
    ``log pi + g`` from its conditional distribution given that argmax (Tucker et al. 2017,
    appendix; Paulus et al. 2021): with ``E_i ~ Exp(1)``,

        top:     z_b = -log E_b                          (the max is Gumbel(log sum pi) = Gumbel(0))
        others:  z_i = -log(E_i / pi_i + E_b)            (Gumbel(log pi_i) truncated below z_b)

    computed in log space (``-logaddexp(log E_i - log pi_i, log E_b)``) so tiny pi_i stay finite.
    Differentiable in ``logits`` (the reparameterisation REBAR and RELAX need); detach the
    logits for a sample that carries no gradient (Gumbel-Rao's).
    """
    log_pi = log_softmax(widen(logits))
    log_e = torch.log(-torch.log(uniform(logits.shape, generator, logits.device).clamp_(_U_MIN, _U_MAX)))
    log_e_top = (log_e * hard).sum(-1, keepdim=True)                     # log E_b
    others = -logaddexp(log_e - log_pi, log_e_top)
    return torch.where(hard.bool(), -log_e_top.expand_as(others), others)


def log_prob_one_hot(logits: Tensor, z: Tensor) -> Tensor:
    """``log q(z)`` for one-hot z: logits ``[R, B, N, K]``, z ``[R, *S, B, N, K]`` -> ``[R, *S, B]``."""
    log_q = log_softmax(widen(logits))
    log_q = with_sample_axes(log_q, z.dim() - 4)
    return (z * log_q).sum((-1, -2))
