"""``python -m experiments.compare`` on tiny real runs: the table's numbers come from the runs'
summaries, the differing settings are the columns, a sweep-like directory finds every run, the
plot is written, and bad input is one line and status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_overrides
from experiments.compare import main
from vae.config import load_config, to_dict
from vae.training.trainer import train

REPO = Path(__file__).resolve().parent.parent

RUNS = {"a_gs": ["estimator.name=gs", "seeds=[0,1]"],
        "b_stgs": ["estimator.name=st-gs", "optim.lr=0.003"],
        "c_unfinished": ["estimator.name=gs", "optim.lr=0.0005"]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, shared_cache) -> Path:
    """A sweep-like directory of three tiny runs; the last one's summary.json removed (unfinished)."""
    root = tmp_path_factory.mktemp("store") / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAE_DATA_DIR", str(shared_cache))
        mp.setenv("WANDB_MODE", "disabled")
        for name, overrides in RUNS.items():
            cfg = load_config(None, tiny_overrides(root.parent / "out") + overrides)
            train(cfg, root / name, progress=False, log=lambda _: None)
    (root / "c_unfinished" / "summary.json").unlink()
    return root


def table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Header and rows (run name -> column -> cell) of the printed markdown table."""
    lines = [line.strip().strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0][1:]]
    names = [cells[0].strip() for cells in lines[1:]]
    assert len(set(names)) == len(names) and len(set(header)) == len(header), "a run or column twice"
    return header, {cells[0].strip(): dict(zip(header, (c.strip() for c in cells[1:])))
                    for cells in lines[1:]}


def expected(run_dir: Path, key: str) -> str:
    value = json.loads((run_dir / "summary.json").read_text())[key]
    return f"{value['mean']:.2f} ± {value['std']:.2f}"


def test_a_sweep_directory_gives_a_row_per_run_with_its_numbers_and_what_differs(sweep, capsys):
    assert main([str(sweep)]) == 0
    header, rows = table(capsys.readouterr().out)
    assert list(rows) == sorted(RUNS)
    assert header[:4] == ["estimator", "τ schedule", "steps", "seeds"]
    summary = json.loads((sweep / "a_gs" / "summary.json").read_text())
    metrics = sorted(k for k in summary if k.startswith(("valid/", "test/")))
    assert "test/iw_bound" in metrics and header[4:4 + len(metrics)] == metrics
    for name in ("a_gs", "b_stgs"):
        for key in metrics:
            assert rows[name][key] == expected(sweep / name, key)
    assert all(rows["c_unfinished"][key] == "unfinished" for key in metrics)
    assert rows["a_gs"]["seeds"] == "2" and rows["b_stgs"]["seeds"] == "1" and rows["a_gs"]["steps"] == "12"
    assert (rows["a_gs"]["estimator"], rows["b_stgs"]["estimator"]) == ("gs", "st-gs")
    assert rows["a_gs"]["τ schedule"] == "exp"
    differing = header[4 + len(metrics):]
    assert "optim.lr" in differing and "estimator.name" not in differing   # the estimator has its own column
    assert not {"steps", "seeds", "model.hidden", "tau.schedule", "out_dir", "experiment"} & set(differing)
    assert header.count("steps") == 1
    assert [rows[n]["optim.lr"] for n in sorted(RUNS)] == ["0.001", "0.003", "0.0005"]


def test_run_directories_as_paths_and_metric_restricts_the_columns(sweep, capsys):
    assert main([str(sweep / "b_stgs"), str(sweep / "a_gs"), str(sweep), "--metric", "test/iw_bound"]) == 0
    header, rows = table(capsys.readouterr().out)
    assert list(rows) == ["b_stgs", "a_gs", "c_unfinished"]       # in the order given, each run once
    metric_columns = [h for h in header if "/" in h]
    assert metric_columns == ["test/iw_bound"]
    assert rows["a_gs"]["test/iw_bound"] == expected(sweep / "a_gs", "test/iw_bound")


def test_plot_writes_png_and_pdf(sweep, tmp_path, capsys):
    stem = tmp_path / "figs" / "stem"
    assert main([str(sweep), "--plot", "--out", str(stem)]) == 0
    printed = capsys.readouterr().out.splitlines()
    for ext in ("png", "pdf"):
        path = stem.with_suffix(f".{ext}")
        assert str(path) in printed and path.stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "{missing}: no such directory"),
    (["{empty}"], "{empty}: holds no run"),
    (["{sweep}", "--metric", "test/no_such_key"], "--metric test/no_such_key:"),
    (["{sweep}", "--metric", "steps"], "--metric steps:"),           # in summary.json, but no metric
    (["{sweep}", "--metric", "test/iw_bund"],
     "--metric test/iw_bund: no compared run's summary.json has this "
     "metric (did you mean 'test/iw_bound'?); they have "),
    (["{sweep}", "--plot", "--curve", "test/no_such_curve"], "--curve test/no_such_curve:"),
])
def test_bad_input_is_one_line_and_status_2_and_writes_nothing(sweep, tmp_path, capsys, args, message):
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "sweep": sweep}
    (tmp_path / "empty").mkdir()
    stem = tmp_path / "out" / "stem"
    assert main([a.format(**paths) for a in args] + ["--plot", "--out", str(stem)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: " + message.format(**paths)) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_legend_names_each_run_by_what_sets_it_apart():
    """Whole labels, estimator first, then the settings that differ among the plotted runs; the run
    directory's name only where two runs would read the same."""
    from vae.reporting.compare import Run, legend_labels

    def run(name: str, estimator: str, lr: float) -> Run:
        return Run(Path(name), estimator, {"optim.lr": lr, "tau.schedule": "exp", "steps": 100, "seeds": [0]},
                   None)

    runs = [run("a", "gs", 1e-3), run("b", "gs", 3e-4), run("c", "st-gs", 1e-3), run("d", "st-gs", 1e-3)]
    assert legend_labels(runs) == ["gs lr=0.001", "gs lr=0.0003", "c", "d"]


def test_the_estimator_column_is_what_the_task_trains_with(tmp_path, capsys):
    """An ssl run trains its unlabelled class with ``ssl.y``, not ``estimator.name`` (left at its
    default): the column reads ssl.y, and neither key shows again as a differing setting."""
    for mode in ("marginal", "st-gs"):
        cfg = load_config(REPO / "configs" / "ssl_m2.yaml", [f"ssl.y={mode}"])
        (tmp_path / mode).mkdir()
        (tmp_path / mode / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    assert main([str(tmp_path)]) == 0
    header, rows = table(capsys.readouterr().out)
    assert (rows["marginal"]["estimator"], rows["st-gs"]["estimator"]) == ("marginal", "st-gs")
    assert not {"ssl.y", "estimator.name"} & set(header)


def test_tau_is_shown_only_for_estimators_that_read_it():
    """The table's schedule column and the legend name a run's tau only where its estimator
    declares it reads tau (``reads_tau``): SF's runs have a schedule in their config, which does
    nothing to them."""
    from vae.reporting.compare import Run, compare_table, legend_labels

    runs = [Run(Path(f"/runs/{name}_{schedule}"), name, {"tau.schedule": schedule, "steps": 10, "seeds": [0]},
                None)
            for name in ("gs", "reinforce-ema") for schedule in ("exp", "constant")]
    _, rows = table(compare_table(runs, []))
    assert (rows["gs_exp"]["τ schedule"] == "exp"
            and rows["reinforce-ema_exp"]["τ schedule"] == "– (reads none)")
    labels = legend_labels(runs)
    assert labels[:2] == ["gs schedule=exp", "gs schedule=constant"]
    # otherwise alike: their directories
    assert labels[2:] == ["reinforce-ema_exp", "reinforce-ema_constant"]


def test_an_estimator_option_is_a_difference_only_where_it_leaves_its_default():
    """Two committed records, in the former spelling (vae.estimators.config.FORMER_SHARED_SETTINGS):
    GS against SF differ in the estimator alone (SF's options at their defaults are no column), the
    two DARN runs in their Taylor point."""
    from vae.reporting.compare import differing, load_run

    store = Path(__file__).resolve().parents[1] / "results" / "sweeps" / "table1" / "converged"
    gs, sf, darn, at_mean = (load_run(store / name) for name in (
        "vae_bernoulli__gs__4e7030e5", "vae_bernoulli__reinforce-ema__1822a2a6",
        "vae_bernoulli__darn__715fa018", "vae_bernoulli__mean__darn__8ecfe9f8"))
    assert [k for k in differing([gs, sf]) if k.startswith("estimator.")] == []   # the name: its column
    assert [k for k in differing([darn, at_mean]) if k.startswith("estimator.")] == [
        "estimator.options.darn_point"]
