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

from conftest import markdown_tables
from vae.reporting.leaderboard import BOARDS, leaderboard
from vae.reporting.tables import TABLES
from vae.store.records import DRAWN

# the leaderboards rank the committed records too: leaderboard<suffix>.md per board
DRAWERS = {**TABLES, **{f"leaderboard{b.suffix}".replace("_", "-"):
                        lambda preset, results_dir, board=name: leaderboard(preset, results_dir, board=board)
                        for name, b in BOARDS.items()}}

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "results" / "tables").glob("*/*.md"))


def _without_drawing_commit(text: str) -> str:
    return DRAWN.sub("drawn at commit <any>", text)


@pytest.mark.parametrize("path", COMMITTED, ids=[f"{p.parent.name}/{p.stem}" for p in COMMITTED])
def test_committed_table_is_redrawn_from_the_committed_records(path: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    (tmp_path / "sweeps").symlink_to(REPO / "results" / "sweeps")
    preset, name = path.parent.name, path.stem.replace("_", "-")
    redrawn = DRAWERS[name](preset, tmp_path)
    assert _without_drawing_commit(redrawn) == _without_drawing_commit(path.read_text())


def test_the_readme_shows_the_committed_tables_as_they_are():
    """Every table the README and the folder manuals embed (between ``<!-- table: <preset>/<name> -->``
    markers; ``<preset>/<name>:<k>``: the file's k-th table and its caption) is the committed table
    file, so the documents' numbers are the records' numbers."""
    documents = [REPO / "README.md", *sorted(REPO.glob("*/README.md")), *sorted(REPO.glob("*/*/README.md"))]
    embedded = [(doc, name, body) for doc in documents for name, body in
                re.findall(r"<!-- table: (\S+) -->\n(.*?)\n?<!-- /table -->", doc.read_text(), flags=re.S)]
    assert {doc.name for doc, _, _ in embedded} and any(doc == REPO / "README.md" for doc, _, _ in embedded)
    for doc, name, body in embedded:
        name, _, k = name.partition(":")
        text = (REPO / "results" / "tables" / f"{name}.md").read_text().strip()
        if k:    # the file's k-th caption and table
            text = "\n\n".join(markdown_tables(text)[int(k) - 1])
        assert body.strip() == text, f"{doc.relative_to(REPO)}: {name}"


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


def test_every_committed_record_loads_today_and_keeps_its_directory():
    """Each committed run's config.yaml, written by the code of its day (some name the estimator
    settings that were shared before at the section's top level: vae.estimators.config.
    FORMER_SHARED_SETTINGS), loads under today's config and hashes to its directory's digest, so a
    sweep finds it where it was trained."""
    from vae.config import config_from_dict, read_yaml
    from vae.sweeps.definition import _digest

    records = sorted((REPO / "results" / "sweeps").glob("*/*/*/config.yaml"))
    assert len(records) > 100
    former = 0
    for path in records:
        saved = read_yaml(path.read_text())
        former += "ema_decay" in saved["estimator"]
        assert _digest(config_from_dict(saved)) == path.parent.name.rsplit("__", 1)[1], path.parent.name
    assert former > 100     # records in the former spelling are among them
