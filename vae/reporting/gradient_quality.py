"""Gradient quality: every estimator's encoder gradient at one checkpoint its cell's entries share.

    python -m experiments.leaderboard --preset converged --gradients [--board 2017] [--cell CELL ...]

What estimator papers report beside the bound. For a cell of a leaderboard whose task has one
encoder (``Task.one_encoder``: the VAE; the SBN has one per layer), one model is trained and frozen: the
cell's :data:`ANCHOR` entry (RLOO) at its first seed, its committed record trained again where the record
carries no checkpoint (:func:`vae.reporting.figures.checkpoint_of`; on the CPU the same seed gives the same
weights). At those parameters, on the cell's first validation batch, each entry's estimator (its own settings
and its temperature at the checkpoint's step) draws the encoder gradient of the training loss
:data:`DRAWS` times with fresh noise, before variance normalisation
(:func:`vae.training.diagnostics.encoder_gradient_moments`), and the reference, :data:`REFERENCE`
(IndeCateR: unbiased, with the lowest variance of the unbiased estimators, results/README.md
"Gradient quality"), draws it
:data:`REFERENCE_DRAWS` times; an estimator with state of its own (a learned baseline or control
variate, a moving average) first trains that state for :data:`WARMUP` steps with the model held at
the checkpoint. Per entry (:func:`quality`):

    log10 variance   log10 of the trace of the gradient's covariance over draws
    cosine           between the entry's mean gradient and the reference's
    relative error   ||mean - reference|| / ||reference||
    noise            the relative error an unbiased estimator shows from sampling alone:
                     sqrt(variance / DRAWS + reference variance / REFERENCE_DRAWS) / ||reference||

A relative error near ``noise`` is what no bias gives; one well above it is bias (the relaxed and
straight-through estimators'). Written to ``<results>/gradients/<preset>/<cell>.json`` (keyed by
the entries' run directories, so a new entry is measured alone), read by the leaderboard's
columns, and drawn by :func:`figure`: per cell, log10 variance against relative error.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from vae.numerics.replicas import ReplicaGenerator, derive_seed
from vae.reporting.figures import checkpoint_of, save
from vae.store.records import git_commit
from vae.store.run_dir import CHECKPOINT, write_json_atomic
from vae.sweeps.definition import Point, SweepError
from vae.training.diagnostics import encoder_gradient_moments
from vae.training.trainer import Trainer, torch_threads

ANCHOR = "rloo"           # the entry whose run, trained again, is the checkpoint every entry is measured at
REFERENCE = "indecater"   # the unbiased estimator whose mean over many draws is the reference gradient
DRAWS = 1000              # gradient draws per entry
REFERENCE_DRAWS = 1000    # draws of the reference
WARMUP = 500              # steps that train an estimator's own state at the frozen checkpoint
CAPTION = (f"Gradient columns (vae/reporting/gradient_quality.py): at one checkpoint all entries share (the "
           f"cell's {ANCHOR} run, first seed, at its last step), on the first validation batch, the "
           f"encoder gradient of the training loss before variance normalisation, {DRAWS} draws per "
           f"entry: log10 of its variance's trace; its mean's cosine and relative error to the mean of "
           f"{REFERENCE_DRAWS} {REFERENCE} draws (noise: the relative error sampling alone gives an "
           f"unbiased estimator; well above it is bias).")


def quality(mean: Tensor, variance: Tensor, draws: int, reference: Tensor, reference_variance: Tensor,
            reference_draws: int) -> dict[str, float]:
    """The measures of the module docstring from an entry's mean gradient ``[P]`` and summed
    variance (a scalar) over ``draws``, and the reference's over ``reference_draws``."""
    norm = reference.norm()
    return {"log10_variance": math.log10(max(float(variance), 1e-300)),
            "cosine": float(torch.cosine_similarity(mean, reference, dim=0)),
            "relative_error": float((mean - reference).norm() / norm),
            "noise": float((variance / draws + reference_variance / reference_draws).sqrt() / norm)}


def record_path(results_dir: Path, preset: str, cell_name: str) -> Path:
    return Path(results_dir) / "gradients" / preset / f"{cell_name}.json"


def load(stores: list[Path], preset: str, cell_name: str) -> dict[str, dict[str, float]]:
    """The measured entries of a cell by run directory name, over ``stores`` (the first wins)."""
    found: dict[str, dict[str, float]] = {}
    for store in reversed(stores):
        path = record_path(store, preset, cell_name)
        if path.exists():
            found.update(json.loads(path.read_text())["entries"])
    return found


def _trainer(point: Point, seed: int, state: dict[str, Any]) -> Trainer:
    """An eager one-seed trainer of ``point``'s config holding the checkpoint's model ``state``."""
    trainer = Trainer(replace(point.cfg, seeds=[seed], compile=False), log=lambda _: None)
    trainer.model.load_state_dict(state)
    trainer.step = point.cfg.steps
    return trainer


def _moments(trainer: Trainer, draws: int, label: str) -> tuple[Tensor, Tensor]:
    cfg = trainer.cfg
    x = trainer.data.splits["valid"][:cfg.data.batch_size][None]             # [1, B, D]
    rng = ReplicaGenerator([derive_seed("gradient-quality", label, cfg.seeds[0])], trainer.device)
    mean, variance = encoder_gradient_moments(trainer.model, trainer.estimator, x, rng=rng,
                                              tau=trainer.temperature(trainer.step), step=trainer.step,
                                              num_draws=draws)
    return mean[0], variance[0]


def _warm_up(trainer: Trainer, state: dict[str, Any], steps: int) -> None:
    """Train the estimator's own parameters and buffers for ``steps`` steps, the model put back at
    the checkpoint after each (the optimiser moves it too)."""
    if not [*trainer.estimator.parameters(), *trainer.estimator.buffers()]:
        return
    for _ in range(steps):
        trainer.train_step()
        trainer.model.load_state_dict(state)
    trainer.step = trainer.cfg.steps


def measure(cell_name: str, points: list[Point], preset: str, results_dir: Path, log=print) -> Path:
    """Measure the finished entries ``points`` of a cell not yet in its record (:func:`record_path`)
    and write the record, after each entry; the module docstring says how. Needs the cell's
    :data:`ANCHOR` entry; a record of another checkpoint or other settings is measured again
    whole."""
    path = record_path(results_dir, preset, cell_name)
    anchor = next((p for p in points if p.cfg.estimator.name == ANCHOR and "equal_cost" not in p.values),
                  None)
    if anchor is None:
        raise SweepError(f"--gradients: cell {cell_name} has no finished {ANCHOR} entry to train the "
                         "checkpoint")
    seed = anchor.cfg.seeds[0]
    settings = {"checkpoint": anchor.run_dir.name, "seed": seed, "step": anchor.cfg.steps,
                "reference": REFERENCE, "draws": DRAWS, "reference_draws": REFERENCE_DRAWS, "warmup": WARMUP}
    record = json.loads(path.read_text()) if path.exists() else {}
    if any(record.get(key) != value for key, value in settings.items()):
        record = {"entries": {}}                       # another checkpoint or method: measured again whole
    todo = [p for p in points if p.run_dir.name not in record["entries"]]
    if not todo:
        return path
    record.update(settings, commit=git_commit())
    with torch_threads(1):
        own = anchor.run_dir / CHECKPOINT
        checkpoint = own if own.exists() else checkpoint_of(anchor.run_dir, replace(anchor.cfg, seeds=[seed]),
                                                             results_dir)
        saved = torch.load(checkpoint, weights_only=True, map_location="cpu")
        seeds, i = saved["config"]["seeds"], saved["config"]["seeds"].index(seed)
        state = {k: v[i:i + 1] if v.dim() and v.shape[0] == len(seeds) else v     # the seed's replica
                 for k, v in saved["model"].items()}
        cfg = replace(anchor.cfg, estimator=replace(anchor.cfg.estimator, name=REFERENCE, options={}))
        reference = _moments(_trainer(replace(anchor, cfg=cfg), seed, state), REFERENCE_DRAWS, "reference")
        log(f"{cell_name}: reference {REFERENCE}, {REFERENCE_DRAWS} draws at {checkpoint}")
        for point in todo:
            trainer = _trainer(point, seed, state)
            _warm_up(trainer, state, WARMUP)
            mean, variance = _moments(trainer, DRAWS, point.run_dir.name)
            measured = quality(mean, variance, DRAWS, *reference, REFERENCE_DRAWS)
            record["entries"][point.run_dir.name] = measured
            log(f"{point.label}: {measured}")
            write_json_atomic(path, record, sort_keys=True)
    return path


def figure(measured: dict[str, list[tuple[str, bool, dict[str, float]]]], preset: str, results_dir: Path,
           note: str, suffix: str = "") -> list[Path]:
    """Per cell (label -> [(entry title, declared unbiased, quality)]), log10 variance against
    relative error (log axis), each entry a labelled point (blue: declared unbiased, orange: biased)
    and the noise an unbiased estimator's error would show as a grey tick at its height:
    ``<results>/figures/<preset>/gradient_quality<suffix>.{png,pdf}``."""
    fig, axes = plt.subplots(1, len(measured), figsize=(6.4 * len(measured), 5.6), squeeze=False)
    for ax, (label, found) in zip(axes[0], measured.items()):
        for title, unbiased, g in found:
            colour = "tab:blue" if unbiased else "tab:orange"
            ax.plot(g["relative_error"], g["log10_variance"], "o", ms=4, color=colour)
            ax.plot(g["noise"], g["log10_variance"], "|", ms=8, color="0.6")
            ax.annotate(title, (g["relative_error"], g["log10_variance"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points", color=colour)
        ax.set_xscale("log")
        ax.set_xlabel("relative error of the mean gradient to the reference\n"
                      "(grey tick: sampling noise alone)")
        ax.set_ylabel("log10 variance of the encoder gradient (trace)")
        ax.set_title(label)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Bias against variance of every estimator's encoder gradient at a shared checkpoint "
                 f"({preset})\nlower left is better; blue: declared unbiased, orange: biased")
    return save(fig, results_dir / "figures" / preset, f"gradient_quality{suffix}", note)
