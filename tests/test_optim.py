"""Adam and SGD with one learning rate per replica (vae/optim.py) against torch's optimisers:
replica r of a replica optimiser must take the steps torch's optimiser takes with lr[r]."""

import copy

import pytest
import torch

from vae.config import OptimConfig
from vae.optim import ReplicaAdam, ReplicaSGD, make_optimizer

LRS = [1e-3, 3e-2, 0.3]


def _replica_and_alone(make_replica, make_torch, steps: int = 6):
    """Train a [3, 4, 5] weight and a [3, 1, 5] bias with the replica optimiser, and each replica's
    slices alone with torch's, on the same gradients; return both parameter trajectories' ends."""
    gen = torch.Generator().manual_seed(0)   # float64: the same formulas, compared as algebra
    weight, bias = (torch.randn(3, 4, 5, generator=gen, dtype=torch.float64),
                    torch.randn(3, 1, 5, generator=gen, dtype=torch.float64))
    together = [weight.clone().requires_grad_(), bias.clone().requires_grad_()]
    alone = [[weight[r].clone().requires_grad_(), bias[r].clone().requires_grad_()] for r in range(3)]
    replica_opt = make_replica(together)
    torch_opts = [make_torch(params, lr) for params, lr in zip(alone, LRS)]
    for _ in range(steps):
        grads = [torch.randn(3, 4, 5, generator=gen, dtype=torch.float64),
                 torch.randn(3, 1, 5, generator=gen, dtype=torch.float64)]
        for p, g in zip(together, grads):
            p.grad = g.clone()
        replica_opt.step()
        for r, (params, opt) in enumerate(zip(alone, torch_opts)):
            for p, g in zip(params, grads):
                p.grad = g[r].clone()
            opt.step()
    return together, alone


@pytest.mark.parametrize("name, make_replica, make_torch", [
    ("adam", lambda ps: ReplicaAdam(ps, LRS), lambda ps, lr: torch.optim.Adam(ps, lr=lr)),
    ("sgd+momentum", lambda ps: ReplicaSGD(ps, LRS, momentum=0.9),
     lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9)),
    ("sgd", lambda ps: ReplicaSGD(ps, LRS), lambda ps, lr: torch.optim.SGD(ps, lr=lr)),
])
def test_replica_r_steps_like_torchs_optimiser_with_lr_r(name, make_replica, make_torch):
    together, alone = _replica_and_alone(make_replica, make_torch)
    for r in range(3):
        for p, q in zip(together, alone[r]):   # torch's float64 tolerances: other kernels, the same formulas
            torch.testing.assert_close(p[r], q, msg=f"{name}, replica {r}")
    assert not torch.allclose(together[0][0], together[0][2])   # the learning rates did differ


def test_make_optimizer_keeps_torchs_for_one_learning_rate_and_checks_the_replica_axis():
    w = torch.nn.Parameter(torch.zeros(2, 3))
    assert type(make_optimizer([w], OptimConfig(name="sgd", lr=0.1))) is torch.optim.SGD
    assert isinstance(make_optimizer([w], OptimConfig(name="adam", lr=[0.1, 0.2])), ReplicaAdam)
    with pytest.raises(ValueError, match="no replica axis of length 3"):
        ReplicaSGD([w], [0.1, 0.2, 0.3])


def test_replica_adam_state_survives_a_state_dict_round_trip():
    """A checkpointed run resumes exactly: the same next step after load_state_dict."""
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.nn.Parameter(torch.ones(2, 3)) for _ in range(2))
    opt_a, opt_b = ReplicaAdam([a], [0.1, 0.01]), ReplicaAdam([b], [0.1, 0.01])
    for _ in range(3):
        a.grad = torch.randn(2, 3, generator=gen)
        opt_a.step()
    with torch.no_grad():
        b.copy_(a)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))   # as from a checkpoint file: no shared tensors
    a.grad = b.grad = torch.randn(2, 3, generator=gen)
    opt_a.step(), opt_b.step()
    assert torch.equal(a, b)
