"""Train one configuration (all its seeds at once) and evaluate it.

    python -m experiments.train --config configs/vae_categorical.yaml estimator.name=st-gs seeds=[0,1,2]
    python -m experiments.train --config configs/vae_categorical.yaml optim.lr=3e-4 --print-config
    python -m experiments.train --resume results/runs/vae_categorical/<run> [steps=100000]

Overrides are dotted keys with YAML values (``3e-4`` is a number). ``--results-dir R`` puts the
run under ``R/runs/`` (as ``out_dir=R/runs``). ``--resume`` continues a run with its own config;
``steps=N`` is the one override it takes (train a run further). At the end the final held-out
numbers are printed (mean ± std over seeds). Bad input (unknown key, invalid value, missing data,
unwritable output directory) or a diverged run prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from vae.config import ConfigError, key_table_markdown, load_config, parse_overrides, to_dict
from vae.data.images import DataError
from vae.store.records import held_out_lines
from vae.store.run_dir import load_summary
from vae.training.tasks import check
from vae.training.trainer import RunDirError, TrainingDiverged, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    parser.add_argument("--results-dir", help="results store root: the run goes under <dir>/runs/ (out_dir)")
    parser.add_argument("--run-dir", help="where to write the run (default: <out_dir>/<experiment>/<name>)")
    parser.add_argument("--data-dir", help="directory holding the four MNIST IDX files (data.data_dir)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and run nothing")
    parser.add_argument("--keys", action="store_true",
                        help="print every config key, its default and meaning; run nothing")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (none either when stderr is not a terminal)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. tau.schedule=constant")
    args = parser.parse_args(argv)
    if args.keys:   # the config's plugins imported first, so their estimators' options are listed too
        try:
            load_config(args.config, args.overrides)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(key_table_markdown())
        return 0
    try:
        if args.resume:
            if args.config or args.run_dir or args.data_dir or args.results_dir or args.print_config:
                raise ConfigError("--resume: takes no --config, --run-dir, --data-dir, --results-dir or "
                                  "--print-config (the run keeps its config and directory)")
            if set(parse_overrides(args.overrides)) - {"steps"}:
                raise ConfigError("--resume: the one override it takes is steps=N (train the run further); "
                                  f"got {' '.join(args.overrides)}")
            steps = load_config(None, args.overrides).steps if args.overrides else None
            run_dir = train(None, Path(args.resume), resume=True, steps=steps,
                            progress=not args.no_progress and sys.stderr.isatty())
        else:
            overrides = list(args.overrides)
            if args.results_dir:
                if "out_dir" in parse_overrides(overrides):
                    raise ConfigError("out_dir: give --results-dir or out_dir=, not both")
                overrides.append(f"out_dir={Path(args.results_dir) / 'runs'}")
            if args.data_dir:
                overrides.append(f"data.data_dir={args.data_dir}")
            cfg = check(load_config(args.config, overrides))
            if args.print_config:
                print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
                return 0
            run_dir = train(cfg, Path(args.run_dir) if args.run_dir else None,
                            progress=not args.no_progress and sys.stderr.isatty())
    except (ConfigError, DataError, RunDirError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"results: {run_dir}")
    print("\n".join(held_out_lines(load_summary(run_dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
