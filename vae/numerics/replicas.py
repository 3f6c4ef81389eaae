"""The replica axis: R independent runs (one per seed) trained together in one process.

Every tensor of a run carries a leading replica dimension ``R``: weights ``[R, in, out]``,
activations ``[R, ..., features]``. Replicas never mix: matrix products are batched over R,
convolutions grouped over R (:class:`ReplicaConv2d`, on images in a grouped layout), the loss is
a sum of per-replica losses, and Adam is element-wise, so replica ``r`` of a multi-seed run follows
exactly the trajectory of a single-seed run with seed ``r`` (tested). Randomness is drawn per
replica from that replica's own generator, for the same reason.
"""

from __future__ import annotations

import abc
import hashlib
import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def derive_seed(*parts: int | str) -> int:
    """A seed in [0, 2**32) determined by ``parts``, e.g. ``derive_seed("epoch", seed, epoch)``.

    Derived seeds go through a hash because torch's CPU generator keeps only the low 32 bits of
    its seed: ``(seed << 32) + epoch`` would give every seed the same stream.
    """
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


class NoiseSource(abc.ABC):
    """Where a step's randomness comes from: ``uniform`` and ``normal`` draws of a shape whose first
    axis is the replica axis, and Bernoulli draws made of uniform ones. :class:`ReplicaGenerator`
    draws them; :class:`DrawnNoise` hands out draws made before the step."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """R, the number of replicas."""

    @abc.abstractmethod
    def uniform(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """``U[0, 1)`` float32 draws of ``shape``."""

    @abc.abstractmethod
    def normal(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Standard normal float32 draws of ``shape``."""

    def bernoulli(self, probs: Tensor) -> Tensor:
        """Bernoulli draws with the given probabilities (``probs.shape[0] == R`` when R > 1)."""
        return (self.uniform(probs.shape) < probs).to(probs.dtype)


class ReplicaGenerator(NoiseSource):
    """One ``torch.Generator`` per replica, seeded from the run's seeds.

    ``uniform(shape)`` draws ``U[0, 1)`` of ``shape`` where ``shape[0]`` is the replica axis:
    slice ``r`` comes from generator ``r`` alone. With a single generator any shape is allowed
    (the whole tensor comes from it), which is what unit tests with no replica axis use.
    """

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu"):
        self.seeds = list(seeds)
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def uniform(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """``U[0, 1)`` float32 samples of ``shape`` (``shape[0] == R`` when R > 1)."""
        return self._draw(torch.rand, shape)

    def normal(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        """Standard normal float32 samples of ``shape`` (``shape[0] == R`` when R > 1)."""
        return self._draw(torch.randn, shape)

    def _draw(self, sampler: Callable[..., Tensor], shape: torch.Size | tuple[int, ...]) -> Tensor:
        """``sampler`` (torch.rand or torch.randn) per replica: slice r from generator r."""
        shape = tuple(shape)
        if len(self.generators) == 1:
            return sampler(shape, generator=self.generators[0], device=self.device)
        if shape[0] != len(self.generators):
            raise ValueError(f"leading dimension {shape[0]} is not the replica count "
                             f"{len(self.generators)}")
        out = torch.empty(shape, device=self.device)
        for g, part in zip(self.generators, out):                    # in place: no stacked copy
            sampler(shape[1:], generator=g, out=part)
        return out

    def state_dict(self) -> list[Tensor]:
        return [g.get_state() for g in self.generators]

    def load_state_dict(self, states: list[Tensor]) -> None:
        for g, s in zip(self.generators, states, strict=True):
            g.set_state(s)


Draw = tuple[str, tuple[int, ...]]   # ("uniform" | "normal", shape): one draw of a step's plan


class DrawnNoise(NoiseSource):
    """A step's noise drawn before the step, handed out in the order the step asks for it.

    torch.compile cannot trace a draw from a ``torch.Generator``, so the compiled training step
    (vae/training/compiled_step.py) gets its noise this way: :meth:`recording` passes the draws of one step
    through to the run's generators and notes their kinds and shapes (its ``plan``); each later
    step, :meth:`ahead` makes the plan's draws from the same generators, in the same order, before
    the step runs, and the step takes them one by one (kind and shape checked). A step given the
    drawn noise computes exactly what it computes given the generators.
    """

    def __init__(self, num_replicas: int, draws: list[tuple[Draw, Tensor]],
                 source: ReplicaGenerator | None = None):
        self.num_replicas, self.draws, self.source = num_replicas, draws, source
        self.taken = 0

    @classmethod
    def recording(cls, rng: ReplicaGenerator) -> DrawnNoise:
        """Draws passed through to ``rng``, noted in ``plan``."""
        return cls(len(rng), [], source=rng)

    @classmethod
    def ahead(cls, rng: ReplicaGenerator, plan: list[Draw]) -> DrawnNoise:
        """The draws of ``plan``, made from ``rng`` now."""
        return cls(len(rng), [(draw, getattr(rng, draw[0])(draw[1])) for draw in plan])

    @property
    def plan(self) -> list[Draw]:
        return [draw for draw, _ in self.draws]

    @property
    def tensors(self) -> list[Tensor]:
        return [tensor for _, tensor in self.draws]

    def __len__(self) -> int:
        return self.num_replicas

    def uniform(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        return self._take(("uniform", tuple(shape)))

    def normal(self, shape: torch.Size | tuple[int, ...]) -> Tensor:
        return self._take(("normal", tuple(shape)))

    def _take(self, draw: Draw) -> Tensor:
        if self.source is not None:   # recording
            tensor = getattr(self.source, draw[0])(draw[1])
            self.draws.append((draw, tensor))
            return tensor
        if self.taken == len(self.draws) or self.draws[self.taken][0] != draw:
            planned = self.draws[self.taken][0] if self.taken < len(self.draws) else "no more draws"
            raise RuntimeError(f"the step asked for noise {draw} where its first step drew {planned}: "
                               "its draws change from step to step, so it cannot run compiled")
        self.taken += 1
        return self.draws[self.taken - 1][1]


class ReplicaLinear(nn.Module):
    """``R`` independent affine maps: ``y[r] = x[r] @ weight[r] + bias[r]``.

    Input ``[R, ..., in]``, output ``[R, ..., out]``. Initialised like ``nn.Linear`` (uniform in
    ``+-1/sqrt(in)``), each replica from its own generator.
    """

    def __init__(self, in_features: int, out_features: int, rng: ReplicaGenerator):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        r = len(rng)
        self.weight = nn.Parameter((2 * rng.uniform((r, in_features, out_features)) - 1) * bound)
        self.bias = nn.Parameter((2 * rng.uniform((r, 1, out_features)) - 1) * bound)

    def forward(self, x: Tensor) -> Tensor:
        r, *middle, d = x.shape
        y = torch.baddbmm(self.bias, x.reshape(r, -1, d), self.weight)  # [R, M, out]
        return y.reshape(r, *middle, -1)

    def forward_without_bias(self, x: Tensor) -> Tensor:
        """``forward(x)`` without the bias, ``x W``: ``[R, ..., out]`` (for a sum that adds the bias
        its own way: :func:`vae.models.discrete_vae.softplus_sum`)."""
        r, *middle, d = x.shape
        return torch.bmm(x.reshape(r, -1, d), self.weight).reshape(r, *middle, -1)

    def forward_one_hot(self, index: Tensor, num_classes: int) -> Tensor:
        """``forward(one_hot(index, K).flatten(-2))`` without building the one-hot input: for the
        classes ``index [R, ..., N]`` of N variables (in = N * K) the product is the sum of the N
        weight rows ``n * K + index_n``, an embedding bag; the bias is added to the first variable's
        K rows, so the bag sums it too (no pass over the output of its own). ``[R, ..., out]``."""
        r, *middle, n = index.shape
        d_in, d_out = self.weight.shape[1:]
        table = torch.cat([self.weight[:, :num_classes] + self.bias, self.weight[:, num_classes:]], dim=1)
        offsets = (torch.arange(r, device=index.device) * d_in).view(r, *[1] * (index.dim() - 1))
        rows = index + torch.arange(n, device=index.device) * num_classes + offsets     # into [R * in, out]
        y = F.embedding_bag(rows.reshape(-1, n), table.reshape(r * d_in, d_out), mode="sum")
        return y.view(r, *middle, d_out)


#: ``model.activation``: the nonlinearity between hidden layers. LeakyReLU's slope 0.3 is the 2020
#: benchmark's (DisARM's Keras layers, whose default it is; torch's default is 0.01).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "leaky_relu": partial(nn.LeakyReLU, 0.3)}


class ReplicaMLP(nn.Sequential):
    """``ReplicaLinear`` layers with ``activation`` between them and none after the last."""

    def __init__(self, sizes: list[int], rng: ReplicaGenerator,
                 activation: type[nn.Module] = nn.ReLU):
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                layers.append(activation())
            layers.append(ReplicaLinear(d_in, d_out, rng))
        super().__init__(*layers)


def with_sample_axes(t: Tensor, count: int) -> Tensor:
    """``t [R, ...]`` viewed as ``[R, 1 x count, ...]``: per-example values broadcast over ``count``
    sample axes after the replica axis (the suite's ``[R, *S, B, ...]`` layout)."""
    return t.reshape(t.shape[0], *[1] * count, *t.shape[1:])


def forward_classes(layers: list[nn.Module], index: Tensor, num_classes: int, categorical: bool) -> Tensor:
    """``layers`` (a :class:`ReplicaLinear` first) at the one-hot inputs of classes ``index [R, ..., N]``:
    ``[R, ..., out]``. Categorical inputs go through :meth:`ReplicaLinear.forward_one_hot`; a
    Bernoulli layer (``categorical=False``) reads the N bits, which are the indices themselves."""
    first, *rest = layers
    h = first.forward_one_hot(index, num_classes) if categorical else first(index.to(first.weight.dtype))
    for layer in rest:
        h = layer(h)
    return h


class ReplicaConv2d(nn.Module):
    """``R`` independent 2-D convolutions (``transposed=True``: transposed convolutions) as one
    grouped convolution.

    Input ``[M, R * C_in, H, W]``, output ``[M, R * C_out, H', W']`` (the *grouped layout*: channels
    ``r * C .. (r + 1) * C - 1`` are replica r's, see :func:`to_groups`); with ``groups = R`` each
    replica's outputs read its own channels and weights only. Weights ``[R, C_out, C_in, k, k]``
    (transposed: ``[R, C_in, C_out, k, k]``, torch's order) and bias ``[R, C_out]``, initialised as
    ``nn.Conv2d`` / ``nn.ConvTranspose2d`` are (uniform in ``+-1/sqrt(fan_in)``, ``fan_in`` =
    weight.shape[2] * k * k), each replica from its own generator.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
                 rng: ReplicaGenerator, transposed: bool = False):
        super().__init__()
        r = len(rng)
        shape = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        bound = 1.0 / math.sqrt(shape[1] * kernel * kernel)
        self.weight = nn.Parameter((2 * rng.uniform((r, *shape, kernel, kernel)) - 1) * bound)
        self.bias = nn.Parameter((2 * rng.uniform((r, out_channels)) - 1) * bound)
        self.stride, self.padding, self.transposed = stride, padding, transposed

    def forward(self, x: Tensor) -> Tensor:
        conv = F.conv_transpose2d if self.transposed else F.conv2d
        if x.device.type == "cpu":        # oneDNN's own layout: no reorder per call, faster kernels
            # (M2's bound about 1.2x; results/README.md "Speed")
            x = x.contiguous(memory_format=torch.channels_last)
        return conv(x, self.weight.flatten(0, 1), self.bias.flatten(), stride=self.stride,
                    padding=self.padding, groups=self.weight.shape[0])


def to_groups(x: Tensor, channels: int, side: int) -> Tensor:
    """``[R, M, channels * side * side]`` -> the grouped layout ``[M, R * channels, side, side]``."""
    r, m = x.shape[:2]
    return x.transpose(0, 1).reshape(m, r * channels, side, side)


def from_groups(x: Tensor, num_replicas: int) -> Tensor:
    """The grouped layout ``[M, R * C, H, W]`` -> ``[R, M, C * H * W]``."""
    return x.reshape(x.shape[0], num_replicas, -1).transpose(0, 1)
