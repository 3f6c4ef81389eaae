"""The estimator catalogue, generated: writes :func:`vae.estimators.catalogue` (one row per registered
estimator, from its class's declarations) between the ``<!-- catalogue -->`` markers of
vae/estimators/README.md, so the page follows the classes (tests/test_estimators.py checks it does).

    python -m experiments.catalogue [--plugins MODULE ...] [--readme PATH]

``--plugins`` imports modules that register estimators of your own first (their rows join the
table); ``--readme`` writes another copy of the page. A page without the markers, or a plugin that
does not import, is one line and exit status 2, and the page is left as it was.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from vae.estimators import catalogue
from vae.store.run_dir import write_text_atomic

README = Path(__file__).resolve().parents[1] / "vae" / "estimators" / "README.md"
BLOCK = re.compile(r"(<!-- catalogue -->\n).*?(<!-- /catalogue -->)", flags=re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plugins", nargs="+", default=[],
                        help="modules that register estimators of your own")
    parser.add_argument("--readme", type=Path, default=README,
                        help="the page to write (default: %(default)s)")
    args = parser.parse_args(argv)
    for module in args.plugins:
        try:
            importlib.import_module(module)
        except Exception as err:      # a user's module: whatever it raises, one line
            print(f"--plugins: cannot import {module!r} ({type(err).__name__}: {err})", file=sys.stderr)
            return 2
    text = args.readme.read_text()
    if not BLOCK.search(text):
        print(f"--readme: {args.readme} has no <!-- catalogue --> ... <!-- /catalogue --> block",
              file=sys.stderr)
        return 2
    write_text_atomic(args.readme, BLOCK.sub(lambda m: m.group(1) + catalogue() + m.group(2), text, count=1))
    print(f"wrote the catalogue of {catalogue().count(chr(10)) - 2} estimators into {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
