"""Tables of the reproduction from the local results store: what ``python -m experiments.tables NAME`` draws.

* ``table1``: the VAE rows of Table 1 of Jang, Gu & Poole (2017). For each estimator, our test
  bound (importance-weighted, m samples, mean ± std over seeds) beside the paper's number and the
  difference; NVIL and RLOO are later estimators with no paper number. When the preset's grid has
  several learning rates (``paper``), each estimator's is chosen on the validation negative ELBO,
  as in the paper, and the chosen one is listed.
* ``table2``: Table 2, semi-supervised classification (M2, Section 4.3): per treatment of the
  unlabelled digits' class (summed, Gumbel-softmax, ST Gumbel-softmax) the test negative ELBO and
  accuracy beside the paper's, the m = 1000 bound, the alpha chosen on validation accuracy
  (``paper`` preset) and the cost of a training step.
* ``model-question``: which model, optimiser and metric the paper's VAE numbers are consistent
  with -- GS and ST-GS on both latent types under every candidate (``configs/sweeps/model_question.yaml``),
  both metrics per cell, and each candidate's mean distance to the paper's four numbers.
* ``modern``: the 2020 benchmark (``configs/sweeps/modern.yaml``), a table per (model, data set):
  the training -ELBO and the 100-sample test bound per estimator, the published columns, the cost.
* ``categorical``: the categorical benchmark of 2023-2026 (``configs/sweeps/categorical.yaml``,
  the ReinMax scripts' protocol), a table per latent shape K x N: the training -ELBO (its number)
  beside the published one, the test -ELBO and 100-sample bound, the cost.

Written to ``<results>/tables/<preset>/<name>.md`` (and ``.tex``); the markdown is printed. Run
the sweep first (``make table1``, ``make table2``, ``make model-question``, ``make modern``, ``make
categorical`` do both).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any
from pathlib import Path

from vae.config import REPO, Config, TauConfig
from vae.data.images import DATASETS
from vae.estimators import ESTIMATORS, column_order, display_name
from vae.store.records import final, provenance, write_drawing
from vae.store.run_dir import FAILED, load_summary
from vae.sweeps.definition import EQUAL_COST, STORE, Point, best_points, expand, read_sweep, short_key

SWEEP_DIR = REPO / "configs" / "sweeps"   # read from the repository, whatever the working directory
TABLE1_SWEEP = SWEEP_DIR / "table1.yaml"
SBN_SWEEP = SWEEP_DIR / "sbn.yaml"
SSL_SWEEP = SWEEP_DIR / "ssl.yaml"

# The estimators' columns: the paper's order, then the later ones by family and year (their classes'
# declarations: vae.estimators.column_order), with the classes' display names.
# Table 1's rows: (task, latent kind) -> label, and the test number each row compares.
ROWS = {("sbn", "bernoulli"): "SBN (Bern.)", ("sbn", "categorical"): "SBN (Cat.)",
        ("vae", "bernoulli"): "VAE (Bern.)", ("vae", "categorical"): "VAE (Cat.)"}
MODEL_ROWS = {"bernoulli": "VAE (Bern.)", "categorical": "VAE (Cat.)"}
FINAL = {"vae": "test/iw_bound", "sbn": "test/iw_nll", "ssl": "test/iw_bound"}

# Reference values, not results of this code: Jang, Gu & Poole (2017), "Categorical
# Reparameterization with Gumbel-Softmax", ICLR, Table 1, in nats (lower is better): SBN rows,
# test negative log-likelihood (m = 1000); VAE rows, test negative variational lower bound. No
# number for the later estimators.
PAPER_TABLE1 = {
    ("sbn", "bernoulli"): {"reinforce-ema": 72.0, "darn": 59.7, "muprop": 58.9, "st": 58.9,
                           "st-annealed": 58.7, "gs": 58.5, "st-gs": 59.3},
    ("sbn", "categorical"): {"reinforce-ema": 73.1, "darn": 67.9, "muprop": 63.0, "st": 61.8,
                             "st-annealed": 61.1, "gs": 59.0, "st-gs": 59.7},
    ("vae", "bernoulli"): {"reinforce-ema": 112.2, "darn": 110.9, "muprop": 109.7, "st": 116.0,
                           "st-annealed": 111.5, "gs": 105.0, "st-gs": 111.5},
    ("vae", "categorical"): {"reinforce-ema": 110.6, "darn": 128.8, "muprop": 107.0, "st": 110.9,
                             "st-annealed": 107.8, "gs": 101.5, "st-gs": 107.8},
}

BUDGET_NOTES = {
    "tiny": "Preset tiny: a test of the code path only; the numbers mean nothing.",
    "quick": ("Preset quick: a smoke-level budget for 2 CPU cores (minutes per run, far from converged, "
              "bounds on a subset of the test set): these numbers are NOT comparable to the paper's, "
              "and the differences mostly measure under-training."),
    "converged": "Preset converged: a budget that 2 CPU cores finish in hours (steps: "
                 "in the provenance line), records committed.",
    "paper": "Preset paper: the paper's budget.",
}


def _final(point: Point) -> tuple[float, float] | None:
    """(mean, std) of the run's test number: the VAE's m-sample bound, the SBN's m-sample NLL."""
    return final(load_summary(point.run_dir), FINAL[point.cfg.task])


def _cell(point: Point | None, key: str | None = None, scale: float = 1.0, *,
          kinds: frozenset[str] | None = None) -> str:
    """``mean ± std`` of ``key`` (default: the run's test number of :data:`FINAL`) times ``scale``,
    or why there is none (``kinds``: the latent kinds the estimator applies to, when not the row's)."""
    if point is None:
        return "not run" if kinds is None else " / ".join(k.capitalize() for k in sorted(kinds)) + " only"
    if (point.run_dir / FAILED).exists():
        return "diverged"
    summary = load_summary(point.run_dir)
    value = final(summary, key or FINAL[point.cfg.task])
    if value is None:
        return "unfinished"
    spread = f" ± {scale * value[1]:.1f}" if len(summary["seeds"]) > 1 else ""   # one seed: no spread to show
    return f"{scale * value[0]:.1f}{spread}"


def _difference(point: Point | None, paper: float | None) -> str:
    """``ours - paper`` with its sign, or a dash when either is missing."""
    value = _final(point) if point is not None else None
    return "–" if value is None or paper is None else f"{value[0] - paper:+.1f}"


def _cost(point: Point | None, what: str) -> str:
    """A run's cost per training step: decoder evaluations per example, or milliseconds (wall time
    of the whole step, all its seeds, on its device; marked "(compiled)" for a run trained with
    ``compile=true``, whose step is faster than the eager one the others time)."""
    summary = load_summary(point.run_dir) if point is not None else None
    if summary is None:
        return "–"
    if what == "decoder":
        evals = final(summary, "train/est/decoder_evals")
        return "–" if evals is None else f"{evals[0]:g}"
    # None (or 0 in older records): resumed at its end, no step timed
    speed = summary.get("steps_per_second")
    if not speed:
        return "–"
    return f"{1000 / speed:.1f}" + (" (compiled)" if point.trained_compiled() else "")


def compiled_note(points: list[Point]) -> str:
    """The caption's word on ``(compiled)`` time cells (:func:`_cost`), where a run has one."""
    return ("; '(compiled)': a run trained with compile=true, the step as one graph, "
            "faster than an eager step"
            if any(p.trained_compiled() for p in points) else "")


def column(point: Point) -> tuple[str, str]:
    """``(estimator name, variant)``: the variant spells the point's other estimator settings
    (``darn_point=mean``) and its equal-cost budget (``equal_cost=rloo``), empty for the estimator
    as configured by default."""
    variant = ", ".join(f"{short_key(k).removeprefix('estimator.')}={v}" for k, v in point.values.items()
                        if (k.startswith("estimator.") and k != "estimator.name") or k == EQUAL_COST)
    return point.cfg.estimator.name, variant


def column_title(name: str, variant: str) -> str:
    return display_name(name) + (f" ({variant})" if variant else "")


def paper_number(task: str, kind: str, name: str, variant: str) -> float | None:
    """The paper's Table 1 number for an estimator column, None for a variant or a later estimator."""
    return None if variant else PAPER_TABLE1[task, kind].get(name)


def table1_rows(points: list[Point]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and rows (label, cells) of Table 1 from the selected points of the table1 sweep:
    the estimators in the paper's order, each followed by its variants (no paper number)."""
    by_cell = {(p.cfg.task, p.cfg.model.kind, *column(p)): p for p in points}
    columns = sorted(dict.fromkeys(column(p) for p in points), key=lambda c: (column_order(c[0]), c[1]))
    tuned = any("optim.lr" in p.values for p in points)
    rows = []
    for (task, kind), label in ((row, label) for row, label in ROWS.items()
                                if any((p.cfg.task, p.cfg.model.kind) == row for p in points)):
        cells = [by_cell.get((task, kind, *c)) for c in columns]
        papers = [paper_number(task, kind, name, variant) for name, variant in columns]
        rows.append((f"{label} ours",
                     [_cell(p, kinds=None if name not in ESTIMATORS or kind in ESTIMATORS[name].kinds
                            else ESTIMATORS[name].kinds) for p, (name, _) in zip(cells, columns)]))
        rows.append((f"{label} paper", ["–" if v is None else f"{v:.1f}" for v in papers]))
        rows.append((f"{label} ours − paper", [_difference(p, v) for p, v in zip(cells, papers)]))
        rows.append((f"{label} decoder evaluations / example / step", [_cost(p, "decoder") for p in cells]))
        rows.append((f"{label} ms / step", [_cost(p, "time") for p in cells]))
        if tuned:
            rows.append((f"{label} lr (chosen on valid.)",
                         [f"{p.cfg.optim.lr:g}" if p is not None else "–" for p in cells]))
        if any("tau" in p.values for p in points):
            rows.append((f"{label} τ (chosen on valid.)",
                         [schedule_label(p.values["tau"]) if p is not None and "tau" in p.values else "–"
                          for p in cells]))
    return [column_title(*c) for c in columns], rows


def model_label(cfg: Config) -> str:
    """``affine encoder and decoder (784-(N·K)-784), uniform prior``, read from a config."""
    m = cfg.model
    if cfg.task == "sbn":
        maps = "affine maps" if not m.hidden else f"hidden ReLU layers {m.hidden} between them"
        return f"{m.layers} stochastic layers, 392-" + "-".join(["(N·K)"] * m.layers) + f"-392, {maps}"
    shape = f"784-{'-'.join(map(str, m.hidden))}-(N·K)" if m.hidden else "784-(N·K)-784"
    kind = "MLP encoder and mirrored decoder" if m.hidden else "affine encoder and decoder"
    return f"{kind} ({shape}), {m.prior} prior"


def optimiser_label(cfg: Config) -> str:
    o = cfg.optim
    return "Adam" if o.name == "adam" else f"SGD with momentum {o.momentum:g}"


def test_digits(examples: str) -> str:
    """``all 10,000 test digits`` or ``the first 200 of the 10,000 test digits``."""
    return ("all 10,000 test digits" if examples == "10000"
            else f"the first {examples} of the 10,000 test digits")


def paper_distance(points: list[Point]) -> str:
    """``mean abs(ours − paper)`` over the finished cells that have a paper number, per row and over
    all of them, with the number of cells in brackets; empty when no such cell has finished."""
    gaps: dict[str, list[float]] = {}
    for p in points:
        name, variant = column(p)
        paper = paper_number(p.cfg.task, p.cfg.model.kind, name, variant)
        value = _final(p)
        if paper is not None and value is not None:
            gaps.setdefault(ROWS[p.cfg.task, p.cfg.model.kind], []).append(abs(value[0] - paper))
    if not gaps:
        return ""
    every = [g for row in gaps.values() for g in row]
    parts = ", ".join(f"{label} {mean_gap(g)}" for label, g in gaps.items())
    return (f" Mean abs(ours − paper) over the finished cells with a paper number (their number in "
            f"brackets): {parts}; all {mean_gap(every)}.")


def table1_caption(points: list[Point], preset: str) -> str:
    """What the numbers are, and the model, budget and provenance behind them (read from the runs)."""
    summaries = [s for s in (load_summary(p.run_dir) for p in points) if s is not None]

    def values(key: str) -> str:
        return ", ".join(sorted({str(s[key]) for s in summaries})) or "?"

    def labels(describe: Callable[[Config], str]) -> str:
        return "; ".join(dict.fromkeys(describe(p.cfg) for p in points)) or "?"

    digits = test_digits(values("iw_examples"))
    counts = sorted({len(s["seeds"]) for s in summaries})
    seeds = "one seed" if counts == [1] else f"mean ± std over {', '.join(map(str, counts)) or '?'} seeds"
    seeds += " (a cell without ± is one seed)" if len(counts) > 1 and 1 in counts else ""
    lrs = sorted({p.cfg.optim.lr for p in points})
    lr = ", ".join(f"{v:g}" for v in lrs)
    lr = f"chosen per estimator on the validation negative ELBO from {lr}" if len(lrs) > 1 else lr
    tau = tau_note(points)
    what = ("Table 1, VAE rows (reproduction). Test negative variational lower bound in nats (lower is "
            f"better). 'ours': importance-weighted bound with m = {values('iw_samples')} discrete samples on")
    if any(p.cfg.task == "sbn" for p in points):
        what = ("Table 1, SBN rows (reproduction). Test negative log-likelihood of a digit's lower half "
                "given its upper half in nats (lower is better). 'ours': -log (1/m) sum_i p(x_lower | h_i), "
                f"h_i ~ p(h | x_upper), m = {values('iw_samples')}, on")
    return (f"{what} {digits}, {seeds}, after {values('steps')} training steps at batch 100; model: "
            f"{labels(model_label)}; optimiser {labels(optimiser_label)}, learning rate {lr}.{tau} "
            f"'paper': Jang, Gu & Poole (2017), Table 1.{paper_distance(points)} SF = reinforce-ema "
            f"(moving-average baseline), which like DARN, MuProp and NVIL divides the whole encoder gradient "
            f"by the learning signal's running std (variance normalisation, as the paper did) unless a "
            f"column says VN off. Columns with a setting in brackets are variants of the estimator before "
            f"them, and the estimators after ST Gumbel-S. are later ones: no paper number. Every column "
            f"trains the same steps at the same batch, so the costs differ: the cost rows give the decoder "
            f"evaluations per example and the wall time per training step (all seeds of a run together, one "
            f"CPU thread per run on the CPU{compiled_note(points)}); compare per unit of compute with them. "
            f"{BUDGET_NOTES[preset]}\n\n{provenance([p.run_dir for p in points], preset)}")


def to_markdown(header: list[str], rows: list[tuple[str, list[str]]], caption: str, corner: str = "") -> str:
    """The caption, then a GitHub markdown table (``corner``: the heading of the rows' labels): a
    reader who searches a table's name lands above the table it names."""
    lines = [(f"| {corner} | " if corner else "| | ") + " | ".join(header) + " |",
             "|---" * (len(header) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return caption + "\n\n" + "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    """Escape LaTeX's special characters and typeset ±, − and – the LaTeX way."""
    return (text.replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")
            .replace(" ± ", r" $\pm$ ").replace("−", "$-$").replace("–", "--").replace(" | ", "; "))


def to_latex(header: list[str], rows: list[tuple[str, list[str]]], caption: str, corner: str = "", *,
             label: str) -> str:
    """A ``table`` environment (needs ``\\usepackage{booktabs}``), ``\\label{tab:<label>}``."""
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\caption{" + _tex(caption.replace("\n\n", " ")) + "}", r"\label{tab:" + label + "}",
             r"\begin{tabular}{l" + "c" * len(header) + "}", r"\toprule",
             " & ".join([_tex(corner), *map(_tex, header)]) + r" \\", r"\midrule"]
    for i, (label, cells) in enumerate(rows):
        if i and label.endswith(" ours"):
            lines.append(r"\midrule")
        lines.append(" & ".join([_tex(label), *map(_tex, cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def schedule_label(tau: dict) -> str:
    """``{"schedule": "exp", "rate": 1e-5, "update_every": 500}`` -> ``exp r=1e-05 N=500``."""
    short = {"tau0": "τ=", "rate": "r=", "update_every": "N="}
    return " ".join([tau["schedule"], *(f"{short[k]}{v:g}" for k, v in tau.items() if k in short)])


def tau_caption(tau: TauConfig) -> str:
    """The settings ``tau``'s schedule uses: ``constant τ=1``, ``exp τ=1 r=3e-05 N=1000, floor 0.5``."""
    if tau.schedule in ("constant", "learned"):
        return schedule_label({"schedule": tau.schedule, "tau0": tau.tau0})
    return f"{schedule_label(dataclasses.asdict(tau))}, floor {tau.floor:g}"


Table = tuple[list[str], list[tuple[str, list[str]]], str]   # header, rows (label, cells), caption


class NothingFinished(RuntimeError):
    """No run behind a table has finished: there is nothing to draw."""


def write_tables(name: str, tables: list[Table], preset: str, results_dir: Path, points: list[Point]) -> str:
    """Write ``<results_dir>/tables/<preset>/<name>.md`` and ``.tex`` (the tables one after the
    other); return the markdown. Refuses (:class:`NothingFinished`) when none of ``points`` has
    finished, so a table of dashes never replaces a drawn one."""
    if not any(load_summary(p.run_dir) for p in points):
        target = name.replace("_", "-")
        raise NothingFinished(f"{name}: none of its {len(points)} runs under preset {preset} has finished in "
                              f"{results_dir / STORE}; train them first (make {target} PRESET={preset})")
    out = results_dir / "tables" / preset
    out.mkdir(parents=True, exist_ok=True)
    markdown = "\n".join(to_markdown(*table) for table in tables)
    write_drawing(out / f"{name}.md", markdown)
    write_drawing(out / f"{name}.tex", "\n".join(to_latex(*table, label=f"{name}-{i}")
                                                  for i, table in enumerate(tables, 1)))
    return markdown


def by_model(points: list[Point]) -> dict[str, list[Point]]:
    """``points`` grouped by :func:`model_label`, in sweep order (the grid's model first)."""
    groups: dict[str, list[Point]] = {}
    for point in points:
        groups.setdefault(model_label(point.cfg), []).append(point)
    return groups


def mean_gap(gaps: list[float]) -> str:
    """``2.4 (14)``: the mean of ``gaps`` and, in brackets, how many there are."""
    return f"{sum(gaps) / len(gaps):.1f} ({len(gaps)})"


def table1(preset: str, results_dir: Path) -> str:
    """Table 1: the SBN rows (configs/sweeps/sbn.yaml), then the VAE rows, one table per model the
    preset trains (the first VAE table is the sweep's grid's model, the reproduction)."""
    points = []
    for path in (SBN_SWEEP, TABLE1_SWEEP):
        sweep = read_sweep(path)
        if preset in sweep.presets:
            points += best_points(sweep, expand(sweep, preset, results_dir))
    return write_tables("table1", [(*table1_rows(group), table1_caption(group, preset))
                                   for group in by_model(points).values()],
                        preset, results_dir, points)


# ----------------------------------------------------------------------------- table 2

# Reference values, not results of this code: Jang, Gu & Poole (2017), Table 2, semi-supervised
# classification on MNIST with 100 labels: per treatment of y (ssl.y), the test ELBO as the paper
# prints it (nats, a negative number) and the test accuracy (%).
PAPER_TABLE2 = {"marginal": (-106.8, 92.6), "gs": (-109.6, 92.4), "st-gs": (-110.7, 93.6)}
# the paper's row names
SSL_ROWS = {"marginal": "Marginalization", "gs": "Gumbel", "st-gs": "ST Gumbel-Softmax"}
SSL_BUDGET_NOTES = {
    "tiny": BUDGET_NOTES["tiny"],
    "quick": ("Preset quick: a smoke-level budget for 2 CPU cores (1,000 steps, 2 epochs, minutes per run; "
              "the bound on 200 test digits): far from converged, NOT comparable to the paper's numbers."),
    "converged": ("Preset converged: what 2 CPU cores train in about 1.6 hours: 10,000 steps (20 epochs), a "
                  "fifth of the paper's 50,000, alpha fixed at 0.1, the bound on the first 500 test digits."),
    "paper": "Preset paper: the paper's budget (50,000 steps, 5 seeds, alpha chosen on validation accuracy).",
}


def table2_rows(points: list[Point]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and one row per mode (Table 2's rows, then any other estimator of the sweep)."""
    tuned = any("ssl.alpha" in p.values for p in points)
    header = ["test −ELBO, ours", "test −ELBO, paper", "test accuracy %, ours", "test accuracy %, paper",
              "test bound −L_m, ours", "α (chosen on valid. accuracy)" if tuned else "α",
              "decoder evaluations / example / step", "ms / step"]
    def rank(point: Point) -> int:
        return list(SSL_ROWS).index(point.cfg.ssl.y) if point.cfg.ssl.y in SSL_ROWS else len(SSL_ROWS)

    rows = []
    for point in sorted(points, key=rank):
        mode = point.cfg.ssl.y
        elbo, accuracy = PAPER_TABLE2.get(mode, (None, None))
        rows.append((SSL_ROWS[mode] if mode in SSL_ROWS else display_name(mode), [
            _cell(point, "test/neg_elbo"), "–" if elbo is None else f"{-elbo:.1f}",
            _cell(point, "test/accuracy", 100.0), "–" if accuracy is None else f"{accuracy:.1f}",
            _cell(point), f"{point.cfg.ssl.alpha:g}", _cost(point, "decoder"), _cost(point, "time")]))
    return header, rows


def table2_caption(points: list[Point], preset: str) -> str:
    """What the numbers are, and the model, budget and provenance behind them (read from the runs)."""
    summaries = [s for s in (load_summary(p.run_dir) for p in points) if s is not None]

    def values(key: str) -> str:
        return ", ".join(sorted({str(s[key]) for s in summaries})) or "?"

    alphas = sorted({p.cfg.ssl.alpha for p in points})
    tuned = any("ssl.alpha" in p.values for p in points)
    alpha = ("chosen per mode on the final validation accuracy from the grid of the preset" if tuned
             else ", ".join(f"{a:g}" for a in alphas))
    labelled = ", ".join(sorted({str(p.cfg.ssl.num_labelled) for p in points}))
    classes = ", ".join(sorted({str(p.cfg.ssl.num_classes) for p in points}))
    seeds = ", ".join(sorted({str(len(s["seeds"])) for s in summaries})) or "?"
    return (f"Table 2 (reproduction): semi-supervised classification on binarized MNIST with {labelled} "
            f"labelled training digits, the M2 model (networks of vae/models/m2.py, ours: the paper gives "
            f"its networks only as a figure). Rows: the class y of the unlabelled digits summed over the "
            f"{classes} classes (Marginalization) or sampled once with Gumbel-softmax or straight-through "
            f"Gumbel-softmax. The paper's Table 2 prints the ELBO (a negative number, higher is better); we "
            f"print the negative ELBO in nats (lower is better) and the paper's numbers negated the same "
            f"way, so the two columns compare directly. Test −ELBO: y summed exactly, one z per class, on "
            f"all 10,000 test digits; accuracy: argmax q(y | x) on the test digits; bound: "
            f"importance-weighted, m = {values('iw_samples')} samples of z per class, on "
            f"{test_digits(values('iw_examples'))} (no paper number). Mean ± std over {seeds} seeds after "
            f"{values('steps')} training steps; α (weight of the labelled digits' classification loss): "
            f"{alpha}. The cost columns: decoder evaluations per unlabelled digit per step and the wall time "
            f"of a whole step (all seeds of a run together{compiled_note(points)}). "
            f"{SSL_BUDGET_NOTES[preset]}\n\n{provenance([p.run_dir for p in points], preset)}")


def table2(preset: str, results_dir: Path) -> str:
    """Table 2: the ssl sweep's modes, alpha chosen on validation accuracy where the preset has a grid."""
    sweep = read_sweep(SSL_SWEEP)
    points = best_points(sweep, expand(sweep, preset, results_dir))
    return write_tables("table2", [(*table2_rows(points), table2_caption(points, preset))], preset,
                        results_dir, points)


# ----------------------------------------------------------------------------- model question

QUESTION_COLUMNS = [("bernoulli", "gs"), ("bernoulli", "st-gs"), ("categorical", "gs"),
                    ("categorical", "st-gs")]
METRICS = {"test/iw_bound": "bound", "test/neg_elbo": "ELBO"}   # the two readings of the paper's metric


def setting_label(point: Point) -> str:
    """``linear, learned prior; SGD+mom. 0.9 lr 0.003`` (and ``; τ r 1e-05 N 500`` for a schedule
    of the paper's annealing grid): the candidate a point belongs to."""
    m, o, tau = point.cfg.model, point.cfg.optim, point.values.get("tau")
    model = "linear" if not m.hidden else "MLP " + "-".join(map(str, m.hidden))
    prior = ", learned prior" if m.prior == "learned" else ""
    optim = f"Adam lr {o.lr:g}" if o.name == "adam" else f"SGD+mom. {o.momentum:g} lr {o.lr:g}"
    schedule = f"; τ r {point.cfg.tau.rate:g} N {point.cfg.tau.update_every}" if tau else ""
    return f"{model}{prior}; {optim}{schedule}"


def _finals(point: Point) -> dict[str, float]:
    summary = load_summary(point.run_dir)
    return {key: value[0] for key in (*METRICS, "valid/neg_elbo")
            if (value := final(summary, key)) is not None}


def model_question_rows(points: list[Point]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """One row per candidate (cells ``bound / ELBO`` and the mean distance to the paper per
    metric), the paper's row, and per model the setting chosen on validation per cell (among the
    rows of that model: its optimisers and, where the model has them, the annealing grid's rows)."""
    by_setting: dict[str, dict[tuple[str, str], Point]] = {}
    for p in points:
        by_setting.setdefault(setting_label(p), {})[(p.cfg.model.kind, p.cfg.estimator.name)] = p
    paper = [PAPER_TABLE1["vae", kind][name] for kind, name in QUESTION_COLUMNS]

    def row(cells: list[Point | None]) -> list[str]:
        finals = [_finals(p) if p is not None else {} for p in cells]
        out = [" / ".join(f"{f[k]:.1f}" if k in f else "–" for k in METRICS) for f in finals]
        for key in METRICS:
            gaps = [abs(f[key] - v) for f, v in zip(finals, paper) if key in f]
            out.append(mean_gap(gaps) if gaps else "–")
        return out

    rows = [(label, row([cells.get(c) for c in QUESTION_COLUMNS])) for label, cells in by_setting.items()]
    rows.append(("paper (Table 1)", [f"{v:.1f}" for v in paper] + ["", ""]))
    models = dict.fromkeys(label.split("; ")[0] for label in by_setting)
    for model in models:        # the paper's protocol: the setting chosen per cell on validation
        chosen = []
        for column in QUESTION_COLUMNS:
            candidates = [cells[column] for label, cells in by_setting.items()
                          if label.startswith(model + "; ") and column in cells
                          and "valid/neg_elbo" in _finals(cells[column])]
            chosen.append(min(candidates, key=lambda p: _finals(p)["valid/neg_elbo"]) if candidates else None)
        rows.append((f"{model}; chosen on validation", row(chosen)))
    header = [f"{MODEL_ROWS[kind].removeprefix('VAE ')} {display_name(name)}"
              for kind, name in QUESTION_COLUMNS]
    return header + [f"mean abs(ours − paper), {name} (cells)" for name in METRICS.values()], rows


def model_question(preset: str, results_dir: Path) -> str:
    """The model-question table; see the module docstring."""
    sweep = read_sweep(SWEEP_DIR / "model_question.yaml")
    points = expand(sweep, preset, results_dir)
    header, rows = model_question_rows(points)
    summaries = [s for s in (load_summary(p.run_dir) for p in points) if s is not None]
    steps = ", ".join(sorted({str(s["steps"]) for s in summaries})) or "?"
    m = ", ".join(sorted({str(s["iw_samples"]) for s in summaries})) or "?"
    examples = ", ".join(sorted({str(s["iw_examples"]) for s in summaries})) or "?"
    caption = (f"Which model are the paper's VAE numbers from? Each cell: test bound / test negative ELBO in "
               f"nats (bound: importance-weighted, m = {m} discrete samples; ELBO: one discrete sample per "
               f"digit; both on {examples} test digits), one seed, after {steps} training steps, tau = "
               f"max(0.5, exp(-r t)) updated every N steps, r = 3e-5 and N = 1000 except in the rows that "
               f"name their r and N (the paper's grid). 'mean abs(ours − paper)': over the finished cells of "
               f"the row (their number in brackets), against the paper's Table 1 (GS, ST-GS; Bernoulli, "
               f"categorical). The last rows follow the paper's protocol: per cell, of the rows of that "
               f"model (its optimisers and, for the linear model, the annealing grid), the one with the "
               f"lowest validation negative ELBO. "
               f"{BUDGET_NOTES.get(preset, '')}\n\n{provenance([p.run_dir for p in points], preset)}")
    return write_tables("model_question", [(header, rows, caption)], preset, results_dir, points)


# ----------------------------------------------------------------------------- the 2020 benchmark

MODERN_SWEEP = SWEEP_DIR / "modern.yaml"
PAPERS_STEPS = 1_000_000     # the 2020 benchmark papers' budget (DisARM, ARMS, RODEO, double CV)
# Published numbers beside ours: (model, data set) -> estimator -> (train -ELBO, test bound, source).
# Empty until they are transcribed from the papers' tables (results/README.md "The 2020 benchmark").
PUBLISHED_2020: dict[tuple[str, str], dict[str, tuple[float | None, float | None, str]]] = {}


def benchmark_model(cfg: Config) -> str:
    """The benchmark's model name: ``linear`` (affine maps) or ``nonlinear`` (hidden layers)."""
    return "nonlinear" if cfg.model.hidden else "linear"


def tau_note(points: list[Point]) -> str:
    """" τ (where an estimator reads it): <schedule> for <estimators>; ..." over ``points``, from
    each estimator's ``reads_tau`` declaration; "" where none reads it."""
    by_schedule: dict[str, list[str]] = {}
    for p in points:
        cls = ESTIMATORS.get(p.cfg.estimator.name)
        if cls is not None and cls.reads_tau:
            names = by_schedule.setdefault(tau_caption(p.cfg.tau), [])
            names += ([] if display_name(p.cfg.estimator.name) in names
                      else [display_name(p.cfg.estimator.name)])
    if not by_schedule:
        return ""
    tau = " τ (where an estimator reads it): " + "; ".join(f"{schedule} for {', '.join(names)}"
                                                       for schedule, names in by_schedule.items())
    return tau if tau.endswith(".") else tau + "."


def grouped_by(points: list[Point], cell: Callable[[Point], Any]) -> dict[Any, list[Point]]:
    """``points`` by ``cell(point)``, the cells in sweep order; in each, estimators in column order."""
    cells: dict[Any, list[Point]] = {}
    for point in points:
        cells.setdefault(cell(point), []).append(point)
    return {key: sorted(group, key=lambda p: column_order(p.cfg.estimator.name))
            for key, group in cells.items()}


def with_provenance(tables: list[Table], points: list[Point], preset: str) -> list[Table]:
    """``tables`` with the provenance line of ``points`` after the last one's caption."""
    header, rows, caption = tables[-1]
    return [*tables[:-1], (header, rows, f"{caption}\n\n{provenance([p.run_dir for p in points], preset)}")]


def published_note(published: dict, section: str) -> str:
    """A benchmark caption's word on its published column: whether any number is transcribed, and
    where results/README.md says how the papers' protocol differs."""
    where = "none transcribed yet" if not published else "sources in results/README.md"
    return f"({where}); their protocol differs from ours as results/README.md \"{section}\" says"


def titled_published(point: Point, published: dict[str, Any]) -> tuple[str, Any]:
    """A benchmark row's title and the published numbers for it (by estimator name; none for a
    variant of an estimator, which no paper ran)."""
    name, variant = column(point)
    return column_title(name, variant), (published.get(name) if not variant else None)


def modern_cells(points: list[Point]) -> dict[tuple[str, str], list[Point]]:
    """``points`` by cell, (model, data set), in sweep order; in each, estimators in column order."""
    return grouped_by(points, lambda p: (benchmark_model(p.cfg), p.cfg.data.name))


def modern_table(cell: tuple[str, str], points: list[Point], preset: str) -> Table:
    """One cell of the benchmark: a row per estimator, our two numbers beside the published ones."""
    published = PUBLISHED_2020.get(cell, {})
    header = ["train −ELBO", "test −L100", "published train −ELBO", "published test −L100",
              "decoder evaluations / example / step", "ms / step"]
    rows = []
    for point in points:
        title, theirs = titled_published(point, published)
        rows.append((title,
                     [_cell(point, "train/neg_elbo"), _cell(point), *(("–", "–") if theirs is None else
                      (f"{v:.1f}" if v is not None else "–" for v in theirs[:2])),
                      _cost(point, "decoder"), _cost(point, "ms")]))
    summaries = [s for s in (load_summary(p.run_dir) for p in points) if s is not None]
    steps = sorted({s["steps"] for s in summaries}) or [points[0].cfg.steps]
    m = points[0].cfg.eval.iw_samples
    test = ", ".join(sorted({f"{s['iw_examples']:,}" for s in summaries})) or "?"
    model, dataset = cell
    budget = ", ".join(f"{n:,}" for n in steps)
    caption = (f"The 2020 benchmark, {model} model, {DATASETS[dataset].title}: 200 Bernoulli latents, "
               f"dynamic binarization, batch {points[0].cfg.data.batch_size}, Adam "
               f"{points[0].cfg.optim.lr:g} and the learned prior by SGD at "
               f"{points[0].cfg.optim.prior_lr:g}, after {budget} steps "
               f"({', '.join(f'{n / PAPERS_STEPS:.0%}' for n in steps)} of the papers' {PAPERS_STEPS:,}). "
               f"train −ELBO: one sample per image on the training split at the last step (fresh "
               f"binarization); test −L100: the m = {m} importance-weighted bound on {test} test images (one "
               f"fixed binarization); nats, mean ± std over seeds, lower is better.{tau_note(points)} "
               f"Published: the papers' numbers for the same cell "
               f"{published_note(published, 'The 2020 benchmark')}, and their "
               f"budget is {PAPERS_STEPS:,} steps.{compiled_note(points)} {BUDGET_NOTES.get(preset, '')}")
    return header, rows, caption


def modern(preset: str, results_dir: Path) -> str:
    """The 2020 benchmark (configs/sweeps/modern.yaml): one table per cell, then the provenance."""
    points = expand(read_sweep(MODERN_SWEEP), preset, results_dir)
    tables = [modern_table(cell, group, preset) for cell, group in modern_cells(points).items()]
    return write_tables("modern", with_provenance(tables, points, preset), preset, results_dir, points)


# ----------------------------------------------------------------------------- the categorical benchmark

CATEGORICAL_SWEEP = SWEEP_DIR / "categorical.yaml"
SCRIPTS_EPOCHS = 160         # the ReinMax repository's mnist_vae scripts' budget, at batch 100
# Published numbers beside ours: (K, N) -> estimator -> (train -ELBO, source). Empty until they are
# transcribed from the papers' tables (results/README.md "The categorical benchmark").
PUBLISHED_CATEGORICAL: dict[tuple[int, int], dict[str, tuple[float, str]]] = {}


def categorical_cells(points: list[Point]) -> dict[tuple[int, int], list[Point]]:
    """``points`` by latent shape (K categories, N latents), in sweep order; in each, estimators in
    column order."""
    return grouped_by(points, lambda p: (p.cfg.model.num_classes, p.cfg.model.num_latents))


def categorical_table(cell: tuple[int, int], points: list[Point], preset: str) -> Table:
    """One latent shape of the benchmark: a row per estimator, the training -ELBO (the benchmark's
    number) beside the published one, the test -ELBO and bound, the cost."""
    published = PUBLISHED_CATEGORICAL.get(cell, {})
    header = ["train −ELBO", "published train −ELBO", "test −ELBO", "test −L100",
              "decoder evaluations / example / step", "ms / step"]
    rows = []
    for point in points:
        title, theirs = titled_published(point, published)
        rows.append((title,
                     [_cell(point, "train/neg_elbo"), "–" if theirs is None else f"{theirs[0]:.1f}",
                      _cell(point, "test/neg_elbo"), _cell(point), _cost(point, "decoder"),
                      _cost(point, "ms")]))
    cfg = points[0].cfg
    summaries = [s for s in (load_summary(p.run_dir) for p in points) if s is not None]
    steps = sorted({s["steps"] for s in summaries}) or [cfg.steps]
    train_size = DATASETS[cfg.data.name].split_sizes["train"]
    per_epoch = train_size // cfg.data.batch_size
    test = ", ".join(sorted({f"{s['iw_examples']:,}" for s in summaries})) or "?"
    epochs = ", ".join(f"{n / per_epoch:g}" for n in steps)
    classes, latents = cell
    rates = sorted({p.cfg.optim.lr for p in points})
    rate = (f"learning rate {rates[0]:g}" if len(rates) == 1 else
            f"learning rates {', '.join(f'{r:g}' for r in rates)} (chosen per estimator on validation)")
    caption = (f"The categorical benchmark, {classes} x {latents} (K = {classes} categories, N = {latents} "
               f"latents): grey-level {DATASETS[cfg.data.name].title} with a Bernoulli likelihood on the "
               f"intensities, {model_label(cfg)}, analytic KL, batch {cfg.data.batch_size}, "
               f"{optimiser_label(cfg)} at {rate}, after {', '.join(f'{n:,}' for n in steps)} "
               f"steps ({epochs} epochs of the {train_size:,} training images; the "
               f"ReinMax scripts train {SCRIPTS_EPOCHS} of 60,000). train −ELBO: one sample per image on "
               f"the training split at the last step (the benchmark's number; the scripts average the last "
               f"epoch's batches while training); test −ELBO and −L100 (the m = {cfg.eval.iw_samples} "
               f"importance-weighted bound) on {test} test images; nats, mean ± std over seeds, lower is "
               f"better.{tau_note(points)} Published: the papers' train −ELBO for the same shape "
               f"{published_note(published, 'The categorical benchmark')}."
               f"{compiled_note(points)} {BUDGET_NOTES.get(preset, '')}")
    return header, rows, caption


def categorical(preset: str, results_dir: Path) -> str:
    """The categorical benchmark (configs/sweeps/categorical.yaml): one table per latent shape (the
    learning rate and tau chosen per estimator on validation where the preset grids them), then the
    provenance."""
    sweep = read_sweep(CATEGORICAL_SWEEP)
    points = best_points(sweep, expand(sweep, preset, results_dir))
    tables = [categorical_table(cell, group, preset) for cell, group in categorical_cells(points).items()]
    return write_tables("categorical", with_provenance(tables, points, preset), preset, results_dir, points)


TABLES = {"table1": table1, "table2": table2, "model-question": model_question, "modern": modern,
          "categorical": categorical}
