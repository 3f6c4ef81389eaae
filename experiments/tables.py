"""Tables of the reproduction, from the local results store: ``python -m experiments.tables NAME``.

Which tables there are and what their cells mean is said in :mod:`vae.reporting.tables` (its docstring is
this command's ``--help``). Written to ``<results>/tables/<preset>/<name>.md`` (and ``.tex``);
the markdown is printed. An unknown preset or sweep is one line and exit status 2; a table with
no finished run, exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae.reporting import tables
from vae.sweeps.definition import PRESETS, SweepError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tables", description=tables.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=sorted(tables.TABLES))
    parser.add_argument("--preset", default="quick", choices=PRESETS,
                        help="which runs to read (default quick)")
    parser.add_argument("--results-dir", default="results", help="results store root (default results)")
    args = parser.parse_args(argv)
    try:
        print(tables.TABLES[args.table](args.preset, Path(args.results_dir)))
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except tables.NothingFinished as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
