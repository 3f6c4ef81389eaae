"""The README's and the folder manuals' code runs as written, and the front page stays short."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"
ESTIMATORS_MANUAL = README.parent / "vae" / "estimators" / "README.md"


def section_code(heading: str, manual: Path = ESTIMATORS_MANUAL) -> str:
    """The first ```python block after ``heading`` in ``manual``."""
    text = manual.read_text()
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_use_an_estimator_in_your_own_model_runs_as_written():
    code = section_code("## Use an estimator in your own model")
    assert 15 <= len([line for line in code.splitlines() if line.strip()]) <= 30
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    loss = namespace["surrogate"] + namespace["kl"]
    assert namespace["surrogate"].shape == (64,) and torch.isfinite(loss).all()
    first = namespace["f"](torch.nn.functional.one_hot(torch.zeros(64, 20, dtype=torch.long), 10).float())
    assert first.shape == (64,)
    assert namespace["info"]["loss"].dim() == 0        # the estimator's diagnostics, without a replica axis


def test_nothing_in_the_project_points_outside_it():
    """A user's clone holds only the repository: no file may cite a document beside it."""
    import subprocess
    root = README.parent
    files = subprocess.run(["git", "ls-files", "--", ":!results/sweeps"], cwd=root, capture_output=True,
                           text=True, check=True).stdout.split()
    offenders = [name for name in files if name.endswith((".py", ".md", ".yaml", ".toml", ".txt", "Makefile"))
                 and "../shared" in (root / name).read_text(errors="ignore")
                 and name != "tests/test_readme.py"]
    assert not offenders, offenders


def test_your_own_estimator_trains_through_train_resume_a_sweep_and_a_table(shared_cache, tmp_path,
                                                                            monkeypatch, capsys):
    """The README's example module, as a user would save it: trained by `experiments.train` (its
    options checked), resumed further, swept beside a built-in estimator, and drawn in Table 1's
    layout under its own display name. The command lines run in this process (their ``main``, as
    ``python -m`` calls it; tests/test_plugin.py does the same)."""
    import yaml

    from conftest import plugin_sweep, tiny_overrides
    from experiments import sweep as sweep_cli
    from experiments import train as train_cli
    from vae.reporting.tables import table1_rows
    from vae.sweeps.definition import expand, read_sweep

    (tmp_path / "my_estimator.py").write_text(section_code("## Your own estimator in the suite"))
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(README.parent)

    tiny = tiny_overrides(tmp_path / "runs")
    assert train_cli.main(["--no-progress", "plugins=[my_estimator]", "estimator=reinforce-const",
                           "estimator.options.baseline=9e1", *tiny]) == 0
    run_dir = next((tmp_path / "runs").glob("*/*/summary.json")).parent
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["plugins"] == ["my_estimator"] and saved["estimator"]["options"] == {"baseline": 90.0}
    assert train_cli.main(["--no-progress", "--resume", str(run_dir), "steps=16"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 16
    capsys.readouterr()
    assert train_cli.main(["plugins=[my_estimator]", "estimator=reinforce-const",
                           "estimator.options.baselin=1"]) == 2
    assert ("estimator.options.baselin: unknown key (did you mean 'baseline'?); "
            "allowed: baseline") in capsys.readouterr().err

    sweep = tmp_path / "my_sweep.yaml"
    sweep.write_text(plugin_sweep("configs/vae_categorical_linear.yaml", "my_estimator",
                                  ["reinforce-const", "reinforce-ema"], tiny[1:]))
    assert sweep_cli.main([str(sweep), "--results-dir", str(tmp_path / "store"), "--no-progress"]) == 0
    assert "my_sweep (none): finished 2" in capsys.readouterr().out
    header, rows = table1_rows(expand(read_sweep(sweep), "none", tmp_path / "store"))
    assert header == ["SF", "SF, constant baseline"]
    # one seed
    assert rows[0][0] == "VAE (Cat.) ours" and all(re.fullmatch(r"\d+\.\d", cell) for cell in rows[0][1])


def test_the_first_hour_runs_as_written(shared_cache, tmp_path, monkeypatch, capsys):
    """The commands and sweep file of "A first hour", run as written from a directory of the user's
    outside the repository (the config paths found by the path rule: the current directory, then
    the repository), on a tiny budget: a few tiny settings are appended to the train command and
    replace the sweep file's `steps`. The first command runs as typed, in a fresh interpreter there
    (so `python -m experiments...` is importable from outside the repository); the others call the
    same command line's ``main`` in this process, from that directory."""
    import importlib
    import subprocess
    import sys

    from conftest import env_with_cache, tiny_overrides

    section = README.read_text()[README.read_text().index("## A first hour"):]
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    sweep = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    tiny = tiny_overrides(tmp_path)[1:]                       # all but out_dir: the commands' own stores
    assert "steps: {value: 5e3}" in sweep
    (tmp_path / "my_ablation.yaml").write_text(
        sweep.replace("steps: {value: 5e3}", "steps: {value: 12}")
        + "".join(f"  {o.split('=')[0]}: {{value: {o.split('=', 1)[1]}}}\n"
                  for o in tiny if not o.startswith("steps")))
    assert not (tmp_path / "configs").exists()
    outputs = []
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    monkeypatch.chdir(tmp_path)
    for i, line in enumerate(commands):
        words = line.split("#")[0].split()
        assert words[:2] == ["python", "-m"], line
        extra = tiny if words[2] == "experiments.train" else []
        if i == 0:
            done = subprocess.run([sys.executable, *words[1:], *extra], cwd=tmp_path,
                                  env=env_with_cache(shared_cache), capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, (line, done.stderr[-2000:])
            outputs.append(done.stdout)
            continue
        capsys.readouterr()
        assert importlib.import_module(words[2]).main([*words[3:], *extra]) == 0, line
        outputs.append(capsys.readouterr().out)
    assert re.search(r"^test/iw_bound \d+\.\d\d ± \d+\.\d\d \(2 seeds\)$", outputs[0], re.M)
    assert outputs[1].count(": new -> ") == 4 and "my_ablation (none): finished 4" in outputs[2]
    assert outputs[3].count("| vae_categorical_linear__") == 4 and "optim.lr" in outputs[3]
    assert (tmp_path / "results" / "figures" / "compare.png").exists()


def test_the_environment_is_activated_before_the_first_python_command():
    """`python -m ...` right after `make demo` fails outside .venv: the README says so first."""
    text = README.read_text()
    first_command = re.search(r"^python -m ", text, re.M).start()
    assert text.index("source .venv/bin/activate") < first_command


def test_the_config_key_table_is_the_one_source_printed_by_train_keys(capsys):
    """configs/README.md "Config keys" is `python -m experiments.train --keys` (the dataclasses' own
    field comments): every key of vae/config.py with the default the code has (a README that said
    `variance_normalisation` defaults to true once went unnoticed) and a meaning."""
    from experiments.train import main
    from vae.config import Config, key_table, option_table, to_dict
    from vae.estimators import ESTIMATORS
    from vae.sweeps.definition import flat_settings

    assert main(["--keys"]) == 0
    printed = capsys.readouterr().out.strip()
    text = (README.parent / "configs" / "README.md").read_text()
    embedded = re.search(r"<!-- keys -->\n(.*?)\n<!-- /keys -->", text, re.S).group(1).strip()
    assert embedded == printed
    rows = key_table()
    # an empty mapping has no leaves
    expected = {**flat_settings(to_dict(Config())), "estimator.options": {}}
    assert {key: default for key, default, _ in rows} == expected
    assert all(meaning for _, _, meaning in rows)
    declared = {(f"estimator.options.{f.name}", name) for name, cls in ESTIMATORS.items() if cls.Options
                for f in dataclasses.fields(cls.Options)}
    options = option_table()
    assert {(key, name) for key, _, names, _ in options for name in names} == declared
    assert all(meaning for *_, meaning in options)


def test_the_command_lines_are_thin_and_import_no_other_command_line():
    """vae/README.md "Design": `experiments/` is argument parsing plus calls into `vae/` (about 200 lines a
    file at most), and no command line imports another (the library they share lives in `vae/`)."""
    import ast
    for path in sorted((README.parent / "experiments").glob("*.py")):
        lines = path.read_text().splitlines()
        assert len(lines) <= 200, f"{path.name}: {len(lines)} lines"
        imported = [node.module or "" for node in ast.walk(ast.parse("\n".join(lines)))
                    if isinstance(node, ast.ImportFrom)]
        imported += [alias.name
                     for node in ast.walk(ast.parse("\n".join(lines))) if isinstance(node, ast.Import)
                     for alias in node.names]
        assert not [m for m in imported if m == "experiments" or m.startswith("experiments.")], path.name


def test_the_front_page_is_short_and_maps_every_folder_manual():
    """README: what the suite is, set-up, the answer, a first hour, the manuals, how to cite, in at
    most 250 lines; every folder manual it maps exists, and every manual is mapped."""
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    manuals = sorted(p.relative_to(README.parent).as_posix() for p in README.parent.glob("*/**/README.md")
                     if not any(part.startswith(".") or part.endswith(".egg-info")
                                for part in p.relative_to(README.parent).parts))
    mapped = re.findall(r"^\| \[([^\]]+/README\.md)\]", text, re.M)
    assert sorted(mapped) == manuals, (mapped, manuals)
    for heading in ("## Start here", "## The answer", "## A first hour",
                    "## Your own estimator beside all the others", "## Where to read on", "## How to cite"):
        assert heading in text, heading


def test_only_the_run_store_names_a_run_directory_s_files():
    """vae/README.md "Design": the run directory's format is vae/store/run_dir.py's; no other library file or
    command line names its files (a second writer is how a format drifts)."""
    from vae.store import run_dir

    names = [run_dir.CONFIG, run_dir.METRICS, run_dir.SUMMARY, run_dir.CHECKPOINT, run_dir.SWEEP_INFO,
             run_dir.FAILED]
    root = README.parent
    offences = [f"{path.relative_to(root)} names {name}"
                for path in [*sorted((root / "vae").rglob("*.py")),
                             *sorted((root / "experiments").glob("*.py"))]
                if path.resolve() != Path(run_dir.__file__).resolve()
                for name in names if f'"{name}"' in path.read_text()]
    assert not offences, offences
