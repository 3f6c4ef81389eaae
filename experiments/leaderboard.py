"""Rank estimators on Table 1's four cells and the 2020 benchmark's:
``python -m experiments.leaderboard [--estimator NAME ...]``.

What the cells, entries, verdicts and costs are is said in :mod:`vae.reporting.leaderboard` (its docstring
is this command's ``--help``). Bad input (an unknown estimator, cell or preset, a named cell an
estimator does not apply to, a preset with no finished run) prints one line and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae.config import ConfigError, parse_overrides
from vae.data.images import DataError
from vae.estimators import ESTIMATORS
from vae.reporting import leaderboard
from vae.sweeps.definition import PRESETS, SweepError, flat_settings
from vae.sweeps.running import train_points
from vae.training.trainer import RunDirError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.leaderboard",
                                     description=leaderboard.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", metavar="KEY=VALUE",
                        help="settings of the named estimators' runs, e.g. estimator.options.tau=0.5")
    parser.add_argument("--preset", default="quick", choices=PRESETS,
                        help="budget and committed runs (default quick)")
    parser.add_argument("--estimator", nargs="+", action="extend", default=[], metavar="NAME",
                        help="train these estimators on the cells they apply to and rank them")
    parser.add_argument("--plugins", nargs="+", action="extend", default=[], metavar="MODULE",
                        help="modules that register your estimators (importable from here or PYTHONPATH)")
    parser.add_argument("--equal-cost", metavar="REFERENCE",
                        help="train at REFERENCE's decoder evaluations (steps scaled by the passes' ratio)")
    parser.add_argument("--board", default="all", choices=[*leaderboard.BOARDS, "all"],
                        help="2017: Table 1's four cells; 2020: the 2020 benchmark's cells; "
                             "all (default): both")
    parser.add_argument("--cell", nargs="+", action="extend", metavar="CELL",
                        help=f"only these cells (of one board; 2017: "
                             f"{', '.join(c.name for c in leaderboard.CELLS)}; "
                             "2020: its preset's, e.g. linear-mnist)")
    parser.add_argument("--results-dir", default="results",
                        help="where runs, tables and figures go (default results)")
    parser.add_argument("--committed-dir", default=str(leaderboard.COMMITTED),
                        help="the committed records ranked against (default: the repository's results/)")
    parser.add_argument("--cost", action="store_true",
                        help="only print what each preset's board cost (core-hours, from the records) and "
                             "the estimate for the next preset; trains and draws nothing")
    parser.add_argument("--time-steps", action="store_true",
                        help="first time the training step of every entry not yet timed, alone (minutes)")
    parser.add_argument("--gradients", action="store_true",
                        help="first measure the encoder gradient's variance and bias of every entry of the "
                             "VAE cells not yet measured, at a checkpoint the cell shares (minutes; "
                             "vae/reporting/gradient_quality.py)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir)
    for listed in (args.estimator, args.plugins):      # KEY=VALUE after a list option belongs to the settings
        args.settings += [item for item in listed if "=" in item]
        listed[:] = [item for item in listed if "=" not in item]

    def train(sweep, points) -> None:
        train_points(sweep, points, args.preset, results_dir, threads=args.threads,
                     progress=not args.no_progress and sys.stderr.isatty())

    try:
        if args.equal_cost is not None and args.equal_cost not in ESTIMATORS:
            raise SweepError(f"--equal-cost: unknown estimator {args.equal_cost!r}; known: "
                             f"{', '.join(ESTIMATORS)}")
        boards = list(leaderboard.BOARDS) if args.board == "all" else [args.board]
        if args.cell and args.board == "all":      # the board the named cells are on
            boards = [b for b in boards
                      if set(args.cell) & {c.name for c in leaderboard.BOARDS[b].cells(args.preset)}]
            boards = boards[:1] or ["2017"]
        if args.cost:
            stores = list(dict.fromkeys([Path(args.committed_dir).resolve(), results_dir.resolve()]))
            for board in boards:
                for preset in PRESETS:
                    try:
                        print(leaderboard.cost_line(leaderboard.board_cost(preset, stores, board)))
                    except leaderboard.NothingRanked:
                        print(f"board {board}, preset {preset}: no finished entry")
            return 0
        settings = flat_settings(parse_overrides(args.settings))
        if args.time_steps:
            points = [p for board in boards for cell in leaderboard.BOARDS[board].cells(args.preset)
                      for p in leaderboard.committed_points(cell, args.preset,
                                                            [Path(args.committed_dir), results_dir])]
            print(f"wrote {leaderboard.measure_step_ms(points, results_dir, args.preset)}")
        drawn, empty = [], None
        for board in boards:
            try:
                print(leaderboard.leaderboard(args.preset, results_dir, names=args.estimator,
                                              plugins=args.plugins,
                                              settings=settings, equal_cost=args.equal_cost, cells=args.cell,
                                              committed_dir=Path(args.committed_dir), train=train,
                                              board=board, gradients=args.gradients))
                drawn.append(leaderboard.BOARDS[board].suffix)
            except leaderboard.NothingRanked as err:     # a board this preset has no run of: said, not fatal
                empty = err
                print(f"board {board}: {err}")
        if not drawn:
            raise empty
    except (SweepError, ConfigError, DataError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for suffix in drawn:
        print(f"wrote {results_dir / 'tables' / args.preset / f'leaderboard{suffix}.md'} (and .tex), "
              f"{results_dir / 'figures' / args.preset / f'frontier{suffix}.png'} (and .pdf)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
