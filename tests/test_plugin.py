"""A researcher's estimator is one file: written in a temporary module with its declarations and
no other edit anywhere, it is validated by them (a latent kind it does not declare is refused in
one line that lists the estimators that do apply), trained through ``experiments.train``, swept
beside a built-in estimator, tabled in Table 1's layout under its display name with its cost, and
drawn by ``experiments.compare --plot``. The command lines run in this process (their ``main``,
as ``python -m`` calls it: the same code, without an interpreter's start-up each); the module-scoped
fixture of tests/conftest.py takes the plugin out of the registry after this file."""

from __future__ import annotations

from pathlib import Path

from conftest import plugin_sweep, tiny_overrides
from experiments import compare as compare_cli
from experiments import sweep as sweep_cli
from experiments import train as train_cli

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
        shared_cache, tmp_path, monkeypatch, capsys):
    (tmp_path / "toy_estimator.py").write_text(TOY)
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)

    tiny = tiny_overrides(tmp_path / "runs")
    assert train_cli.main(["plugins=[toy_estimator]", "estimator=st-temp", "model.kind=bernoulli",
                           "model.num_latents=12", "model.num_classes=2", *tiny]) == 2
    refused = capsys.readouterr().err
    assert refused.count("\n") == 1, refused
    assert (("estimator.name: 'st-temp' is for categorical latents, not bernoulli ones; for task vae with "
             "bernoulli latents use") in refused and "disarm" in refused and "st-temp," not in refused)

    assert train_cli.main(["--no-progress", "--config", str(REPO / "configs/vae_categorical_linear.yaml"),
                           "plugins=[toy_estimator]", "estimator=st-temp", "estimator.options.backward_tau=3",
                           *tiny]) == 0
    assert len(list((tmp_path / "runs").glob("*/st-temp__*/summary.json"))) == 1

    sweep = tmp_path / "toy_sweep.yaml"
    sweep.write_text(plugin_sweep(str(REPO / "configs/vae_categorical_linear.yaml"), "toy_estimator",
                                  ["st-temp", "st"], tiny[1:]))
    capsys.readouterr()
    assert sweep_cli.main([str(sweep), "--results-dir", str(tmp_path / "store"), "--no-progress"]) == 0
    assert "toy_sweep (none): finished 2" in capsys.readouterr().out

    from vae.reporting.tables import table1_rows
    from vae.sweeps.definition import expand, read_sweep

    header, rows = table1_rows(expand(read_sweep(sweep), "none", tmp_path / "store"))
    # the paper's ST first, the plugin by its family and year
    assert header == ["ST", "ST, tempered"]
    cost = dict(rows)["VAE (Cat.) decoder evaluations / example / step"]
    assert cost == ["1", "1"]

    assert compare_cli.main([str(tmp_path / "store" / "sweeps" / "toy_sweep"), "--plot",
                             "--out", str(tmp_path / "figure")]) == 0
    assert (tmp_path / "figure.png").stat().st_size > 1000 and "st-temp" in capsys.readouterr().out
