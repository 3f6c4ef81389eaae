"""What a training step costs against its own matrix products: the step's *matmul floor*.

A small model's step is mostly not arithmetic: the linear Bernoulli VAE's RLOO step at batch 50
multiplies about 0.16 GFLOP, a millisecond at a core's float32 rate, and takes several. To say
how far a step is from what it must do, :func:`record_matmuls` runs one eager training step under
a dispatch mode that notes every matrix product torch executes in it (``mm``, ``bmm``, ``addmm``,
``baddbmm`` and their in-place and ``out=`` forms, forward and backward alike: the autograd
engine dispatches the backward's products through the same mode), with the shapes, strides and
dtypes of their operands; :func:`matmul_floor` times exactly those products again, on tensors of
the same layouts, alone in the same process. A step within 2x of its floor spends at most as long
on everything else (sampling, the loss's elementwise work, the optimiser, Python) as on its
products.

The products of a compiled step (``compile=true``) are the eager step's (the compiler calls the
same extern matmuls), so the floor of both is recorded from the eager one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
#: The products counted: every overload of these (``addmm_``, ``bmm.out``, ...).
MATMULS = frozenset({aten.mm, aten.bmm, aten.addmm, aten.addmm_, aten.baddbmm, aten.baddbmm_, aten.addbmm,
                     aten.addbmm_})


@dataclass(frozen=True)
class Operand:
    """A tensor argument's layout: what a replay allocates in its place."""
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, t: Tensor) -> Operand:
        return cls(tuple(t.shape), tuple(t.stride()), t.dtype, t.device)

    def make(self) -> Tensor:
        """A tensor of this layout holding normal draws (a broadcast stride 0 stays 0)."""
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device).normal_()


@dataclass(frozen=True)
class MatmulCall:
    """One product of a step: the operator and its arguments (tensors as :class:`Operand`)."""
    op: torch._ops.OpOverload
    args: tuple
    kwargs: tuple[tuple[str, object], ...]

    def flops(self) -> int:
        """``2 m n k`` per batch entry: the multiply-adds of the product (the output's size times
        the inner dimension, times 2)."""
        factors = [a for a in self.args if isinstance(a, Operand)][-2:]   # the last two positional tensors
        *batch, m, k = factors[0].shape
        n = factors[1].shape[-1]
        size = 1
        for b in batch:
            size *= b
        return 2 * size * m * n * k

    def replay(self) -> Callable[[], None]:
        """A call of the same operator on fresh tensors of the same layouts."""
        args = [a.make() if isinstance(a, Operand) else a for a in self.args]
        kwargs = {k: v.make() if isinstance(v, Operand) else v for k, v in self.kwargs}
        return lambda: self.op(*args, **kwargs)


def _describe(value: object) -> object:
    return Operand.of(value) if isinstance(value, Tensor) else value


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[MatmulCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in MATMULS:
            self.calls.append(MatmulCall(func, tuple(_describe(a) for a in args),
                                         tuple((k, _describe(v)) for k, v in kwargs.items())))
        return func(*args, **kwargs)


def record_matmuls(step: Callable[[], object]) -> list[MatmulCall]:
    """The matrix products one call of ``step`` (an eager training step) executes, in order."""
    with _Recorder() as recorder:
        step()
    return recorder.calls


def matmul_floor(calls: list[MatmulCall], repeats: int = 5, sync: Callable[[], None] = lambda: None,
                 target_seconds: float = 0.2) -> float:
    """Seconds one pass over ``calls`` takes, replayed alone: the median of ``repeats`` timings of
    as many passes as fill about ``target_seconds``, after one warm-up pass."""
    replays = [call.replay() for call in calls]

    def once() -> None:
        for replay in replays:
            replay()
    once()
    sync()
    start = time.perf_counter()
    once()
    sync()
    passes = max(1, round(target_seconds / max(time.perf_counter() - start, 1e-6)))
    timings = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(passes):
            once()
        sync()
        timings.append((time.perf_counter() - start) / passes)
    return statistics.median(timings)


#: What an eager step's time is spent on: an operator (or a Python function of the suite) by the
#: innermost suite module it runs under (the first match wins), after the products (counted as
#: such wherever they run), the optimiser's work and the backward pass's.
PARTS = (("data", ("vae/data.py",)),
         ("sampling", ("vae/gumbel.py", "vae/estimators/sampling.py", "vae/replicas.py")),
         ("estimator", ("vae/estimators/",)),
         ("model and loss", ("vae/models.py", "vae/objectives.py", "vae/sbn.py", "vae/m2.py", "vae/tasks.py")),
         ("optimiser", ("vae/optim.py", "torch/optim/")))
_MATMUL_NAMES = {f"aten::{op.__name__}" for op in MATMULS}


def _part(event) -> str:
    """The part of :data:`PARTS` (or ``matmuls``, ``backward``, ``other``) a profiler event is."""
    if event.name in _MATMUL_NAMES:
        return "matmuls"
    if event.name.startswith(("Optimizer.", "aten::_fused_adam", "aten::_fused_sgd", "aten::_foreach")):
        return "optimiser"
    node = event
    while node is not None:
        if node.name.startswith("autograd::engine"):
            return "backward"
        if "/vae/" in node.name or node.name.startswith("vae/") or "torch/optim/" in node.name:
            return next((part for part, files in PARTS if any(f in node.name for f in files)), "other")
        node = node.cpu_parent
    return "other"


def step_parts(step: Callable[[], object], seconds: float, calls: int = 5) -> dict[str, float]:
    """Where an eager step's ``seconds`` go: ``torch.profiler``'s self time of every operator and
    Python function over ``calls`` steps, summed by :func:`_part` (:data:`PARTS`; ``backward``:
    the backward pass but its products; ``other``: what runs under none of them, such as the
    trainer's own lines), as shares of ``seconds`` (the profiler's overhead spread evenly)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_stack=True) as prof:
        for _ in range(calls):
            step()
    totals: dict[str, float] = {}
    for event in prof.events():
        if event.name.startswith(("torch/profiler", "torch/autograd/profiler", "<built-in")):
            continue                                     # the profiler's own start and stop
        part = _part(event)
        totals[part] = totals.get(part, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {part: seconds * t / whole for part, t in sorted(totals.items(), key=lambda item: -item[1])}
