"""The committed run records redraw the committed tables exactly: a fresh clone needs no training.

Every table under ``results/tables/<preset>/`` is drawn again from the records under
``results/sweeps/`` (read through a link, so nothing committed is rewritten) and must match the
committed file but for the line's 'drawn at commit' field.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from vae.tables import TABLES

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "results" / "tables").glob("*/*.md"))


def _without_drawing_commit(text: str) -> str:
    return re.sub(r"drawn at commit \S+", "drawn at commit <any>", text)


@pytest.mark.parametrize("path", COMMITTED, ids=[f"{p.parent.name}/{p.stem}" for p in COMMITTED])
def test_committed_table_is_redrawn_from_the_committed_records(path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    (tmp_path / "sweeps").symlink_to(REPO / "results" / "sweeps")
    preset, name = path.parent.name, path.stem.replace("_", "-")
    redrawn = TABLES[name](preset, tmp_path)
    assert _without_drawing_commit(redrawn) == _without_drawing_commit(path.read_text())


def test_the_readme_shows_the_committed_tables_as_they_are():
    """Every table the README embeds (between ``<!-- table: <preset>/<name> -->`` markers) is the
    committed table file, so the README's numbers are the records' numbers."""
    readme = (REPO / "README.md").read_text()
    embedded = re.findall(r"<!-- table: (\S+) -->\n(.*?)\n<!-- /table -->", readme, flags=re.S)
    assert embedded, "the README embeds no table"
    for name, body in embedded:
        assert body == (REPO / "results" / "tables" / f"{name}.md").read_text().strip(), name


def test_only_finished_runs_are_committed():
    """A committed run directory is a finished run's record (its summary and sweep.json beside its
    config and metrics, never a checkpoint): an unfinished run's files belong to one machine."""
    tracked = subprocess.run(["git", "ls-files", "results/sweeps"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    files: dict[str, set[str]] = {}
    for line in tracked.stdout.splitlines():
        run, _, name = line.rpartition("/")
        files.setdefault(run, set()).add(name)
    assert files, "no run records are committed"
    for run, names in files.items():
        assert {"config.yaml", "metrics.jsonl", "summary.json", "sweep.json"} <= names, run
        assert not any(name.endswith(".pt") for name in names), run
