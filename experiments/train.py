"""Train one configuration (all its seeds at once) and evaluate it.

    python -m experiments.train --config configs/vae_categorical.yaml estimator.name=st-gs seeds=[0,1,2]
    python -m experiments.train --resume results/runs/vae_categorical/<run>

Overrides are dotted keys with YAML values. Bad input (unknown key, invalid value, missing data,
unwritable output directory) or a diverged run prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vae.config import ConfigError, load_config
from vae.data import DataError
from vae.training import RunDirError, TrainingDiverged, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    parser.add_argument("--run-dir", help="where to write the run (default: <out_dir>/<experiment>/<name>)")
    parser.add_argument("--data-dir", help="directory holding the four MNIST IDX files (data.data_dir)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. tau.schedule=constant")
    args = parser.parse_args(argv)
    try:
        if args.resume:
            if args.config or args.overrides or args.run_dir or args.data_dir:
                raise ConfigError("--resume: takes no --config, --run-dir, --data-dir or overrides "
                                  "(the run keeps its config and directory)")
            run_dir = train(None, Path(args.resume), resume=True, progress=not args.no_progress)
        else:
            overrides = list(args.overrides) + ([f"data.data_dir={args.data_dir}"] if args.data_dir else [])
            cfg = load_config(args.config, overrides)
            run_dir = train(cfg, Path(args.run_dir) if args.run_dir else None, progress=not args.no_progress)
    except (ConfigError, DataError, RunDirError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"results: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
