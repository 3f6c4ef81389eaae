"""The training step as one compiled graph (``compile=true``).

``Trainer.train_step`` with ``compile=false`` runs the step eagerly: forward, ``backward()``,
``optimizer.step()``, each operation a kernel of its own. With ``compile=true`` the same step is
one ``torch.compile(fullgraph=True)`` graph, so torch's compiler fuses the elementwise work of the
noise transform, estimator, loss and optimiser update, and on a GPU the whole graph is one CUDA
graph (``mode="reduce-overhead"``): one launch a step where eager needs hundreds.

In the graph: the encoder, the estimator with its draws, the decoder, the loss, its gradient
(``torch.autograd.grad``, traced), and the optimiser's update (vae.training.optim.apply_update: Adam's or
SGD's formulas on the optimiser's own state, so checkpoints are the same as eager runs' and either
resumes the other), with tau and the learning rate as device tensors.

Before the graph: the task's batch (``Task.batch``: the per-epoch order, the gather and a dynamic
binarization's draw; the ssl task's labelled batch too) and the step's noise.
torch.compile cannot trace draws from a ``torch.Generator``, so the noise is drawn from the run's
own generators just before the graph, in the order the step uses it (vae.numerics.replicas.DrawnNoise,
planned at the first step): a compiled run draws exactly the noise an eager one draws.

Every built-in estimator's step is one graph, with no break (tests/test_training.py checks each,
read from the registry, and so a new one), and a compiled step computes the eager step's numbers
to float round-off (tested for the VAE and the SBN). The first call compiles: seconds to a minute,
once per run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

import torch
from torch import Tensor, nn

from vae.config import Config
from vae.numerics.replicas import Draw, DrawnNoise, ReplicaGenerator
from vae.training.optim import apply_update, prior_sgd_step
from vae.training.schedules import Temperature
from vae.training.tasks import Batch, Task


class StepParts(Protocol):
    """What a compiled step reads of the run it trains (a ``vae.training.trainer.Trainer`` is one)."""

    cfg: Config
    device: torch.device
    rng: ReplicaGenerator                 # the run's generators: the step's noise is drawn from them
    task: Task
    model: nn.Module
    estimator: nn.Module
    optimizer: torch.optim.Optimizer      # its param groups and state are updated in the graph
    prior_params: list[nn.Parameter]      # trained by SGD at prior_lr(t) (optim.prior_lr), or []
    temperature: Temperature

    def prior_lr(self, step: int) -> float: ...

    def numerics(self) -> AbstractContextManager: ...


#: ``compile: auto`` compiles the step of a run of this task on this device type from this many
#: steps on: where the compilation (once per run, tens of seconds on the CPU) is repaid by the
#: faster steps within the run (the measurement: configs/README.md "Compiled steps"). Where no
#: entry says so (a GPU, whose CUDA-graph step has not been measured yet; M2's convolutions on the
#: CPU), ``auto`` trains eagerly.
AUTO_MIN_STEPS: dict[tuple[str, str], int] = {("vae", "cpu"): 20_000, ("sbn", "cpu"): 20_000}


def compiles(cfg: Config, device: torch.device) -> bool:
    """Whether a run of ``cfg`` on ``device`` trains its step compiled: ``cfg.compile`` when it is
    true or false; for ``auto``, whether the run is at least :data:`AUTO_MIN_STEPS` long."""
    if cfg.compile != "auto":
        return bool(cfg.compile)
    least = AUTO_MIN_STEPS.get((cfg.task, device.type))
    return least is not None and cfg.steps >= least


class NotCompiled(RuntimeError):
    """The step could not be compiled (a graph break, or no working C++ compiler): raised, with the
    run's generators as they were before the step, only for ``compile: auto``, whose trainer then
    trains eagerly."""


class CompiledStep:
    """``step(batch, learning_rate, t)`` -> (loss [R], kl [R], estimator info): one update of every
    replica of ``trainer`` (:class:`StepParts`) at step t, from the task's batch, as one compiled
    graph after a first, planning step."""

    def __init__(self, trainer: StepParts, may_fall_back: bool = False):
        self.trainer = trainer
        self.may_fall_back = may_fall_back   # compile: auto -- a failed compilation raises NotCompiled
        self.compiled = False                # whether the graph has run once (compiled)
        self.plan: list[Draw] | None = None
        r = len(trainer.cfg.seeds)
        self.learning_rate = None          # the value lr holds, to refill it only when it changes
        self.lr = torch.zeros(r, device=trainer.device)
        self.tau = torch.zeros(r, 1, 1, 1, device=trainer.device)   # shaped as a learned tau
        self.step = torch.zeros((), device=trainer.device)          # the step number, for slopes that anneal
        self.prior_lr = torch.zeros((), device=trainer.device)      # optim.prior_lr at the step (decayed)
        mode = "reduce-overhead" if trainer.device.type == "cuda" else "default"
        # torch.compile keeps its graphs per function, guarded on the objects they read (this
        # trainer's modules), so each new run would add one until its limit of 8 fails: a process
        # trains one compiled run at a time, and a new one starts with torch's compiler reset.
        torch.compiler.reset()
        self.graph: Callable = torch.compile(self._update, fullgraph=True, mode=mode)

    def __call__(self, batch: Batch, learning_rate: float | list[float],
                 t: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        # a host-to-device copy when the rate decays, none otherwise
        if learning_rate != self.learning_rate:
            rates = learning_rate if isinstance(learning_rate, list) else [learning_rate] * len(self.lr)
            self.lr.copy_(torch.tensor(rates), non_blocking=True)
            self.learning_rate = learning_rate
        tau, step = self._tau(t), self.step.fill_(t)
        if self.trainer.prior_params:
            self.prior_lr.fill_(self.trainer.prior_lr(t))
        if self.plan is None:                       # the first step plans the draws and runs eagerly
            noise = DrawnNoise.recording(self.trainer.rng)
            out = self._update(batch, [], tau, step, noise)
            self.plan = noise.plan
            self._static_inputs()
            return out
        before = None if self.compiled or not self.may_fall_back else self.trainer.rng.state_dict()
        noise = DrawnNoise.ahead(self.trainer.rng, self.plan)
        try:
            with torch._dynamo.config.patch(trace_autograd_ops=True):   # trace autograd.grad into the graph
                out = self.graph(batch, noise.tensors, tau, step, None)
        except torch._dynamo.exc.TorchDynamoException as err:
            if before is None:
                raise
            self.trainer.rng.load_state_dict(before)    # compiling fails before the graph runs: nothing moved
            raise NotCompiled(f"{type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}") from err
        self.compiled = True
        return out

    def graph_breaks(self, batch: Batch, t: int) -> list[str]:
        """Why torch.compile would break the graph of the step at ``batch`` and step ``t`` (after
        the first, planning step; noise drawn from the run's generators): empty for an estimator
        whose step is one graph. What tests/test_training.py checks for every estimator."""
        noise = DrawnNoise.ahead(self.trainer.rng, self.plan)
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            explanation = torch._dynamo.explain(self._update)(batch, noise.tensors, self._tau(t),
                                                              self.step.fill_(t), None)
        return [f"{b.reason.splitlines()[0]} ({b.user_stack[-1].filename}:{b.user_stack[-1].lineno})"
                if b.user_stack else b.reason.splitlines()[0] for b in explanation.break_reasons]

    def _static_inputs(self) -> None:
        """Tell the compiler which of the graph's inputs keep their memory from step to step (the
        optimiser's state, now that the first step created it, and lr, tau and the step number),
        so that a CUDA graph reads and updates them in place instead of copying them each step."""
        states = [v for state in self.trainer.optimizer.state.values()
                  for v in state.values() if isinstance(v, Tensor)]
        for tensor in (*states, self.lr, self.tau, self.step, self.prior_lr):
            torch._dynamo.mark_static_address(tensor)

    def _tau(self, t: int) -> Tensor | None:
        """A scheduled tau at step t in the device tensor the graph reads; None for a learned
        one, which the graph computes itself (it is a parameter)."""
        if self.trainer.temperature.learned is not None:
            return None
        return self.tau.fill_(self.trainer.temperature(t))

    def _update(self, batch: Batch, draws: list[Tensor], tau: Tensor | None, step: Tensor,
                noise: DrawnNoise | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The step of ``Trainer.train_step`` from its batch on: loss, gradient and update."""
        trainer = self.trainer
        if noise is None:                           # in the graph: the draws made ahead
            noise = DrawnNoise(len(self.lr), list(zip(self.plan, draws)))
        if tau is None:
            tau = trainer.temperature(0)            # learned: the same at every step
        with trainer.numerics():
            per_example, kl, info = trainer.task.loss(trainer.model, trainer.estimator, batch, rng=noise,
                                                      tau=tau, step=step, cfg=trainer.cfg)
        loss = per_example.mean(-1)
        params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
        grads = torch.autograd.grad(loss.sum(), [*params, *trainer.prior_params], allow_unused=True)
        apply_update(trainer.optimizer, grads[:len(params)],
                     self.lr if isinstance(trainer.cfg.optim.lr, list) else self.lr[0])
        prior_sgd_step(trainer.prior_params, grads[len(params):], self.prior_lr)
        return loss.detach(), kl.mean(-1), info
