"""The matmul floor (vae/reporting/step_cost.py, ``bench --floor``):
the products it records are the step's own."""

from __future__ import annotations

import json

import pytest
import torch

from experiments import bench as bench_cli
from vae.config import load_config
from vae.numerics.replicas import ReplicaGenerator, ReplicaMLP
from vae.reporting.step_cost import matmul_floor, record_matmuls
from vae.training.trainer import Trainer


def test_recorded_products_are_the_forward_and_backward_matmuls():
    """A two-layer replica MLP on a batch whose input needs no gradient: forward two ``baddbmm``,
    backward each layer's weight gradient and the hidden layer's input gradient (not the input's):
    five products, whose multiply-adds are counted as 2 m n k each."""
    r, b, d, h, o = 2, 7, 5, 4, 3
    net = ReplicaMLP([d, h, o], ReplicaGenerator([0, 1]))
    x = torch.randn(r, b, d)
    calls = record_matmuls(lambda: net(x).square().sum().backward())
    names = [c.op.overloadpacket.__name__ for c in calls]
    assert names.count("baddbmm") == 2 and len(calls) == 5, names
    assert sum(c.flops() for c in calls) == 2 * r * b * (d * h + h * o) * 2 + 2 * r * b * h * o
    assert matmul_floor(calls, repeats=1, target_seconds=0.0) > 0      # replayed on fresh tensors


@pytest.mark.parametrize("name, samples", [("rloo", 4), ("gs", 1)])
def test_the_floor_of_a_training_step_is_its_encoder_and_decoder_products(shared_cache, monkeypatch, name,
                                                                          samples):
    """The linear Bernoulli VAE (784-200-784) at batch 50, as the trainer steps it: the encoder's
    product and its weight gradient, and per decoder pass (RLOO: k = 4 samples) the decoder's
    product and its weight gradient, plus its input gradient where the sample is differentiable
    (GS); no other product."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    trainer = Trainer(load_config("configs/vae_bernoulli_linear.yaml",
                                  ["device=cpu", "data.batch_size=50", f"estimator.name={name}",
                                   "compile=false"]),
                      log=lambda _: None)
    trainer.train_step()
    calls = record_matmuls(trainer.train_step)
    layer = 2 * 784 * 200                               # multiply-adds x 2 of one row through one layer
    decoder_products = 2 if name == "rloo" else 3       # a one-hot sample takes no gradient
    assert sum(c.flops() for c in calls) == 50 * layer * (2 + decoder_products * samples)


def test_floor_speed_times_each_applicable_estimator_against_its_floor(shared_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cell = "bernoulli linear, batch 50"
    assert bench_cli.main(["--floor", "--estimator", "rloo", "st-gs", "vimco", "--cell", cell, "--eager-only",
                           "--steps", "1", "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "floor_cpu.json").read_text())
    rows = record["floor"][cell]
    assert list(rows) == ["st-gs", "vimco", "rloo"]               # the tables' column order (family, year)
    assert all(row["eager_ms"] > 0 and row["floor_ms"] > 0 and row["eager_over_floor"] > 0
               for row in rows.values())
    for row in rows.values():        # the eager step's time by part: every part there, summing to the step
        assert {"matmuls", "sampling", "optimiser", "backward"} <= set(row["eager_parts_ms"])
        assert sum(row["eager_parts_ms"].values()) == pytest.approx(row["eager_ms"], rel=0.01)
    # RLOO: the encoder's 2 products and 2 per sample of 4; ST-GS: 2 and 3 (its sample takes a gradient)
    assert rows["rloo"]["gflop"] == pytest.approx(2 * rows["st-gs"]["gflop"])


def test_floor_measures_some_rows_again_and_keeps_the_others(shared_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    args = ["--floor", "--cell", "bernoulli linear, batch 50", "--eager-only", "--steps", "1", "--repeats",
            "1", "--device", "cpu", "--out", str(tmp_path)]
    assert bench_cli.main([*args, "--estimator", "gs", "rloo"]) == 0
    first = json.loads((tmp_path / "floor_cpu.json").read_text())["floor"]["bernoulli linear, batch 50"]
    assert bench_cli.main([*args, "--estimator", "st-gs", "rloo", "--replicas", "3"]) == 0
    rows = json.loads((tmp_path / "floor_cpu.json").read_text())["floor"]["bernoulli linear, batch 50"]
    # kept, in the tables' order
    assert list(rows) == ["gs", "st-gs", "rloo"] and rows["gs"] == first["gs"]
    assert rows["rloo"]["measured"] >= first["rloo"]["measured"] and rows["rloo"]["steps"] == 1
    assert (rows["rloo"]["replica_axis"]["replicas"] == 3
            and rows["rloo"]["replica_axis"]["eager_seed_steps_vs_one_seed"] > 0)


def test_floor_refuses_an_unknown_estimator(capsys, tmp_path):
    assert bench_cli.main(["--floor", "--estimator", "rlooo", "--out", str(tmp_path)]) == 2
    assert "--estimator: unknown 'rlooo'; known: " in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_step_parts_attribute_time_to_the_module_it_runs_under():
    """A step that only draws Gumbel noise spends its operators' time on sampling; one that only
    multiplies, on matmuls; the rest of the step's time is outside operators, and the parts sum
    to the step's time."""
    from vae.numerics.gumbel import gumbel_noise
    from vae.reporting.step_cost import step_parts

    a, b = torch.randn(1, 300, 300), torch.randn(1, 300, 300)
    for step, part in ((lambda: gumbel_noise((300, 300)), "sampling"), (lambda: torch.bmm(a, b), "matmuls")):
        parts = step_parts(step, seconds=1.0, calls=10)
        operators = {k: v for k, v in parts.items() if k != "outside operators"}
        assert (operators[part] > 0.9 * sum(operators.values())
                and sum(parts.values()) == pytest.approx(1.0)), parts
