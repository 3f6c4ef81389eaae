"""Which of these runs is better? Compare any runs side by side, from the local results store.

    python -m experiments.compare PATH [PATH ...] [--metric KEY ...] [--plot] [--curve KEY] [--out STEM]

    python -m experiments.compare results/sweeps/table1
    python -m experiments.compare results/runs/vae_categorical/RUN_A results/runs/vae_categorical/RUN_B \\
        --metric test/iw_bound --metric valid/neg_elbo --plot --out results/figures/a_vs_b

Each PATH is a run directory (it holds ``config.yaml``) or any directory above run directories (a
sweep's ``results/sweeps/<sweep>/``, an experiment's ``results/runs/<experiment>/``): every run under
it is compared, sorted by path. Prints a markdown table, one row per run: estimator, tau schedule,
steps and number of seeds, then per metric the final ``mean ± std`` over seeds from ``summary.json``
(``unfinished`` while the run has none, ``–`` where it lacks the key), then every other config setting
in which the compared runs differ. ``--metric KEY`` (repeatable) picks the metrics; default: every
``valid/`` and ``test/`` key of the summaries. ``--plot`` also draws a curve (``--curve KEY``, default
``test/neg_elbo``, or ``test/nll`` for SBN runs) against training steps, mean ± std over seeds per
run, to ``STEM.png`` and ``STEM.pdf`` (``--out STEM``, default ``results/figures/compare``). Bad input
(a path with no run, a metric or curve no run has) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae.estimators.config import did_you_mean
from vae.reporting.compare import CompareError, compare_table, find_runs, load_run, plot
from vae.store.records import curve, git_commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run directories, or directories above runs")
    parser.add_argument("--metric", action="append", metavar="KEY",
                        help="summary key, e.g. test/iw_bound (repeatable)")
    parser.add_argument("--plot", action="store_true", help="also draw a curve metric against training steps")
    parser.add_argument("--curve", metavar="KEY",
                        help="the plotted key (default test/neg_elbo, else test/nll)")
    parser.add_argument("--out", default="results/figures/compare", metavar="STEM",
                        help="figure path without suffix")
    args = parser.parse_args(argv)
    try:
        run_dirs = list(dict.fromkeys(d for p in args.paths for d in find_runs(Path(p))))
        runs = [load_run(d) for d in run_dirs]
        summaries = [r.summary for r in runs if r.summary is not None]
        there = sorted({k for s in summaries for k, v in s.items() if isinstance(v, dict)})
        metrics = args.metric or [k for k in there if k.startswith(("valid/", "test/"))]
        for key in metrics:
            if key not in there:
                raise CompareError(f"--metric {key}: no compared run's summary.json has this metric"
                                   f"{did_you_mean(key, there)}; they have {', '.join(there) or 'none'}")
        if args.curve is not None and "/" not in args.curve:
            raise CompareError(f"--curve {args.curve}: a key is split/metric, e.g. test/neg_elbo")
        if args.plot:
            key = args.curve or ("test/neg_elbo" if any(curve(r.path, "test/neg_elbo").steps for r in runs)
                                 else "test/nll")
            if not any(curve(r.path, key).steps for r in runs):
                raise CompareError(f"--curve {key}: no compared run logged it in its metrics.jsonl")
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(compare_table(runs, metrics))
    if args.plot:
        footer = f"python -m experiments.compare {' '.join(args.paths)} | drawn at commit {git_commit()}"
        for path in plot(runs, key, Path(args.out), footer):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
