"""Figures of the reproduction, from the local results store: ``python -m experiments.figures NAME``.

Which figures there are and what they show is said in :mod:`vae.reporting.figures` (its docstring is this
command's ``--help``). Each is written as PNG and PDF under ``<results>/figures/<preset>/``; the
paths are printed. An unknown preset or sweep, or a figure with a panel none of whose runs has
finished (unless ``--partial``), is one line and exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae.reporting import figures
from vae.sweeps.definition import PRESETS, SweepError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.figures", description=figures.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=list(figures.FIGURES))
    parser.add_argument("--preset", default="quick", choices=PRESETS,
                        help="which runs to read (default quick)")
    parser.add_argument("--results-dir", default="results", help="results store root (default results)")
    parser.add_argument("--partial", action="store_true",
                        help="draw a panel none of whose runs has finished (empty) instead of refusing")
    args = parser.parse_args(argv)
    try:
        paths = figures.FIGURES[args.figure](args.preset, Path(args.results_dir), partial=args.partial)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(f"wrote {p}" for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
