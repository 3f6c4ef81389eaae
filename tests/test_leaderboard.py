"""The leaderboard: a plugin estimator enters it with one command from outside the repository,
ranked against committed-style records; its statistics, the equal-cost budget, and bad input."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import pytest
from test_plugin import TOY

from conftest import markdown_tables, run_main

REPO = Path(__file__).resolve().parents[1]


def test_the_t_quantile_is_students():
    """Against the textbook table (two-sided 95 %: the 0.975 quantile) to its 3 decimals."""
    from vae.reporting.leaderboard import t_quantile

    for df, expected in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (1000, 1.962)):
        assert abs(t_quantile(0.975, df) - expected) < 1e-3, df


def _entry(values: list[float], passes: float = 1.0, ms: float = 1.0):
    from vae.reporting.leaderboard import Entry
    return Entry(None, values, passes, ms, True, False)


def test_the_verdict_is_the_pooled_t_test_holm_corrected_over_the_cell():
    """Best 100 ± 0.1 over 2 seeds. Alone against it (one comparison, Holm's threshold alpha), +0.4
    with the same spread is tied and +0.7 behind: the 95 % interval of the difference is
    ± 4.303 x pooled std x 1 = 0.61. Among three comparisons, the smallest p-value is tested at
    alpha / 3: +0.7 (p = 0.034) is no longer behind, +2.0 (p = 0.004) still is, and Holm stops at the
    first that is not rejected. One seed: no verdict."""
    from vae.reporting.leaderboard import p_behind, verdicts

    best = _entry([99.9, 100.1])
    spread = 0.1 * 2 ** 0.5                       # the sample std of [x - 0.1, x + 0.1]
    assert abs(best.std - spread) < 1e-12
    near, far, farther = _entry([100.3, 100.5]), _entry([100.6, 100.8]), _entry([101.9, 102.1])
    assert verdicts([best, near]) == ["best", "tied"]           # +0.4 < 0.61
    assert verdicts([best, far]) == ["best", "behind"]          # +0.7 > 0.61
    assert 0.05 / 3 < p_behind(far, best) < 0.05 and p_behind(farther, best) < 0.05 / 3
    assert verdicts([best, near, far, farther]) == ["best", "tied", "tied", "behind"]
    assert verdicts([best, _entry([100.0])]) == ["best", "1 seed"]
    assert verdicts([best, _entry([256.1, 256.3])]) == ["best", "behind"]   # t = 1100: the CDF holds far out


def test_an_estimator_cannot_climb_the_summary_by_leaving_out_its_bad_cells():
    """Rankings use only cells every ranked estimator shares: Z, best on one cell and worst on the
    other three, is last over all four cells (mean rank 3.25, tied with C); run on its good cell
    alone it would be first by a mean over its own cells, but here it is in no all-cells ranking
    (the others' mean ranks are as if it had never been run) and is ranked on that one cell
    against everyone who has it, listed after every estimator ranked on all four."""
    from vae.reporting.leaderboard import shared_rankings

    full = {"A": {"c1": 1, "c2": 2, "c3": 2, "c4": 1}, "B": {"c1": 2, "c2": 1, "c3": 1, "c4": 2},
            "C": {"c1": 3, "c2": 3, "c3": 3, "c4": 3}}
    z = {"c1": 0, "c2": 9, "c3": 9, "c4": 9}

    def rankings(numbers):          # {title: {cell: mean}} -> shared_rankings' {cell: {title: mean}}
        return shared_rankings({c: {t: cells[c] for t, cells in numbers.items() if c in cells}
                                for c in ("c1", "c2", "c3", "c4")})

    everything = rankings({**full, "Z": z})
    assert [(cells, list(r)) for cells, r in everything] == [(("c1", "c2", "c3", "c4"), ["A", "B", "C", "Z"])]
    assert everything[0][1]["Z"] == (1 + 4 + 4 + 4) / 4
    partial = rankings({**full, "Z": {"c1": z["c1"]}})
    assert [cells for cells, _ in partial] == [("c1", "c2", "c3", "c4"), ("c1",)]
    assert list(partial[0][1]) == ["A", "B", "C"] and partial[0][1] == rankings(full)[0][1]
    assert partial[1][1] == {"Z": 1.0}                           # its one cell, against all who have it


def test_the_pareto_front_keeps_only_entries_nothing_cheaper_beats():
    from vae.reporting.leaderboard import pareto

    cheap_bad, cheap_good, dear_better, dear_worse = (_entry([v], passes=p) for v, p in
                                                      ((110.0, 1), (105.0, 1), (104.0, 4), (106.0, 2)))
    assert pareto([cheap_bad, cheap_good, dear_better, dear_worse], "passes") == [cheap_good, dear_better]


def test_the_frontier_draws_a_new_entry_far_behind_inside_its_axes_and_no_legend(tmp_path, monkeypatch):
    """A committed entry 60 nats behind the cell's best sits on the top edge (the y axis spans the
    best 8 nats, SPAN); the same entry trained by this call (new) is drawn inside the axes, and no
    legend covers the entries' labels."""
    import vae.reporting.leaderboard as board
    from vae.config import load_config
    from vae.sweeps.definition import Point

    def entries(far_is_new: bool) -> list:
        rows = (("gs", [100.0, 100.2], False), ("st-gs", [101.0, 101.2], False),
                ("rloo", [102.0, 102.4], False), ("nvil", [160.0, 161.0], far_is_new))
        base = "configs/vae_categorical.yaml"
        return [board.Entry(Point(base, {}, load_config(REPO / base, [f"estimator.name={name}"]),
                                  tmp_path / name),
                            values, 1.0, 2.0, True, new) for name, values, new in rows]

    figures = []
    monkeypatch.setattr(board, "save", lambda fig, *args: figures.append(fig) or [])
    cell = board.Cell("vae-cat", "VAE (Cat.)", "table1", "configs/vae_categorical.yaml")
    for far_is_new in (False, True):
        board.frontier({cell: entries(far_is_new)}, "tiny", tmp_path, "note")
        for ax in figures[-1].axes:
            low, high = ax.get_ylim()
            assert low < 100.0 and (high > 161.0 if far_is_new else high < 110.0) and ax.get_legend() is None


def test_equal_cost_gives_the_reference_s_decoder_evaluations():
    """IndeCateR (181 passes on the 20 x 10 VAE, 201 on the Bernoulli one, counted by the SBN's
    own loss on its net) at RLOO's 4 passes: steps x passes equal RLOO's within one step's passes;
    the logging, checkpoint and curve intervals scale alike; an unknown reference is one line."""
    from vae.config import load_config
    from vae.training.tasks import TASKS, at_equal_cost

    for base in ("vae_categorical", "vae_bernoulli", "sbn_categorical"):
        cfg = load_config(REPO / "configs" / f"{base}.yaml", ["estimator.name=indecater", "eval.every=1000"])
        rloo = load_config(REPO / "configs" / f"{base}.yaml", ["estimator.name=rloo"])
        task = TASKS[cfg.task]
        scaled = at_equal_cost(cfg, "rloo")
        assert abs(scaled.steps * task.decoder_passes(cfg) - rloo.steps * task.decoder_passes(rloo)) \
            <= task.decoder_passes(cfg) / 2
        assert scaled.checkpoint_every % scaled.log_every == 0 and scaled.eval.every < cfg.eval.every
    with pytest.raises(ValueError, match="equal_cost: unknown estimator 'nope'"):
        at_equal_cost(cfg, "nope")


@pytest.fixture(scope="module")
def committed(tiny_results) -> Path:
    """Committed-style records: Table 1's, the SBN's and the 2020 benchmark's sweeps at the tiny
    preset, the ones `make figures PRESET=tiny` trained (read only)."""
    return tiny_results[0]


def test_a_plugin_enters_the_leaderboard_with_one_command_from_outside_the_repository(committed, shared_cache,
                                                                                       tmp_path, monkeypatch):
    """A plugin module in a directory of the user's, the command run there (in this process:
    conftest.run_main)."""
    (tmp_path / "toy_estimator.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))

    def leaderboard(*args: str) -> subprocess.CompletedProcess:
        return run_main("experiments.leaderboard", ["--preset", "tiny", "--committed-dir", str(committed),
                                                    "--results-dir", "mine", "--no-progress", *args],
                        shared_cache, cwd=tmp_path)

    done = leaderboard("--estimator", "st-temp", "--plugins", "toy_estimator",
                       "estimator.options.backward_tau=3")
    assert done.returncode == 0, done.stderr
    # before it trains, each cell says how long its new run will take
    assert re.search(r"VAE \(Cat\.\): 1 run\(s\) to train and bound, about \d+ minutes on this machine",
                     done.stdout)
    table = (tmp_path / "mine/tables/tiny/leaderboard.md").read_text()
    # each table by its caption's first words
    by_caption = {caption.split(" (tiny)")[0]: body for caption, body in markdown_tables(table)}
    # overall: ranked over the two categorical cells, the Bernoulli ones marked from its declarations
    (row,) = [line for line in by_caption["Leaderboard"].splitlines() if "ST, tempered" in line]
    assert "ST, tempered (backward_tau=3)" in row and row.count("does not apply") == 2, row
    assert row.split("|")[4].strip() == "VAE (Cat.), SBN (Cat.)"              # ranked on the cells it has
    for cell in ("VAE (Cat.)", "SBN (Cat.)"):
        ranked = by_caption[cell]
        assert ("ST, tempered (backward_tau=3) (new)" in ranked and "Gumbel-S." in ranked
                and "SF" in ranked)
        assert ranked.count("\n") == 4                                       # header, rule, three entries
    assert "ST, tempered (backward_tau=3) | does not apply" in by_caption["VAE (Bern.)"]
    # every board it applies to: the 2017 board's two categorical cells and the categorical
    # benchmark's two shapes (the 2020 board is Bernoulli only)
    assert len(list((tmp_path / "mine/sweeps").glob("*/tiny/*st-temp*/summary.json"))) == 4
    assert "ST, tempered (backward_tau=3) (new)" in (
        tmp_path / "mine/tables/tiny/leaderboard_categorical.md").read_text()
    assert "board 2020: --preset: no finished entry" not in done.stdout      # the committed ones
    assert (tmp_path / "mine/figures/tiny/frontier.png").stat().st_size > 10_000
    assert "tied" in table or "behind" in table

    again = leaderboard("--estimator", "st-temp", "--plugins", "toy_estimator",
                        "estimator.options.backward_tau=3")
    assert (again.returncode == 0 and "started" not in again.stdout
            and again.stdout.count(": done") == 4), again.stdout


def test_a_plugin_enters_the_2020_benchmark_s_board_with_one_command(committed, shared_cache, tmp_path,
                                                                    monkeypatch):
    """The second board: a Bernoulli-capable plugin, trained by one command on each of the tiny
    preset's four benchmark cells (two models, two data sets) and ranked there beside the
    committed entries; the 2017 board is drawn beside it."""
    (tmp_path / "toy_estimator.py").write_text(TOY.replace('kinds = frozenset({"categorical"})',
                                                           'kinds = frozenset({"categorical", "bernoulli"})'))
    monkeypatch.syspath_prepend(str(tmp_path))
    done = run_main("experiments.leaderboard", ["--preset", "tiny", "--committed-dir", str(committed),
                                                "--results-dir", "mine", "--no-progress", "--board", "2020",
                                                "--estimator", "st-temp", "--plugins", "toy_estimator"],
                    shared_cache, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "mine/tables/tiny/leaderboard_2020.md").read_text()
    assert markdown_tables(table)[0][1].startswith("| rank | estimator | mean rank | ranked on cells | "
                                                   "linear MNIST | nonlinear MNIST | linear FashionMNIST | "
                                                   "nonlinear FashionMNIST |")
    # the summary
    (row,) = [line for line in table.splitlines() if "ST, tempered" in line and "| all |" in line]
    assert row.count("(") == 4                                   # a number and its rank in every cell
    assert table.count("ST, tempered (new)") == 4 and "Leaderboard of the 2020 benchmark (tiny)" in table
    assert len(list((tmp_path / "mine/sweeps/modern/tiny").glob("*st-temp*/summary.json"))) == 4
    assert (tmp_path / "mine/figures/tiny/frontier_2020.png").stat().st_size > 10_000


def test_estimators_enter_the_categorical_benchmark_s_board_with_one_command(committed, shared_cache,
                                                                             tmp_path, monkeypatch):
    """The third board: each latent shape K x N of the categorical benchmark's tiny preset a cell;
    two estimators trained there by one command (none is committed at that preset) and ranked."""
    from experiments.leaderboard import main

    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.chdir(tmp_path)
    assert main(["--preset", "tiny", "--committed-dir", str(committed), "--results-dir", "mine",
                 "--no-progress", "--board", "categorical", "--estimator", "gs", "zgr"]) == 0
    table = (tmp_path / "mine/tables/tiny/leaderboard_categorical.md").read_text()
    assert markdown_tables(table)[0][1].startswith("| rank | estimator | mean rank | ranked on cells | "
                                                   "8 x 4 | 10 x 30 |")
    assert "Leaderboard of the categorical benchmark (tiny)" in table
    assert all(row.count("(") == 2 for row in table.splitlines() if "| all |" in row)
    assert len([row for row in table.splitlines() if "| all |" in row]) == 2
    assert len(list((tmp_path / "mine/sweeps/categorical/tiny").glob("*/summary.json"))) == 4
    assert (tmp_path / "mine/figures/tiny/frontier_categorical.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, message", [
    (["--estimator", "nope"], "--estimator: unknown estimator 'nope'"),
    (["--estimator", "arm", "--cell", "vae-categorical"], "--cell: 'arm' does not apply to vae-categorical"),
    (["--cell", "vae-gaussian"], "--cell: unknown cell 'vae-gaussian'"),
    (["--preset", "quick"], "--preset: no finished entry of preset 'quick'"),
    (["--equal-cost", "nope", "--estimator", "gs"], "--equal-cost: unknown estimator 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(committed, tmp_path, args, message, capsys):
    from experiments.leaderboard import main

    assert main(["--preset", "tiny", "--committed-dir", str(committed), "--results-dir", str(tmp_path),
                 *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "tables").exists()


def test_time_steps_times_each_entry_once_and_the_table_uses_it(committed, shared_cache, tmp_path,
                                                                monkeypatch):
    """``--time-steps``: each entry's step timed alone and recorded by its run directory; a second
    call times nothing again; the ranked tables then print those milliseconds without the '*'."""
    import json

    from vae.reporting.leaderboard import CELLS, committed_points, leaderboard, measure_step_ms

    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    points = committed_points(CELLS[1], "tiny", [committed])
    path = measure_step_ms(points, tmp_path, "tiny", steps=2, repeats=1)
    timed = json.loads(path.read_text())["runs"]
    assert set(timed) == {p.run_dir.name for p in points} and all(ms > 0 for ms in timed.values())
    assert measure_step_ms(points, tmp_path, "tiny", steps=2, repeats=1) == path
    assert json.loads(path.read_text())["runs"] == timed                     # not timed again
    table = leaderboard("tiny", tmp_path, committed_dir=committed, cells=[CELLS[1].name])
    vae_rows = [line for line in table.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert any(f"{timed[p.run_dir.name]:.1f} |" in table for p in points) and vae_rows


def test_a_run_s_own_step_time_says_when_the_run_was_compiled(tmp_path):
    """Table 1's ms / step cell and the leaderboard's fallback time (the run's own, '*') mark a run
    trained with compile=true, whose step is faster than an eager one; a --time-steps measurement
    (every entry eager) is unmarked."""
    import json

    from vae.config import load_config, to_dict
    from vae.reporting.leaderboard import Entry, _ms
    from vae.reporting.tables import _cost
    from vae.store.run_dir import write_config
    from vae.sweeps.definition import Point

    for compiled, in_table, on_board in ((False, "50.0", "50.0*"), (True, "50.0 (compiled)", "50.0*c")):
        run = tmp_path / f"compile_{compiled}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"steps_per_second": 20.0}))
        # the run's record says how it trained; the point (the sweep's config) never does
        write_config(run, to_dict(load_config("configs/vae_categorical.yaml",
                                              [f"compile={str(compiled).lower()}"])))
        point = Point("configs/vae_categorical.yaml", {}, load_config("configs/vae_categorical.yaml", []),
                      run)
        assert _cost(point, "time") == in_table
        assert _ms(Entry(point, [100.0], 1.0, 50.0, ms_measured=False, new=False)) == on_board
        assert _ms(Entry(point, [100.0], 1.0, 40.0, ms_measured=True, new=False)) == "40.0"
    # compile: auto decided at run time: the summary says which step ran
    for compiled in (False, True):
        run = tmp_path / f"auto_{compiled}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"steps_per_second": 20.0, "compiled": compiled}))
        write_config(run, to_dict(load_config("configs/vae_categorical.yaml", ["compile=auto"])))
        point = Point("configs/vae_categorical.yaml", {}, load_config("configs/vae_categorical.yaml", []),
                      run)
        assert point.trained_compiled() is compiled
        (run / "summary.json").write_text(json.dumps({"steps_per_second": 20.0}))   # a record older than auto
        assert not point.trained_compiled()
    # no record of it, or one that is not a config
    for saved in (None, "compile: [unclosed", "- a list"):
        run = tmp_path / "odd"
        run.mkdir(exist_ok=True)
        (run / "config.yaml").unlink(missing_ok=True)
        if saved is not None:
            (run / "config.yaml").write_text(saved)
        assert not Point("configs/vae_categorical.yaml", {}, load_config("configs/vae_categorical.yaml", []),
                         run).trained_compiled()


def test_the_cost_line_sums_the_board_s_records_and_scales_them_to_the_next_preset(committed, tmp_path,
                                                                                   capsys):
    """``leaderboard --cost``: per preset, the board's runs, seed-runs and core-hours (training and
    bound) from the entries' summaries, and the next preset's estimate: each entry's seconds per
    seed and step, and per seed, digit and sample of the bound, at the next preset's budget."""
    from experiments.leaderboard import main
    from vae.reporting.leaderboard import CELLS, board_cost, cell_config, committed_points
    from vae.store.run_dir import load_summary

    cost = board_cost("tiny", [committed])
    entries = [(cell, load_summary(p.run_dir)) for cell in CELLS
               for p in committed_points(cell, "tiny", [committed])]
    assert cost["runs"] == len(entries) > 4 and cost["seed_runs"] == sum(len(s["seeds"]) for _, s in entries)
    assert cost["core_hours"] == pytest.approx(sum(s["train_seconds"] + s["iw_seconds"]
                                                   for _, s in entries) / 3600)
    expected = 0.0
    for cell, s in entries:          # the quick preset has one learning rate: one point per entry
        quick = cell_config(cell, "quick")
        seeds, digits = len(quick.seeds), quick.eval.iw_examples or 10_000
        expected += seeds * (s["train_seconds"] / (s["steps"] * len(s["seeds"])) * quick.steps
                             + s["iw_seconds"] / (s["iw_examples"] * s["iw_samples"] * len(s["seeds"]))
                             * digits * quick.eval.iw_samples)
    assert cost["next"]["preset"] == "quick" and cost["next"]["runs"] == len(entries)
    assert cost["next"]["core_hours"] == pytest.approx(expected / 3600)
    assert main(["--cost", "--committed-dir", str(committed), "--results-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"preset tiny: {cost['runs']} runs, {cost['seed_runs']} seed-runs" in printed
    assert "the same entries under preset quick" in printed and "preset paper: no finished entry" in printed


def test_gradients_measures_every_entry_once_at_the_cell_s_shared_checkpoint(committed, shared_cache,
                                                                             tmp_path, monkeypatch):
    """``--gradients`` on a benchmark cell: RLOO and ST-GS added beside the committed DisARM, each
    entry's encoder gradient measured at RLOO's checkpoint (vae/reporting/gradient_quality.py), recorded by
    run directory; the cell's table gains the two columns, the figure is drawn; a second call
    measures nothing again. A cell without an RLOO entry is one line, exit 2."""
    import json

    from experiments.leaderboard import main
    from vae.reporting import gradient_quality

    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.setattr(gradient_quality, "DRAWS", 10)            # seconds: the code path, not the numbers
    monkeypatch.setattr(gradient_quality, "REFERENCE_DRAWS", 40)
    monkeypatch.setattr(gradient_quality, "WARMUP", 2)
    args = ["--preset", "tiny", "--committed-dir", str(committed), "--results-dir", str(tmp_path),
            "--no-progress", "--board", "2020", "--cell", "linear-mnist", "--gradients"]
    assert main([*args, "--estimator", "rloo", "st-gs"]) == 0
    record = json.loads((tmp_path / "gradients/tiny/linear-mnist.json").read_text())
    assert record["checkpoint"].startswith("benchmark_linear__mnist__rloo")
    assert record["reference"] == "indecater" and record["reference_draws"] == 40
    names = sorted(name.split("__")[2] for name in record["entries"])
    assert names == ["disarm", "rloo", "st-gs"]
    for measured in record["entries"].values():
        assert measured["noise"] > 0 and -1 <= measured["cosine"] <= 1
        assert math.isfinite(measured["log10_variance"])
    table = (tmp_path / "tables/tiny/leaderboard_2020.md").read_text()
    (cell,) = [body for caption, body in markdown_tables(table) if caption.startswith("linear MNIST (tiny)")]
    header = "| log10 Var(encoder gradient) | cosine / relative error (noise) to the reference |"
    assert cell.splitlines()[0].endswith(header) and cell.count(" / ") >= 3
    assert (tmp_path / "figures/tiny/gradient_quality_2020.png").stat().st_size > 10_000
    before = (tmp_path / "gradients/tiny/linear-mnist.json").read_text()
    monkeypatch.setattr(gradient_quality, "_moments", None)    # a second measurement would fail
    assert main([*args, "--estimator", "rloo", "st-gs"]) == 0
    assert (tmp_path / "gradients/tiny/linear-mnist.json").read_text() == before
    assert main([*args[:-3], "--cell", "nonlinear-mnist", "--gradients"]) == 2
