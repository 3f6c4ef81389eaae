"""The leaderboards: every estimator on Table 1's four cells and on the 2020 benchmark's, ranked,
with what it costs.

    python -m experiments.leaderboard [--preset quick] [--board all] [--estimator NAME ...]
                                      [--plugins MODULE ...] [--equal-cost REFERENCE] [--cell CELL ...]
                                      [--gradients] [KEY=VALUE ...]

**Boards** (``--board``, :data:`BOARDS`): ``2017``, Table 1's four cells -- the VAE (Bernoulli,
categorical) of ``configs/sweeps/table1.yaml`` and the SBN (Bernoulli, categorical) of
``configs/sweeps/sbn.yaml`` -- written to ``leaderboard.md``; ``2020``, the 2020 benchmark's cells
(each model and data set ``configs/sweeps/modern.yaml`` trains under the preset), written to
``leaderboard_2020.md``; ``categorical``, the categorical benchmark's latent shapes (each K x N
``configs/sweeps/categorical.yaml`` trains under the preset, ranked on the test bound like the
other boards), written to ``leaderboard_categorical.md``; ``all`` (the default) draws every board
that has a finished entry.

**Cells.** Under a preset, a cell's configuration is
its base config (and, on the 2020 board, its data set) with that sweep's preset settings (model, seeds, steps,
bound). A cell's *entries* are the finished runs of its sweep at that configuration that differ from it only
in what an estimator chooses: the estimator and its settings (``estimator.*``), the temperature
(``tau.*``), the learning rate (chosen on validation where the preset has a grid, as in the
tables) and, for an entry trained at another estimator's cost (``equal_cost``), its step counts.
The sweeps' other runs (another model, one seed) are not entries.

**A new estimator.** ``--estimator NAME`` (a built-in name, or one a ``--plugins`` module
registers; ``KEY=VALUE`` settings such as ``estimator.options.tau=0.5`` apply to it) is trained
on every cell it applies to -- its declarations decide; the others are marked ``does not apply``
-- with exactly the cell's configuration, resumably, into ``<results-dir>/sweeps/<sweep>/<preset>/``; a run
finished there or committed is not trained again. ``--equal-cost REFERENCE`` trains it at the
decoder evaluations of REFERENCE's run instead: its steps (and logging, checkpoint and curve
intervals) scaled by the ratio of the declared passes per step (:func:`vae.training.tasks.at_equal_cost`;
fewer steps for a dearer estimator, more for a cheaper one; batch, learning rate and temperature
schedule unchanged). The entries of the committed store (the repository's ``results/``) and those
of ``--results-dir`` are ranked together.

**Per cell**, best first: rank, estimator (display name and the settings that differ from its
defaults), the test number (the VAE's m-sample bound, the SBN's m-sample NLL; mean ± std over
seeds), the difference to the best with a verdict, decoder evaluations per example and step, and
milliseconds per step. The verdict (:func:`verdicts`) is ``behind`` when the pooled two-sample
t-test (n1 + n2 - 2 degrees of freedom) of the entry against the cell's best rejects equal means
under Holm's correction over the cell's comparisons (family-wise error :data:`ALPHA` per cell),
else ``tied``: with 2 seeds on each side a tie is weak evidence of equality. With one seed on
either side there is no test (``1 seed``). **Overall** (:func:`shared_rankings`): rankings on
cells every estimator in them shares -- first those with a result on every cell, by mean rank over
all; then, for each smaller set of cells some estimator has exactly, those estimators by mean rank
over it among everyone with results there -- so leaving a bad cell out never lifts an estimator
above one ranked on more cells. Milliseconds per step are those measured
on free cores by ``--time-steps`` (each entry's training step alone, median of repeats, fewer steps
for a dear one; each entry once, written to
``<results>/bench/<preset>/step_ms_<device>.json``) where measured, else the run's own training
time per step (its cores shared with other runs, marked ``*``; ``*c`` where that run trained with
``compile=true``, whose step is faster: ``--time-steps`` times every entry eager, on equal terms).

**Gradient columns** (``--gradients``; :mod:`vae.reporting.gradient_quality`): on a VAE cell, every entry's
encoder gradient at one checkpoint the cell shares, its variance and its bias against many draws
of an unbiased reference, where measured.

Written to ``<results-dir>/tables/<preset>/leaderboard.{md,tex}`` (and printed), and the cost-quality
frontier to ``<results-dir>/figures/<preset>/frontier.{png,pdf}``: per cell, the test number
against decoder evaluations per step and against milliseconds per step (log axes), each entry a
labelled point with its seeds' spread, the Pareto front (no entry both cheaper and better) drawn.
"""

from __future__ import annotations

import importlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

from vae.config import REPO, Config
from vae.data.images import DATASETS
from vae.estimators import ESTIMATORS, column_order
from vae.reporting import gradient_quality
from vae.reporting.bench import device_name, device_sync, median_rate
from vae.reporting.figures import footer, save
from vae.reporting.tables import (BUDGET_NOTES, FINAL, SWEEP_DIR, benchmark_model, column, column_title,
                                  to_latex, to_markdown)
from vae.store.records import final, provenance, write_drawing
from vae.store.run_dir import load_summary, write_json_atomic
from vae.sweeps.definition import (EQUAL_COST, PRESETS, Point, Sweep, SweepError, best_points, expand,
                                   identity, read_sweep)
from vae.training.tasks import TASKS
from vae.training.trainer import Trainer, resolve_device

COMMITTED = REPO / "results"       # the committed records every leaderboard ranks against
# what equal_cost scales
STEP_KEYS = ("steps", "log_every", "checkpoint_every", "eval.every", "gradvar_every")
METRIC = {"table1": "test negative ELBO bound, m-sample importance weighted (test/iw_bound, nats)",
          "sbn": "test negative log-likelihood of the lower half, m samples (test/iw_nll, nats)",
          "modern": "test negative ELBO bound, 100-sample importance weighted (test/iw_bound, nats)",
          "categorical": "test negative ELBO bound, 100-sample importance weighted (test/iw_bound, nats)"}
METRIC_SHORT = {"table1": "test bound, m-sample", "sbn": "test NLL, m-sample",
                "modern": "test bound, 100-sample", "categorical": "test bound, 100-sample"}
SPAN = 8.0   # nats above a cell's best that the frontier's y axis shows
ALPHA = 0.05  # the family-wise error of a cell's verdicts (Holm's correction over its comparisons)
CHOSEN_KEYS = ("estimator.", "tau.", "optim.lr", "plugins", "experiment", "out_dir", *STEP_KEYS)


@dataclass(frozen=True)
class Cell:
    """One cell of the leaderboard: a base config of a sweep file."""

    name: str    # as --cell names it
    label: str   # as the tables write it
    sweep: str   # configs/sweeps/<sweep>.yaml
    base: str    # one of that sweep's bases
    # the point values beyond the base that fix it, as (key, value) pairs (data.name; a whole section,
    # the categorical benchmark's model shape, as its own pairs: a cell is hashable)
    values: tuple[tuple[str, Any], ...] = ()

    def read_sweep(self) -> Sweep:
        return read_sweep(SWEEP_DIR / f"{self.sweep}.yaml")

    @property
    def entry(self) -> dict[str, Any]:
        """The cell as an include entry of its sweep: its base and values."""
        return {"base": self.base, **{k: dict(v) if isinstance(v, tuple) else v for k, v in self.values}}


CELLS = (Cell("vae-bernoulli", "VAE (Bern.)", "table1", "configs/vae_bernoulli.yaml"),
         Cell("vae-categorical", "VAE (Cat.)", "table1", "configs/vae_categorical.yaml"),
         Cell("sbn-bernoulli", "SBN (Bern.)", "sbn", "configs/sbn_bernoulli.yaml"),
         Cell("sbn-categorical", "SBN (Cat.)", "sbn", "configs/sbn_categorical.yaml"))


def benchmark_cells(preset: str) -> tuple[Cell, ...]:
    """The 2020 benchmark's cells under ``preset``: each (model, data set) its sweep
    (configs/sweeps/modern.yaml) trains there, in the sweep's order."""
    cells = {}
    for point in expand(read_sweep(SWEEP_DIR / "modern.yaml"), preset, COMMITTED):
        model, data = benchmark_model(point.cfg), point.cfg.data.name
        cells.setdefault((point.base, data),
                         Cell(f"{model}-{data.replace('_', '-')}", f"{model} {DATASETS[data].title}",
                              "modern", point.base, (("data.name", data),)))
    return tuple(cells.values())


def categorical_cells(preset: str) -> tuple[Cell, ...]:
    """The categorical benchmark's cells under ``preset``: each latent shape K x N its sweep
    (configs/sweeps/categorical.yaml) trains there, in the sweep's order."""
    cells = {}
    for point in expand(read_sweep(SWEEP_DIR / "categorical.yaml"), preset, COMMITTED):
        shape = (point.cfg.model.num_classes, point.cfg.model.num_latents)
        cells.setdefault(shape, Cell(f"{shape[0]}x{shape[1]}", f"{shape[0]} x {shape[1]}", "categorical",
                                     point.base, (("model", (("num_classes", shape[0]),
                                                             ("num_latents", shape[1]))),)))
    return tuple(cells.values())


@dataclass(frozen=True)
class Board:
    """A leaderboard: its cells under a preset and the suffix of its files."""

    title: str                                   # the summary's caption names it
    cells: Callable[[str], tuple[Cell, ...]]
    suffix: str                                  # leaderboard<suffix>.md, frontier<suffix>.png
    target: str                                  # the make target that trains its sweeps


BOARDS = {"2017": Board("Table 1's four cells", lambda preset: CELLS, "", "table1"),
          "2020": Board("the 2020 benchmark", benchmark_cells, "_2020", "modern"),
          "categorical": Board("the categorical benchmark", categorical_cells, "_categorical", "categorical")}


class NothingRanked(SweepError):
    """A board with no finished entry under the preset."""


@dataclass(frozen=True)
class Entry:
    """A finished run of a cell, with its test number per seed and its cost."""

    point: Point
    per_seed: list[float]
    passes: float | None         # decoder evaluations per example and step (the run's count)
    ms: float | None             # milliseconds per training step
    ms_measured: bool            # ms from --time-steps on free cores (else the run's own time)
    new: bool                    # trained for this call (--estimator), not a committed entry
    minutes: float | None = None  # the run's wall time, training and test bound, all its seeds
    # vae.reporting.gradient_quality.quality at the cell's shared checkpoint
    gradient: dict[str, float] | None = None

    @property
    def title(self) -> str:
        return column_title(*column(self.point))

    @property
    def mean(self) -> float:
        return sum(self.per_seed) / len(self.per_seed)

    @property
    def std(self) -> float:
        n = len(self.per_seed)
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.per_seed) / (n - 1)) if n > 1 else 0.0


def t_cdf(x: float, df: int, n: int = 2000) -> float:
    """Student's t CDF with ``df`` degrees of freedom at ``x >= 0``, for any x: with x = √df tan θ
    the density's integral over [0, x] is Γ((df+1)/2) / (Γ(df/2) √π) times that of cos^(df-1) θ over
    [0, atan(x / √df)], a smooth integrand Simpson's rule (n intervals) takes to 1e-9 (no scipy)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(math.pi)
    h = math.atan(x / math.sqrt(df)) / n
    f = [math.cos(i * h) ** (df - 1) for i in range(n + 1)]
    return 0.5 + math.exp(log_c) * h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p > 1/2) of Student's t: :func:`t_cdf` inverted by bisection."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    while hi - lo > 1e-7:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def p_behind(entry: Entry, best: Entry) -> float:
    """Two-sided p-value of the pooled two-sample t-test of ``entry``'s mean against ``best``'s
    (n1 + n2 - 2 degrees of freedom); both need 2 seeds or more."""
    n1, n2 = len(entry.per_seed), len(best.per_seed)
    pooled = math.sqrt(((n1 - 1) * entry.std ** 2 + (n2 - 1) * best.std ** 2) / (n1 + n2 - 2))
    gap = entry.mean - best.mean
    if pooled == 0:
        return 1.0 if gap == 0 else 0.0
    t = abs(gap) / (pooled * math.sqrt(1 / n1 + 1 / n2))
    return max(0.0, 2 * (1 - t_cdf(t, n1 + n2 - 2)))


def verdicts(ranked: list[Entry], alpha: float = ALPHA) -> list[str]:
    """Each entry of a cell (best first) against the best: ``best``; ``behind`` where the pooled
    t-test rejects equal means under Holm's correction over the cell's comparisons (the m entries
    with 2 seeds or more beside the best: the k-th smallest p-value is tested at alpha / (m - k + 1),
    stopping at the first that is not rejected), so the chance of calling any tied entry behind
    is at most alpha in the cell; ``tied`` otherwise; ``1 seed`` where either side has one seed."""
    best = ranked[0]
    out = ["best"] + ["1 seed" if len(e.per_seed) < 2 or len(best.per_seed) < 2 else "tied"
                      for e in ranked[1:]]
    tested = sorted((p_behind(e, best), i) for i, e in enumerate(ranked) if out[i] == "tied")
    for k, (p, i) in enumerate(tested):
        if p > alpha / (len(tested) - k):
            break
        out[i] = "behind"
    return out


def _chosen_apart(cfg: Config) -> dict[str, Any]:
    """The settings of ``cfg`` that an entry does not choose: equal for every entry of a cell."""
    return {k: v for k, v in identity(cfg).items() if not k.startswith(CHOSEN_KEYS)}


def cell_config(cell: Cell, preset: str) -> Config:
    """The cell's configuration under ``preset`` (the base config with the preset's settings)."""
    return expand(cell.read_sweep(), preset, COMMITTED, entries=[cell.entry])[0].cfg


_SWEEP_POINTS: dict[tuple, list[Point]] = {}   # sweep_points' answers by its key


def sweep_points(cell: Cell, preset: str, store: Path) -> list[Point]:
    """The points of the cell's sweep file under ``preset`` in ``store``, expanded once per file text,
    preset, store and registry (every cell of a board reads the same expansion)."""
    path = SWEEP_DIR / f"{cell.sweep}.yaml"
    key = (str(path), path.read_text(), preset, str(store), tuple((n, id(c)) for n, c in ESTIMATORS.items()))
    if key not in _SWEEP_POINTS:
        _SWEEP_POINTS[key] = expand(cell.read_sweep(), preset, store)
    return _SWEEP_POINTS[key]


def committed_points(cell: Cell, preset: str, stores: list[Path]) -> list[Point]:
    """The finished entries of ``cell`` in the sweep file's points under ``preset``, read from
    ``stores`` (the first store holding a finished run wins), one per learning-rate set."""
    sweep, standard = cell.read_sweep(), _chosen_apart(cell_config(cell, preset))
    found: dict[str, Point] = {}
    for store in stores:
        for point in sweep_points(cell, preset, store):
            if (point.base == cell.base and _chosen_apart(point.cfg) == standard
                    and point.run_dir.name not in found
                    and load_summary(point.run_dir) is not None):
                found[point.run_dir.name] = point
    return best_points(sweep, list(found.values()))


def applies(name: str, cell: Cell, preset: str) -> bool:
    """Whether the estimator ``name`` declares the cell's task and latent kind."""
    cfg = cell_config(cell, preset)
    return cfg.task in ESTIMATORS[name].tasks and cfg.model.kind in ESTIMATORS[name].kinds


def new_points(cell: Cell, preset: str, results_dir: Path, names: list[str], settings: dict[str, Any],
               equal_cost: str | None) -> list[Point]:
    """The points that train each of ``names`` (with ``settings``) on ``cell`` under ``preset``."""
    entries = [{**cell.entry, "estimator.name": name, **settings,
                **({EQUAL_COST: equal_cost} if equal_cost else {})} for name in names]
    return expand(cell.read_sweep(), preset, results_dir, entries=entries)


def _step_ms_path(results_dir: Path, preset: str, device: str) -> Path:
    return results_dir / "bench" / preset / f"step_ms_{device}.json"


def measure_step_ms(points: list[Point], results_dir: Path, preset: str, device: str = "cpu", steps: int = 20,
                    repeats: int = 3, skip_measured: bool = True) -> Path:
    """Time each point's training step alone (its config, all its seeds; the median of ``repeats``
    timings of ``steps`` steps after 5 of warm-up, fewer for a dear step: ``steps * 16 / passes``
    steps, at least 2, after a quarter as many) and add the milliseconds to the preset's record;
    ``skip_measured``: leave the runs it already holds (a new estimator is timed alone)."""
    path = _step_ms_path(results_dir, preset, resolve_device(device).type)
    record = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    for point in points:
        if skip_measured and point.run_dir.name in record["runs"]:
            continue
        passes = TASKS[point.cfg.task].decoder_passes(point.cfg)
        n = max(2, min(steps, round(steps * 16 / passes)))
        trainer = Trainer(replace(point.cfg, device=device, compile=False), log=lambda _: None)   # all eager
        rate = median_rate(trainer.train_step, n, repeats, device_sync(trainer.device),
                           warmup=max(1, min(5, n // 4)))
        record["runs"][point.run_dir.name] = round(1000 / rate, 2)
        print(f"{point.label}: {1000 / rate:.1f} ms/step", flush=True)
    record.update(device=device_name(resolve_device(device)), steps=steps, repeats=repeats,
                  measured=time.strftime("%Y-%m-%d %H:%M"))
    write_json_atomic(path, record, sort_keys=True)
    return path


def entries(points: list[Point], new: set[str], timings: dict[str, float],
            gradients: dict[str, dict[str, float]] | None = None) -> list[Entry]:
    """The finished ``points`` as entries, best first (``new``: the names of the run directories
    trained for this call; ``timings``: measured ms per step, ``gradients``: the gradient's
    quality (:mod:`vae.reporting.gradient_quality`), by run directory name)."""
    out = []
    for point in points:
        summary = load_summary(point.run_dir)
        if summary is None or FINAL[point.cfg.task] not in summary:
            continue
        passes = final(summary, "train/est/decoder_evals")
        rate = summary.get("steps_per_second")
        measured = timings.get(point.run_dir.name)
        seconds = [summary.get(k) for k in ("train_seconds", "iw_seconds")]
        out.append(Entry(point, summary[FINAL[point.cfg.task]]["per_seed"], passes and passes[0],
                         measured if measured is not None else (1000 / rate if rate else None),
                         measured is not None, point.run_dir.name in new,
                         sum(seconds) / 60 if None not in seconds else None,
                         (gradients or {}).get(point.run_dir.name)))
    return sorted(out, key=lambda e: (e.mean, column_order(e.point.cfg.estimator.name)))


def _ms(entry: Entry) -> str:
    if entry.ms is None:
        return "–"
    return f"{entry.ms:.1f}" + ("" if entry.ms_measured else "*c" if entry.point.trained_compiled() else "*")


def _gradient(entry: Entry) -> list[str]:
    g = entry.gradient
    if g is None:
        return ["–", "–"]
    return [f"{g['log10_variance']:.2f}", f"{g['cosine']:.3f} / {g['relative_error']:.3f} ({g['noise']:.3f})"]


def cell_rows(ranked: list[Entry]) -> list[tuple[str, list[str]]]:
    """The rows of one cell's ranked table (with the gradient columns where an entry has them)."""
    best, measured = ranked[0], any(e.gradient for e in ranked)
    rows = []
    for rank, (entry, said) in enumerate(zip(ranked, verdicts(ranked)), 1):
        spread = f" ± {entry.std:.2f}" if len(entry.per_seed) > 1 else " (1 seed)"
        rows.append((str(rank), [entry.title + (" (new)" if entry.new else ""), f"{entry.mean:.2f}{spread}",
                                 "–" if entry is best else f"{entry.mean - best.mean:+.2f}", said,
                                 "–" if entry.passes is None else f"{entry.passes:g}", _ms(entry),
                                 *(_gradient(entry) if measured else [])]))
    return rows


CELL_HEADER = ["estimator", "test (nats)", "− best", "verdict", "decoder evals / example / step",
               "ms / step"]
GRADIENT_HEADER = ["log10 Var(encoder gradient)", "cosine / relative error (noise) to the reference"]


def shared_rankings(means: dict[str, dict[str, float]]) -> list[tuple[tuple[str, ...], dict[str, float]]]:
    """The summary's rankings from ``means`` (cell label -> estimator title -> mean test number),
    each on cells every estimator in it shares: for each set S of cells
    that some estimator (title) has results on exactly, the mean over S of the ranks within each
    cell among the estimators having results on all of S (a superset of S: those with more cells
    are ranked on S too), for the estimators whose set is exactly S. Largest sets first; within
    one, best mean rank first. An estimator missing a cell of S (not run, or one its declarations
    exclude) is in no ranking on S: it cannot climb by leaving a bad cell out. Sets of equal size:
    the one more estimators have first."""
    have = {title: tuple(label for label in means if title in means[label]) for label in means
            for title in means[label]}
    rankings = []
    sets = list(dict.fromkeys(have.values()))           # in the order their first estimator appears
    for cells in sorted(sets, key=lambda s: (-len(s), -list(have.values()).count(s), sets.index(s))):
        field = [t for t, own in have.items() if set(cells) <= set(own)]
        rank = {label: {t: i for i, t in enumerate(sorted(field, key=lambda t: (means[label][t], t)), 1)}
                for label in cells}
        mine = {t: sum(rank[label][t] for label in cells) / len(cells)
                for t, own in have.items() if own == cells}
        rankings.append((cells, dict(sorted(mine.items(), key=lambda item: (item[1], item[0])))))
    return rankings


def overall_rows(by_cell: dict[Cell, list[Entry]], missing: dict[str, list[str]],
                 preset: str) -> list[tuple[str, list[str]]]:
    """The summary: :func:`shared_rankings` one after the other (place within its ranking, the mean
    rank and the cells it is taken over), each cell's number and rank among all its entries; a
    cell without a result says why (not run, or its declarations)."""
    numbers: dict[tuple[str, str], str] = {}
    names: dict[str, str] = {}
    minutes: dict[str, list[float | None]] = {}
    for cell, ranked in by_cell.items():
        for rank, entry in enumerate(ranked, 1):
            numbers[entry.title, cell.label] = f"{entry.mean:.1f} ({rank})"
            names[entry.title] = entry.point.cfg.estimator.name
            minutes.setdefault(entry.title, []).append(entry.minutes)
    rows = []
    for cells, ranking in shared_rankings({cell.label: {e.title: e.mean for e in ranked}
                                           for cell, ranked in by_cell.items()}):
        over = "all" if len(cells) == len(by_cell) else ", ".join(cells)
        for place, (title, mean_rank) in enumerate(ranking.items(), 1):
            shown = [numbers.get((title, cell.label)) or ("not run" if applies(names[title], cell, preset)
                                                         else "does not apply") for cell in by_cell]
            spent = "–" if None in minutes[title] else f"{sum(minutes[title]):.1f}"
            rows.append((str(place), [title, f"{mean_rank:.2f}", over, *shown, spent]))
    for title, labels in missing.items():
        if title in names:           # its cells without a result say why above
            continue
        rows.append(("–", [title, "–", "none",
                           *["does not apply" if c.label in labels else "–" for c in by_cell], "–"]))
    return rows


def write(by_cell: dict[Cell, list[Entry]], missing: dict[str, list[str]], preset: str, results_dir: Path,
          board: Board = BOARDS["2017"]) -> str:
    """Write the tables (markdown, LaTeX) and the frontier figure; return the markdown."""
    points = [e.point for ranked in by_cell.values() for e in ranked]
    seeds = (" or ".join(map(str, sorted({len(e.per_seed) for ranked in by_cell.values() for e in ranked})))
             or "no")
    note = (f"Verdict: the pooled two-sample t-test of each entry against the cell's best, Holm-corrected "
            f"over the cell's entries (family-wise error {ALPHA:.0%} per cell): behind where it rejects "
            f"equal means, else tied; with {seeds} seeds each a tie is weak evidence of equality. "
            f"ms / step: measured alone on free cores (--time-steps, every entry eager), or, marked *, the "
            f"run's own time (shared cores; *c: a run trained with compile=true, a faster step). "
            f"{BUDGET_NOTES[preset]}")
    tables = [(["estimator", "mean rank", "ranked on cells", *[c.label for c in by_cell], "run minutes"],
               overall_rows(by_cell, missing, preset),
               f"Leaderboard{'' if board is BOARDS['2017'] else ' of ' + board.title} ({preset}): "
               f"per cell the test number (nats, mean over seeds) and its rank among the cell's entries. "
               f"Rankings on shared cells: first the estimators with a result on every cell, by mean rank "
               f"over all; then, for each smaller set of cells, those with results on exactly it, by mean "
               f"rank over it among every estimator with results on those cells; an estimator is never "
               f"ranked on cells others lack. Run minutes: its cells' runs' wall time, training and test "
               f"bound, summed (the runs' summary.json: train_seconds + iw_seconds). "
               f"{note}\n\n{provenance([p.run_dir for p in points], preset)}")]
    for cell, ranked in by_cell.items():
        measured = any(e.gradient for e in ranked)
        header = CELL_HEADER + (GRADIENT_HEADER if measured else [])
        blank = [""] * (len(header) - 2)
        extra = [("–", [title, "does not apply", *blank])
                 for title, labels in missing.items() if cell.label in labels]
        rows = cell_rows(ranked) if ranked else [("–", ["no finished run yet", "", *blank])]
        tables.append((header, rows + extra,
                       f"{cell.label} ({preset}): {METRIC[cell.sweep]}, lower is better."
                       + (f" {gradient_quality.CAPTION}" if measured else "")))
    out = results_dir / "tables" / preset
    markdown = "\n".join(to_markdown(*t, corner="rank") for t in tables)
    write_drawing(out / f"leaderboard{board.suffix}.md", markdown)
    write_drawing(out / f"leaderboard{board.suffix}.tex", "\n".join(
        to_latex(*t, corner="rank", label=f"leaderboard{board.suffix}-{i}") for i, t in enumerate(tables, 1)))
    frontier(by_cell, preset, results_dir, footer(points, preset, note.split(BUDGET_NOTES[preset])[0]),
             board.suffix)
    by_label = {cell.label: [(e.title, ESTIMATORS[e.point.cfg.estimator.name].unbiased, e.gradient)
                             for e in ranked if e.gradient] for cell, ranked in by_cell.items()}
    if any(by_label.values()):
        gradient_quality.figure({label: found for label, found in by_label.items() if found}, preset,
                                results_dir, footer(points, preset, gradient_quality.CAPTION), board.suffix)
    return markdown


def pareto(entries: list[Entry], cost: str) -> list[Entry]:
    """The entries no other entry beats at lower or equal cost, cheapest first."""
    front, best = [], math.inf
    for entry in sorted((e for e in entries if getattr(e, cost) is not None),
                        key=lambda e: (getattr(e, cost), e.mean)):
        if entry.mean < best:
            front.append(entry)
            best = entry.mean
    return front


def frontier(by_cell: dict[Cell, list[Entry]], preset: str, results_dir: Path, note: str,
             suffix: str = "") -> list[Path]:
    """Per cell, the test number against decoder evaluations and against ms per step, with the
    Pareto front: ``<results_dir>/figures/<preset>/frontier.{png,pdf}``. The y axis spans the best
    :data:`SPAN` nats or up to the upper quartile of the entries, whichever is more, and always
    includes the entries this call trained (a new estimator is never clipped); an entry beyond sits
    on the top edge as a triangle, its number in its label. No legend covers the labels: the
    title says what the grey steps are."""
    cells = [c for c, ranked in by_cell.items() if ranked]
    fig, axes = plt.subplots(2, len(cells), figsize=(4.8 * len(cells), 9.0), squeeze=False)
    for column_index, cell in enumerate(cells):
        means = [e.mean for e in by_cell[cell]]                    # best first
        best, upper_quartile = means[0], means[int(0.75 * (len(means) - 1))]
        top = min(max(e.mean + e.std for e in by_cell[cell]), max(best + SPAN, upper_quartile + 1)) + 0.3
        top = max([top] + [e.mean + e.std + 0.3 for e in by_cell[cell] if e.new])
        for row, (cost, label) in enumerate((("passes", "decoder evaluations / example / step"),
                                             ("ms", "ms / training step"))):
            ax = axes[row][column_index]
            drawn = [e for e in by_cell[cell] if getattr(e, cost) is not None]
            front = pareto(drawn, cost)
            for entry in drawn:
                on_front = entry in front    # the front's labels in bold, the others light
                colour, x = ("tab:red" if entry.new else "tab:blue"), getattr(entry, cost)
                if entry.mean > top:      # a triangle on the edge, labelled leftwards in the right half
                    costs = [getattr(e, cost) for e in drawn]
                    right = x > math.sqrt(min(costs) * max(costs))          # the log axis's middle
                    ax.plot(x, top, "^", ms=5, color=colour, clip_on=False)
                    ax.annotate(f"{entry.title} ({entry.mean:.1f})", (x, top), fontsize=6,
                                xytext=(-3 if right else 3, -8), textcoords="offset points", color=colour,
                                ha="right" if right else "left")
                    continue
                ax.errorbar(x, entry.mean, yerr=entry.std, fmt="o", ms=4, color=colour, capsize=2)
                ax.annotate(entry.title, (x, entry.mean), fontsize=6.5 if on_front else 5.5, xytext=(3, 2),
                            textcoords="offset points", color=colour, alpha=1.0 if on_front else 0.55,
                            fontweight="bold" if on_front else "normal")
            ax.step([getattr(e, cost) for e in front], [e.mean for e in front], where="post", color="0.5",
                    lw=1)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            decades = (math.log10(max(getattr(e, cost) for e in drawn) / min(getattr(e, cost) for e in drawn))
                       if drawn else 0)
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"
                                                       if decades <= 2 and f"{v:g}"[0] in "25" else ""))
            ax.set_ylim(best - 0.5, top)
            measured = cost == "passes" or all(e.ms_measured for e in drawn)
            compiled = cost == "ms" and any(not e.ms_measured and e.point.trained_compiled() for e in drawn)
            ax.set_xlabel(label + ("" if measured else "\n(the runs' own, shared cores" +
                                   ("; some compiled, faster" if compiled else "") + ")"))
            ax.set_ylabel(f"{METRIC_SHORT[cell.sweep]} (nats)")
            ax.set_title(cell.label)
            ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Cost and quality of every estimator ({preset}): lower left is better; grey steps: "
                 f"the Pareto front (none cheaper and better, its labels bold)"
                 + ("; red: trained by this call" if any(e.new for r in by_cell.values() for e in r) else ""))
    return save(fig, results_dir / "figures" / preset, f"frontier{suffix}", note)


def leaderboard(preset: str, results_dir: Path, *, names: list[str] = (), plugins: list[str] = (),
                settings: dict[str, Any] | None = None, equal_cost: str | None = None,
                cells: list[str] | None = None,
                committed_dir: Path = COMMITTED, train: Callable[[Sweep, list[Point]], object] | None = None,
                log: Callable[[str], None] = print, board: str = "2017", gradients: bool = False) -> str:
    """Train ``names`` (after importing ``plugins``; with ``settings``, dotted keys) on ``cells``
    (default all) with ``train(sweep, points)``, and write the leaderboard of ``preset``; returns
    its markdown. Raises :class:`SweepError` (one line) on bad input: an unknown estimator or cell,
    a named cell an estimator does not apply to, a preset with no finished entry."""
    for module in plugins:
        try:
            importlib.import_module(module)
        except Exception as err:  # whatever the module raises, the message names the option
            raise SweepError(f"--plugins: cannot import {module!r} ({type(err).__name__}: {err})") from err
    settings = {**(settings or {}), **({"plugins": list(plugins)} if plugins else {})}
    on_board = BOARDS[board].cells(preset)
    unknown = sorted(set(cells or []) - {c.name for c in on_board})
    if unknown:
        raise SweepError(f"--cell: unknown cell {unknown[0]!r} of board {board}; allowed: "
                         f"{', '.join(c.name for c in on_board)}")
    chosen = [c for c in on_board if cells is None or c.name in cells]
    for name in names:
        if name not in ESTIMATORS:
            raise SweepError(f"--estimator: unknown estimator {name!r}; known: {', '.join(ESTIMATORS)} "
                             "(an estimator of your own: --plugins MODULE)")
    stores = list(dict.fromkeys([Path(committed_dir).resolve(), Path(results_dir).resolve()]))
    timings = {}
    for store in stores:
        path = _step_ms_path(store, preset, "cpu")
        timings.update(json.loads(path.read_text())["runs"] if path.exists() else {})
    by_cell, missing, new, titles = {}, {}, set(), {}
    for cell in chosen:
        apply = [n for n in names if applies(n, cell, preset)]
        for name in sorted(set(names) - set(apply)):
            if cells is not None:
                raise SweepError(f"--cell: {name!r} does not apply to {cell.name} (it declares tasks "
                                 f"{sorted(ESTIMATORS[name].tasks)}, "
                                 f"latents {sorted(ESTIMATORS[name].kinds)})")
            missing.setdefault(name, []).append(cell.label)
        points = committed_points(cell, preset, stores)
        if apply:
            mine = new_points(cell, preset, Path(results_dir), apply, settings, equal_cost)
            if train is not None:
                todo = [p for p in mine if load_summary(p.run_dir) is None]
                minutes = estimated_minutes(todo, points)
                if todo and minutes is not None:
                    log(f"{cell.label}: {len(todo)} run(s) to train and bound, about {minutes:.0f} minutes "
                        "on this machine (the cell's committed one-pass entries' time per step, times the "
                        "new runs' decoder passes and steps, plus their bound)")
                train(cell.read_sweep(), mine)
            committed = {p.run_dir.name for p in points}
            mine = [p for p in mine if p.run_dir.name not in committed]
            new |= {p.run_dir.name for p in mine}
            titles.update({p.cfg.estimator.name: column_title(*column(p)) for p in mine})
            points += mine
        if gradients and TASKS[cell_config(cell, preset).task].one_encoder:
            gradient_quality.measure(cell.name, [p for p in points if load_summary(p.run_dir)], preset,
                                     Path(results_dir), log=log)
        by_cell[cell] = entries(points, new, timings, gradient_quality.load(stores, preset, cell.name))
    if not any(by_cell.values()):
        raise NothingRanked(f"--preset: no finished entry of preset {preset!r} on board {board} in "
                            f"{' or '.join(map(str, stores))}; train its sweeps first (make "
                            f"{BOARDS[board].target} PRESET={preset})")
    missing = {titles.get(name, column_title(name, "")): labels for name, labels in missing.items()}
    return write(by_cell, missing, preset, Path(results_dir), BOARDS[board])


def estimated_minutes(todo: list[Point], committed: list[Point]) -> float | None:
    """Minutes that training ``todo`` (and its test bounds) will take, from a cell's ``committed``
    entries with one decoder pass a step (not at another's cost): their median seconds per step
    (all seeds) times each new run's passes and steps, plus their median bound's seconds; None
    without such an entry."""
    one_pass = [s for p in committed
                if EQUAL_COST not in p.values and TASKS[p.cfg.task].decoder_passes(p.cfg) == 1.0
                and (s := load_summary(p.run_dir)) is not None]
    if not one_pass:
        return None
    per_step = statistics.median(s["train_seconds"] / s["steps"] for s in one_pass)
    bound = statistics.median(s["iw_seconds"] for s in one_pass)
    return sum(per_step * TASKS[q.cfg.task].decoder_passes(q.cfg) * q.cfg.steps + bound for q in todo) / 60


def board_cost(preset: str, stores: list[Path], board: str = "2017") -> dict[str, Any]:
    """What the board of ``preset`` cost, from its entries' records in ``stores`` (the cells'
    committed runs, as the board ranks them): runs, seed-runs (a run of R seeds counts R) and
    core-hours (training and test bound, summed over runs: each run trains on one core, a sweep's
    worker's thread), and per seed-run; and, for the next preset of :data:`vae.sweeps.definition.PRESETS`,
    the estimate of the same entries under its budget: per entry, its record's seconds per seed and
    step (training) and per seed, test digit and sample (the bound), times the next preset's steps,
    seeds, digits and samples, summed over the points it expands to (a learning-rate grid: one per
    rate). Linear in the seeds, as a run's replica axis is on one CPU core (results/README.md
    "Speed"), and in the steps, the curves' evaluations too (ten a run at every budget, so from a
    short preset an overestimate); at the records' own device, whatever the next preset is for."""
    runs = [(cell, point, load_summary(point.run_dir)) for cell in BOARDS[board].cells(preset)
            for point in committed_points(cell, preset, stores)]
    if not runs:
        raise NothingRanked(f"--cost: no finished entry of preset {preset!r} on board {board} in "
                            f"{', '.join(map(str, stores))}")
    seconds = sum(s["train_seconds"] + s["iw_seconds"] for _, _, s in runs)
    seed_runs = sum(len(s["seeds"]) for _, _, s in runs)
    cost = {"board": board, "preset": preset, "runs": len(runs), "seed_runs": seed_runs,
            "core_hours": seconds / 3600, "core_hours_per_seed_run": seconds / 3600 / seed_runs,
            "devices": sorted({s["device"] for _, _, s in runs})}
    later = PRESETS[PRESETS.index(preset) + 1:]
    if later:
        estimate, next_runs, next_seed_runs = 0.0, 0, 0
        for cell, point, s in runs:
            r = len(s["seeds"])
            per_step = s["train_seconds"] / (s["steps"] * r)
            per_sample = s["iw_seconds"] / (s["iw_examples"] * s["iw_samples"] * r)
            for q in expand(cell.read_sweep(), later[0], COMMITTED, entries=[{**cell.entry, **point.values}]):
                e, seeds = q.cfg.eval, len(q.cfg.seeds)
                digits = e.iw_examples or 10_000
                estimate += seeds * (per_step * q.cfg.steps + per_sample * digits * e.iw_samples)
                next_runs, next_seed_runs = next_runs + 1, next_seed_runs + seeds
        cost["next"] = {"preset": later[0], "runs": next_runs, "seed_runs": next_seed_runs,
                        "core_hours": estimate / 3600}
    return cost


def cost_line(cost: dict[str, Any]) -> str:
    """:func:`board_cost` in one line."""
    line = (f"board {cost['board']}, preset {cost['preset']}: {cost['runs']} runs, {cost['seed_runs']} "
            f"seed-runs, {cost['core_hours']:.1f} core-hours (training and test bound, one core per run, "
            f"{', '.join(cost['devices'])}): {cost['core_hours_per_seed_run']:.2f} core-hours per seed-run")
    if "next" in cost:
        n = cost["next"]
        line += (f"; the same entries under preset {n['preset']} ({n['runs']} runs, {n['seed_runs']} "
                 f"seed-runs): about {n['core_hours']:.0f} core-hours at these runs' speed per step")
    return line
