"""W&B sweeps: the translation of every shipped sweep file, and the agent's entry point.

No W&B server can run here, so the W&B client is replaced at the module boundary by a stand-in
(``sys.modules["wandb"]``) that records what the suite asks of it. What is tested is our side:
the registered points are exactly the local runner's, registration refuses to go on without
W&B, and an agent's ``--point`` trains one point through the same code into the same store,
logging to the sweep's run (whose id the agent owns) and never training a finished point again.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from experiments import sweep as sweep_cli
from vae.sweeps.definition import PRESETS, expand, read_sweep
from vae.sweeps.wandb_agents import POINT, wandb_config

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


class FakeRun:
    def __init__(self, log: list):
        self.calls = log
        self.summary: dict = {}

    def log(self, values: dict, step: int) -> None:
        self.calls.append(("log", step, values))

    def finish(self, exit_code: int = 0) -> None:
        self.calls.append(("finish", exit_code))


def fake_wandb(calls: list) -> types.ModuleType:
    """A stand-in for the ``wandb`` module: records sweep registration and run logging."""
    module = types.ModuleType("wandb")
    module.Settings = lambda **kwargs: kwargs
    module.sweep = lambda config, project: calls.append(("sweep", config, project)) or "abc123"
    module.Api = lambda: types.SimpleNamespace(default_entity="someone")

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun(calls)

    module.init = init
    return module


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_every_shipped_sweep_translates_to_exactly_the_local_points(path: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    sweep = read_sweep(path)
    for preset in (p for p in PRESETS if p in sweep.presets):
        points = expand(sweep, preset, tmp_path)
        config = wandb_config(sweep.path, sweep.name, sweep.metric, sweep.goal, preset,
                              [p.run_dir.name for p in points], tmp_path)
        names = config["parameters"][POINT]["values"]
        assert names == [p.run_dir.name for p in points] and len(set(names)) == len(names)
        assert config["method"] == "grid" and config["metric"] == {"name": sweep.metric, "goal": sweep.goal}
        assert config["command"][-1] == "${args}" and preset in config["command"]


def test_register_prints_the_agent_command_and_writes_nothing(tmp_path, monkeypatch, capsys) -> None:
    calls: list = []
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls))
    monkeypatch.setenv("WANDB_MODE", "online")
    assert sweep_cli.main(["configs/sweeps/gradvar.yaml", "--preset", "quick", "--wandb",
                           "--results-dir", str(tmp_path / "res")]) == 0
    out = capsys.readouterr().out
    assert "wandb agent someone/discrete-vae/abc123" in out
    (kind, config, project), = calls
    points = expand(read_sweep(REPO / "configs/sweeps/gradvar.yaml"), "quick", tmp_path / "res")
    assert kind == "sweep" and project == "discrete-vae"
    assert config["parameters"][POINT]["values"] == [p.run_dir.name for p in points]   # every point
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_wandb_without_the_server_is_one_line_and_exit_2(mode, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", mode)
    assert sweep_cli.main(["configs/sweeps/gradvar.yaml", "--wandb", "--results-dir",
                           str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --wandb: ") and "wandb login" in err and err.count("\n") == 1
    assert not (tmp_path / "res").exists()


def test_a_refusing_server_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys) -> None:
    module = fake_wandb([])

    def refuse(config, project):
        raise ConnectionError("Network error\nretrying")

    module.sweep = refuse
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv("WANDB_MODE", "online")
    assert sweep_cli.main(["configs/sweeps/gradvar.yaml", "--wandb", "--results-dir",
                           str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert ("ConnectionError: Network error" in err and err.count("\n") == 1
            and not (tmp_path / "res").exists())


def test_agent_trains_its_point_into_the_store_once_and_logs_to_the_sweeps_run(shared_cache, tmp_path,
                                                                               monkeypatch,
                                                                                 capsys) -> None:
    calls: list = []
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls))
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")            # what `wandb agent` sets for its command
    gs, rloo = expand(read_sweep("configs/sweeps/gradvar.yaml"), "tiny", tmp_path)
    args = ["configs/sweeps/gradvar.yaml", "--preset", "tiny", "--results-dir", str(tmp_path),
            "--no-progress", f"--point={rloo.run_dir.name}"]                    # the form of W&B's ${args}
    assert sweep_cli.main(args) == 0
    assert rloo.status() == "done" and gs.status() == "new"
    inits = [c[1] for c in calls if c[0] == "init"]
    assert len(inits) == 1 and "id" not in inits[0] and inits[0]["name"] == rloo.run_dir.name
    assert any(c[0] == "log" and "valid/neg_elbo" in c[2] for c in calls) and calls[-1] == ("finish", 0)
    capsys.readouterr()
    assert sweep_cli.main(args) == 0                           # the same point again: not retrained
    assert "gradvar (tiny): done 1" in capsys.readouterr().out
    assert len([c for c in calls if c[0] == "init"]) == 1
    assert sweep_cli.main([*args[:-1], "--point=nope"]) == 2


def test_each_replica_has_its_own_wandb_key_even_where_seeds_repeat(tmp_path, monkeypatch) -> None:
    """A pack (--pack-lr) repeats seeds, one per learning rate: W&B must get every replica's value,
    named by its learning rate and seed."""
    from vae.store.tracking import RunTracker

    calls: list = []
    monkeypatch.setitem(sys.modules, "wandb", fake_wandb(calls))
    monkeypatch.setenv("WANDB_MODE", "offline")
    for lr, seeds, expected in ((1e-3, [3, 4], {"valid/neg_elbo": 100.5, "valid/neg_elbo/seed3": 100.0,
                                                  "valid/neg_elbo/seed4": 101.0}),
                                # no mean over
                                ([1e-3, 3e-3], [0, 0], {"valid/neg_elbo/lr0.001-seed0": 100.0,
                                                        "valid/neg_elbo/lr0.003-seed0": 101.0})):  # two lrs
        run_dir = tmp_path / f"run-{seeds[0]}-{seeds[1]}"
        run_dir.mkdir()
        tracker = RunTracker(run_dir, {"steps": 1, "optim": {"lr": lr}}, seeds, "project", tmp_path)
        tracker.log(1, "valid", {"neg_elbo": [100.0, 101.0]})
        tracker.finish(None)
        assert [c for c in calls if c[0] == "log"][-1][2] == expected
