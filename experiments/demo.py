"""`make demo`: Gumbel-softmax (soft), straight-through Gumbel-softmax (hard) and REINFORCE with a
moving-average baseline on the categorical VAE, briefly, on whatever device there is.

Each estimator runs configs/demo.yaml (2 seeds, 2,000 steps) in results/runs/demo/<estimator>/;
a finished run is reused and an interrupted one resumed. Prints the held-out numbers of the three;
``python -m experiments.compare results/runs/demo --plot`` draws their curves. Progress bars go to a
terminal only (``--no-progress``: none).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae.config import ConfigError, load_config
from vae.data.images import DataError
from vae.store.run_dir import CHECKPOINT, load_summary
from vae.training.trainer import RunDirError, TrainingDiverged, train

ESTIMATORS = ("gs", "st-gs", "reinforce-ema")
CONFIG = Path("configs/demo.yaml")


def run_all(results: Path, overrides: list[str], progress: bool = True) -> dict[str, Path]:
    """Train (or reuse, or resume) one run per estimator; returns their directories."""
    runs = {}
    for name in ESTIMATORS:
        run_dir = results / "runs" / "demo" / name
        if load_summary(run_dir) is not None:
            print(f"{name}: finished earlier, reusing {run_dir}")
        elif (run_dir / CHECKPOINT).exists():
            train(None, run_dir, resume=True, progress=progress)
        else:
            cfg = load_config(CONFIG, [*overrides, f"estimator.name={name}", f"out_dir={results / 'runs'}"])
            train(cfg, run_dir, progress=progress)
        runs[name] = run_dir
    return runs


def report(runs: dict[str, Path]) -> str:
    rows = ["| estimator | test -ELBO | test -log p(x) bound (m, examples) "
            "| valid -ELBO | steps/s | device |",
            "|---|---|---|---|---|---|"]
    for name, run_dir in runs.items():
        s = load_summary(run_dir)

        def pm(key):
            return f"{s[key]['mean']:.1f} ± {s[key]['std']:.1f}"

        rows.append(f"| {name} | {pm('test/neg_elbo')} | {pm('test/iw_bound')} (m={s['iw_samples']}, "
                    f"{s['iw_examples']}) | {pm('valid/neg_elbo')} | {s['steps_per_second'] or '–'} | "
                    f"{s['device']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", default="results", help="root of the results store")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (none either when stderr is "
                             "not a terminal)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides of configs/demo.yaml")
    args = parser.parse_args(argv)
    try:
        progress = not args.no_progress and sys.stderr.isatty()
        runs = run_all(Path(args.results_dir), args.overrides, progress=progress)
    except (ConfigError, DataError, RunDirError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = report(runs)
    seeds = load_summary(next(iter(runs.values())))["seeds"]
    print(f"\nCategorical VAE (20x10), {len(seeds)} seeds, mean ± std over seeds, nats (lower is better):\n")
    print(table)
    print(f"\nRuns (config, metrics.jsonl, summary.json, checkpoint) "
          f"are in {Path(args.results_dir) / 'runs' / 'demo'}/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
