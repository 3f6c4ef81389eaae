"""What does each estimator of the class y teach M2's classifier? ``python -m experiments.ssl_gradients RUN``.

    python -m experiments.ssl_gradients results/sweeps/ssl/ssl_m2__st-gs__31d7e72c \\
        --estimator st-gs --estimator st-gs@0.5 --estimator gs --estimator rloo --draws 1000 --examples 50

On the trained M2 of a finished semi-supervised run (``RUN``, its directory), for the first
``--examples`` validation digits taken as unlabelled: the gradient of the unlabelled loss ``-U(x)``
(as the trainer computes it, vae/models/m2.py) with respect to the logits of q(y | x), drawn ``--draws``
times per ``--estimator NAME[@TAU]`` (tau default 1), against the exact gradient (y summed over the
classes: the mean of as many draws of the ``marginal`` gradient, which differ only in z's noise).
Prints a markdown table, one row per ``--estimator`` (``marginal`` too: its fresh draws show the
reference's own noise), each number taken over the digits' gradients as one vector, so that a digit
counts by its gradient's size (a confident q(y | x) has all but none), and averaged over the run's
seeds (``vae.models.m2.gradient_agreement``): the cosine between the estimator's mean gradient and the
exact one, the share of the exact gradient on digits where both raise the same class's logit most,
the bias and one draw's spread, both relative to the exact gradient's norm (the bias includes the
noise of the mean, about ``spread / sqrt(draws)``: one draw of y is noisy, so use a thousand draws
or more). ``--out FILE`` also writes the table there.

Estimators with parameters or running statistics of their own (nvil, relax, reinforce-ema, ...)
are trained beside the model and not saved with it, so only stateless ones are measured. Committed
records carry no checkpoint: a run without one is trained again first (``<results>/runs/samples/``,
as the figures do). Bad input (no finished ssl run, an estimator that cannot be measured, a tau
that is not a positive number) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from vae.config import Config, TauConfig, config_from_dict, read_yaml, validate
from vae.data.images import BinarizedImages
from vae.estimators import Estimator, applicable, display_name
from vae.models import m2
from vae.numerics.replicas import ReplicaGenerator, derive_seed
from vae.reporting.figures import checkpoint_of
from vae.reporting.tables import to_markdown
from vae.store.records import git_commit
from vae.store.run_dir import load_summary, read_config_text, write_text_atomic
from vae.training.tasks import check

HEADER = ["τ", "cosine to exact", "same top class, % of ‖exact‖", "bias / ‖exact‖", "spread / ‖exact‖"]
DEFAULT_ROWS = ["gs", "st-gs", "rloo"]


class GradientsError(ValueError):
    """Bad input: the message is the one line printed."""


def parse_row(spec: str, cfg: Config) -> tuple[str, float]:
    """``NAME[@TAU]`` -> (name, tau), checked: the run ``cfg`` could train with ``ssl.y = name`` at a
    constant tau, and the estimator has no parameters or running statistics of its own (those are
    not saved with the model)."""
    name, _, tau_text = spec.partition("@")
    try:
        tau = float(tau_text or 1.0)
        with_y = dataclasses.replace(cfg, ssl=dataclasses.replace(cfg.ssl, y=name),
                                     tau=TauConfig(schedule="constant", tau0=tau))
        validate(with_y)
        check(with_y)
    except ValueError as err:            # ConfigError is one
        raise GradientsError(f"--estimator {spec}: {err}") from None
    if not stateless(name, cfg):
        measurable = [n for n in applicable(task="ssl",
                                            kind="bernoulli" if cfg.ssl.num_classes == 2 else "categorical",
                                            lowest_tau=tau, latent_shape=(1, cfg.ssl.num_classes),
                                            cfg=cfg.estimator)
                      if stateless(n, cfg)]
        raise GradientsError(f"--estimator {spec}: trains a state of its own, which checkpoints do not keep; "
                             f"measurable: the stateless ones ({', '.join(measurable)})")
    return name, tau


def stateless(name: str, cfg: Config) -> bool:
    """Whether estimator ``name`` of y keeps no parameters or running statistics (which a run's
    checkpoint does not save, so only a stateless one can be measured on a trained model)."""
    estimator = m2.y_estimator(name, cfg.estimator, cfg.ssl.num_classes, len(cfg.seeds))
    return not (list(estimator.parameters()) or list(estimator.buffers()))


def agreement_table(run_dir: Path, cfg: Config, rows: list[tuple[str, float]], draws: int, examples: int,
                    results_dir: Path) -> str:
    """The markdown table of the module docstring for the run in ``run_dir`` (its config ``cfg``)."""
    commit = git_commit()              # the code that runs (read before the minutes of measuring)
    model, cfg = m2.load_model(checkpoint_of(run_dir, cfg, results_dir))
    data = BinarizedImages.for_config(cfg.data, "cpu", log=lambda _: None)
    r, c = len(cfg.seeds), cfg.ssl.num_classes
    x = data.splits["valid"][:examples].expand(r, -1, -1)                       # [R, B, 784]

    def gradients(estimator: Estimator, tau: float, label: str) -> torch.Tensor:
        rng = ReplicaGenerator([derive_seed("ssl-gradients", seed, label) for seed in cfg.seeds])
        return m2.logit_gradients(model, estimator, x, rng=rng, tau=tau, step=cfg.steps, draws=draws)

    exact = gradients(m2.marginal(c, r), 1.0, "marginal").mean(0)               # [R, B, C]
    table = []
    for name, tau in tqdm(rows, desc="estimators"):
        estimator = m2.y_estimator(name, cfg.estimator, c, r)
        stats = m2.gradient_agreement(gradients(estimator, tau, f"{name}@{tau}"), exact)
        label = "marginal, fresh z" if name == "marginal" else display_name(name)
        table.append((label, [f"{tau:g}", f"{stats['cosine']:.2f}", f"{100 * stats['top_class']:.0f}",
                              f"{stats['bias']:.2f}", f"{stats['spread']:.2f}"]))
    summary = load_summary(run_dir)
    command = " ".join(["python -m experiments.ssl_gradients", str(run_dir),
                        *(f"--estimator {name}@{tau:g}" for name, tau in rows),
                        f"--draws {draws} --examples {examples}"])
    caption = (f"Gradient of the unlabelled loss -U(x) with respect to the logits of q(y | x) on the trained "
               f"M2 of {run_dir.name} (trained with {cfg.ssl.y}, {cfg.steps} steps, test accuracy "
               f"{100 * summary['test/accuracy']['mean']:.1f} %), for the first {examples} validation "
               f"digits, {draws} draws per row, against the exact gradient (y summed, the mean of {draws} "
               f"draws over z's noise); the digits' gradients as one vector, mean over {r} seed(s). "
               f"`{command}`, at commit {commit}.")
    return to_markdown(HEADER, table, caption)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.ssl_gradients", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", help="a finished ssl run's directory")
    parser.add_argument("--estimator", action="append", metavar="NAME[@TAU]",
                        help=f"an estimator of y at temperature TAU (default 1); repeatable; default: "
                             f"{DEFAULT_ROWS}")
    parser.add_argument("--draws", type=int, default=1000,
                        help="gradient draws per row and for the exact one (1000)")
    parser.add_argument("--examples", type=int, default=50, help="validation digits (default 50)")
    parser.add_argument("--results-dir", default="results", help="results store root (default results)")
    parser.add_argument("--out", metavar="FILE", help="also write the table to FILE")
    args = parser.parse_args(argv)
    run_dir = Path(args.run)
    try:
        if read_config_text(run_dir) is None or load_summary(run_dir) is None:
            raise GradientsError(f"RUN {run_dir}: not a finished run directory (config.yaml and "
                                 f"summary.json)")
        cfg = config_from_dict(read_yaml(read_config_text(run_dir)))
        if cfg.task != "ssl":
            raise GradientsError(f"RUN {run_dir}: a run of task {cfg.task!r}, not ssl")
        rows = [parse_row(spec, cfg) for spec in args.estimator or DEFAULT_ROWS]
        if args.draws < 2 or args.examples < 1:
            raise GradientsError(f"--draws must be >= 2 and --examples >= 1, "
                                 f"got {args.draws} and {args.examples}")
    except GradientsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = agreement_table(run_dir, cfg, rows, args.draws, args.examples, Path(args.results_dir))
    print(table)
    if args.out:
        write_text_atomic(Path(args.out), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
