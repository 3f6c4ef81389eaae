"""Figures of the reproduction from the local results store:
what ``python -m experiments.figures NAME`` draws.

* ``fig1``: the Gumbel-softmax distribution at tau = 0.1, 0.5, 1, 10 (the paper's Figure 1), no
  training;
* ``fig3``: test NLL of the SBN (Section 4.1) against training steps for every estimator, Bernoulli
  and categorical, mean and spread over seeds (the paper's Figure 3);
* ``fig4``: test negative ELBO against training steps for every estimator, Bernoulli and
  categorical VAE, mean and spread over seeds (the paper's Figure 4);
* ``tau-ablation``: hard (ST-GS) against soft (GS) samples under each temperature schedule: the
  final test bound, and the training curves with the schedules themselves;
* ``gradvar``: encoder-gradient variance along training per estimator, and bias / variance
  against tau on an enumerable problem (exact gradients, no training);
* ``samples``: reconstructions, samples from the prior and a latent walk through the classes,
  decoded by a finished Gumbel-softmax run;
* ``fig5``: semi-supervised classification (Section 4.3): (a) training steps/s of the summed
  (``marginal``) and the Gumbel-softmax class against the number of classes, and their ratio, one
  line per device from every ``<results>/bench/<preset>/ssl_speed_<device>.json`` (``python -m
  experiments.bench --ssl-classes``, which ``make fig5`` runs first; ``make gpu-check`` writes a
  GPU's); (b) analogies: the style z of a few test
  digits, decoded under every class, by a finished ``gs`` run of the ssl sweep.

Each figure is written as PNG and PDF under ``<results>/figures/<preset>/`` with a footer naming the
preset, seeds, steps, device and commits behind it. The training figures read the runs of their
sweep file (``configs/sweeps/``) for the preset; run the sweep first (``make <name>`` does).
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import PIL.Image
import torch

from vae.config import Config, config_from_dict
from vae.data.images import DATASETS, BinarizedImages
from vae.estimators import ESTIMATORS, EstimatorConfig, build_estimator, column_order, display_name
from vae.estimators.sampling import sample_one_hot
from vae.models import m2
from vae.models.discrete_vae import DiscreteVAE
from vae.numerics.gumbel import gumbel_softmax
from vae.numerics.replicas import ReplicaGenerator
from vae.reporting.tables import (BUDGET_NOTES, MODEL_ROWS, MODERN_SWEEP, PAPER_TABLE1, PAPERS_STEPS, ROWS,
                                  SSL_BUDGET_NOTES, SWEEP_DIR, by_model, column, column_title, modern_cells,
                                  schedule_label, test_digits)
from vae.store.records import DRAWN, curve, final, git_commit, provenance
from vae.store.run_dir import CHECKPOINT, atomic_write, load_summary
from vae.sweeps.definition import EQUAL_COST, Point, SweepError, best_points, expand, read_sweep
from vae.training.diagnostics import gradient_errors, make_toy_problem
from vae.training.trainer import torch_threads, train

plt.switch_backend("Agg")   # files only, never a window

# solid lines; the later estimators dashed, variants dotted
PAPER_ESTIMATORS = tuple(PAPER_TABLE1["vae", "categorical"])
COLOURS = dict(zip(sorted(ESTIMATORS, key=column_order),                  # 40 distinct; a plugin's: grey
                   plt.get_cmap("tab20").colors + plt.get_cmap("tab20b").colors))
FIG1_TAUS = (0.1, 0.5, 1.0, 10.0)
FIG1_PROBS = (0.05, 0.1, 0.3, 0.15, 0.05, 0.25, 0.1)   # one categorical distribution (K = 7)
TOY = {"kind": "categorical", "num_latents": 3, "num_classes": 4, "batch": 4, "data_dim": 20, "hidden": 16}
# where every estimator applies
TOY_BERNOULLI = {**TOY, "kind": "bernoulli", "num_latents": 6, "num_classes": 2}
TOY_TAUS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# gradient draws per point of (b, c), per preset
TOY_DRAWS = {"tiny": 50, "quick": 2000, "converged": 10_000, "paper": 10_000}
SAMPLES_ESTIMATOR = "gs"   # the run whose decoder `samples` shows (the paper's best estimator)
ANALOGY_DIGITS = 8         # rows of fig5(b): test digits whose style is kept
PAPER_SPEEDUP = {10: 2.0, 100: 9.9}
# nats above the best schedule that the tau ablation's y axis shows
# # Jang, Gu & Poole (2017), Section 4.3: gs / marginal steps/s, GTX Titan X
TAU_SPAN = 6.0



def _rendered(fig: plt.Figure, ext: str, commit: str) -> bytes:
    """The figure as ``ext`` bytes, with no date in them (the PDF's creation date left out) and the
    drawing commit in their metadata, so that the same drawing gives the same bytes."""
    buffer = io.BytesIO()
    metadata = ({"Drawn": commit} if ext == "png"
                else {"CreationDate": None, "Subject": f"drawn at commit {commit}"})
    fig.savefig(buffer, format=ext, dpi=150, metadata=metadata)
    return buffer.getvalue()


def _drawn_commit(path: Path) -> str | None:
    """The drawing commit a PNG written by :func:`save` records, or None."""
    try:
        with PIL.Image.open(path) as image:
            return image.text.get("Drawn")
    except (OSError, ValueError):
        return None


def save(fig: plt.Figure, out_dir: Path, name: str, footer: str) -> list[Path]:
    """Lay out ``fig`` above its footer (wrapped to the figure's width) and write ``name``.png, .pdf.

    Byte for byte the same drawing gives the same files, and a redraw that differs from the files
    there only in the footer's ``drawn at commit`` leaves them as they are (the footer keeps the
    commit that drew them): redrawing a committed figure at a new commit dirties no tree."""
    width = int(fig.get_figwidth() * 19)                     # characters per line at 6.5 pt
    lines = [line for part in footer.split("\n") for line in textwrap.wrap(part, width)]
    text = fig.text(0.5, 0.005, "\n".join(lines), ha="center", va="bottom", fontsize=6.5, color="0.3")
    fig.tight_layout(rect=(0, (len(lines) * 9.5 + 6) / (fig.get_figheight() * 72), 1, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.{ext}" for ext in ("png", "pdf")]
    match = DRAWN.search(footer)
    commit = match.group(1) if match else ""
    before = _drawn_commit(paths[0]) if match and all(p.exists() for p in paths) else None
    if before is not None and before != commit:                 # the same drawing at the files' commit?
        text.set_text(text.get_text().replace(f"drawn at commit {commit}", f"drawn at commit {before}"))
        if all(_rendered(fig, p.suffix[1:], before) == p.read_bytes() for p in paths):
            plt.close(fig)
            return paths
        text.set_text(text.get_text().replace(f"drawn at commit {before}", f"drawn at commit {commit}"))
    for path in paths:
        data = _rendered(fig, path.suffix[1:], commit)
        atomic_write(path, lambda fh: fh.write(data))
    plt.close(fig)
    return paths


def sweep_points(name: str, preset: str, results_dir: Path) -> list[Point]:
    """The points of ``configs/sweeps/<name>.yaml`` for ``preset`` (one per learning-rate set)."""
    sweep = read_sweep(SWEEP_DIR / f"{name}.yaml")
    return best_points(sweep, expand(sweep, preset, results_dir))


def finished(points: list[Point]) -> list[Point]:
    """The points whose runs have finished: the only ones a figure draws, so that a figure from the
    committed records (which hold finished runs only) is the same on every clone."""
    return [p for p in points if load_summary(p.run_dir) is not None]


def panel_runs(points: list[Point], panel: str, results_dir: Path, partial: bool) -> list[Point]:
    """The finished runs a panel draws (:func:`finished`); none at all refuses (``SweepError``,
    one line naming the store and what is missing), unless ``partial``: an empty panel then."""
    done = finished(points)
    if not done and not partial:
        raise SweepError(f"{panel}: none of its {len(points)} runs has finished in {results_dir} "
                         f"(e.g. {points[0].run_dir.name if points else 'none expected'}); train them first "
                         "(the make target or experiments.sweep), or pass --partial to draw what there is")
    return done


def footer(points: list[Point], preset: str, extra: str = "", notes: dict[str, str] = BUDGET_NOTES) -> str:
    """``extra``, what the preset's budget means (``notes``), then the provenance line of ``points``;
    first, if some of them have not finished, that the figure is partial."""
    done = len(finished(points))
    missing = f"PARTIAL: {done} of {len(points)} runs finished." if done < len(points) else ""
    note = " ".join(filter(None, [missing, extra, notes[preset]]))
    return note + "\n" + provenance([p.run_dir for p in points], preset)


def band(ax: plt.Axes, run_dir: Path, key: str, **style) -> None:
    """Mean over seeds of ``key`` along training, with a +- one standard deviation band."""
    c = curve(run_dir, key)
    if not c.steps:
        return
    ax.plot(c.steps, c.mean, **style)
    ax.fill_between(c.steps, [m - s for m, s in zip(c.mean, c.std)], [m + s for m, s in zip(c.mean, c.std)],
                    color=style.get("color"), alpha=0.15, linewidth=0)


# ----------------------------------------------------------------------------- figure 1

def fig1(preset: str, results_dir: Path, partial: bool = False) -> list[Path]:
    """Expected Gumbel-softmax sample and single samples at each tau, for one distribution."""
    probs = torch.tensor(FIG1_PROBS)
    logits = probs.log().expand(10_000, -1)
    fig, axes = plt.subplots(2, len(FIG1_TAUS), figsize=(12, 5.2), sharex=True)
    k = torch.arange(1, len(FIG1_PROBS) + 1)
    for col, tau in enumerate(FIG1_TAUS):
        samples = gumbel_softmax(logits, tau, generator=ReplicaGenerator([col]))          # [10000, K]
        top, bottom = axes[0, col], axes[1, col]
        top.bar(k, samples.mean(0), color="tab:blue", label="E[y] (10,000 samples)")
        top.plot(k, probs, "k_", markersize=18, mew=2, label="category probabilities")
        top.set_title(f"τ = {tau:g}")
        top.set_ylim(0, max(FIG1_PROBS) * 1.3)
        for i in range(3):
            bottom.bar(k + (i - 1) * 0.27, samples[i], width=0.27, label=f"sample {i + 1}")
        bottom.set_ylim(0, 1.25)
        bottom.set_xticks(k)
        bottom.set_xlabel("category")
    axes[0, 0].set_ylabel("expected sample")
    axes[1, 0].set_ylabel("single samples")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[1, 0].legend(fontsize=7, loc="upper center", ncol=3)
    fig.suptitle("Figure 1 (reproduction): Gumbel-softmax samples y = softmax((log π + g) / τ) of one "
                 "categorical distribution:\nτ → 0 gives one-hot samples whose mean is π; large τ gives "
                 "near-uniform samples")
    return save(fig, results_dir / "figures" / preset, "fig1_gumbel_softmax",
                f"No training: 10,000 samples per τ drawn with vae.numerics.gumbel on cpu, seeds 0-3 | "
                f"drawn at commit {git_commit()}")


# ----------------------------------------------------------------------------- figure 4

def model_slug(cfg: Config) -> str:
    """``affine`` or ``mlp-512-256`` (and ``-learned-prior``): a VAE's model in a file name."""
    m = cfg.model
    return (("-".join(["mlp", *map(str, m.hidden)]) if m.hidden else "affine")
            + ("-learned-prior" if m.prior == "learned" else ""))


def fig4(preset: str, results_dir: Path, partial: bool = False) -> list[Path]:
    """Test negative ELBO along training per estimator: (a) Bernoulli, (b) categorical VAE. One
    figure per model of the sweep, as Table 1 has one table per model: ``fig4_vae_curves`` for the
    sweep's grid's model (the reproduction, drawn even before a run ends, as every figure),
    ``fig4_vae_curves_<model>`` for any other model with a finished run."""
    paths = []
    for number, (model, points) in enumerate(by_model(sweep_points("table1", preset, results_dir)).items()):
        if number == 0 or finished(points):
            name = "fig4_vae_curves" + ("" if number == 0 else f"_{model_slug(points[0].cfg)}")
            paths += vae_curves(points, model, preset, results_dir, name, partial)
    return paths


def vae_curves(points: list[Point], model: str, preset: str, results_dir: Path, name: str,
               partial: bool = False) -> list[Path]:
    """Figure 4 for the runs of one model: a panel per latent kind, a curve per finished run."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
    for ax, (kind, title), letter in zip(axes, MODEL_ROWS.items(), "ab"):
        lows, highs = [], []
        panel = [p for p in points if p.cfg.model.kind == kind]
        for point in panel_runs(panel, f"{name} ({title}, {model})", results_dir, partial):
            estimator, variant = column(point)
            band(ax, point.run_dir, "test/neg_elbo", color=COLOURS.get(estimator, "0.5"),
                 label=column_title(estimator, variant),
                 linestyle=":" if variant else "-" if estimator in PAPER_ESTIMATORS else "--", marker=".")
            if EQUAL_COST in point.values:   # a few steps at another's cost: drawn, not scaled to
                continue
            c = curve(point.run_dir, "test/neg_elbo")
            lows += c.mean
            highs += c.mean[len(c.mean) // 2:]
        if lows:   # the early, very high values of slow estimators would flatten every curve
            ax.set_ylim(min(lows) - 2, max(highs) + 0.3 * (max(highs) - min(lows)) + 2)
        ax.set_title(f"({letter}) {title}")
        ax.set_xlabel("training step")
        ax.set_ylabel("test negative ELBO (nats, one discrete sample)")
        ax.grid(alpha=0.3)
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}   # both panels'
    axes[1].legend(handles.values(), handles.keys(), fontsize=7, ncol=1 + len(handles) // 15,
                   loc="upper left", bbox_to_anchor=(1.02, 1),
                   title="solid: the paper's; dashed: later;\ndotted: a variant, or at another's cost")
    fig.suptitle(f"Figure 4 (reproduction): test negative ELBO during training, "
                 f"mean ± std over seeds\n{model}")
    return save(fig, results_dir / "figures" / preset, name, footer(points, preset))


def fig3(preset: str, results_dir: Path, partial: bool = False) -> list[Path]:
    """Test NLL along training per estimator: (a) Bernoulli, (b) categorical SBN."""
    points = sweep_points("sbn", preset, results_dir)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
    m = sorted({p.cfg.eval.curve_samples for p in points})
    digits = test_digits(", ".join(sorted({str(p.cfg.eval.curve_examples or 10_000) for p in points})))
    for ax, kind, letter in zip(axes, ("bernoulli", "categorical"), "ab"):
        scaled = []
        panel = [p for p in points if p.cfg.model.kind == kind]
        for point in panel_runs(panel, f"fig3 ({ROWS['sbn', kind]})", results_dir, partial):
            name, variant = column(point)
            band(ax, point.run_dir, "test/nll", color=COLOURS.get(name, "0.5"),
                 label=column_title(name, variant),
                 linestyle=":" if variant else "-" if name in PAPER_ESTIMATORS else "--", marker=".")
            if EQUAL_COST not in point.values:   # a few steps at another's cost: drawn, not scaled to
                scaled += curve(point.run_dir, "test/nll").mean
        if scaled:
            ax.set_ylim(min(scaled) - 2, max(scaled) + 2)
        ax.set_title(f"({letter}) {ROWS['sbn', kind]}")
        ax.set_xlabel("training step")
        ax.set_ylabel(f"test NLL of the lower half (nats, m = {', '.join(map(str, m))};\n{digits})")
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    axes[1].legend(handles, labels, fontsize=7, ncol=1 + len(labels) // 15, loc="upper left",
                   bbox_to_anchor=(1.02, 1),
                   title="solid: the paper's; dashed: later;\ndotted: a variant, or at another's cost")
    fig.suptitle("Figure 3 (reproduction): structured output prediction, test negative log-likelihood during "
                 "training, mean ± std over seeds")
    return save(fig, results_dir / "figures" / preset, "fig3_sbn_curves", footer(points, preset))


# ----------------------------------------------------------------------------- tau ablation

def _schedule_colours(labels: list[str]) -> dict[str, tuple]:
    """Shades of one colour map per schedule family, so families read as groups."""
    families = {"constant": "Blues", "exp": "Oranges", "linear": "Greens", "cosine": "Purples",
                "learned": "Reds"}
    colours = {}
    for family, cmap in families.items():
        members = [label for label in labels if label.split()[0] == family]
        shades = ([0.7] if len(members) == 1
                  else [0.4 + 0.55 * i / (len(members) - 1) for i in range(len(members))])
        colours.update({label: plt.get_cmap(cmap)(shade) for label, shade in zip(members, shades)})
    return colours


def _reached(points: list[Point]) -> str:
    """The budget, and where the annealed schedules end (mean over seeds): with the paper's r, a
    short run hardly anneals, and the figure says so."""
    budget = ", ".join(sorted({f"{p.cfg.steps:,} steps at batch {p.cfg.data.batch_size}" for p in points}))
    ends = {}
    for p in finished(points):
        schedule = p.values["tau"]["schedule"]
        if schedule != "constant":
            mode = f" ({display_name(p.cfg.estimator.name)})" if schedule == "learned" else ""
            ends[schedule_label(p.values["tau"]) + mode] = curve(p.run_dir, "train/tau").mean[-1:]
    reached = ", ".join(f"{k} {v[0]:.2f}" for k, v in ends.items() if v)
    return f"Budget: {budget}." + (f" τ at the last step: {reached}." if reached else "")


def tau_ablation(preset: str, results_dir: Path, partial: bool = False) -> list[Path]:
    """Final test bound per schedule and mode; test negative ELBO and tau along training."""
    points = sweep_points("tau_ablation", preset, results_dir)
    relaxed = [p for p in points if "tau" in p.values]
    references = [p for p in points if "tau" not in p.values]
    labels = list(dict.fromkeys(schedule_label(p.values["tau"]) for p in relaxed))
    colours = _schedule_colours(labels)
    modes = {"st-gs": ("hard (ST-GS)", "o"), "gs": ("soft (GS)", "s")}
    bound_key = "test/iw_bound"
    m = sorted({p.cfg.eval.iw_samples for p in points})
    # before either is drawn
    by_mode = {name: panel_runs([p for p in relaxed if p.cfg.estimator.name == name],
                                f"tau-ablation ({mode})",
                                results_dir, partial) for name, (mode, _) in modes.items()}

    fig, ax = plt.subplots(figsize=(12, 5.2))
    drawn = {name: [(labels.index(schedule_label(p.values["tau"])) + (j - 0.5) * 0.25, *value)
                    for p in relaxed if p.cfg.estimator.name == name
                    if (value := final(load_summary(p.run_dir), bound_key)) is not None]
             for j, name in enumerate(modes)}
    lowest = min((y for points_ in drawn.values() for _, y, _ in points_), default=0.0)
    top = lowest + TAU_SPAN          # the sub-nat differences stay visible; beyond, a triangle on the edge
    for name, (mode, marker) in modes.items():
        inside = [(x, y, e) for x, y, e in drawn[name] if y <= top]
        ax.errorbar([x for x, _, _ in inside], [y for _, y, _ in inside], yerr=[e for _, _, e in inside],
                    fmt=marker, capsize=3, label=mode, markersize=7)
        for x, y, _ in (point for point in drawn[name] if point[1] > top):
            ax.plot(x, top, "^", color=ax.lines[-1].get_color(), markersize=7, clip_on=False)
            ax.annotate(f"{y:.1f}", (x, top), xytext=(0, -12), textcoords="offset points", ha="center",
                        fontsize=7)
    for p, style in zip(references, ("--", "-.", ":")):
        value = final(load_summary(p.run_dir), bound_key)
        if value is not None:
            ax.axhline(value[0], color="0.35", linestyle=style,
                       label=f"{display_name(p.cfg.estimator.name)} (no τ): {value[0]:.1f}")
    ax.set_ylim(lowest - 0.5, top)
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right")
    ax.plot([], [], "^", color="0.4", label="off the axis: its value beneath")
    ax.set_ylabel(f"final test bound -L_m, m = {', '.join(map(str, m))} (nats)")
    ax.set_xlabel("temperature schedule")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Temperature ablation, categorical VAE: final test bound per schedule, hard vs soft "
                 "samples (mean ± std over seeds)")
    note = _reached(relaxed)
    paths = save(fig, results_dir / "figures" / preset, "tau_ablation_final", footer(points, preset, note))

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), sharex=True)
    for col, (name, (mode, _)) in enumerate(modes.items()):
        top, bottom = axes[0, col], axes[1, col]
        for p in by_mode[name]:
            label = schedule_label(p.values["tau"])
            band(top, p.run_dir, "test/neg_elbo", color=colours[label], label=label)
            band(bottom, p.run_dir, "train/tau", color=colours[label], label=label)
        for p, style in zip(finished(references), ("--", "-.", ":")):
            band(top, p.run_dir, "test/neg_elbo", color="0.35", linestyle=style,
                 label=display_name(p.cfg.estimator.name))
        top.set_title(f"{mode}: test negative ELBO")
        top.set_ylabel("test negative ELBO (nats, one discrete sample)")
        top.grid(alpha=0.3)
        bottom.set_title(f"{mode}: temperature τ")
        bottom.set_yscale("log")
        bottom.set_ylabel("τ")
        bottom.set_xlabel("training step")
        bottom.grid(alpha=0.3)
    handles, labels = axes[0, 1].get_legend_handles_labels()   # in the room below tau = 0.5
    axes[1, 1].legend(handles, labels, fontsize=7, ncol=3, loc="center", bbox_to_anchor=(0.5, 0.3))
    fig.suptitle("Temperature ablation, categorical VAE: training curves per schedule "
                 "(mean ± std over seeds)")
    return paths + save(fig, results_dir / "figures" / preset, "tau_ablation_curves",
                        footer(points, preset, note))


# ----------------------------------------------------------------------------- gradient variance

def toy_errors(name: str, tau: float, num_draws: int, toy: dict = TOY) -> dict[str, float]:
    """Encoder bias and variance of ``name`` at ``tau`` on an enumerable toy problem."""
    model, x = make_toy_problem(toy["kind"], toy["num_latents"], toy["num_classes"], batch=toy["batch"],
                                data_dim=toy["data_dim"], hidden=toy["hidden"])
    estimator = build_estimator(EstimatorConfig(name=name),
                                latent_shape=(toy["num_latents"], toy["num_classes"]),
                                context_dim=toy["data_dim"])
    errors = gradient_errors(model, estimator, x, tau=tau, num_draws=num_draws, seed=0)
    return {"bias": float(errors["encoder/bias"]), "variance": float(errors["encoder/variance"])}


def every_estimator_panel(ax: plt.Axes, draws: int) -> None:
    """(d): bias and variance of every estimator at tau = 1 on the enumerable Bernoulli toy VAE."""
    names = [n for n in sorted(ESTIMATORS, key=column_order) if ESTIMATORS[n].family != "enumeration"]
    errors = [toy_errors(name, 1.0, draws, TOY_BERNOULLI) for name in names]
    x = torch.arange(len(names)).float()
    ax.bar(x - 0.2, [e["bias"] for e in errors], width=0.4, label="bias ||E[g] - ∇||", color="tab:red")
    ax.bar(x + 0.2, [e["variance"] for e in errors], width=0.4, label="variance Σ Var(g)", color="tab:blue")
    ax.axhline((max(e["variance"] for e in errors) / draws) ** 0.5, color="0.5", linestyle=":", linewidth=1,
               label="noise floor of a bias, largest variance")
    ax.set_xticks(x.tolist(), [display_name(n) for n in names], rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("encoder gradient (τ = 1)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"(d) every estimator, τ = 1 (ReinMax's floor)\n(enumerable toy VAE, "
                 f"{TOY_BERNOULLI['num_latents']} Bernoulli latents, {draws} draws)")


def gradvar(preset: str, results_dir: Path, partial: bool = False) -> list[Path]:
    """(a) encoder-gradient variance along training; (b, c) bias and variance against tau; (d)
    bias and variance of every estimator."""
    points = sweep_points("gradvar", preset, results_dir)
    fig, axes = plt.subplots(1, 4, figsize=(22, 5.6), gridspec_kw={"width_ratios": [1.4, 1, 1, 1.3]})
    for p in panel_runs(points, "gradvar (a)", results_dir, partial):
        name = p.cfg.estimator.name
        band(axes[0], p.run_dir, "train/encoder_grad_var", color=COLOURS.get(name, "0.5"),
             label=column_title(*column(p)),
              linestyle="-" if name in PAPER_ESTIMATORS else "--", marker=".")
    run_draws = sorted({p.cfg.gradvar_draws for p in points})
    axes[0].set_yscale("log")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("sum of encoder-gradient variances")
    axes[0].set_title(f"(a) categorical VAE: gradient variance along training\n"
                      f"({', '.join(map(str, run_draws))} draws on a fixed validation batch)")
    axes[0].legend(fontsize=7, ncol=2)

    draws = TOY_DRAWS[preset]
    for name, style in (("gs", "o-"), ("st-gs", "s-")):
        errors = [toy_errors(name, tau, draws) for tau in TOY_TAUS]
        axes[1].plot(TOY_TAUS, [e["bias"] for e in errors], style, color=COLOURS.get(name, "0.5"),
                     label=display_name(name))
        axes[2].plot(TOY_TAUS, [e["variance"] for e in errors], style, color=COLOURS.get(name, "0.5"),
                     label=display_name(name))
    for name, style in (("st", "--"), ("reinforce", ":"), ("rloo", "-.")):
        errors = toy_errors(name, 1.0, draws)
        label = {"st": "ST (no τ)", "reinforce": "REINFORCE, no baseline", "rloo": "RLOO (k = 4)"}[name]
        if name == "st":
            axes[1].axhline(errors["bias"], color="0.35", linestyle=style, label=label)
        axes[2].axhline(errors["variance"], color="0.35", linestyle=style, label=label)
    noise = f"Monte Carlo noise of the bias of an unbiased estimator: about sqrt(variance / {draws})"
    for ax, what in ((axes[1], "bias ||E[g] - ∇||"), (axes[2], "variance Σ Var(g)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("temperature τ")
        ax.set_ylabel(f"encoder gradient {what}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    shape = f"{TOY['num_latents']} x {TOY['num_classes']}"
    axes[1].set_title(f"(b) bias against the exact gradient\n(enumerable toy VAE, {shape} latents)")
    axes[2].set_title(f"(c) variance\n(same toy problem, {draws} draws per point)")
    every_estimator_panel(axes[3], draws)
    fig.suptitle("Gradient estimators: variance during training, the bias / variance trade-off of τ, and "
                 "every estimator's bias and variance")
    note = (f"(a): each estimator is measured at the parameters it trained to, so the curves mix estimator "
            f"noise and model state; the gradient is the training loss's before variance normalisation (SF, "
            f"NVIL, DARN and MuProp train on it divided by the signal's running std s), so every curve is "
            f"the estimator's own variance. (b, c, d): no training; {noise}; "
            f"an unbiased estimator's bar of bias is that noise.")
    return save(fig, results_dir / "figures" / preset, "gradvar", footer(points, preset, note))


# ----------------------------------------------------------------------------- samples

def _image_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """``[B, 784]`` in [0, 1] -> an ``[H, W]`` grid for imshow: ``nrow`` digits a row (fewer if there
    are fewer), each 28 x 28 after a 2-pixel white border, as torchvision's ``make_grid(padding=2,
    pad_value=1)`` lays them out (tested), without importing torchvision (seconds)."""
    digits = images.reshape(-1, 28, 28)
    columns = min(nrow, len(digits))
    rows = -(-len(digits) // columns)
    grid = torch.ones(rows * 30 + 2, columns * 30 + 2, dtype=digits.dtype)
    for i, digit in enumerate(digits):
        top, left = 2 + 30 * (i // columns), 2 + 30 * (i % columns)
        grid[top:top + 28, left:left + 28] = digit
    return grid


def checkpoint_of(run_dir: Path, cfg: Config, results_dir: Path) -> Path:
    """The finished run's checkpoint. Committed records carry none: then the run (config ``cfg``) is
    trained again into ``<results>/runs/samples/`` on one torch thread, as the committed sweeps
    train each run (on the CPU the same seed gives the same weights; and beside a sweep on the
    other core, torch's default of a thread per core made an M2 retrain crawl, ~15x slower)."""
    if (run_dir / CHECKPOINT).exists():
        return run_dir / CHECKPOINT
    again = results_dir / "runs" / "samples" / run_dir.name
    if load_summary(again) is None:
        shutil.rmtree(again, ignore_errors=True)
        print(f"{run_dir.name} has no checkpoint (records carry none); training it again in {again}")
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, iw_examples=10))  # weights only
        with torch_threads(1):
            train(cfg, again, progress=False, log=lambda _: None)
    return again / CHECKPOINT


@torch.no_grad()
def _decode_panels(checkpoint: Path) -> dict[str, tuple[torch.Tensor, int]]:
    """Images (and images per row) decoded by replica 0 of a finished run."""
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    cfg = config_from_dict(state["config"])
    m = cfg.model
    model = DiscreteVAE(m.kind, m.num_latents, m.num_classes, m.hidden, ReplicaGenerator(cfg.seeds),
                        prior=m.prior, activation=m.activation)
    model.load_state_dict(state["model"])
    r = len(cfg.seeds)
    data = BinarizedImages.for_config(cfg.data, "cpu", log=lambda _: None)
    x = data.splits["test"][:16]                                                 # [16, 784]
    mode = torch.nn.functional.one_hot(model.encode(x.expand(r, -1, -1)).argmax(-1), m.num_classes).float()

    def decode(z: torch.Tensor) -> torch.Tensor:                              # z [B, N, K] -> [B, 784]
        return torch.sigmoid(model.decode(z.expand(r, *z.shape)))[0]

    recon = decode(mode[0])
    rows = [x[:8], recon[:8], x[8:], recon[8:]]
    prior = model.prior_logits()[:1].expand(1, 64, m.num_latents, m.num_classes)   # replica 0's prior
    draws = sample_one_hot(prior, ReplicaGenerator([0]))[0]                       # [64, N, K]
    panels = {"reconstructions (rows 1, 3: test digits; "
              "rows 2, 4: decoded posterior mode)": (torch.cat(rows), 8),
              f"samples from the {m.prior} prior (decoder means)": (decode(draws), 8)}
    if m.kind == "categorical":
        walk = mode[0, :1].repeat(m.num_latents * m.num_classes, 1, 1)          # [N*K, N, K]
        for n in range(m.num_latents):
            walk[n * m.num_classes:(n + 1) * m.num_classes, n] = torch.eye(m.num_classes)
        panels[f"latent walk from the first test digit: "
               f"row n sets variable n to class 1..{m.num_classes}"] = (
            decode(walk), m.num_classes)
    return panels


def samples(preset: str, results_dir: Path, partial: bool = False) -> list[Path]:
    """Image grids of a finished Gumbel-softmax run, one figure per VAE kind."""
    points = [p for p in sweep_points("table1", preset, results_dir)   # the grid's model, not an include's
              if p.values == {"estimator.name": SAMPLES_ESTIMATOR}]
    paths = []
    for point in points:
        if load_summary(point.run_dir) is None:
            raise SweepError(f"samples: {point.run_dir} is not finished; run the table1 sweep first")
        panels = _decode_panels(checkpoint_of(point.run_dir, point.cfg, results_dir))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 6.2))
        for ax, (title, (images, nrow)) in zip(axes, panels.items()):
            ax.imshow(_image_grid(images, nrow).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9, wrap=True)
            ax.axis("off")
        kind = point.cfg.model.kind
        fig.suptitle(f"{MODEL_ROWS[kind]} trained with {display_name(SAMPLES_ESTIMATOR)} "
                     f"(replica of seed {point.cfg.seeds[0]})")
        paths += save(fig, results_dir / "figures" / preset, f"samples_{kind}", footer([point], preset))
    return paths


# ----------------------------------------------------------------------------- figure 5

def _speed_records(preset: str, results_dir: Path) -> list[dict]:
    """Every ``ssl_speed_<device>[_compiled].json`` of ``preset``, one per device (and way of stepping),
    by file name (written by ``experiments.bench --ssl-classes [--compiled]``: both modes timed in one
    process on that device)."""
    records = sorted((results_dir / "bench" / preset).glob("ssl_speed_*.json"))
    if not records:
        raise SweepError(f"fig5: no {results_dir / 'bench' / preset}/ssl_speed_<device>.json; run python -m "
                         f"experiments.bench --ssl-classes --preset {preset} --out "
                         f"{results_dir / 'bench' / preset} (make fig5 does)")
    return [json.loads(path.read_text()) for path in records]


def speed_panel(ax: plt.Axes, records: list[dict]) -> None:
    """(a): steps/s of both modes against C (log scale), and gs / marginal on a second axis, one
    colour per device's record."""
    ratio = ax.twinx()
    for record, colour in zip(records, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        rates = record["steps_per_second"]
        # bench --ssl-classes --compiled
        device = record["device"] + (", compile=true" if record.get("compile") else "")
        for mode, style, label in (("marginal", "o-", "marginalization (C decoder passes)"),
                                   ("gs", "s:", f"{display_name('gs')} (one decoder pass)")):
            classes = sorted(int(c) for c in rates[mode])
            ax.plot(classes, [rates[mode][str(c)] for c in classes], style, color=colour,
                    label=f"{label}, {device}")
        classes = sorted(int(c) for c in record["speedup"])
        ratio.plot(classes, [record["speedup"][str(c)] for c in classes], "^--", color=colour, linewidth=2.5,
                   label=f"speed-up gs / marginal, {device} (right)")
    ratio.plot(list(PAPER_SPEEDUP), list(PAPER_SPEEDUP.values()), "r*", markersize=11,
               label="paper's speed-up, GTX Titan X (right)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of classes C")
    ax.set_ylabel("training steps / s")
    ax.grid(alpha=0.3, which="both")
    ratio.set_ylabel("speed-up gs / marginal")
    ratio.set_ylim(bottom=0)
    handles = [h for a in (ax, ratio) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=6, loc="upper center")
    ax.set_title("(a) training speed against the number of classes (random labels)")


@torch.no_grad()
def analogies(checkpoint: Path) -> torch.Tensor:
    """(b): ``[ANALOGY_DIGITS * (C + 1), 784]``, per test digit the digit, then its style z (mean of
    q(z | x, y), y = argmax q(y | x)) decoded under each class y (Bernoulli means), by replica 0."""
    model, cfg = m2.load_model(checkpoint)
    data = BinarizedImages.for_config(cfg.data, "cpu", log=lambda _: None)
    x = data.splits["test"][:ANALOGY_DIGITS].expand(len(cfg.seeds), -1, -1)          # [R, B, 784]
    c = cfg.ssl.num_classes
    guess = torch.nn.functional.one_hot(model.classify(x).argmax(-1), c).float()     # [R, B, C]
    style, _ = model.style(model.style_features(x), guess)                            # [R, B, D]
    every_class = torch.eye(c)[None, :, None].expand(len(cfg.seeds), c, x.shape[1], c)    # [R, C, B, C]
    z = style.unsqueeze(1).expand(-1, c, -1, -1)                                      # [R, C, B, D]
    decoded = torch.sigmoid(model.decode(every_class, z))[0].transpose(0, 1)          # [B, C, 784]
    return torch.cat([x[0].unsqueeze(1), decoded], dim=1).reshape(-1, x.shape[-1])


def fig5(preset: str, results_dir: Path, partial: bool = False) -> list[Path]:
    """(a) training speed of marginal and gs against C; (b) analogies of a finished gs run."""
    records = _speed_records(preset, results_dir)
    point = next(p for p in sweep_points("ssl", preset, results_dir) if p.cfg.ssl.y == SAMPLES_ESTIMATOR)
    if load_summary(point.run_dir) is None:
        raise SweepError(f"fig5: {point.run_dir} is not finished; run the ssl sweep first")
    images = analogies(checkpoint_of(point.run_dir, point.cfg, results_dir))
    classes = point.cfg.ssl.num_classes
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1, 1.2]})
    speed_panel(axes[0], records)
    axes[1].imshow(_image_grid(images, classes + 1).numpy(), cmap="gray", vmin=0, vmax=1)
    axes[1].axis("off")
    axes[1].set_title(f"(b) analogies: column 1 a test digit; columns 2-{classes + 1} its style z (mean of "
                      f"q(z | x, y), y = argmax q(y | x)) decoded with y = class 0..{classes - 1}",
                      fontsize=9, wrap=True)
    fig.suptitle(f"Figure 5 (reproduction): semi-supervised M2, summed against Gumbel-softmax class; (b) by "
                 f"the {display_name(SAMPLES_ESTIMATOR)} run (replica of seed {point.cfg.seeds[0]})")
    speed = " ".join(
        f"(a) {r['device']}: median of {r['repeats']} x {r['steps']} training steps after {r['warmup']} "
        f"warm-up steps per point, both modes in one process, {r['config']} with random labels"
        f"{' and ' + ', '.join(r['overrides']) if r['overrides'] else ''}, measured {r['measured']} with "
        f"torch {r['torch']}." for r in records) + " A busy machine slows both modes alike."
    return save(fig, results_dir / "figures" / preset, "fig5_ssl",
                footer([point], preset, speed, SSL_BUDGET_NOTES))


#: Every figure by name: ``FIGURES[name](preset, results_dir, partial=False)`` draws it (``partial``: draw
#: a panel none of whose runs has finished, empty, where it would refuse; fig1 reads no run, and
#: samples and fig5 need their one finished run either way).
def modern(preset: str, results_dir: Path, partial: bool = False) -> list[Path]:
    """The 2020 benchmark's figure: the training split's negative ELBO against steps (log scale),
    one panel per cell (model, data set), a curve per estimator, as the papers draw it."""
    cells = modern_cells(expand(read_sweep(MODERN_SWEEP), preset, results_dir))
    columns = min(3, len(cells))
    rows = -(-len(cells) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for ax, ((model, dataset), points) in zip(axes.flat, cells.items()):
        lows, highs = [], []
        for point in panel_runs(points, f"modern ({model}, {dataset})", results_dir, partial):
            estimator, variant = column(point)
            band(ax, point.run_dir, "train/neg_elbo", color=COLOURS.get(estimator, "0.5"),
                 label=column_title(estimator, variant), linestyle=":" if variant else "-", marker=".")
            c = curve(point.run_dir, "train/neg_elbo").mean
            lows += c
            highs += c[len(c) // 2:]
        if lows:   # the first, very high values would flatten every curve
            ax.set_ylim(min(lows) - 1, max(highs) + 0.3 * (max(highs) - min(lows)) + 1)
            ax.legend(fontsize=6.5, ncol=2)
        else:      # a partial figure's empty panel
            ax.text(0.5, 0.5, "no finished run yet", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_xscale("log")
        ax.set_title(f"{model}, {DATASETS[dataset].title}")
        ax.set_xlabel("training step")
        ax.set_ylabel("train negative ELBO (nats, one sample)")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("The 2020 benchmark: training-set negative ELBO during training, mean ± std over seeds")
    return save(fig, results_dir / "figures" / preset, "modern_curves",
                footer([p for group in cells.values() for p in group], preset,
                       f"Steps: the papers train {PAPERS_STEPS:,}."))


FIGURES: dict[str, Callable[..., list[Path]]] = {
    "fig1": fig1, "fig3": fig3, "fig4": fig4, "tau-ablation": tau_ablation, "gradvar": gradvar,
    "samples": samples, "fig5": fig5, "modern": modern}
