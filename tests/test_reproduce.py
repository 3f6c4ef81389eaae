"""The reproduction targets end to end in the ``tiny`` preset, on the synthetic MNIST: every make
target runs and writes its files; the sweep skips finished runs, resumes unfinished ones and
refuses bad input; the learning-rate selection picks the best validation run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BUILT_IN, env_with_cache, float32_rtol
from experiments import sweep as sweep_cli
from vae.config import load_config, to_dict
from vae.estimators import ESTIMATORS, EstimatorConfig, display_name
from vae.store.records import curve, provenance
from vae.store.run_dir import CHECKPOINT, SUMMARY
from vae.sweeps import definition, running
from vae.sweeps.definition import Applicable, best_points, expand, identity, read_sweep
from vae.sweeps.running import threads_per_worker
from vae.training.tasks import TASKS, check
from vae.training.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]
FIGURES = ["fig1_gumbel_softmax", "fig3_sbn_curves", "fig4_vae_curves", "tau_ablation_final",
           "tau_ablation_curves", "gradvar",
           "samples_bernoulli", "samples_categorical", "fig5_ssl", "modern_curves"]


@pytest.mark.parametrize("name", FIGURES)
def test_make_figures_writes_every_figure_as_png_and_pdf(tiny_results, name):
    results, _ = tiny_results
    for ext in ("png", "pdf"):
        path = results / "figures" / "tiny" / f"{name}.{ext}"
        assert path.exists() and path.stat().st_size > 1000, path


def test_model_question_table_has_every_candidate_both_metrics_and_the_paper(tiny_results):
    results, output = tiny_results
    markdown = (results / "tables" / "tiny" / "model_question.md").read_text()
    for text in ("| linear; Adam lr 0.001 |", "| MLP 16, learned prior; Adam lr 0.001 |",
                 "| paper (Table 1) | 105.0 | 111.5 | 101.5 | 107.8 |", "linear; chosen on validation",
                 "mean abs(ours − paper), bound", "mean abs(ours − paper), ELBO",
                 "preset tiny | 4/4 runs finished"):
        assert text in markdown, text
    row = next(line for line in markdown.splitlines() if line.startswith("| linear; Adam"))
    # Bern. and Cat. GS, both metrics
    assert len(re.findall(r"\d\.\d / \d+\.\d", row)) == 2 and "(2) |" in row


def test_table1_has_the_sbn_and_vae_rows_the_paper_numbers_and_its_provenance(tiny_results):
    results, output = tiny_results
    markdown = (results / "tables" / "tiny" / "table1.md").read_text()
    for text in ("VAE (Bern.) ours", "VAE (Cat.) ours", "VAE (Bern.) paper", "VAE (Cat.) ours − paper",
                 "SBN (Bern.) ours", "SBN (Cat.) paper", "72.0", "59.0", "SBN rows", "p(h | x_upper)",
                 "112.2", "105.0", "110.6", "101.5", "preset tiny", "m = 4", "first 10 of the 10,000",
                 "decoder evaluations / example / step", "ms / step", "drawn at commit",
                 "τ (where an estimator reads it): exp τ=1 r=3e-05 N=1000, floor 0.5 for Gumbel-S.",
                 "τ (where an estimator reads it): constant τ=1 for Gumbel-S."):
        assert text in markdown, text
    assert markdown.split("\n\n")[0] in output                # printed at the end of `make table1`
    assert "\\toprule" in (results / "tables" / "tiny" / "table1.tex").read_text()


def test_table1_caption_gives_the_mean_distance_to_the_paper_of_its_own_difference_rows(tiny_results):
    """The caption's ``mean abs(ours − paper)`` per row agrees with the mean of that row's printed
    ``ours − paper`` cells; they are rounded to 0.1, so the two may differ by up to 0.05."""
    results, _ = tiny_results
    vae_table = (results / "tables" / "tiny" / "table1.md").read_text().split("Table 1, SBN rows")[1]
    for label in ("VAE (Bern.)", "VAE (Cat.)"):
        row = next(line for line in vae_table.splitlines() if line.startswith(f"| {label} ours − paper"))
        gaps = [abs(float(cell)) for cell in row.split("|")[2:-1] if cell.strip() != "–"]
        stated = re.search(re.escape(label) + r" (\d+\.\d) \((\d+)\)", vae_table)
        assert stated is not None and int(stated[2]) == len(gaps) > 0, label
        assert abs(float(stated[1]) - sum(gaps) / len(gaps)) <= 0.05 + 1e-9, (label, stated[0], gaps)


def test_table2_has_every_mode_the_paper_numbers_negated_and_its_provenance(tiny_results):
    results, output = tiny_results
    markdown = (results / "tables" / "tiny" / "table2.md").read_text()
    for text in ("| Marginalization | ", "| Gumbel | ", "| ST Gumbel-Softmax | ", "| 106.8 |", "| 92.6 |",
                 "| 109.6 |", "| 92.4 |", "| 110.7 |", "| 93.6 |", "test bound −L_m, ours",
                 "decoder evaluations / example / step", "ms / step", "prints the ELBO", "m = 4",
                 "first 10 of the 10,000", "preset tiny | 3/3 runs finished", "drawn at commit"):
        assert text in markdown, text
    marginal = next(line for line in markdown.splitlines() if line.startswith("| Marginalization"))
    gumbel = next(line for line in markdown.splitlines() if line.startswith("| Gumbel"))
    assert "| 10 |" in marginal and "| 1 |" in gumbel       # decoder passes per digit: C against one
    assert markdown.split("\n\n")[0] in output


def test_every_run_of_the_tiny_store_finished_and_logged_its_curves(tiny_results):
    results, _ = tiny_results
    runs = sorted((results / "sweeps").glob("*/tiny/*/"))       # <sweep>/<preset>/<run>
    # table1, tau_ablation, gradvar, model_question, sbn, ssl, modern
    assert len(runs) == 4 + 7 + 2 + 4 + 4 + 3 + 4
    for run in runs:
        assert (run / SUMMARY).exists() and (run / "sweep.json").exists(), run
        sweep = run.parent.parent.name
        key = "test/nll" if sweep == "sbn" else "test/neg_elbo"
        assert curve(run, key).steps == ([4] if sweep == "ssl" else [2, 4])   # ssl: evaluated at the end
    assert "preset tiny | 28/28 runs finished" in provenance(runs, "tiny")


def test_ssl_speed_benchmark_writes_both_modes_and_a_ratio_per_number_of_classes(shared_cache, tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.bench", "--ssl-classes", "--preset", "tiny",
                           "--device", "cpu", "--threads", "1", "--out", str(tmp_path)], cwd=REPO,
                          env=env_with_cache(shared_cache), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "ssl_speed_cpu.json").read_text())
    classes = {"10", "20"}
    assert set(record["steps_per_second"]) == {"marginal", "gs"} and set(record["speedup"]) == classes
    assert all(set(rates) == classes and min(rates.values()) > 0
               for rates in record["steps_per_second"].values())
    assert "gs / marginal" in done.stdout


def test_sweep_skips_finished_runs_and_resumes_unfinished_ones(shared_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    args = ["configs/sweeps/gradvar.yaml", "--preset", "tiny", "--results-dir", str(tmp_path),
            "--no-progress"]
    monkeypatch.chdir(REPO)
    assert sweep_cli.main(args) == 0
    assert "gradvar (tiny): finished 2" in capsys.readouterr().out
    gs, rloo = expand(read_sweep("configs/sweeps/gradvar.yaml"), "tiny", tmp_path)
    before = (rloo.run_dir / "metrics.jsonl").read_text()

    (gs.run_dir / SUMMARY).unlink()                         # killed after its last checkpoint
    for leftover in rloo.run_dir.iterdir():                 # killed before its first checkpoint
        if leftover.name not in ("config.yaml", "metrics.jsonl"):
            leftover.unlink()
    assert sweep_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "vae_categorical gs: resumed" in out and "vae_categorical rloo: started" in out
    assert "gradvar (tiny): finished 2" in out
    assert (gs.run_dir / SUMMARY).exists() and (gs.run_dir / CHECKPOINT).exists()
    assert (rloo.run_dir / "metrics.jsonl").read_text() == before   # started afresh, same run

    assert sweep_cli.main(args) == 0
    assert "gradvar (tiny): done 2" in capsys.readouterr().out

    # two sweeps of one store at once (`make -j2 figures`, two terminals): the second waits for the
    # first's lock before it reads any run's status
    import threading
    second = threading.Thread(target=sweep_cli.main, args=(args,))
    with running._lock(tmp_path / definition.STORE / "gradvar"):
        second.start()
        second.join(timeout=5)
        assert second.is_alive() and "waiting for another sweep" in capsys.readouterr().out
    second.join(timeout=60)
    assert not second.is_alive() and "gradvar (tiny): done 2" in capsys.readouterr().out


def test_samples_retrain_a_run_whose_records_carry_no_checkpoint(tiny_results, shared_cache, monkeypatch):
    """As on a fresh clone: records without checkpoints; `samples` trains the run again."""
    results, _ = tiny_results
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.chdir(REPO)
    for checkpoint in (results / "sweeps" / "table1").glob("*/*gs*/checkpoint.pt"):
        checkpoint.unlink()
    from vae.reporting import figures
    threads = []                                  # each retrain's torch threads, as a sweep trains a run: one
    monkeypatch.setattr(figures, "train",
                        lambda *a, **k: (threads.append(torch.get_num_threads()), train(*a, **k)))
    torch.set_num_threads(2)
    try:
        paths = figures.samples("tiny", results)
        assert torch.get_num_threads() == 2       # the caller's setting again
    finally:
        torch.set_num_threads(1)
    assert len(paths) == 4 and all(p.exists() for p in paths)
    assert len(list((results / "runs" / "samples").glob("*/checkpoint.pt"))) == 2   # one per VAE kind
    assert threads == [1, 1]


@pytest.mark.parametrize("count, nrow", [(40, 10), (11, 11), (7, 3), (3, 8)])
def test_the_figures_image_grid_is_torchvisions_make_grid(count: int, nrow: int) -> None:
    """The digit grids of `samples` and Figure 5 are laid out as torchvision's make_grid(padding=2,
    pad_value=1) lays them out (the figures no longer import torchvision: seconds a process)."""
    from torchvision.utils import make_grid

    from vae.reporting.figures import _image_grid
    images = torch.rand(count, 784)
    expected = make_grid(images.reshape(-1, 1, 28, 28), nrow=nrow, padding=2, pad_value=1.0)[0]
    assert torch.equal(_image_grid(images, nrow), expected)


def test_a_run_is_identified_by_its_settings_that_differ_from_the_defaults():
    """So a config key added later, with a default that keeps the old behaviour, moves no run."""
    assert identity(load_config(None)) == {}
    cfg = load_config(None, ["estimator=st-gs", "model.hidden=[]", "out_dir=elsewhere", "compile=true"])
    assert identity(cfg) == {"estimator.name": "st-gs", "model.hidden": []}   # compile: speed, not numbers


def test_sweep_compile_names_the_same_points_and_an_eager_record_serves_them(shared_cache, tmp_path,
                                                                             monkeypatch, capsys):
    """``sweep --compile`` (compile=true: the same numbers to float round-off) trains the same
    points: their directories are the eager sweep's, and a run trained eagerly is ``done`` for it."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.chdir(REPO)
    args = ["configs/sweeps/gradvar.yaml", "--preset", "tiny", "--results-dir", str(tmp_path),
            "--no-progress"]
    gs, rloo = expand(read_sweep("configs/sweeps/gradvar.yaml"), "tiny", tmp_path)
    assert sweep_cli.main([*args, "--point", gs.run_dir.name]) == 0            # eager
    capsys.readouterr()
    assert sweep_cli.main([*args, "--dry-run", "--compile"]) == 0
    listed = capsys.readouterr().out
    assert f"done -> {gs.run_dir}" in listed and f"new -> {rloo.run_dir}" in listed
    trained = []                                   # and what it hands the trainer has compile=true
    monkeypatch.setattr(sweep_cli, "train_points",
                        lambda sweep, points, *a, **k: trained.extend(points) or Counter())
    sweep_cli.main([*args, "--compile"])
    assert [p.run_dir for p in trained] == [gs.run_dir, rloo.run_dir] and all(p.cfg.compile for p in trained)


def test_a_finished_run_under_another_config_is_stale_and_trained_again(shared_cache, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.chdir(REPO)
    args = ["configs/sweeps/gradvar.yaml", "--preset", "tiny", "--results-dir", str(tmp_path),
            "--no-progress"]
    assert sweep_cli.main(args) == 0
    gs, rloo = expand(read_sweep("configs/sweeps/gradvar.yaml"), "tiny", tmp_path)
    saved = yaml.safe_load((gs.run_dir / "config.yaml").read_text())
    saved["tau"]["floor"] = 0.25                           # as if a default had changed since
    (gs.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert (gs.status(), rloo.status()) == ("stale", "done")
    capsys.readouterr()
    assert sweep_cli.main(args) == 0
    assert "gradvar (tiny): done 1, finished 1" in capsys.readouterr().out
    assert gs.status() == "done"


def _children(pid: int) -> set[int]:
    return {int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_workers_of_a_killed_sweep_stop_with_it(shared_cache, tmp_path):
    """SIGKILL the sweep mid-run: its worker processes must not train on unseen (and then clash
    with the sweep started again)."""
    path = tmp_path / "long.yaml"
    path.write_text(f"base: {REPO}/configs/vae_categorical.yaml\nparameters:\n"
                    f"  estimator.name: {{values: [gs, st]}}\n"
                    "presets:\n  quick: {steps: 100000, model.hidden: [16], eval.every: 100000}\n")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", str(path), "--workers", "2",
                             "--results-dir", str(tmp_path)], cwd=REPO, env=env_with_cache(shared_cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(tmp_path.glob("sweeps/*/*/*/metrics.jsonl"))) < 2:
        time.sleep(0.2)
    workers = {c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()}
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.2)
    survivors = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in survivors:                                    # leave no stray training behind
        os.kill(w, signal.SIGKILL)
    assert not survivors


def test_a_sweep_without_presets_runs_as_written_from_any_directory_and_trains_each_config_once(
        shared_cache, tmp_path, monkeypatch, capsys):
    """No `presets:` means the file as written; `base:` is read from the repository root when the
    current directory has no such file; an include point equal to a grid point (the same resolved config) is
    one run; 3e-4 in a sweep file is a number."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.chdir(tmp_path)                             # not the repository
    path = tmp_path / "mine.yaml"
    path.write_text("base: configs/vae_categorical.yaml\n"
                    "parameters:\n  estimator.name: {values: [gs, st]}\n  optim.lr: {values: [3e-4]}\n"
                    "  steps: {value: 4}\n  log_every: {value: 2}\n  checkpoint_every: {value: 2}\n"
                    "  eval.every: {value: 2}\n  eval.iw_samples: {value: 4}\n"
                    "  eval.iw_examples: {value: 10}\n  model.hidden: {value: [8]}\n"
                    "include:\n  - {estimator.name: gs, optim.lr: 0.0003}\n")
    points = expand(read_sweep(path), definition.AS_WRITTEN, tmp_path)
    assert [(p.cfg.estimator.name, p.cfg.optim.lr) for p in points] == [("gs", 3e-4), ("st", 3e-4)]
    assert sweep_cli.main([str(path), "--results-dir", str(tmp_path), "--no-progress"]) == 0
    assert "mine (none): finished 2" in capsys.readouterr().out
    assert len(list((tmp_path / "sweeps" / "mine" / "none").glob("*/summary.json"))) == 2


@pytest.mark.parametrize("table", ["table1", "table2", "model-question"])
def test_a_table_with_no_finished_run_says_so_exits_non_zero_and_writes_nothing(table, tmp_path, monkeypatch,
                                                                                capsys):
    from experiments import tables
    monkeypatch.chdir(REPO)
    assert tables.main([table, "--preset", "quick", "--results-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "has finished" in err and f"make {table} PRESET=quick" in err and err.count("\n") == 1, err
    assert not (tmp_path / "tables").exists()


def test_table1_says_which_cells_cannot_exist_and_which_are_not_run_yet(tmp_path, monkeypatch):
    """ARM and ARMS have no categorical cell (Bernoulli latents only), which is not the same as
    a cell still to run: the table says which."""
    from vae.reporting.tables import table1_rows
    monkeypatch.chdir(REPO)
    points = expand(read_sweep("configs/sweeps/table1.yaml"), "converged", tmp_path)
    header, rows = table1_rows([p for p in points if p.cfg.model.hidden == []])
    cells = dict(rows)
    bernoulli_only = [h for h, c in zip(header, cells["VAE (Cat.) ours"]) if c == "Bernoulli only"]
    declared = {display_name(n)
                for n in {p.cfg.estimator.name for p in points} if "categorical" not in BUILT_IN[n].kinds}
    assert "ARM" in bernoulli_only and sorted(bernoulli_only) == sorted(declared)   # from the declarations
    assert "Bernoulli only" not in cells["VAE (Bern.) ours"]
    assert set(cells["VAE (Bern.) ours"]) == {"unfinished"}       # every Bernoulli cell is a point


def test_table1_shows_a_spread_only_where_there_are_seeds_to_spread(monkeypatch):
    """The committed converged records: the affine model's cells have 2 seeds (``mean ± std``), the
    MLP's one (the mean alone: a '± 0.0' would claim seeds that agree exactly)."""
    from vae.reporting.tables import table1_caption, table1_rows
    monkeypatch.chdir(REPO)
    points = expand(read_sweep("configs/sweeps/table1.yaml"), "converged", REPO / "results")
    for hidden, cell, caption in (([], r"\d+\.\d ± \d+\.\d", "mean ± std over 2 seeds"),
                                  ([512, 256], r"\d+\.\d", "one seed")):
        group = [p for p in points if p.cfg.model.hidden == hidden]
        cells = [c for label, row in table1_rows(group)[1] if label.endswith(" ours") for c in row]
        finished = [c for c in cells if c[0].isdigit()]
        assert finished and all(re.fullmatch(cell, c) for c in finished), (hidden, finished)
        assert f"test digits, {caption}, after" in table1_caption(group, "converged")


def test_figures_draw_finished_runs_only(tmp_path, monkeypatch):
    """A run still training has curves on this machine only: a figure drawn from them would differ
    from the same figure drawn on a clone of the committed records."""
    from vae.reporting.figures import finished
    monkeypatch.chdir(REPO)
    gs, rloo = expand(read_sweep("configs/sweeps/gradvar.yaml"), "tiny", tmp_path)
    for point in (gs, rloo):
        point.run_dir.mkdir(parents=True)
        (point.run_dir / "metrics.jsonl").write_text("")
    (gs.run_dir / SUMMARY).write_text("{}")
    assert finished([gs, rloo]) == [gs]


def test_fig4_draws_one_figure_per_model_as_table1_has_one_table_per_model(tmp_path, monkeypatch):
    """The converged sweep trains the affine model and the MLP: curves of both in one panel would
    carry two legend entries per estimator with nothing to tell them apart."""
    from vae.reporting.figures import fig4
    monkeypatch.chdir(REPO)
    points = expand(read_sweep("configs/sweeps/table1.yaml"), "converged", tmp_path)
    chosen = [next(p for p in points if p.cfg.model.hidden == hidden and p.cfg.estimator.name == "st")
              for hidden in ([], [512, 256])]
    for point in chosen:                    # the committed records of these two runs, copied
        committed = REPO / "results" / "sweeps" / "table1" / "converged" / point.run_dir.name
        shutil.copytree(committed, point.run_dir, ignore=shutil.ignore_patterns("*.pt"))
    names = sorted(path.name for path in fig4("converged", tmp_path, partial=True))   # one kind each: partial
    assert names == ["fig4_vae_curves.pdf", "fig4_vae_curves.png",
                     "fig4_vae_curves_mlp-512-256.pdf", "fig4_vae_curves_mlp-512-256.png"]


def test_an_applicable_axis_is_every_estimator_whose_config_validates_and_their_written_out_directories(
        tmp_path):
    """``estimator.name: {applicable: ...}`` gives, per base, exactly the registered names whose
    resolved config validates (the trainer's own checks), within ``max_passes`` and outside
    ``exclude``; each point's directory is the one the name written out gives (so converting a
    sweep file to the axis keeps its records)."""
    text = ("name: app\nbase: [configs/sbn_bernoulli.yaml, configs/vae_bernoulli.yaml]\nparameters:\n"
            "  estimator.name: {applicable: {max_passes: 4, exclude: [gs]}}\n  steps: {value: 10}\n")
    (tmp_path / "app.yaml").write_text(text)
    points = expand(read_sweep(tmp_path / "app.yaml"), "none", tmp_path)
    expected = []
    for name in ESTIMATORS:
        for base in ("configs/sbn_bernoulli.yaml", "configs/vae_bernoulli.yaml"):
            try:
                cfg = check(load_config(REPO / base, [f"estimator.name={name}", "steps=10"]))
            except ValueError:
                continue
            if name != "gs" and TASKS[cfg.task].decoder_passes(cfg) <= 4:
                expected.append((name, base))
    assert [(p.cfg.estimator.name, p.base) for p in points] == expected
    assert ({"vimco", "double-cv"}
            <= {n for n, b in expected if "vae" in b} - {n for n, b in expected if "sbn" in b})
    assert ("rloo" not in {n for n, b in expected if "sbn" in b}
            and "reinmax" in {n for n, b in expected if "sbn" in b})
    written = text.replace("{applicable: {max_passes: 4, exclude: [gs]}}",
                           "{values: [disarm, reinforce-ema]}")
    (tmp_path / "written.yaml").write_text(written)
    for point in expand(read_sweep(tmp_path / "written.yaml"), "none", tmp_path):
        assert point.run_dir in {p.run_dir for p in points}


def test_an_applicable_axis_selects_by_family_and_by_the_papers_table():
    """``family: [...]`` keeps the estimators that declare one of those families, ``paper: true``
    those with a column in the paper's Table 1, ``reads_tau`` those that read tau or not: read from
    the classes, not from a list of names."""
    base = "configs/vae_bernoulli.yaml"
    everything = Applicable.parse(True, "t").names(base, [])
    families = Applicable.parse({"family": ["antithetic", "control variate"]}, "t").names(base, [])
    assert families == [n for n in everything if ESTIMATORS[n].family in ("antithetic", "control variate")]
    assert {"arm", "disarm", "relax"} <= set(families) and "rloo" not in families
    paper = Applicable.parse({"paper": True, "exclude": ["gs"]}, "t").names(base, [])
    assert paper == [n for n in everything if ESTIMATORS[n].paper_column is not None and n != "gs"]
    assert len(paper) == 6
    tempered = Applicable.parse({"family": ["relaxation"], "reads_tau": True}, "t").names(base, [])
    untempered = Applicable.parse({"family": ["relaxation"], "reads_tau": False}, "t").names(base, [])
    relaxations = [n for n in everything if ESTIMATORS[n].family == "relaxation"]
    assert tempered == [n for n in relaxations if ESTIMATORS[n].reads_tau] and "gs" in tempered
    assert untempered == [n for n in relaxations if not ESTIMATORS[n].reads_tau] and "zgr" in untempered


def test_dry_run_lists_the_points_and_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert sweep_cli.main(["configs/sweeps/tau_ablation.yaml", "--preset", "quick", "--dry-run",
                           "--results-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 11 + 3 and all(": new -> " in line for line in lines)
    assert "[1/25] vae_categorical st-gs constant-tau0=0.1: new" in lines[0]
    assert not (tmp_path / "sweeps").exists()
    names = [line.rsplit("/", 1)[1] for line in lines[3:5]]   # --point takes several names
    assert sweep_cli.main(["configs/sweeps/tau_ablation.yaml", "--preset", "quick", "--dry-run",
                           "--results-dir", str(tmp_path), "--point", *names]) == 0
    assert [line.rsplit("/", 1)[1] for line in capsys.readouterr().out.splitlines()] == names
    assert sweep_cli.main(["configs/sweeps/tau_ablation.yaml", "--preset", "quick", "--dry-run",  # repeated
                           "--results-dir", str(tmp_path), "--point", names[0], "--point", names[1]]) == 0
    assert [line.rsplit("/", 1)[1] for line in capsys.readouterr().out.splitlines()] == names


@pytest.mark.parametrize(("sweep_text", "args", "message"), [
    ("base: configs/vae_categorical.yaml\nparameters:\n  estimator.nme: {values: [gs]}\n"
     "presets: {quick: {}}\n",
     [], "estimator.nme: unknown key"),
    ("base: configs/vae_categorical.yaml\npresets: {quick: {}}\n", ["--preset", "paper"],
     "'paper' is not defined"),
    ("base: configs/vae_categorical.yaml\npresets: {huge: {}}\n", [], "presets.huge: unknown preset"),
    ("base: configs/missing.yaml\npresets: {quick: {}}\n", [], "config file configs/missing.yaml not found"),
    ("base: configs/vae_categorical.yaml\nparameters:\n  steps: [10]\npresets: {quick: {}}\n", [],
     "parameters.steps: expected {values: [...]}, {value: v}"),
    ("base: configs/sbn_bernoulli.yaml\nparameters:\n  estimator.name: {applicable: {exclude: [rlo]}}\n", [],
     "applicable.exclude: unknown estimator 'rlo' (did you mean 'rloo'?)"),
    ("base: configs/sbn_bernoulli.yaml\nparameters:\n  estimator.name: {applicable: {max_pases: 4}}\n", [],
     "applicable: expected true or a mapping with keys exclude, family, max_passes, paper"),
    ("base: configs/sbn_bernoulli.yaml\nparameters:\n"
     "  estimator.name: {applicable: {family: [antithetical]}}\n", [],
     "applicable.family: expected a list of families (score function, Taylor, "),
    ("base: configs/sbn_bernoulli.yaml\nparameters:\n  estimator.name: {applicable: {paper: yes please}}\n",
     [], "applicable.paper: expected true or false, got 'yes please'"),
    ("base: configs/vae_categorical.yaml\nmethod: bayes\npresets: {quick: {}}\n", [], "method: 'bayes'"),
    ("base: configs/vae_categorical.yaml\nmetric: {name: valid/accuracy, goal: best}\npresets: {quick: {}}\n",
     [], "goal: minimize or maximize"),
    ("base: configs/vae_categorical.yaml\npresets: {quick: {optim.lr: -1.0}}\n", [], "optim.lr: must be > 0"),
])
def test_bad_input_is_one_line_and_exit_status_2(sweep_text, args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    path = tmp_path / "bad.yaml"
    path.write_text(sweep_text)
    assert sweep_cli.main([str(path), "--results-dir", str(tmp_path), "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_missing_sweep_file_exits_2_from_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.sweep", str(tmp_path / "nope.yaml")], cwd=REPO,
                          env=env_with_cache(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: sweep: cannot read"), done.stderr


def test_learning_rate_is_chosen_per_group_on_the_validation_metric(tmp_path, monkeypatch):
    """A preset axis (the paper's lr grid) multiplies the grid; best_points keeps, per estimator,
    the lr with the lowest final valid/neg_elbo, and never an unfinished run."""
    monkeypatch.chdir(REPO)
    path = tmp_path / "lr.yaml"
    path.write_text("base: configs/vae_categorical.yaml\nparameters:\n  estimator.name: {values: [gs, st]}\n"
                    "presets:\n  paper:\n    optim.lr: {values: [1.0e-4, 1.0e-3, 1.0e-2]}\n")
    sweep = read_sweep(path)
    points = expand(sweep, "paper", tmp_path)
    assert [(p.cfg.estimator.name, p.cfg.optim.lr) for p in points] == [
        ("gs", 1e-4), ("gs", 1e-3), ("gs", 1e-2), ("st", 1e-4), ("st", 1e-3), ("st", 1e-2)]
    assert len({p.run_dir for p in points}) == 6
    scores = {("gs", 1e-4): 120.0, ("gs", 1e-3): 110.0, ("gs", 1e-2): 130.0, ("st", 1e-4): 125.0,
              ("st", 1e-3): 105.0}
    for p in points:                                        # ("st", 1e-2) stays unfinished
        if (p.cfg.estimator.name, p.cfg.optim.lr) in scores:
            p.run_dir.mkdir(parents=True)
            value = scores[p.cfg.estimator.name, p.cfg.optim.lr]
            (p.run_dir / SUMMARY).write_text(json.dumps({"valid/neg_elbo": {"per_seed": [value],
                                                                             "mean": value, "std": 0.0}}))
    chosen = best_points(sweep, points)
    assert [(p.cfg.estimator.name, p.cfg.optim.lr) for p in chosen] == [("gs", 1e-3), ("st", 1e-3)]


def test_a_maximized_metric_chooses_the_highest_value(tmp_path, monkeypatch):
    """ssl.yaml's paper preset: alpha chosen per mode on the highest final valid/accuracy."""
    monkeypatch.chdir(REPO)
    sweep = read_sweep("configs/sweeps/ssl.yaml")
    assert (sweep.metric, sweep.goal) == ("valid/accuracy", "maximize")
    points = expand(sweep, "paper", tmp_path)
    assert len(points) == 3 * 5
    for p in points:
        p.run_dir.mkdir(parents=True)
        value = 0.9 if p.cfg.ssl.alpha == 0.3 else 0.8
        (p.run_dir / SUMMARY).write_text(json.dumps({"valid/accuracy": {"per_seed": [value], "mean": value,
                                                                        "std": 0.0}}))
    chosen = best_points(sweep, points)
    assert ([(p.cfg.ssl.y, p.cfg.ssl.alpha) for p in chosen]
            == [("marginal", 0.3), ("gs", 0.3), ("st-gs", 0.3)])
    assert read_sweep("configs/sweeps/table1.yaml").goal == "minimize"     # the default


def test_paper_preset_chooses_lr_for_every_estimator_and_tau_for_the_relaxed_ones(tmp_path, monkeypatch):
    """table1.yaml's paper preset: a preset ``include`` whose entry has {values} axes adds the
    relaxed estimators' (r, N) grid; best_points keeps one point per estimator and latent type,
    chosen over lr (and tau) on the validation metric."""
    monkeypatch.chdir(REPO)
    sweep = read_sweep("configs/sweeps/table1.yaml")
    points = expand(sweep, "paper", tmp_path)
    relaxed = [p for p in points if p.cfg.estimator.name in ("gs", "st-gs")]
    # per base: the estimators whose declarations allow the VAE's latents within 4 passes but GS,
    # ST-GS and ReinMax (with ARMS registered: 20 Bernoulli, ARM and ARMS among them; 18
    # categorical) x 6 lrs, GS and ST-GS x 4 taus x 6 lrs, ReinMax and IndeCateR x 6 lrs
    within_four = sum(len([n for n, c in ESTIMATORS.items() if kind in c.kinds and "vae" in c.tasks
                           and n not in ("gs", "st-gs", "reinmax")
                           and c.decoder_passes(EstimatorConfig(name=n), shape) <= 4])
                      for kind, shape in (("bernoulli", (200, 2)), ("categorical", (20, 10))))
    assert len(points) == within_four * 6 + 2 * (2 * 4 * 6 + 2 * 6) and len(relaxed) == 2 * 2 * 4 * 6
    assert ({p.cfg.tau.rate for p in relaxed} == {1e-5, 1e-4}
            and {p.cfg.tau.update_every for p in relaxed} == {500, 1000})
    assert all("tau" not in p.values
               for p in points if p.cfg.estimator.name not in ("gs", "st-gs", "reinmax"))
    best = {(p.base, p.cfg.estimator.name): p for p in points
            if p.cfg.optim.lr == 1e-3 and p.cfg.tau.rate == 1e-4 and p.cfg.tau.update_every == 500
            or p.cfg.estimator.name not in ("gs", "st-gs") and p.cfg.optim.lr == 1e-3}
    for p in points:
        p.run_dir.mkdir(parents=True)
        value = 100.0 if best.get((p.base, p.cfg.estimator.name)) is p else 120.0
        (p.run_dir / SUMMARY).write_text(json.dumps({"valid/neg_elbo": {"per_seed": [value], "mean": value,
                                                                        "std": 0.0}}))
    chosen = best_points(sweep, points)
    assert (len(chosen) == within_four + 2 * (2 + 2)
            and {p.run_dir for p in chosen} == {p.run_dir for p in best.values()})


LR_GRID = ("base: configs/vae_categorical.yaml\n"
           "parameters:\n  estimator.name: {values: [nvil, gs]}\n  optim.lr: {values: [1.0e-3, 3.0e-3]}\n"
           "  optim.name: {value: sgd}\n  seeds: {value: [0, 1]}\n  steps: {value: 6}\n"
           "  log_every: {value: 2}\n  checkpoint_every: {value: 2}\n  eval.every: {value: 2}\n"
           "  eval.iw_samples: {value: 4}\n  eval.iw_examples: {value: 10}\n"
           "  eval.curve_examples: {value: 200}\n  model.hidden: {value: [8]}\n")


def test_packed_learning_rates_leave_the_records_an_unpacked_sweep_leaves(shared_cache, tmp_path, monkeypatch,
                                                                          capsys):
    """--pack-lr trains each estimator's two learning rates as one run (4 replicas: 2 lrs x 2
    seeds) and splits it: every point's config, metric rows and summary numbers are those of the
    same sweep trained point by point (float tolerance: batched matmuls may sum in another order),
    the pack's directory is gone, and a second call finds every point done."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    path = tmp_path / "grid.yaml"
    path.write_text(LR_GRID)
    packed, alone = tmp_path / "packed", tmp_path / "alone"
    assert sweep_cli.main([str(path), "--results-dir", str(packed), "--no-progress", "--pack-lr"]) == 0
    out = capsys.readouterr().out
    assert out.count("(in a pack of 2 learning rates)") == 4 and "grid (none): finished 4" in out
    assert sweep_cli.main([str(path), "--results-dir", str(alone), "--no-progress"]) == 0
    assert not list((packed / running.PACKS / "grid").glob("*/*"))     # <sweep>/<preset>/<pack>: none left
    sweep = read_sweep(path)
    for p, q in zip(expand(sweep, definition.AS_WRITTEN, packed),
                    expand(sweep, definition.AS_WRITTEN, alone)):
        configs = [yaml.safe_load((d / "config.yaml").read_text()) for d in (p.run_dir, q.run_dir)]
        assert (configs[0] == to_dict(p.cfg)
                and {**configs[0], "out_dir": None} == {**configs[1], "out_dir": None})
        rows = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
                for d in (p.run_dir, q.run_dir)]
        assert [{k: v for k, v in r.items() if k != "value"} for r in rows[0]] == \
               [{k: v for k, v in r.items() if k != "value"} for r in rows[1]]
        for a, b in zip(*rows):   # one step's loss: 784 x 100 terms (tests/test_training.py's STEP_RTOL)
            assert a["value"] == pytest.approx(b["value"], rel=float32_rtol(784 * 100), abs=1e-4), a
        s, t = (json.loads((d / SUMMARY).read_text()) for d in (p.run_dir, q.run_dir))
        assert s["seeds"] == t["seeds"] == [0, 1] and s["packed"]["points"] == 2
        # a share
        assert s["steps_per_second"] == pytest.approx(2 * s["packed"]["steps_per_second"], rel=1e-3)
        assert s.keys() - {"packed"} == t.keys()
        assert (s["test/iw_bound"]["per_seed"]
                == pytest.approx(t["test/iw_bound"]["per_seed"], rel=float32_rtol(784 * 100)))
        assert json.loads((p.run_dir / "sweep.json").read_text())["values"] == p.values
    assert sweep_cli.main([str(path), "--results-dir", str(packed), "--no-progress", "--pack-lr"]) == 0
    assert "grid (none): done 4" in capsys.readouterr().out


SEED_GRID = LR_GRID.replace("[nvil, gs]", "[gs]").replace("[1.0e-3, 3.0e-3]", "[1.0e-3]")


def test_added_seeds_train_alone_and_merge_into_the_records_of_all_seeds_at_once(shared_cache, tmp_path,
                                                                                 monkeypatch, capsys):
    """``--seeds 0 1 2`` beside a finished record of seeds 0 and 1: only seed 2 trains (its run
    in results/packs/, gone after), and the new point's records are those of the same sweep
    trained with the three seeds at once: config, metric rows (replica = the seed's place), final
    numbers to float tolerance (tests/test_training.py: replica r trains as its seed alone; one
    step's loss sums 784 x 100 terms), the times summed; the earlier record is left as it was,
    both commits are in ``sweep.json``, and a second call finds the point done."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    path = tmp_path / "grid.yaml"
    path.write_text(SEED_GRID)
    added, together = tmp_path / "added", tmp_path / "together"
    assert sweep_cli.main([str(path), "--results-dir", str(added), "--no-progress"]) == 0
    sweep = read_sweep(path)
    [earlier] = expand(sweep, definition.AS_WRITTEN, added)
    records = ("config.yaml", "metrics.jsonl", "summary.json", "sweep.json")
    before = {name: (earlier.run_dir / name).read_text() for name in records}
    capsys.readouterr()
    three = ["--seeds", "0", "1", "2"]
    assert sweep_cli.main([str(path), "--results-dir", str(added), *three, "--dry-run"]) == 0
    assert f"new (trains seeds [2], added to {earlier.run_dir.name})" in capsys.readouterr().out
    assert sweep_cli.main([str(path), "--results-dir", str(added), "--no-progress", *three]) == 0
    out = capsys.readouterr().out
    assert f"started (seeds [2], added to {earlier.run_dir.name})" in out and "grid (none): finished 1" in out
    assert not list((added / running.PACKS / "grid").glob("*/*"))
    assert {name: (earlier.run_dir / name).read_text() for name in records} == before
    assert sweep_cli.main([str(path), "--results-dir", str(together), "--no-progress", *three]) == 0
    [p], [q] = (expand(sweep, definition.AS_WRITTEN, d, seeds=[0, 1, 2]) for d in (added, together))
    assert p.run_dir.name == q.run_dir.name != earlier.run_dir.name and p.status() == "done"
    configs = [yaml.safe_load((d / "config.yaml").read_text()) for d in (p.run_dir, q.run_dir)]
    assert configs[0] == to_dict(p.cfg) and {**configs[0], "out_dir": None} == {**configs[1], "out_dir": None}

    def rows(run_dir: Path) -> list[dict]:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return sorted((json.loads(line) for line in lines),
                      key=lambda r: (r["step"], r["split"], r["metric"], r["replica"]))
    assert all(r["seed"] == [0, 1, 2][r["replica"]] for r in rows(p.run_dir))
    for a, b in zip(rows(p.run_dir), rows(q.run_dir), strict=True):
        assert {**a, "value": None} == {**b, "value": None}
        assert a["value"] == pytest.approx(b["value"], rel=float32_rtol(784 * 100), abs=1e-4), a
    s, t, first = (json.loads((d / SUMMARY).read_text()) for d in (p.run_dir, q.run_dir, earlier.run_dir))
    assert s["seeds"] == t["seeds"] == [0, 1, 2] and s.keys() - {"seeds_added"} == t.keys()
    assert s["test/iw_bound"]["per_seed"] == pytest.approx(t["test/iw_bound"]["per_seed"],
                                                           rel=float32_rtol(784 * 100))
    assert s["test/iw_bound"]["per_seed"][:2] == first["test/iw_bound"]["per_seed"]
    assert s["seeds_added"]["seeds"] == [2]
    assert s["train_seconds"] == pytest.approx(first["train_seconds"] + s["seeds_added"]["train_seconds"],
                                               abs=0.02)
    info = json.loads((p.run_dir / "sweep.json").read_text())
    assert info["seeds_added"]["seeds"] == [2] and info["seeds_added"]["from"] == earlier.run_dir.name
    assert info["commit"] == json.loads((earlier.run_dir / "sweep.json").read_text())["commit"]
    assert sweep_cli.main([str(path), "--results-dir", str(added), "--no-progress", *three]) == 0
    assert "grid (none): done 1" in capsys.readouterr().out


def test_the_committed_board_s_third_seed_would_train_only_seed_2_of_every_finished_record(monkeypatch,
                                                                                             capsys):
    """experiments/README.md "More seeds" as written, on the committed records: every finished
    point of Table 1's converged preset (seeds 0 and 1) is one that `--seeds 0 1 2` tops up."""
    monkeypatch.chdir(REPO)
    args = ["configs/sweeps/table1.yaml", "--preset", "converged"]
    done = [p for p in expand(read_sweep(args[0]), "converged", Path("results")) if p.status() == "done"]
    assert any(p.cfg.seeds == [0, 1] for p in done)
    assert sweep_cli.main([*args, "--seeds", "0", "1", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for point in done:
        assert (point.cfg.seeds != [0, 1]
                or f"trains seeds [2], added to {point.run_dir.name})" in out), point.label


@pytest.mark.parametrize("seeds", [["1", "1"], ["-1"]])
def test_seeds_that_are_not_distinct_and_non_negative_are_refused(seeds, tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(SEED_GRID)
    assert sweep_cli.main([str(path), "--results-dir", str(tmp_path), "--seeds", *seeds]) == 2
    assert capsys.readouterr().err.strip() == f"error: --seeds: distinct seeds >= 0, got {' '.join(seeds)}"


def test_a_learning_rate_that_diverges_in_a_pack_fails_alone(shared_cache, tmp_path, monkeypatch, capsys):
    """A learning rate that diverges must not take the others down: its point is marked failed and
    the others train again without it (the replicas of lr 10 report a NaN loss)."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    original = Trainer.train_step

    def nan_at_lr_10(self):
        loss, kl, info = original(self)
        lr = self.cfg.optim.lr
        for r, value in enumerate(lr if isinstance(lr, list) else [lr] * len(loss)):
            if value == 10.0:
                loss[r] = float("nan")
        return loss, kl, info
    monkeypatch.setattr(Trainer, "train_step", nan_at_lr_10)
    path = tmp_path / "grid.yaml"
    path.write_text(LR_GRID.replace("[nvil, gs]", "[gs]").replace("[1.0e-3, 3.0e-3]",
                                                                  "[1.0e-3, 10.0, 3.0e-3]"))
    assert sweep_cli.main([str(path), "--results-dir", str(tmp_path), "--no-progress", "--pack-lr"]) == 0
    out = capsys.readouterr().out
    assert "learning rate 10 of a pack diverged" in out and "diverged 1, finished 2" in out
    good, bad, other = expand(read_sweep(path), definition.AS_WRITTEN, tmp_path)
    for point in (good, other):   # packed again, the two of them
        assert json.loads((point.run_dir / SUMMARY).read_text())["packed"]["points"] == 2
    # 2 seeds each of lr 1e-3, 3e-3, 10
    assert "step 1, replica 4" in (bad.run_dir / "failed.txt").read_text()
    assert json.loads((bad.run_dir / "sweep.json").read_text())["outcome"] == "diverged"
    assert sweep_cli.main([str(path), "--results-dir", str(tmp_path), "--no-progress", "--pack-lr"]) == 0
    assert "failed 1" in capsys.readouterr().out   # and stays failed


def test_a_pack_killed_before_its_records_were_split_is_resumed_not_retrained(shared_cache, tmp_path,
                                                                              monkeypatch,
                                                                            capsys):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    path = tmp_path / "grid.yaml"
    path.write_text(LR_GRID.replace("[nvil, gs]", "[gs]"))
    split = running.split_pack

    def killed(pack, info):
        raise KeyboardInterrupt
    monkeypatch.setattr(running, "split_pack", killed)
    with pytest.raises(KeyboardInterrupt):
        sweep_cli.main([str(path), "--results-dir", str(tmp_path), "--no-progress", "--pack-lr"])
    (pack_dir,) = (tmp_path / running.PACKS / "grid").glob("*/*")
    assert (pack_dir / CHECKPOINT).exists()
    monkeypatch.setattr(running, "split_pack", split)
    assert sweep_cli.main([str(path), "--results-dir", str(tmp_path), "--no-progress", "--pack-lr"]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "grid (none): finished 2" in out and not pack_dir.exists()


def test_a_point_with_a_checkpoint_of_its_own_is_resumed_alone_not_packed(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(LR_GRID)
    nvil_1, nvil_3, gs_1, gs_3 = expand(read_sweep(path), definition.AS_WRITTEN, tmp_path)
    gs_1.run_dir.mkdir(parents=True)
    (gs_1.run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(gs_1.cfg)))
    (gs_1.run_dir / CHECKPOINT).write_bytes(b"")
    assert gs_1.status() == "resume"
    units = running.units_to_train([nvil_1, nvil_3, gs_1, gs_3], True, tmp_path / "packs")
    assert [u.points if isinstance(u, running.Pack) else u for u in units] == [gs_1, (nvil_1, nvil_3), gs_3]
    assert units[1].cfg.seeds == [0, 1, 0, 1] and units[1].cfg.optim.lr == [1e-3, 1e-3, 3e-3, 3e-3]


def test_fig5_speed_panel_draws_every_devices_record_beside_the_paper(tmp_path):
    """Figure 5(a) reads one record per device (a CPU's from ``make fig5``, a GPU's from ``make
    gpu-check``) and draws each device's two rates and its speed-up; records from bench.ssl_speed's format."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vae.reporting.figures import _speed_records, speed_panel
    folder = tmp_path / "bench" / "converged"
    folder.mkdir(parents=True)
    for device, gs in (("cpu", 20.0), ("cuda", 70.0)):
        record = {"device": f"{device} box", "steps_per_second": {"marginal": {"10": 5.0, "100": 0.5},
                                                                  "gs": {"10": gs, "100": gs}},
                  "speedup": {"10": gs / 5.0, "100": gs / 0.5}}
        (folder / f"ssl_speed_{device}.json").write_text(json.dumps(record))
    records = _speed_records("converged", tmp_path)
    assert [r["device"] for r in records] == ["cpu box", "cuda box"]
    fig, ax = plt.subplots()
    speed_panel(ax, records)
    labels = ax.get_legend().get_texts()
    assert sum("speed-up gs / marginal" in t.get_text() for t in labels) == 2      # one per device
    assert sum("cuda box" in t.get_text() for t in labels) == 3                    # marginal, gs, speed-up
    assert any("paper's speed-up" in t.get_text() for t in labels)
    plt.close(fig)


@pytest.mark.parametrize("name", ["fig3", "fig4", "tau-ablation", "gradvar"])
def test_a_figure_with_no_finished_run_for_a_panel_refuses_unless_partial(name, tmp_path, capsys):
    """No silent empty figure: from a store holding none of its runs, a curve figure is one line
    naming the store and exit 2, and writes nothing; ``--partial`` draws it, and its footer says
    how many runs it lacks."""
    from experiments.figures import main
    from vae.reporting.figures import footer, sweep_points

    assert main([name, "--preset", "tiny", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {name.split('-')[0]}") and str(tmp_path) in err and "--partial" in err, err
    assert err.count("\n") == 1 and not (tmp_path / "figures").exists()
    assert main([name, "--preset", "tiny", "--results-dir", str(tmp_path), "--partial"]) == 0
    assert list((tmp_path / "figures" / "tiny").glob("*.png"))
    sweep = {"fig3": "sbn", "fig4": "table1", "tau-ablation": "tau_ablation", "gradvar": "gradvar"}[name]
    points = sweep_points(sweep, "tiny", tmp_path)
    assert footer(points, "tiny").startswith(f"PARTIAL: 0 of {len(points)} runs finished.")


def test_redrawing_the_same_figure_leaves_its_files_byte_identical(tmp_path):
    """No tree dirtied by a redraw: the same drawing gives the same PNG and PDF bytes (no date in
    them), and at another commit too, where only the footer's 'drawn at commit' would differ, the
    files are left as they were; a drawing that changed is written, with its own commit."""
    import matplotlib.pyplot as plt

    from vae.reporting.figures import _drawn_commit, save

    def draw(values: list[float], commit: str) -> dict[str, bytes]:
        fig, ax = plt.subplots()
        ax.plot(values)
        paths = save(fig, tmp_path, "toy",
                     f"Preset tiny.\nruns from commit c0ffee | drawn at commit {commit}")
        return {p.suffix: p.read_bytes() for p in paths}

    first = draw([1.0, 2.0], "aaa1111")
    assert _drawn_commit(tmp_path / "toy.png") == "aaa1111"
    for path in tmp_path.glob("toy.*"):
        path.unlink()
    assert draw([1.0, 2.0], "aaa1111") == first                        # deterministic
    assert draw([1.0, 2.0], "bbb2222") == first                        # unchanged drawing: left alone
    changed = draw([1.0, 3.0], "bbb2222")
    assert changed[".png"] != first[".png"] and changed[".pdf"] != first[".pdf"]
    assert _drawn_commit(tmp_path / "toy.png") == "bbb2222"


def test_redrawing_the_same_table_at_another_commit_leaves_its_file_alone(tmp_path):
    """Tables as figures: a redraw that differs only in the provenance's 'drawn at commit' keeps the
    file (and its commit); a table whose numbers changed is written, with the new commit."""
    from vae.store.records import write_drawing

    path = tmp_path / "tables" / "toy.md"
    table = ("Caption.\n\npreset tiny | runs from commit c0ffee | drawn at commit {}\n\n"
             "| | a |\n|---|---|\n| x | {} |\n")
    write_drawing(path, table.format("aaa1111", "1.0"))
    write_drawing(path, table.format("bbb2222", "1.0"))
    assert path.read_text() == table.format("aaa1111", "1.0")
    write_drawing(path, table.format("bbb2222", "2.0"))
    assert path.read_text() == table.format("bbb2222", "2.0")


def test_the_2020_benchmark_table_has_a_table_per_cell_with_both_numbers_and_its_budget(tiny_results):
    """make modern (in make figures): one table per (model, data set) of the preset, a row per
    estimator with the training -ELBO and the test bound, the published columns, and the caption's
    budget against the papers' 1M steps."""
    results, _ = tiny_results
    markdown = (results / "tables" / "tiny" / "modern.md").read_text()
    captions = re.findall(r"^The 2020 benchmark, (\w+) model, (\w+):", markdown, flags=re.M)
    assert captions == [("linear", "MNIST"), ("nonlinear", "MNIST"), ("linear", "FashionMNIST"),
                        ("nonlinear", "FashionMNIST")]
    assert markdown.count("| DisARM | ") == 4 and "of the papers' 1,000,000" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| DisARM |"))
    assert len(re.findall(r"\d+\.\d ± \d+\.\d", row)) == 2 and "| 2 |" in row   # both numbers; DisARM's pair
    assert "preset tiny | 4/4 runs finished" in markdown


def test_the_categorical_benchmark_has_a_table_per_latent_shape_from_its_own_sweep(shared_cache, tmp_path,
                                                                                    monkeypatch, capsys):
    """make categorical PRESET=tiny: the sweep trains each latent shape (K x N, the axis of whole
    model sections, which keep the preset's hidden layers) on grey levels, then one table per shape
    with a row per estimator, the training -ELBO and its budget against the scripts' 160 epochs;
    with no finished run the table command refuses (exit 1) and writes nothing."""
    from experiments import tables as tables_cli
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.chdir(REPO)
    args = ["--preset", "tiny", "--results-dir", str(tmp_path)]
    assert tables_cli.main(["categorical", *args]) == 1
    assert "none of its 4 runs under preset tiny has finished" in capsys.readouterr().err
    assert not (tmp_path / "tables").exists()
    assert sweep_cli.main(["configs/sweeps/categorical.yaml", *args, "--no-progress"]) == 0
    points = expand(read_sweep("configs/sweeps/categorical.yaml"), "tiny", tmp_path)
    assert {(p.cfg.model.num_classes, p.cfg.model.num_latents, tuple(p.cfg.model.hidden),
             p.cfg.data.binarization) for p in points} == {(8, 4, (16,), "none"), (10, 30, (16,), "none")}
    capsys.readouterr()
    assert tables_cli.main(["categorical", *args]) == 0
    markdown = (tmp_path / "tables" / "tiny" / "categorical.md").read_text()
    assert capsys.readouterr().out.strip() == markdown.strip()
    assert re.findall(r"^The categorical benchmark, (\d+) x (\d+) ", markdown, flags=re.M) == [("8", "4"),
                                                                                           ("10", "30")]
    assert markdown.count("| ReinMax | ") == 2 and markdown.count("| ST Gumbel-S. | ") == 2
    assert "4 steps (0.008 epochs of the 50,000 training images; the ReinMax scripts train 160" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| ReinMax |"))
    assert len(re.findall(r"\d+\.\d ± \d+\.\d", row)) == 3 and "constant τ=1.3 for ReinMax" in markdown


def test_a_sweep_s_default_threads_share_torch_s_own_count_among_its_workers():
    """The count torch would use (OMP_NUM_THREADS where set: the tests set 1) split among the
    workers, never 0: not the machine's cores, which a test or another sweep may hold."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert [threads_per_worker(w) for w in (1, 2, 3, 8)] == [4, 2, 1, 1]
        torch.set_num_threads(1)
        assert threads_per_worker(1) == 1
    finally:
        torch.set_num_threads(before)
