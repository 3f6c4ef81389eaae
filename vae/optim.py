"""The optimiser of a run, and Adam / SGD with one learning rate per replica.

torch's optimisers take one learning rate per parameter group, while every parameter of a run
holds all R replicas (``[R, ...]``, vae/replicas.py). :class:`ReplicaAdam` and :class:`ReplicaSGD`
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
    ``foreach``): a checkpoint saved before the fused kernels resumes with them."""
    kernels = {k: v for k, v in optimizer.param_groups[0].items() if k in ("fused", "foreach")}
    optimizer.load_state_dict({**state, "param_groups": [{**g, **kernels} for g in state["param_groups"]]})


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
            self._lr_tensors = {k: v for k, v in self._lr_tensors.items() if k[1:] != key[1:]}   # the old rates
            self._lr_tensors[key] = torch.tensor(lr, dtype=p.dtype).to(p.device)
        return self._lr_tensors[key].view(-1, *[1] * (p.dim() - 1))


class ReplicaAdam(_ReplicaOptimizer):
    """Adam (no weight decay, no amsgrad): for replica r, with ``g`` the gradient and t the step,
    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr[r] / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""

    def __init__(self, params: Iterable[nn.Parameter], lr: list[float], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__(params, lr, {"betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["exp_avg"].lerp_(p.grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = state["exp_avg_sq"].sqrt().div_((1 - beta2 ** t) ** 0.5).add_(group["eps"])
                step_size = self._lr_view(group["lr"], p) / (1 - beta1 ** t)
                p.addcdiv_(state["exp_avg"], denom.div_(step_size), value=-1)   # p -= step_size m / denom


class ReplicaSGD(_ReplicaOptimizer):
    """SGD with momentum (no dampening, no Nesterov): for replica r,
    ``buf = momentum buf + g`` (``buf = g`` at the first step), ``p -= lr[r] buf``; without
    momentum ``p -= lr[r] g``."""

    def __init__(self, params: Iterable[nn.Parameter], lr: list[float], momentum: float = 0.0):
        super().__init__(params, lr, {"momentum": momentum})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                direction = p.grad
                if group["momentum"] > 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = p.grad.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(p.grad)
                    direction = state["momentum_buffer"]
                p.addcmul_(self._lr_view(group["lr"], p), direction, value=-1)       # one pass over p
