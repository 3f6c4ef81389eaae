"""Adam and SGD with one learning rate per replica (vae/training/optim.py) against torch's optimisers:
replica r of a replica optimiser must take the steps torch's optimiser takes with lr[r]."""

import copy

import pytest
import torch

from conftest import float32_rtol
from vae.config import OptimConfig, load_config
from vae.training.optim import ReplicaAdam, ReplicaSGD, apply_update, load_optimizer_state, make_optimizer
from vae.training.trainer import Trainer

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


def _three_steps_and_a_copy(seed: int):
    """(generator, a, b, opt_a, opt_b): ``a`` after three ReplicaAdam steps, ``b`` a copy of its
    values whose optimiser has no state yet (what a resumed run starts from)."""
    gen = torch.Generator().manual_seed(seed)
    a, b = (torch.nn.Parameter(torch.ones(2, 3)) for _ in range(2))
    opt_a, opt_b = ReplicaAdam([a], [0.1, 0.01]), ReplicaAdam([b], [0.1, 0.01])
    for _ in range(3):
        a.grad = torch.randn(2, 3, generator=gen)
        opt_a.step()
    with torch.no_grad():
        b.copy_(a)
    return gen, a, b, opt_a, opt_b


def test_replica_adam_state_survives_a_state_dict_round_trip():
    """A checkpointed run resumes exactly: the same next step after load_state_dict."""
    gen, a, b, opt_a, opt_b = _three_steps_and_a_copy(seed=1)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))   # as from a checkpoint file: no shared tensors
    a.grad = b.grad = torch.randn(2, 3, generator=gen)
    opt_a.step(), opt_b.step()
    assert torch.equal(a, b)


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_fused_kernels_train_as_torchs_default_ones(shared_cache, tmp_path, monkeypatch, optim):
    """make_optimizer's fused kernels against torch's default ones, 100 training steps each way
    from the same start (categorical GS, MLP [32], 2 seeds): the losses agree to the round-off of a
    batch's 78,400 pixel terms; the parameters to lr / 4. Adam divides each gradient by its running
    RMS, so round-off in a near-zero gradient becomes a difference of a fraction of one step (lr)
    where it is normalised (measured here: at most 0.06 lr); a kernel that computed something else
    (no bias correction, a skipped step, another momentum) is off by many steps."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, ["model.hidden=[32]", "seeds=[0,1]", "device=cpu", f"optim.name={optim}",
                             f"out_dir={tmp_path}", "compile=false"])      # the eager optimisers under test
    fused, default = Trainer(cfg, log=lambda _: None), Trainer(cfg, log=lambda _: None)
    assert fused.optimizer.param_groups[0]["fused"]
    params = [p for group in default.optimizer.param_groups for p in group["params"]]
    default.optimizer = (torch.optim.Adam(params, lr=cfg.optim.lr) if optim == "adam" else
                         torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum))
    for _ in range(100):
        losses = [t.train_step()[0] for t in (fused, default)]
        torch.testing.assert_close(losses[0], losses[1], rtol=float32_rtol(784 * 100), atol=1e-4)
    for (name, a), b in zip(fused.model.named_parameters(), default.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=cfg.optim.lr / 4, msg=name)


def test_a_checkpoint_of_the_default_kernels_resumes_with_the_fused_ones():
    w = torch.nn.Parameter(torch.ones(2, 3))
    old = torch.optim.Adam([w], lr=0.1)                    # as runs before 2026-12 saved it
    w.grad = torch.ones_like(w)
    old.step()
    new = make_optimizer([w], OptimConfig(name="adam", lr=0.1))
    load_optimizer_state(new, old.state_dict())
    assert new.param_groups[0]["fused"] and new.state[w]["exp_avg"].equal(old.state[w]["exp_avg"])
    new.step()                                             # the fused kernel accepts the loaded state


@pytest.mark.parametrize("make_torch", [lambda ps: torch.optim.Adam(ps, lr=0.03, fused=True),
                                        lambda ps: torch.optim.SGD(ps, lr=0.03, momentum=0.9, fused=True),
                                        lambda ps: ReplicaAdam(ps, [0.03, 0.3]),
                                        lambda ps: ReplicaSGD(ps, [0.03, 0.3])],
                         ids=["adam", "sgd+momentum", "replica-adam", "replica-sgd"])
def test_apply_update_steps_as_the_optimisers_step(make_torch):
    """The compiled step's update (vae.training.optim.apply_update, the learning rate a device tensor)
    against the optimiser's own ``step()`` on the same gradients: the same parameters and the
    same state (a checkpoint of either resumes the other). float32 as the trainer runs it: the
    same formulas in other kernels, so torch's float32 tolerances."""
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(2, 4, 5, generator=gen), torch.randn(2, 1, 5, generator=gen)]
    stepped, applied = ([p.clone().requires_grad_() for p in start] for _ in range(2))
    by_step, by_apply = make_torch(stepped), make_torch(applied)
    lr = torch.tensor(by_apply.param_groups[0]["lr"])   # 0-d, or [R]: one per replica
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) for p in start]
        for p, g in zip(stepped, grads):
            p.grad = g.clone()
        by_step.step()
        apply_update(by_apply, [g.clone() for g in grads], lr)
    for p, q in zip(applied, stepped):
        torch.testing.assert_close(p, q)
    for a, b in zip(by_apply.state.values(), by_step.state.values()):
        assert sorted(a) == sorted(b)
        for key in a:
            torch.testing.assert_close(torch.as_tensor(a[key]),
                                       torch.as_tensor(b[key]).to(torch.as_tensor(a[key]).device))


def test_a_replica_adam_checkpoint_with_int_step_counts_resumes():
    """ReplicaAdam counted steps in Python ints before its state took torch's tensor counts."""
    gen, a, b, opt_a, opt_b = _three_steps_and_a_copy(seed=2)
    old = copy.deepcopy(opt_a.state_dict())
    old["state"][0]["step"] = 3
    load_optimizer_state(opt_b, old)
    assert opt_b.state[b]["step"].item() == 3.0
    a.grad = b.grad = torch.randn(2, 3, generator=gen)
    opt_a.step(), opt_b.step()
    assert torch.equal(a, b)
