"""A researcher's estimator is one file: written in a temporary module with its declarations and
no other edit anywhere, it is validated by them (a latent kind it does not declare is refused in
one line that lists the estimators that do apply), trained through ``experiments.train``, swept
beside a built-in estimator, tabled in Table 1's layout under its display name with its cost, and
drawn by ``experiments.compare --plot``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import env_with_cache, plugin_sweep, tiny_overrides

REPO = Path(__file__).resolve().parents[1]

TOY = '''"""Straight-through with a temperature on the backward softmax: forward z ~ q, backward the
gradient of softmax(logits / t)."""
from dataclasses import dataclass

import torch

from vae.estimators import Estimator, register
from vae.estimators.sampling import sample_one_hot


@register("st-temp")
class TemperedStraightThrough(Estimator):
    display_name = "ST, tempered"
    kinds = frozenset({"categorical"})       # declared: Bernoulli configs are refused
    family = "relaxation"
    year = 2026

    @dataclass
    class Options:
        backward_tau: float = 2.0

    def estimate(self, logits, f, *, rng, tau, step, context):
        t = self.Options(**self.cfg.options).backward_tau
        soft = torch.softmax(logits / t, dim=-1)
        z = sample_one_hot(logits, rng).to(logits.dtype)
        loss = f(z + soft - soft.detach())
        return loss, {"loss": loss.detach().mean(-1)}
'''


def test_a_plugin_estimator_is_one_file_through_validation_training_a_sweep_a_table_and_a_figure(
        shared_cache, tmp_path, monkeypatch):
    (tmp_path / "toy_estimator.py").write_text(TOY)
    env = env_with_cache(shared_cache)
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    tiny = tiny_overrides(tmp_path / "runs")
    refused = cli("experiments.train", "plugins=[toy_estimator]", "estimator=st-temp", "model.kind=bernoulli",
                  "model.num_latents=12", "model.num_classes=2", *tiny)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert (("estimator.name: 'st-temp' is for categorical latents, not bernoulli ones; for task vae with "
             "bernoulli latents use") in refused.stderr
            and "disarm" in refused.stderr and "st-temp," not in refused.stderr)

    done = cli("experiments.train", "--no-progress", "--config",
               str(REPO / "configs/vae_categorical_linear.yaml"),
               "plugins=[toy_estimator]", "estimator=st-temp", "estimator.options.backward_tau=3", *tiny)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "runs").glob("*/st-temp__*/summary.json"))) == 1

    sweep = tmp_path / "toy_sweep.yaml"
    sweep.write_text(plugin_sweep(str(REPO / "configs/vae_categorical_linear.yaml"), "toy_estimator",
                                  ["st-temp", "st"], tiny[1:]))
    done = cli("experiments.sweep", str(sweep), "--results-dir", str(tmp_path / "store"), "--no-progress")
    assert done.returncode == 0 and "toy_sweep (none): finished 2" in done.stdout, done.stdout + done.stderr

    monkeypatch.syspath_prepend(str(tmp_path))
    from vae.reporting.tables import table1_rows
    from vae.sweeps.definition import expand, read_sweep

    header, rows = table1_rows(expand(read_sweep(sweep), "none", tmp_path / "store"))
    # the paper's ST first, the plugin by its family and year
    assert header == ["ST", "ST, tempered"]
    cost = dict(rows)["VAE (Cat.) decoder evaluations / example / step"]
    assert cost == ["1", "1"]

    done = cli("experiments.compare", str(tmp_path / "store" / "sweeps" / "toy_sweep"), "--plot",
               "--out", str(tmp_path / "figure"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "figure.png").stat().st_size > 1000 and "st-temp" in done.stdout
