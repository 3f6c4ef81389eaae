"""The optimiser of a run, and Adam / SGD with one learning rate per replica.

torch's optimisers take one learning rate per parameter group, while every parameter of a run
holds all R replicas (``[R, ...]``, vae/numerics/replicas.py). :class:`ReplicaAdam` and :class:`ReplicaSGD`
apply ``lr[r]`` to slice ``r`` of every parameter, with the formulas of torch's single-tensor
Adam and SGD, so replica ``r`` takes the update a run of its own with learning rate ``lr[r]``
would take (tested against torch's, and through the trainer against single runs). That puts a
learning-rate grid on the replica axis beside the seeds (``optim.lr`` as a list; ``sweep
--pack-lr``). A run with one learning rate uses torch's own optimisers with their fused
kernels (``fused=True``: one kernel updates every parameter, fewer passes over memory than the
default kernels), the same numbers to float32 round-off (tests/test_optim.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from vae.config import OptimConfig


def make_optimizer(params: Iterable[nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """Adam or SGD with momentum, as ``optim`` says: torch's for one learning rate, the replica
    versions below for a list (one per replica)."""
    if isinstance(optim.lr, list):
        if optim.name == "adam":
            return ReplicaAdam(params, optim.lr)
        return ReplicaSGD(params, optim.lr, momentum=optim.momentum)
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, fused=True)
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, fused=True)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)`` keeping ``optimizer``'s own kernels (``fused``,
    ``foreach``): a checkpoint saved before the fused kernels resumes with them, and one whose
    ReplicaAdam counted steps in ints resumes with them as tensors (:func:`adam_update`)."""
    kernels = {k: v for k, v in optimizer.param_groups[0].items() if k in ("fused", "foreach")}
    optimizer.load_state_dict({**state, "param_groups": [{**g, **kernels} for g in state["param_groups"]]})
    for p, param_state in optimizer.state.items():   # ReplicaAdam counted its steps in ints before
        if isinstance(param_state.get("step"), int):
            param_state["step"] = torch.tensor(float(param_state["step"]), device=p.device)


class _ReplicaOptimizer(torch.optim.Optimizer):
    """Shared part: ``group["lr"]`` is a list of R learning rates; every parameter is ``[R, ...]``."""

    def __init__(self, params: Iterable[nn.Parameter], lr: list[float], defaults: dict):
        super().__init__(params, {"lr": list(lr), **defaults})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 0 or p.shape[0] != len(group["lr"]):
                    raise ValueError(f"a parameter of shape {tuple(p.shape)} has no replica axis of "
                                     f"length {len(group['lr'])} (one learning rate per replica)")
        self._lr_tensors: dict[tuple, Tensor] = {}

    def _lr_view(self, lr: list[float], p: Tensor) -> Tensor:
        """``lr`` as a ``[R, 1, ..., 1]`` tensor on ``p``'s device, to broadcast over ``p [R, ...]``;
        copied to the device only when the learning rates change (no host sync per step)."""
        key = (tuple(lr), p.device, p.dtype)
        if key not in self._lr_tensors:
            # the old rates
            self._lr_tensors = {k: v for k, v in self._lr_tensors.items() if k[1:] != key[1:]}
            self._lr_tensors[key] = torch.tensor(lr, dtype=p.dtype).to(p.device)
        return self._lr_tensors[key].view(-1, *[1] * (p.dim() - 1))


class ReplicaAdam(_ReplicaOptimizer):
    """Adam (no weight decay, no amsgrad) with learning rate ``lr[r]`` on replica r (:func:`adam_update`)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: list[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr, {"betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    adam_update(p, p.grad, _initial_state(self, p), self._lr_view(group["lr"], p),
                                *group["betas"], group["eps"])


class ReplicaSGD(_ReplicaOptimizer):
    """SGD with momentum (no dampening, no Nesterov) with learning rate ``lr[r]`` on replica r
    (:func:`sgd_update`)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: list[float], momentum: float = 0.0):
        super().__init__(params, lr, {"momentum": momentum})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    sgd_update(p, p.grad, _initial_state(self, p), self._lr_view(group["lr"], p),
                               group["momentum"])


def adam_update(p: Tensor, grad: Tensor, state: dict, lr: float | Tensor, beta1: float, beta2: float,
                eps: float) -> None:
    """One Adam step of ``p`` in place, with torch's formulas: with ``t = state["step"] + 1``,
    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``, on a state in
    ``torch.optim.Adam``'s format (``step`` a float tensor, ``exp_avg``, ``exp_avg_sq``). ``lr`` is a
    number or a tensor that broadcasts over ``p`` (``[R, 1, ...]``: one per replica). Tensor
    arithmetic only: torch.compile traces it (vae/training/compiled_step.py)."""
    state["step"] += 1
    t = state["step"].to(p.dtype)            # the count (float32, as torch keeps it) in p's precision
    # the step's two factors in a small tensor of their own: compiled, they are computed once, not
    # once per element (two pows and three divisions per element made the update much slower)
    scale, step_size = torch.stack(torch.broadcast_tensors((1 - beta2 ** t) ** -0.5, lr / (1 - beta1 ** t)))
    state["exp_avg"].lerp_(grad, 1 - beta1)
    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = state["exp_avg_sq"].sqrt().mul_(scale).add_(eps)
    p.addcdiv_(state["exp_avg"] * step_size, denom, value=-1)      # p -= step size * m / denom


def sgd_update(p: Tensor, grad: Tensor, state: dict, lr: float | Tensor, momentum: float) -> None:
    """One SGD step of ``p`` in place, torch's formulas: ``buf = momentum buf + g``, ``p -= lr buf``
    (``p -= lr g`` without momentum), ``state["momentum_buffer"]`` as ``torch.optim.SGD`` keeps it
    (zeros before the first step give torch's ``buf = g``). ``lr`` as in :func:`adam_update`."""
    direction = grad
    if momentum > 0:
        direction = state["momentum_buffer"].mul_(momentum).add_(grad)
    if isinstance(lr, Tensor):
        p.addcmul_(lr, direction, value=-1)     # one pass over p
    else:
        p.add_(direction, alpha=-lr)


def _initial_state(optimizer: torch.optim.Optimizer, p: Tensor) -> dict:
    """``optimizer.state[p]``, created as torch's Adam and SGD create it if ``p`` has none yet."""
    state = optimizer.state[p]
    if not state:
        if "betas" in optimizer.defaults:
            state.update(step=torch.tensor(0.0, device=p.device), exp_avg=torch.zeros_like(p),
                         exp_avg_sq=torch.zeros_like(p))
        elif optimizer.defaults.get("momentum", 0) > 0:
            state["momentum_buffer"] = torch.zeros_like(p)
    return state


def apply_update(optimizer: torch.optim.Optimizer, grads: list[Tensor | None], lr: Tensor) -> None:
    """What ``optimizer.step()`` does with gradients ``grads`` (one per parameter, in the param
    groups' order; None: no gradient, the parameter and its state are left alone) and the learning rate ``lr``
    as a device tensor (0-d, or ``[R]``: one per replica), written so torch.compile traces it into the step's
    graph (torch's own ``step`` breaks the graph on purpose). It updates the optimiser's own state, so a
    checkpoint is the same whichever way the run steps."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    defaults = optimizer.defaults
    with torch.no_grad():
        for p, grad in zip(params, grads, strict=True):
            if grad is None:
                continue
            rate = lr.view(-1, *[1] * (p.dim() - 1)) if lr.dim() else lr
            if "betas" in defaults:
                adam_update(p, grad, _initial_state(optimizer, p), rate, *defaults["betas"], defaults["eps"])
            else:
                sgd_update(p, grad, _initial_state(optimizer, p), rate, defaults["momentum"])


def prior_sgd_step(params: list[Tensor], grads: list[Tensor | None], lr: float | Tensor) -> None:
    """``p -= lr * grad`` for each parameter with a gradient: the learned prior's own plain SGD
    (``optim.prior_lr``; DisARM's protocol), written once for the eager and the compiled step."""
    with torch.no_grad():
        for p, grad in zip(params, grads, strict=True):
            if grad is not None:
                p.sub_(grad * lr)
