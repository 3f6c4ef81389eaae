"""Gradient diagnostics: bias, variance, MSE and cosine to the exact gradient; encoder variance.

Two uses:

* On *enumerable* problems (a small ``DiscreteVAE`` with ``K^N`` states to spare), many
  independent draws of an estimator's gradient are compared with the exact gradient
  (:class:`vae.estimators.exact.Exact` differentiated by autograd). The draws run in one batched
  call: the single-replica model and estimator are copied onto ``num_draws`` replicas, each with
  its own noise generator, so replica ``d``'s gradient is draw ``d``.
* On a real run, :func:`encoder_gradient_variance` measures the spread of the encoder gradient
  over repeated draws on a fixed batch, per replica.

For gradient draws ``g_d`` (flattened over a parameter group, ``[D, P]``) and the exact ``g*``:

    bias = ||mean_d g_d - g*||,   variance = sum_p Var_d(g_dp),   mse = mean_d ||g_d - g*||^2
    cosine = <mean_d g_d, g*> / (||mean_d g_d|| ||g*||)

(population variance, so ``mse = bias^2 + variance`` exactly).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from vae.estimators import Estimator, EstimatorConfig, build_estimator
from vae.models.discrete_vae import DiscreteVAE, LatentKind
from vae.models.objectives import training_loss
from vae.numerics.replicas import ReplicaGenerator


def make_toy_problem(kind: LatentKind, num_latents: int, num_classes: int, *, batch: int = 2,
                     data_dim: int = 5, hidden: int = 8, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> tuple[DiscreteVAE, Tensor]:
    """A one-replica ``DiscreteVAE`` (``D-hidden-(N*K)``, mirrored) and a binary x ``[1, B, D]``,
    both in ``dtype`` (the same weights whatever the dtype: drawn in float32, then cast)."""
    model = DiscreteVAE(kind, num_latents, num_classes, [hidden], ReplicaGenerator([seed]),
                        data_dim=data_dim)
    x = (torch.rand(1, batch, data_dim, generator=torch.Generator().manual_seed(seed)) < 0.5)
    return model.to(dtype), x.to(dtype)


def replicate(module: nn.Module, num_replicas: int) -> nn.Module:
    """A deep copy with parameters and buffers of leading axis 1 repeated ``num_replicas`` times."""
    clone = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in [*clone.parameters(), *clone.buffers()]:
            if tensor.dim() > 0 and tensor.shape[0] == 1:
                tensor.data = tensor.data.expand(num_replicas, *tensor.shape[1:]).clone()
    return clone


def _flat_grads(loss: Tensor, groups: dict[str, list[nn.Parameter]]) -> dict[str, Tensor]:
    """Per-replica gradients of ``loss`` flattened per group: ``{group: [R, P]}``."""
    grads = torch.autograd.grad(loss, [p for params in groups.values() for p in params])
    out, start = {}, 0
    for name, params in groups.items():
        part = grads[start:start + len(params)]
        out[name] = torch.cat([g.reshape(g.shape[0], -1) for g in part], dim=1)
        start += len(params)
    return out


def _groups(model: DiscreteVAE) -> dict[str, list[nn.Parameter]]:
    return {"encoder": list(model.encoder.parameters()), "decoder": list(model.decoder.parameters())}


LOSSES = ("estimator", "training")


def _draw_grads(model: DiscreteVAE, estimator: Estimator, x: Tensor, rng: ReplicaGenerator,
                tau: float, step: int, loss: str) -> dict[str, Tensor]:
    """One draw per replica of the gradient of ``sum_b`` of a loss: ``{group: [R, P]}``.

    ``loss="estimator"``: the estimator's surrogate alone, an estimate of ``grad E_q[f]``;
    ``loss="training"``: the training loss as the trainer computes it
    (:func:`vae.models.objectives.training_loss`: the analytic KL and variance normalisation included).
    """
    if loss == "training":
        value = training_loss(model, estimator, x, rng=rng, tau=tau, step=step)[0]
    elif loss == "estimator":
        value, _ = estimator(model.encode(x), lambda z: model.reconstruction_loss(z, x),
                             rng=rng, tau=tau, step=step, context=x)
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    return _flat_grads(value.sum(), _groups(model))


def exact_gradients(model: DiscreteVAE, x: Tensor, *, max_states: int = 4096,
                    loss: str = "estimator") -> dict[str, Tensor]:
    """The exact gradient of ``sum_b E_q[f]`` (``loss="training"``: of ``sum_b E_q[f] + KL``)
    for a single-replica model: ``{group: [P]}``."""
    exact = build_estimator(EstimatorConfig(name="exact", options={"max_states": max_states}), num_replicas=1,
                            latent_shape=(model.num_latents, model.num_classes),
                            context_dim=x.shape[-1], rng=ReplicaGenerator([0]))
    grads = _draw_grads(model, exact.to(x.dtype), x, ReplicaGenerator([0]), tau=1.0, step=0, loss=loss)
    return {name: g[0] for name, g in grads.items()}


def draw_gradients(model: DiscreteVAE, estimator: Estimator, x: Tensor, *, tau: float,
                   num_draws: int, seed: int, step: int = 0,
                   loss: str = "estimator") -> dict[str, Tensor]:
    """``num_draws`` independent gradient estimates: ``{group: [D, P]}``; ``loss`` as in
    :func:`_draw_grads` (``estimator``: of ``sum_b E_q[f]``).

    ``model`` and ``estimator`` have one replica and ``x`` is ``[1, B, D]``; both are copied onto
    ``num_draws`` replicas (so neither is changed), with draw ``d`` seeded by ``seed`` and ``d``.
    """
    seeds = torch.randint(2**62, (num_draws,), generator=torch.Generator().manual_seed(seed))
    return _draw_grads(replicate(model, num_draws), replicate(estimator, num_draws),
                       x.expand(num_draws, *x.shape[1:]), ReplicaGenerator(seeds.tolist()),
                       tau=tau, step=step, loss=loss)


def gradient_errors(model: DiscreteVAE, estimator: Estimator, x: Tensor, *, tau: float,
                    num_draws: int, seed: int, step: int = 0) -> dict[str, Tensor]:
    """Bias, variance, MSE and cosine to the exact gradient (module docstring), per group.

    Returns scalars keyed ``"<group>/<metric>"``, group in ``encoder``, ``decoder``, metric in
    ``bias``, ``variance``, ``mse``, ``cosine``. Call it over a range of ``tau`` to trace the
    relaxation estimators' bias-variance trade-off.
    """
    exact = exact_gradients(model, x)
    draws = draw_gradients(model, estimator, x, tau=tau, num_draws=num_draws, seed=seed, step=step)
    out: dict[str, Tensor] = {}
    for name, g in draws.items():
        mean = g.mean(0)                                                    # [P]
        out[f"{name}/bias"] = (mean - exact[name]).norm()
        out[f"{name}/variance"] = g.var(0, correction=0).sum()
        out[f"{name}/mse"] = (g - exact[name]).square().sum(1).mean()
        out[f"{name}/cosine"] = torch.cosine_similarity(mean, exact[name], dim=0)
    return out


def encoder_gradient_moments(model: DiscreteVAE, estimator: Estimator, x: Tensor, *,
                             rng: ReplicaGenerator, tau: float | Tensor, step: int,
                             num_draws: int) -> tuple[Tensor, Tensor]:
    """The mean ``[R, P]`` (float64) of the encoder gradient over ``num_draws >= 2`` draws, and the
    sum over its ``P`` coordinates of the variance over draws ``[R]`` (float64, unbiased).

    The gradient is that of the batch-mean training loss as the trainer computes it
    (:func:`vae.models.objectives.training_loss`), for a fixed batch ``x [R, B, D]``, *before*
    variance normalisation: the trainer divides the encoder gradient of SF, NVIL, DARN and MuProp
    by the running std ``s [R]`` (:meth:`Estimator.encoder_gradient_scale`), a per-replica
    rescaling that Adam all but undoes; the gradient is multiplied back by ``s`` here, so the
    variance is the estimator's own and compares across estimators. Each draw uses fresh noise
    from ``rng`` (pass a generator of its own to leave the training stream untouched). Gradients
    come from ``torch.autograd.grad``, so no ``.grad`` is written; the estimator runs in eval mode
    (its moving averages are not updated) and its mode is restored.
    """
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2 for a variance, got {num_draws}")
    params = {"encoder": list(model.encoder.parameters())}
    scale = estimator.encoder_gradient_scale()                                # [R] or None
    undo = 1.0 if scale is None else scale.double()[:, None]                 # [R, 1]: undo the division
    was_training = estimator.training
    estimator.eval()
    try:
        total = total_sq = torch.zeros((), dtype=torch.float64)
        for _ in range(num_draws):
            per_example, _, _ = training_loss(model, estimator, x, rng=rng, tau=tau, step=step)
            loss = per_example.mean(-1).sum()
            g = _flat_grads(loss, params)["encoder"].double() * undo          # [R, P]
            total, total_sq = total + g, total_sq + g.square()
    finally:
        estimator.train(was_training)
    var = (total_sq - total.square() / num_draws) / (num_draws - 1)           # [R, P]
    return total / num_draws, var.clamp(min=0).sum(1)


def encoder_gradient_variance(model: DiscreteVAE, estimator: Estimator, x: Tensor, *,
                              rng: ReplicaGenerator, tau: float | Tensor, step: int,
                              num_draws: int) -> Tensor:
    """``[R]``: sum over encoder coordinates of the variance of the encoder gradient over draws
    (:func:`encoder_gradient_moments`, whose docstring says which gradient)."""
    return encoder_gradient_moments(model, estimator, x, rng=rng, tau=tau, step=step,
                                    num_draws=num_draws)[1].float()
