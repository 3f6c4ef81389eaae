"""The harness end to end on a synthetic MNIST: replicas, exact resume after SIGKILL, divergence,
bad input at the command line, and W&B offline logging."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import (BUILT_IN, env_with_cache, estimator_cases, float32_rtol, run_main, tau_overrides,
                      tiny_overrides)
from vae.config import ConfigError, load_config
from vae.estimators import column_order
from vae.reporting import bench
from vae.store.run_dir import CHECKPOINT, read_metrics
from vae.training.tasks import check
from vae.training.trainer import RunDirError, Trainer, TrainingDiverged, torch_threads, train

REPO = Path(__file__).resolve().parents[1]
# Two float32 trainings that must agree but may sum in other orders (batched matmuls of R replicas
# against one, compiled kernels against eager ones) agree to the round-off of one step's loss, a
# sum of 784 pixels x 100 images (data.batch_size): float32_rtol(78,400) = 1.3e-4 relative. A
# replica that mixed with another, or a compiled graph that computed something else, is off by
# O(1) after a step. Near-zero values (a KL of 0.17 nats, NVIL's baseline statistics, which are
# differences of ~500-nat signals) keep that round-off in absolute terms: 1e-4 of the loss's scale.
STEP_RTOL = float32_rtol(784 * 100)
STEP_ATOL = 1e-4
# the 2020 benchmark's model (configs/benchmark_*.yaml) in small: LeakyReLU, output bias at the data
# mean, the learned prior by its own SGD, dynamic binarization
BENCHMARK_MODEL = ["model.kind=bernoulli", "model.num_latents=8", "model.num_classes=2",
                   "model.hidden=[16,16]",
                   "model.activation=leaky_relu", "model.output_bias=data_mean", "model.prior=learned",
                   "optim.prior_lr=1.0e-2", "data.binarization=dynamic"]


def metric_table(run_dir: Path) -> dict[tuple, float]:
    return {(r["step"], r["split"], r["metric"], r["seed"]): r["value"] for r in read_metrics(run_dir)}


def run_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    """``python -m experiments.train --no-progress ARGS``, in this process (:func:`conftest.run_main`).
    (The SIGKILL test kills a real process; tests/test_readme.py runs a first command as typed.)"""
    return run_main("experiments.train", ["--no-progress", *args], cache)


def test_replica_r_of_a_multi_seed_run_equals_the_single_seed_run(shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    base = tiny_overrides(tmp_path) + ["estimator.name=nvil"]   # nvil: a stateful estimator with a network
    both = metric_table(train(load_config(None, base + ["seeds=[4,9]"]), tmp_path / "both", progress=False))
    alone = metric_table(train(load_config(None, base + ["seeds=[9]"]), tmp_path / "alone", progress=False))
    from_both = {k: v for k, v in both.items() if k[3] == 9}
    assert from_both.keys() == alone.keys() and len(alone) > 20
    for key, value in alone.items():   # float tolerance: batched matmuls may sum in another order
        assert from_both[key] == pytest.approx(value, rel=STEP_RTOL, abs=STEP_ATOL), key


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_replica_r_with_its_own_learning_rate_equals_the_single_run(shared_cache, tmp_path, monkeypatch,
                                                                    optim):
    """A learning rate per replica (optim.lr as a list) keeps the replicas independent: the
    replica of seed 9 and lr 3e-3 in a run with (4, 1e-3), (9, 1e-3), (9, 3e-3) logs what a
    single run with seed 9 and lr 3e-3 logs, and the replica of lr 1e-3 what lr 1e-3 logs."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    base = tiny_overrides(tmp_path) + ["estimator.name=nvil", f"optim.name={optim}"]
    run = train(load_config(None, base + ["seeds=[4,9,9]", "optim.lr=[1.0e-3,1.0e-3,3.0e-3]"]),
                tmp_path / "packed", progress=False)
    rows = read_metrics(run)
    for replica, lr in ((1, "1.0e-3"), (2, "3.0e-3")):
        alone = metric_table(train(load_config(None, base + ["seeds=[9]", f"optim.lr={lr}"]),
                                   tmp_path / f"alone{lr}", progress=False))
        packed = {(r["step"], r["split"], r["metric"], r["seed"]): r["value"]
                  for r in rows if r["replica"] == replica}
        assert packed.keys() == alone.keys() and len(alone) > 20
        for key, value in alone.items():
            assert packed[key] == pytest.approx(value, rel=STEP_RTOL, abs=STEP_ATOL), (lr, key)
    final = {r["replica"]: r["value"] for r in rows if r["metric"] == "neg_elbo" and r["split"] == "valid"}
    assert final[1] != final[2]   # the two learning rates did train differently


CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("config, optim, device, extra", [
    (None, "adam", "cpu", []),    # make test; make test-slow the others, a cold compilation of 20 s each
    pytest.param(None, "sgd", "cpu", [], marks=pytest.mark.slow),   # SGD: the next two too
    pytest.param("configs/sbn_bernoulli.yaml", "sgd", "cpu", [], marks=pytest.mark.slow),
    pytest.param(None, "sgd", "cpu", BENCHMARK_MODEL + ["estimator.name=disarm"],
                 # the prior's own SGD in the graph too
                 marks=pytest.mark.slow),
    pytest.param(None, "sgd", "cuda", [], marks=CUDA)])
def test_compiled_steps_equal_eager_steps(shared_cache, monkeypatch, config, optim, device, extra):
    """compile=true (the step as one graph, vae/training/compiled_step.py; a CUDA graph on a GPU) changes
    speed, not numbers, for the VAE and the SBN: the same losses step after step, and, under SGD,
    the same parameters (to lr times the gradients' round-off, which atol also covers for
    near-zero gradients). Adam's parameters are not compared: its normalisation turns float
    round-off in near-zero gradients into lr-sized differences."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    base = ["seeds=[3,4]", "steps=5", f"device={device}", f"optim.name={optim}", "optim.momentum=0.9",
            *(["model.hidden=[32]"] if config is None else ["model.num_latents=4", "data.batch_size=20"]),
            *extra]
    eager, compiled = (Trainer(load_config(config, base + [f"compile={flag}"]), log=lambda _: None)
                       for flag in ("false", "true"))
    for _ in range(5):
        (loss, kl, info), (loss_c, kl_c, info_c) = (t.train_step() for t in (eager, compiled))
        torch.testing.assert_close(loss_c, loss, rtol=STEP_RTOL, atol=STEP_ATOL)
        torch.testing.assert_close(kl_c, kl, rtol=STEP_RTOL, atol=STEP_ATOL)
        assert sorted(info_c) == sorted(info)
    if optim == "sgd":
        for (name, a), b in zip(eager.model.named_parameters(), compiled.model.parameters()):
            torch.testing.assert_close(b, a, rtol=STEP_RTOL, atol=1e-6, msg=name)
    assert list(compiled.optimizer.state_dict()["state"]) == list(eager.optimizer.state_dict()["state"])
    for a, b in zip(eager.optimizer.state_dict()["state"].values(),
                    compiled.optimizer.state_dict()["state"].values()):
        assert sorted(a) == sorted(b)   # checkpoints interchangeable: the same state in torch's format


def test_bf16_precision_autocasts_the_forward_passes_and_trains(shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, tiny_overrides(tmp_path) + ["precision=bf16", "device=cpu"])
    trainer = Trainer(cfg, log=lambda _: None)
    with trainer.numerics():
        assert trainer.model.encoder(torch.zeros(1, 2, 784)).dtype == torch.bfloat16
    summary = json.loads((train(cfg, tmp_path / "run", progress=False) / "summary.json").read_text())
    assert math.isfinite(summary["test/iw_bound"]["mean"])


BERNOULLI = ["model.kind=bernoulli", "model.num_latents=12", "model.num_classes=2"]


@pytest.mark.parametrize(("name", "kind"), estimator_cases("vae", bound=None))
def test_every_estimator_trains_both_vaes_through_the_harness(name, kind, shared_cache, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None,
                      tiny_overrides(tmp_path) + [f"estimator.name={name}", "seeds=[0,1]", "gradvar_every=6",
                                                  "gradvar_draws=3", *tau_overrides(name),
                                                  *(BERNOULLI if kind == "bernoulli" else [])])
    run = train(cfg, tmp_path / "run", progress=False)
    summary = json.loads((run / "summary.json").read_text())
    for key in ("train/loss", "valid/neg_elbo", "test/neg_elbo", "test/iw_bound", "train/encoder_grad_var",
                "train/est/decoder_evals"):
        assert all(torch.isfinite(torch.tensor(summary[key]["per_seed"]))), key
    # the m-sample bound is tighter than the single-sample ELBO (in expectation; by far here)
    assert summary["test/iw_bound"]["mean"] <= summary["test/neg_elbo"]["mean"] + 1.0


def test_exact_resume_after_sigkill(shared_cache, tmp_path):
    """Kill a run right after its first checkpoint; the resumed run's metrics equal an
    uninterrupted run's exactly, with no step missing or duplicated."""
    args = [f"out_dir={tmp_path}", "steps=40", "log_every=5", "checkpoint_every=10", "eval.every=40",
            "eval.iw_samples=4", "eval.iw_examples=20", "seeds=[0,1]", "estimator.name=reinforce-ema",
            "tau.update_every=5", "tau.rate=0.01", "data.binarization=dynamic"]
    full = run_cli(args + ["--run-dir", str(tmp_path / "full")], shared_cache)
    assert full.returncode == 0, full.stderr

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", "--no-progress", *args,
                             "--run-dir", str(killed_dir)], cwd=REPO, env=env_with_cache(shared_cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed_dir / CHECKPOINT).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = torch.load(killed_dir / CHECKPOINT, weights_only=True)["step"]
    assert step < 40 and not (killed_dir / "summary.json").exists(), "the kill came too late to test resume"

    resumed = run_cli(["--resume", str(killed_dir)], shared_cache)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_metrics(killed_dir)
    keys = [(r["step"], r["split"], r["metric"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys))                                   # nothing logged twice
    assert metric_table(killed_dir) == metric_table(tmp_path / "full")   # exactly equal on CPU


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(shared_cache, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    original = Trainer.train_step

    def poisoned(self):
        loss, kl, info = original(self)
        if self.step == 7:                       # the 7th update of replica 1 returns NaN
            loss = loss.clone()
            loss[1] = float("nan")
        return loss, kl, info

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    cfg = load_config(None, tiny_overrides(tmp_path) + ["seeds=[0,1]"])
    with pytest.raises(TrainingDiverged,
                       match=r"step 7, replica 1 \(seed 1\).*last good checkpoint \(step 4\)"):
        train(cfg, tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["step"] == 4
    assert not (tmp_path / "run" / "summary.json").exists()


def test_non_finite_parameters_are_never_checkpointed(shared_cache, tmp_path, monkeypatch):
    """An update can make the weights NaN while the loss before it was finite: the checkpoint
    due at that step must not be written."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    original = Trainer.train_step

    def poisoned(self):
        out = original(self)
        if self.step == 8:
            with torch.no_grad():
                next(self.model.parameters())[0, 0, 0] = float("inf")
        return out

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(TrainingDiverged,
                       match=r"in the parameters after step 8; the last good checkpoint \(step 4\)"):
        train(load_config(None, tiny_overrides(tmp_path)), tmp_path / "run", progress=False)
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["step"] == 4


def test_evaluation_and_gradient_variance_keep_their_own_schedule(shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, tiny_overrides(tmp_path) + ["eval.every=3", "gradvar_every=5", "gradvar_draws=2"])
    rows = read_metrics(train(cfg, tmp_path / "run", progress=False))
    assert sorted({r["step"] for r in rows if r["metric"] == "neg_elbo"}) == [3, 6, 9, 12]
    assert sorted({r["step"] for r in rows if r["metric"] == "encoder_grad_var"}) == [5, 10]
    assert sorted({r["step"] for r in rows if r["metric"] == "loss"}) == [2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize("task", ["vae", "sbn", "ssl"])
def test_curves_on_the_first_digits_are_the_curves_of_a_split_cut_there(task, shared_cache, tmp_path,
                                                                        monkeypatch):
    """``eval.curve_examples=N``: what the trainer logs along training is its curve metric on a split
    holding only the first N digits (same model, same evaluation noise), and it differs from the
    whole split's."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    config = {"vae": None, "sbn": "configs/sbn_bernoulli.yaml", "ssl": "configs/ssl_m2.yaml"}[task]
    small = {"vae": [], "sbn": ["model.num_latents=4", "eval.curve_samples=4"],
             "ssl": ["ssl.channels=[4,4,4]", "ssl.latent_dim=3"]}[task]
    base = tiny_overrides(tmp_path) + small + ["eval.batch_size=200"]    # 1,000 digits: batches 200 apart
    cut = Trainer(load_config(config, base + ["eval.curve_examples=1000"]), log=lambda _: None)
    whole = Trainer(load_config(config, base + ["eval.curve_examples=null"]), log=lambda _: None)
    whole.model.load_state_dict(cut.model.state_dict())
    assert whole.data is not cut.data                                  # cutting one leaves the other whole
    full = whole.data.splits["valid"]
    whole.data.splits["valid"] = full[:1000]
    assert cut.evaluate("valid") == whole.evaluate("valid")
    whole.data.splits["valid"] = full
    assert cut.evaluate("valid") != whole.evaluate("valid")


def test_an_existing_run_directory_is_not_overwritten(shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, tiny_overrides(tmp_path))
    train(cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match="already holds a run; resume it with --resume"):
        train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("args, message", [
    (["tau.temp=1"], "tau.temp: unknown key"),
    (["tau.tau0=0"], "tau.tau0: must be > 0"),
    (["estimator.name=magic"], "estimator.name: unknown 'magic'"),
    (["estimator.name=exact"], "estimator.name: 'exact' enumerates"),
    (["data.data_dir=/nonexistent/mnist"], "/nonexistent/mnist: missing train-images"),   # even with a cache
])
def test_bad_input_is_one_line_and_exit_status_2(args, message, shared_cache, tmp_path):
    done = run_cli(args + [f"out_dir={tmp_path / 'runs'}"], shared_cache)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / "runs").rglob("config.yaml"))            # nothing half-written


def test_unwritable_output_directory_is_exit_status_2(shared_cache, tmp_path):
    (tmp_path / "a-file").write_text("")
    done = run_cli([f"out_dir={tmp_path / 'a-file' / 'runs'}"], shared_cache)
    assert done.returncode == 2 and "out_dir: cannot write" in done.stderr


def test_cli_trains_the_bernoulli_config(shared_cache, tmp_path):
    done = run_cli(["--config", "configs/vae_bernoulli.yaml", *tiny_overrides(tmp_path)], shared_cache)
    assert done.returncode == 0, done.stderr
    run_dir = Path(next(line for line in done.stdout.splitlines()
                        if line.startswith("results: ")).removeprefix("results: "))
    assert run_dir.parent.name == "vae_bernoulli" and (run_dir / "summary.json").exists()


def test_cli_puts_the_run_under_results_dir_and_prints_the_held_out_numbers(shared_cache, tmp_path):
    done = run_cli(["--results-dir", str(tmp_path / "store"), *tiny_overrides(tmp_path)[1:], "seeds=[0,1]"],
                   shared_cache)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "store" / "runs" / "vae_categorical").glob("*/summary.json"))) == 1
    assert re.search(r"^test/iw_bound \d+\.\d\d ± \d+\.\d\d \(2 seeds\)$", done.stdout, re.M), done.stdout
    assert re.search(r"^valid/neg_elbo \d+\.\d\d ± ", done.stdout, re.M), done.stdout
    both = run_cli(["--results-dir", str(tmp_path), f"out_dir={tmp_path}"], shared_cache)
    assert both.returncode == 2 and "out_dir: give --results-dir or out_dir=, not both" in both.stderr


def test_a_short_run_draws_ten_curve_points_and_announces_its_final_bound(shared_cache, tmp_path):
    """With eval.every left null a curve has ten points whatever `steps` is; before the final bound
    the run says its size and how to cut it, and after its first batch how long the rest takes."""
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith(("eval.every", "eval.iw_examples"))]
    done = run_cli(["--results-dir", str(tmp_path / "store"), *overrides[1:], "steps=20", "log_every=1",
                    "eval.iw_batch_size=5"], shared_cache)
    assert done.returncode == 0, done.stderr
    run = next((tmp_path / "store" / "runs").glob("*/*/summary.json")).parent
    assert sorted({r["step"]
                   for r in read_metrics(run) if r["metric"] == "neg_elbo" and r["split"] == "valid"}) == \
        list(range(2, 21, 2))
    announced = ("test iw_bound: m = 4 samples on 10,000 test digits, 1 seed(s); eval.iw_examples=N bounds "
                 "the first N digits only")
    assert (announced in done.stdout
            and re.search(r"^  about \d+(\.\d)? (s|min) more", done.stdout, re.M)), done.stdout
    assert done.stdout.index(announced) < done.stdout.index("test/iw_bound")


def test_print_config_prints_the_resolved_config_and_runs_nothing(shared_cache, tmp_path):
    done = run_cli(["--config", "configs/vae_bernoulli.yaml", "optim.lr=3e-4", "--results-dir", str(tmp_path),
                    "--print-config"], shared_cache)
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)
    assert printed["optim"]["lr"] == 3e-4 and printed["model"]["kind"] == "bernoulli"
    assert printed["out_dir"] == str(tmp_path / "runs") and not any(tmp_path.iterdir())


def test_resume_with_more_steps_trains_a_finished_run_further_as_if_never_stopped(shared_cache, tmp_path,
                                                                                  monkeypatch):
    """12 steps, then resumed to 16: every logged number equals a straight 16-step run's, and the
    bound at the old end (step 12) is kept beside the new one."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, tiny_overrides(tmp_path))
    train(cfg, tmp_path / "extended", progress=False)
    done = run_cli(["--resume", str(tmp_path / "extended"), "steps=1.6e1"], shared_cache)
    assert done.returncode == 0, done.stderr
    straight = metric_table(train(load_config(None, tiny_overrides(tmp_path) + ["steps=16"]),
                                  tmp_path / "straight", progress=False))
    extended = metric_table(tmp_path / "extended")
    old_end = {k: v for k, v in extended.items() if k[0] == 12 and k[2] == "iw_bound"}
    assert len(old_end) == 1 and {k: v for k, v in extended.items() if k not in old_end} == straight
    summary = json.loads((tmp_path / "extended" / "summary.json").read_text())
    assert summary["steps"] == 16 and summary["steps_per_second"] > 0   # timed over both processes
    assert yaml.safe_load((tmp_path / "extended" / "config.yaml").read_text())["steps"] == 16


@pytest.mark.parametrize("args, message", [
    (["steps=8"], "steps: a resumed run can only train further, got 8 < its 12"),
    (["optim.lr=1e-2"], "--resume: the one override it takes is steps=N"),
    (["steps=16", "--results-dir", "x"], "--resume: takes no --config"),
])
def test_resume_refuses_anything_but_more_steps(args, message, shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    train(load_config(None, tiny_overrides(tmp_path)), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    done = run_cli(["--resume", str(tmp_path / "run"), *args], shared_cache)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert ((tmp_path / "run" / "metrics.jsonl").read_text() == before
            and (tmp_path / "run" / "summary.json").exists())


def test_a_schedule_that_ends_at_the_last_step_is_not_trained_further(shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    train(load_config(None, tiny_overrides(tmp_path) + ["tau.schedule=linear"]), tmp_path / "run",
          progress=False)
    with pytest.raises(ConfigError, match="^steps: this run's linear tau schedule ends at its last step"):
        train(None, tmp_path / "run", resume=True, steps=16, progress=False)


def test_wandb_offline_run_is_written_without_network_and_prints_nothing(shared_cache, tmp_path, monkeypatch,
                                                                         capfd):
    pytest.importorskip("wandb")
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_SILENT")                      # the suite's own default, not the tests'
    train(load_config(None, tiny_overrides(tmp_path / "runs")), tmp_path / "runs" / "x" / "run",
          progress=False, log=lambda _: None)
    offline = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0
    out, err = capfd.readouterr()
    assert "wandb" not in (out + err).lower(), out + err


def test_relaxed_kl_option_trains_gs(shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, tiny_overrides(tmp_path) + ["kl=relaxed", "tau.schedule=learned", "tau.tau0=1.5"])
    summary = json.loads((train(cfg, tmp_path / "run", progress=False) / "summary.json").read_text())
    assert all(torch.isfinite(torch.tensor(summary["train/loss"]["per_seed"])))
    kl = summary["train/kl"]["per_seed"][0]                # the Monte Carlo Concrete KL
    assert math.isfinite(kl) and kl != 0.0
    assert summary["train/tau"]["per_seed"] != [1.5]       # the learned temperature moved


def test_bench_entry_point_times_every_variant_and_writes_json(shared_cache, tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.bench", "--steps", "2", "--repeats", "1",
                           "--eager-only",
                           "--bound-examples", "10", "--out", str(tmp_path), "--device", "cpu"],
                          cwd=REPO, env=env_with_cache(shared_cache), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    for text in ("(a) plain PyTorch loop", "(a′) best hand-written loop", "(b) suite, one seed",
                 "(c) replica axis, R = 10", "(d) m = 1000 bound", "(e) a paper-preset pack, R = 30",
                 "configs/vae_categorical_linear.yaml rloo  : (a′) hand-written loop"):
        assert text in done.stdout, text
    packs = re.search(r"--pack-lr: (\d+ points in \d+ runs)", done.stdout).group(1)   # the registry's count
    record = json.loads((tmp_path / "cpu.json").read_text())
    assert len(record["steps_per_second"]) == 7 and all(v > 0 for v in record["steps_per_second"].values())
    anchors = record["anchors"]                       # the suite against (a′) per model and estimator
    assert sorted(anchors) == sorted(bench.ANCHOR_CONFIGS)
    assert all(sorted(by_name) == sorted(bench.ANCHOR_ESTIMATORS)
               and all(a["ratio"] > 0 for a in by_name.values())
               for by_name in anchors.values())
    assert record["replicas"]["(e) a paper-preset pack, R = 30"] == 30
    assert record["paper_preset"]["estimated_training_hours"] > 0
    from vae.reporting.bench import gpu_check_markdown  # the GPU check's report reads this record as it is
    # the shape bench.ssl_speed writes (tests/test_reproduce.py runs it)
    ssl_speed = {"steps_per_second": {"marginal": {"10": 4.0, "100": 1.0}, "gs": {"10": 8.0, "100": 9.5}},
                 "speedup": {"10": 2.0, "100": 9.5}}
    report = gpu_check_markdown({"device": "cpu", "python": "3", "torch": "2", "seconds": 1.0, "steps": [],
                                 "modes": [], "bench": record, "ssl_speed": ssl_speed}, mode_steps=5000)
    assert "| (e) a paper-preset pack, R = 30 |" in report and packs in report
    assert "| 100 | 1.0 | 9.5 | 9.50x |" in report
    # rewritten after each step: a report with the bench and no numeric modes yet (a check cut short)
    assert packs in gpu_check_markdown({"device": "cpu", "python": "3", "torch": "2", "seconds": 1.0,
                                        "steps": [], "bench": record}, mode_steps=5000)


# six compilations (a minute on a cold inductor cache); the eager anchors: the entry-point test
@pytest.mark.slow
def test_bench_anchors_time_the_suite_against_the_hand_written_loop_alone(shared_cache, tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.bench", "--anchors", "--steps", "1",
                           "--repeats", "1",
                           "--device", "cpu", "--threads", "1", "--out", str(tmp_path)], cwd=REPO,
                          env=env_with_cache(shared_cache), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "anchors_cpu.json").read_text())
    assert {(c, n) for c, by_name in record["anchors"].items() for n in by_name} == {
        (c, n) for c in bench.ANCHOR_CONFIGS for n in bench.ANCHOR_ESTIMATORS}
    assert "configs/vae_categorical.yaml rloo  : (a′) hand-written loop" in done.stdout
    # compile=true beside eager (the entry-point test runs --eager-only)
    assert all(a["suite_compiled"] > 0 and a["ratio_compiled"] > 0 for by_name in record["anchors"].values()
               for a in by_name.values())


def test_bench_profile_says_where_each_workloads_step_time_goes(shared_cache, tmp_path):
    """``bench --profile`` (a step of ``make gpu-check``): the VAE step and both M2 modes, each with
    its per-step host and device times, CUDA runtime calls and operator table, in one file."""
    done = subprocess.run([sys.executable, "-m", "experiments.bench", "--profile", "--preset", "tiny",
                           "--steps", "1", "--device", "cpu", "--out", str(tmp_path)], cwd=REPO,
                          env=env_with_cache(shared_cache), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "profile_cpu.txt").read_text()
    for workload in ("categorical VAE, gs", "M2 marginal, C = 10", "M2 gs, C = 10"):
        assert f"== {workload}: " in text and text.count("Self CPU %") == 3, workload
    assert text.count("CUDA runtime calls per step: none (no CUDA)") == 3
    from vae.reporting.bench import gpu_check_markdown  # the GPU check's report quotes the summary lines
    summary = [line for line in text.splitlines() if line.startswith(("== ", "CUDA runtime"))]
    report = gpu_check_markdown({"device": "cpu", "python": "3", "torch": "2", "seconds": 1.0, "steps": [],
                                 "modes": [], "profile": summary}, mode_steps=5000)
    assert "- M2 gs, C = 10: " in report


def test_demo_entry_point_runs_and_reuses_finished_runs(shared_cache, tmp_path):
    cmd = ["--results-dir", str(tmp_path), "model.hidden=[16]", "steps=4", "log_every=2",
           "checkpoint_every=2", "eval.every=2", "eval.iw_samples=4", "eval.iw_examples=10",
           "eval.batch_size=5000"]
    first = run_main("experiments.demo", cmd, shared_cache)
    assert first.returncode == 0, first.stderr
    assert "| gs |" in first.stdout and "| st-gs |" in first.stdout and "| reinforce-ema |" in first.stdout
    # stderr is no terminal: no bars in a log
    assert "step/s" not in first.stderr and "ex/s" not in first.stderr
    again = run_main("experiments.demo", cmd, shared_cache)
    assert again.returncode == 0 and again.stdout.count("finished earlier, reusing") == 3


def test_gpu_check_without_cuda_is_one_line_and_exit_2(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: `make gpu-check` runs the real thing")
    done = run_main("experiments.gpu_check", ["--out", str(tmp_path / "out")], tmp_path)
    assert (done.returncode == 2 and done.stderr.startswith("error: gpu-check: no CUDA device")
            and not (tmp_path / "out").exists())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("extra", [[], ["precision=bf16"], ["compile=true"],
                                   ["seeds=[0,0]", "optim.lr=[1.0e-3,3.0e-3]"]])
def test_a_run_trains_and_evaluates_on_cuda(extra, shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    # later keys win
    cfg = load_config(None, tiny_overrides(tmp_path) + ["device=cuda", "seeds=[0,1]", *extra])
    summary = json.loads((train(cfg, tmp_path / "run", progress=False) / "summary.json").read_text())
    assert summary["device"].startswith("cuda") and math.isfinite(summary["test/iw_bound"]["mean"])


SMALL_SBN = ["model.num_latents=4", "eval.iw_samples=8", "eval.curve_samples=4", "eval.iw_examples=20",
             "eval.batch_size=5000", "steps=6", "log_every=2", "checkpoint_every=2", "eval.every=3",
             "seeds=[0,1]"]


def first_of_each_family_and_the_papers(task: str) -> list[tuple[str, str]]:
    """``(name, kind)`` of the paper's seven and of the first estimator of each family (column order)."""
    cases = sorted(estimator_cases(task, bound=None), key=lambda c: column_order(c[0]))
    first = {}
    for name, _ in cases:
        first.setdefault(BUILT_IN[name].family, name)
    return [(n, k)
            for n, k in cases if BUILT_IN[n].paper_column is not None or first[BUILT_IN[n].family] == n]


@pytest.mark.parametrize(("name", "kind"), first_of_each_family_and_the_papers("sbn"))
def test_estimators_of_every_family_train_both_sbns_through_the_harness(name, kind, shared_cache, tmp_path,
                                                                         monkeypatch):
    """The SBN task end to end, the paper's seven and the first estimator of each other family
    (every estimator runs through the same nested loss in tests/test_sbn.py): both latent types,
    two stochastic layers, estimator state per layer, finite curves and the m-sample NLL at the end."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(f"configs/sbn_{kind}.yaml",
                      [f"out_dir={tmp_path}", f"estimator.name={name}", *SMALL_SBN,
                       *tau_overrides(name)])
    summary = json.loads((train(cfg, tmp_path / "run", progress=False) / "summary.json").read_text())
    for key in ("train/loss", "valid/nll", "test/nll", "test/iw_nll", "train/est/decoder_evals"):
        assert all(math.isfinite(v) for v in summary[key]["per_seed"]), key
    # more samples: a tighter bound
    assert summary["test/iw_nll"]["mean"] <= summary["test/nll"]["mean"] + 2.0


def test_cli_trains_the_sbn_config_and_refuses_what_does_not_apply(shared_cache, tmp_path):
    done = run_cli(["--config", "configs/sbn_bernoulli.yaml", f"out_dir={tmp_path}", "estimator.name=rloo",
                    *SMALL_SBN],
                   shared_cache)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_cli(["--config", "configs/sbn_bernoulli.yaml", f"out_dir={tmp_path}", "estimator.name=vimco"],
                   shared_cache)
    assert (done.returncode == 2
            and "'vimco' is for task vae, not sbn; for task sbn with bernoulli latents use gs" in done.stderr)


def test_wandb_ids_keep_the_start_of_long_run_names_and_stay_distinct():
    from vae.store.tracking import wandb_id
    short = wandb_id(Path("results/sweeps/table1/vae_bernoulli__gs__4e7030e5"))
    assert short == "table1-vae-bernoulli--gs--4e7030e5"
    long_a = wandb_id(Path("sweeps/model_question/"
                           "vae_categorical__st-gs__hidden_512-256__sgd-lr_0.003__8d8e3041"))
    long_b = wandb_id(Path("sweeps/model_question/"
                           "vae_categorical__st-gs__hidden_512-256__sgd-lr_0.003__8d8e3042"))
    assert (len(long_a) == 64 and long_a.startswith("model-question-vae-categorical--st-gs")
            and long_a != long_b)


def test_make_demo_passes_results_to_the_demo():
    """`make demo RESULTS=dir` writes under dir, as every other target does (dry run: make -n)."""
    done = subprocess.run(["make", "-n", "-o", "install", "demo", "RESULTS=/some/where"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode == 0
            and "-m experiments.demo --results-dir /some/where" in done.stdout), done.stdout


def test_make_test_runs_one_worker_per_free_core():
    """tests/free_cores.py: the idle share of the CPU counters between two reads, times the cores,
    at least one; `make test` passes it to pytest-xdist unless TEST_WORKERS says otherwise."""
    sys.path.insert(0, str(REPO / "tests"))
    from free_cores import free_cores, idle_share

    before = [100, 0, 50, 1000, 10, 0, 0, 0, 0, 0]            # user nice system idle iowait irq ...
    busy_one = [200, 0, 50, 1090, 20, 0, 0, 0, 0, 0]          # 100 busy, 100 idle of 200: one core of two
    assert idle_share(before, busy_one) == 0.5 and free_cores(2, 0.5) == 1
    assert free_cores(2, 1.0) == 2 and free_cores(2, 0.0) == 1 and free_cores(16, 0.8) == 13
    done = subprocess.run([sys.executable, "tests/free_cores.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and 1 <= int(done.stdout) <= (os.cpu_count() or 1), done.stdout
    dry = subprocess.run(["make", "-n", "-o", "install", "test", "TEST_WORKERS=3"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert "-m pytest -q -n 3 --dist loadfile" in dry.stdout, dry.stdout


def test_a_compiled_step_compiles_once_as_tau_lr_and_the_slope_change(shared_cache, monkeypatch):
    """tau, the learning rate and an annealed slope enter the graph as device tensors, so the step
    is compiled once, not once per value (on a GPU each new value would record a new CUDA graph):
    6 steps of st-annealed under a linear tau schedule and a learning rate decaying every 2 steps
    with torch's recompilation made an error; the slope, read back, follows the step."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None,
                      ["model.hidden=[16]", "data.batch_size=8", "estimator.name=st-annealed", "steps=6",
                       "estimator.options.slope_rate=0.1", "tau.schedule=linear", "optim.lr_decay=0.5",
                       "optim.lr_decay_every=2", "device=cpu", "compile=true"])
    trainer = Trainer(cfg, log=lambda _: None)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(6):
            trainer.train_step()
    assert trainer.model.logit_scale.item() == pytest.approx(1.5)   # 1 + 0.1 * 5 at the last step


@pytest.mark.parametrize("extra",
                         [["kl=relaxed"], ["tau.schedule=learned"], ["precision=bf16"], BENCHMARK_MODEL,
                          ["seeds=[0,1]", "optim.lr=[1.0e-3,3.0e-3]", "optim.name=sgd"]])
def test_the_compiled_step_is_one_graph_under_every_switch_of_the_loss(shared_cache, monkeypatch, extra):
    """The relaxed KL, a learned tau (a parameter in the graph), bf16 autocast, the 2020 benchmark's
    model (the learned prior's own SGD step) and a learning rate per replica keep the step one
    graph (``torch._dynamo.explain``, GS)."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, ["model.hidden=[16]", "model.num_latents=4", "model.num_classes=5", "device=cpu",
                             "compile=true", "data.batch_size=8", *extra])
    trainer = Trainer(cfg, log=lambda _: None)
    trainer.train_step()
    batch = trainer.task.batch(trainer.model, trainer.data, 1, trainer.rng, cfg)
    assert trainer.compiled_step.graph_breaks(batch, 1) == []


def one_graph_cases() -> list:
    """Every sampling estimator and kind of the registry: ``make test`` traces the paper's seven and
    the first of each family, ``make test-slow`` (CI runs both) the others, about a second each."""
    fast = set(first_of_each_family_and_the_papers("vae"))
    return [pytest.param(name, kind, marks=[] if (name, kind) in fast else [pytest.mark.slow])
            for name, kind in estimator_cases("vae", bound=None)]


@pytest.mark.parametrize("name, kind", one_graph_cases())
def test_a_compiled_training_step_is_one_graph(shared_cache, monkeypatch, name, kind):
    """compile=true runs the whole step as one graph (vae/training/compiled_step.py):
    ``torch._dynamo.explain`` of the step the trainer compiles (estimator, loss, gradient, optimiser update,
    on the replica axis) finds no graph break, for every sampling estimator and kind (read from the registry;
    ``exact``, the enumeration oracle, too dear here). A break is also what any read of a
    tensor's value back to the host (``.item()``, ``bool(t)``, ``.tolist()``, ...) causes there,
    so this is the check that a GPU never waits on the step: the eager step runs the same code."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, ["model.hidden=[16]", "model.num_latents=4", "seeds=[0,1]", "device=cpu",
                             "compile=true",
                             f"model.kind={kind}", f"model.num_classes={2 if kind == 'bernoulli' else 5}",
                             f"estimator.name={name}", "data.batch_size=8", *tau_overrides(name)])
    trainer = Trainer(cfg, log=lambda _: None)
    trainer.train_step()   # the first step plans the draws, eagerly
    batch = trainer.task.batch(trainer.model, trainer.data, 1, trainer.rng, cfg)
    assert trainer.compiled_step.graph_breaks(batch, 1) == []




def test_compile_auto_compiles_where_its_rule_says_and_records_which_step_ran(shared_cache, monkeypatch,
                                                                              tmp_path):
    """``compile: auto`` (the default) compiles a run's step on the CPU from the steps the rule of
    vae/training/compiled_step.py names for its task, and trains eagerly below them, on a GPU and for M2
    (unmeasured there); true and false are what they say. A run's summary records which step ran."""
    from vae.training.compiled_step import AUTO_MIN_STEPS, compiles

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for task in ("vae", "sbn"):
        least = AUTO_MIN_STEPS[(task, "cpu")]
        at = load_config(None,
                         [f"task={task}", f"steps={least}"] + (["model.layers=2"] if task == "sbn" else []))
        assert compiles(at, cpu) and not compiles(at, cuda)
        assert not compiles(load_config(None, [f"task={task}", f"steps={least - 1}"]), cpu)
        assert not compiles(load_config(None, [f"task={task}", f"steps={least - 1}", "compile=false"]), cpu)
        assert compiles(load_config(None, [f"task={task}", "steps=1", "compile=true"]), cpu)
    assert not compiles(load_config(None, ["task=ssl", "steps=1000000"]), cpu)
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    summary = json.loads((train(load_config(None, tiny_overrides(tmp_path)), tmp_path / "run", progress=False)
                          / "summary.json").read_text())
    assert summary["compiled"] is False                       # 12 steps: auto trained eagerly


def test_compile_auto_trains_eagerly_what_cannot_be_compiled_and_draws_the_same_noise(shared_cache,
                                                                                      monkeypatch):
    """An estimator of one's own whose step breaks the graph (here: it reads a value back to the
    host) under ``compile: auto`` on a run long enough to compile: the first compiled step fails to
    compile, the run says so and trains eagerly, from the generators as they were before that
    step, so its losses are exactly those of the same run with ``compile: false``. Under
    ``compile: true`` the failure stops the run."""
    from vae.estimators import ESTIMATORS
    from vae.estimators.rloo import RLOO
    from vae.training.compiled_step import AUTO_MIN_STEPS

    class HostReadingRLOO(RLOO):
        def estimate(self, logits, f, **kwargs):
            surrogate, info = super().estimate(logits, f, **kwargs)
            # a branch on a value: a host read, a graph break
            if surrogate.detach().sum() > -1e30:
                return surrogate, info
            return surrogate + 1.0, info

    monkeypatch.setitem(ESTIMATORS, "host-reading-rloo", HostReadingRLOO)
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    base = ["model.hidden=[]", "model.kind=bernoulli", "model.num_latents=8", "model.num_classes=2",
            "device=cpu", "data.batch_size=8", "estimator.name=host-reading-rloo",
            f"steps={AUTO_MIN_STEPS[('vae', 'cpu')]}"]
    said = []
    auto = Trainer(load_config(None, base), log=said.append)
    eager = Trainer(load_config(None, [*base, "compile=false"]), log=lambda _: None)
    assert auto.compiled_step is not None and said.pop().startswith("compile=auto: the step is compiled")
    losses = [(auto.train_step()[0], eager.train_step()[0]) for _ in range(3)]
    assert auto.compiled_step is None and len(said) == 1 and "trains eagerly" in said[0], said
    assert all(torch.equal(a, e) for a, e in losses) and auto.step == eager.step == 3
    strict = Trainer(load_config(None, [*base, "compile=true"]), log=lambda _: None)
    strict.train_step()
    with pytest.raises(torch._dynamo.exc.Unsupported):
        strict.train_step()


def test_a_run_says_when_its_tau_schedule_will_not_reach_its_floor(shared_cache, monkeypatch, tmp_path):
    """The tiny runs' exp schedule ends at 0.61 of a floor of 0.5: a GS run says so at its start,
    with settings that would reach it; an SF run, which reads no tau, does not."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    for name, says in (("gs", True), ("reinforce-ema", False)):
        said = []
        train(load_config(None, tiny_overrides(tmp_path) + [f"estimator.name={name}"]), tmp_path / name,
              progress=False, log=said.append)
        notes = [line for line in said
                 if line.startswith("tau: the exp schedule is at 0.607 at the last of 12 steps")]
        assert len(notes) == says and (not says or "tau.rate=" in notes[0]), said



def test_the_learned_prior_with_its_own_rate_takes_plain_sgd_steps_outside_the_optimiser(shared_cache,
                                                                                         monkeypatch):
    """optim.prior_lr (DisARM's protocol: the prior's logits by SGD at 1e-2, the networks by Adam):
    after a step the prior is exactly ``before - prior_lr * grad``, and the optimiser holds no
    state for it."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    trainer = Trainer(load_config(None,
                                  BENCHMARK_MODEL + ["seeds=[0,1]", "data.batch_size=10", "compile=false"]),
                      log=lambda _: None)
    prior = trainer.model.prior_free
    assert all(prior is not p for g in trainer.optimizer.param_groups for p in g["params"])
    seen = []
    prior.register_hook(lambda g: seen.append(g.clone()))
    before = prior.detach().clone()
    trainer.train_step()
    assert len(seen) == 1 and seen[0].abs().sum() > 0
    assert torch.equal(prior.detach(), before - seen[0] * 1.0e-2)
    assert not trainer.optimizer.state.get(prior)


def test_train_elbo_curves_the_training_split_freshly_binarized(shared_cache, tmp_path, monkeypatch):
    """eval.train_elbo adds the training split to the curves (train/neg_elbo at every evaluation,
    the last one in the summary): the one-sample negative ELBO of its first curve_examples images,
    binarized afresh under dynamic binarization (the split holds intensities: read as they are,
    the number would be no likelihood of binary pixels)."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, tiny_overrides(tmp_path) + BENCHMARK_MODEL + ["eval.train_elbo=true"])
    run = train(cfg, tmp_path / "run", progress=False)
    summary = json.loads((run / "summary.json").read_text())
    steps = sorted({r["step"]
                    for r in read_metrics(run) if (r["split"], r["metric"]) == ("train", "neg_elbo")})
    assert steps == [6, 12] and summary["train/neg_elbo"]["per_seed"] == [
        r["value"]
        for r in read_metrics(run) if (r["split"], r["metric"], r["step"]) == ("train", "neg_elbo", 12)]
    trainer = Trainer(cfg, log=lambda _: None)
    from vae.models.evaluation import eval_generator, negative_elbo
    fresh = negative_elbo(trainer.model, trainer.data, "train", eval_generator([0], 0, "cpu"), 5000, 200)
    trainer.data.binarization = "static"    # the same images read as they are held: intensities
    unbinarized = negative_elbo(trainer.model, trainer.data, "train", eval_generator([0], 0, "cpu"), 5000,
                                200)
    assert not torch.equal(fresh, unbinarized)
    with pytest.raises(ConfigError, match="eval.train_elbo: only for task vae"):
        check(load_config("configs/sbn_bernoulli.yaml", ["eval.train_elbo=true"]))


def test_torch_threads_sets_the_count_inside_and_restores_the_caller_s_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with torch_threads(before + 1):
            assert torch.get_num_threads() == before + 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
