"""Run every point of a sweep file, resumably: ``python -m experiments.sweep FILE [--preset P]``.

The sweep-file format and run identity are those of :mod:`vae.sweeps.definition`, the resume rules
those of :mod:`vae.sweeps.running` (their docstrings are this command's ``--help``).
Bad input prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from vae.config import ConfigError
from vae.data.images import DataError
from vae.store.run_dir import FAILED
from vae.sweeps import definition, running
from vae.sweeps.definition import AS_WRITTEN, PRESETS, SweepError, expand, read_sweep
from vae.sweeps.running import register_with_wandb, train_points
from vae.sweeps.wandb_agents import WandbSweepError
from vae.training.trainer import RunDirError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep",
                                     description=definition.__doc__ + "\n" + running.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep file (configs/sweeps/*.yaml)")
    parser.add_argument("--preset", help=f"budget, one of {', '.join(PRESETS)}, or {AS_WRITTEN} (the file as "
                        "written); default: quick if the file defines presets, else none")
    parser.add_argument("--results-dir", default="results",
                        help="results store root (runs go to <dir>/sweeps)")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs trained at once, in processes (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: torch's threads, OMP_NUM_THREADS if set, "
                             "/ workers; 1 leaves the other cores free)")
    parser.add_argument("--compile", action="store_true",
                        help="train each run with compile=true (the step as one graph: faster, the same "
                             "numbers to float round-off; the same points, "
                             "compile is not part of a run's identity)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the points and their state, train nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--pack-lr", action="store_true",
                        help="train the points that differ only in optim.lr as one run, a learning rate per "
                             "replica (the GPU recipe for a learning-rate grid); "
                             "their records are the same as unpacked")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="SEED",
                        help="these seeds instead of the preset's (new points, as if the preset named "
                             "them); a point that a finished record under the preset's seeds already "
                             "trained with some of them trains only the others, and the two records are "
                             "merged into the new point's (the earlier record stays; experiments/README.md "
                             "\"More seeds\")")
    parser.add_argument("--point", nargs="+", action="extend", metavar="NAME",
                        help="run only the points of these names (<slug>__<hash>, as --dry-run lists them; a "
                             "W&B agent runs one; --point A B and --point A --point B are the same); put it "
                             "after the sweep file")
    parser.add_argument("--wandb", action="store_true",
                        help="register the sweep with W&B and print the agent command (needs a login)")
    parser.add_argument("--agents", type=int, default=0, help="with --wandb: start this many agents here")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir)
    try:
        if args.workers < 1 or (args.threads is not None and args.threads < 1):
            raise SweepError(f"--workers, --threads: must be >= 1, got {args.workers}, {args.threads}")
        if args.agents < 0 or (args.agents and not args.wandb):
            raise SweepError("--agents: needs --wandb and a count >= 0")
        if args.compile and args.wandb:
            raise SweepError("--compile: not with --wandb (its agents train the registered "
                             "points as written)")
        if args.seeds is not None and (len(set(args.seeds)) < len(args.seeds) or min(args.seeds) < 0):
            raise SweepError(f"--seeds: distinct seeds >= 0, got {' '.join(map(str, args.seeds))}")
        sweep = read_sweep(args.sweep)
        preset = args.preset or ("quick" if sweep.presets else AS_WRITTEN)
        points = expand(sweep, preset, results_dir, seeds=args.seeds)
        earlier = expand(sweep, preset, results_dir) if args.seeds is not None else []
        if args.compile:
            points = [replace(p, cfg=replace(p.cfg, compile=True)) for p in points]
        if args.wandb:
            return register_with_wandb(sweep, preset, points, results_dir, args.agents)
        if args.point is not None:
            missing = sorted(set(args.point) - {p.run_dir.name for p in points})
            if missing:
                raise SweepError(f"--point: no point {missing[0]!r} in {sweep.path} under --preset {preset}")
            points = [p for p in points if p.run_dir.name in args.point]
        if args.dry_run:
            adding = running.top_ups(points, earlier, results_dir)
            for i, point in enumerate(points, 1):
                status = point.status()
                if status != "done" and point.run_dir in adding:
                    unit = adding[point.run_dir]
                    status += f" (trains seeds {unit.added_seeds}, added to {unit.earlier.run_dir.name})"
                print(f"[{i}/{len(points)}] {point.label}: {status} -> {point.run_dir}")
            return 0
        started = time.perf_counter()
        outcomes = train_points(sweep, points, preset, results_dir, workers=args.workers,
                                threads=args.threads,
                                pack_lr=args.pack_lr, progress=not args.no_progress and sys.stderr.isatty(),
                                earlier=earlier)
    except (SweepError, ConfigError, DataError, RunDirError, WandbSweepError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    print(f"{sweep.name} ({preset}): " + ", ".join(f"{k} {c}" for k, c in sorted(outcomes.items()))
          + f"; wall time {wall / 60:.1f} min with {args.workers} worker(s)")
    if outcomes["diverged"] or outcomes["failed"]:
        print(f"diverged runs are marked by {FAILED} in their directory and skipped; delete it to retry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
