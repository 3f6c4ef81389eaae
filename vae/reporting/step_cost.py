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

import collections
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


#: What an eager step's operators are spent on: an operator by the innermost suite function it
#: runs under (a frame ``vae/<file>.py(<line>): <function>``; the first part whose patterns match
#: wins, a pattern ``file:function`` matching both), after the products (counted as such wherever
#: they run), the optimiser's kernels and the backward pass's operators.
PARTS = (("data", ("vae/data/images.py",)),
         ("sampling",
          ("vae/numerics/gumbel.py", "vae/estimators/sampling.py", "vae/numerics/replicas.py:_draw",
           "vae/numerics/replicas.py:bernoulli")),
         ("estimator", ("vae/estimators/",)),
         ("model and loss", ("vae/models/discrete_vae.py", "vae/models/objectives.py", "vae/models/sbn.py",
                             "vae/models/m2.py", "vae/training/tasks.py", "vae/numerics/replicas.py")),
         ("optimiser", ("vae/training/optim.py", "torch/optim/")))
_MATMUL_NAMES = {f"aten::{op.__name__}" for op in MATMULS}


def _matches(frame: str, pattern: str) -> bool:
    file, _, function = pattern.partition(":")
    return file in frame and (not function or frame.endswith(f": {function}"))


def _part(event) -> str:
    """The part of :data:`PARTS` (or ``matmuls``, ``backward``, ``other``) an operator event is."""
    if event.name in _MATMUL_NAMES:
        return "matmuls"
    if event.name.startswith(("aten::_fused_adam", "aten::_fused_sgd", "aten::_foreach")):
        return "optimiser"
    node = event.cpu_parent
    while node is not None:
        if node.name.startswith("autograd::engine") or "run_backward" in node.name:
            return "backward"
        if "/vae/" in node.name or node.name.startswith("vae/") or "torch/optim/" in node.name:
            matching = (part for part, patterns in PARTS if any(_matches(node.name, p) for p in patterns))
            return next(matching, "other")
        node = node.cpu_parent
    return "other"


def step_parts(step: Callable[[], object], seconds: float, calls: int = 5) -> dict[str, float]:
    """Where an eager step's ``seconds`` go: the self time of its operators (``torch.profiler``, over
    ``calls`` steps, per step) summed by :func:`_part` (:data:`PARTS`; ``backward``: the backward
    pass but its products; ``other``: operators under none of them), and ``outside operators``, the
    rest of ``seconds``: Python, autograd's bookkeeping and the dispatch above each operator (the
    profiler's tracing of Python calls would inflate those, so they are not timed by it; where the
    operators' profiled times add up to more than ``seconds``, they are scaled down to it)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_stack=True) as prof:
        for _ in range(calls):
            step()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    threads = collections.Counter(e.thread for e in events)
    step_thread = threads.most_common(1)[0][0] if threads else None   # a compiler waits in others
    totals: dict[str, float] = {}
    for event in (e for e in events if e.thread == step_thread):
        part = _part(event)
        totals[part] = totals.get(part, 0.0) + event.self_cpu_time_total / 1e6 / calls
    scale = min(1.0, seconds / (sum(totals.values()) or 1.0))      # the profiler's overhead on each operator
    parts = {part: t * scale for part, t in sorted(totals.items(), key=lambda item: -item[1])}
    parts["outside operators"] = max(0.0, seconds - sum(parts.values()))
    return parts
