"""Time the same training work several ways in one process and print the ratios.

    python -m experiments.bench [--device auto] [--steps 200] [--repeats 5] [--bound-examples N]
    python -m experiments.bench --bound [--bound-examples N] [--threads 1]
    python -m experiments.bench --floor [--estimator NAME ...] [--cell CELL ...] [--threads 1]
    python -m experiments.bench --anchors [--steps 200] [--repeats 5] [--threads 1]
    python -m experiments.bench --ssl-classes [--preset quick] [--device auto] [--steps S] [--repeats N]
    python -m experiments.bench --profile [--preset quick] [--device auto] [--steps 10]

What each line measures is said in :mod:`vae.reporting.bench` (its docstring is this command's ``--help``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from vae.config import ConfigError
from vae.data.images import DataError
from vae.estimators import ESTIMATORS
from vae.reporting import bench
from vae.store.run_dir import write_json_atomic
from vae.sweeps.definition import PRESETS
from vae.training.trainer import RunDirError, resolve_device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 200; "
                        "--ssl-classes: the preset's)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats; the median is reported "
                        "(default 5; --ssl-classes: the preset's)")
    parser.add_argument("--ssl-classes", action="store_true",
                        help="time marginal against gs in the semi-supervised task per number of classes "
                             "(Figure 5(a))")
    parser.add_argument("--profile", action="store_true",
                        help="profile the VAE step and the M2 step (marginal, gs) instead: "
                             "where a step's time goes")
    parser.add_argument("--preset", default="quick", choices=PRESETS,
                        help="with --ssl-classes: the classes and budget; with --profile: "
                             "the M2 networks (default quick)")
    parser.add_argument("--bound", action="store_true",
                        help="time only (d), the m = 1000 bound against the implementation it replaced")
    parser.add_argument("--anchors", action="store_true",
                        help="time only the suite's step against (a′), the best hand-written loop, for GS, "
                             "ST-GS and RLOO on the affine and the MLP VAE")
    parser.add_argument("--floor", action="store_true",
                        help="time only (f), every estimator's step against its own matrix "
                             "products timed alone")
    parser.add_argument("--estimator", nargs="+", default=None, help="with --floor: these estimators only")
    parser.add_argument("--cell", nargs="+", default=None, choices=list(bench.FLOOR_CELLS),
                        help="with --floor: these models only (default all)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="with --floor: also time R seeds at once on the replica axis (default 1: not)")
    parser.add_argument("--eager-only", action="store_true",
                        help="leave out the compile=true timings (each compiles its step first: "
                             "seconds to a minute)")
    parser.add_argument("--compiled", action="store_true",
                        help="with --ssl-classes: time both modes with compile=true instead (the step as one "
                             "graph; writes ssl_speed_<device>_compiled.json)")
    parser.add_argument("--bound-examples", type=int, default=200,
                        help=f"test digits in each of the {bench.BOUND_REPEATS} timings of (d) (default 200)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads on the CPU (default torch's; 1: "
                             "as each run of a 2-worker sweep trains)")
    parser.add_argument("--out", default="results/bench", help="folder of the JSON record")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if any(n is not None and n < 1 for n in (args.steps, args.repeats, args.threads, args.bound_examples,
                                                 args.replicas)):
            raise ConfigError("--steps, --repeats, --threads, --bound-examples and --replicas: must be >= 1")
        unknown = [n for n in args.estimator or [] if n not in ESTIMATORS]
        if unknown:
            raise ConfigError(f"--estimator: unknown {', '.join(map(repr, unknown))}; "
                              f"known: {', '.join(ESTIMATORS)}")
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.profile:
            print(f"wrote {bench.profile_steps(args.device, args.preset, args.steps or 10, out)}")
            return 0
        if args.ssl_classes:
            print(
                f"wrote "
                f"{bench.ssl_speed(args.device, args.preset, args.steps, args.repeats, out, args.compiled)}")
            return 0
        if args.anchors:
            record = {"device": bench.device_name(resolve_device(args.device)), "torch": torch.__version__,
                      "kernels": bench.kernel_path(resolve_device(args.device)),
                      "anchors": bench.anchor_speed(args.device, args.steps or 200, args.repeats or 5,
                                                    compiled=not args.eager_only),
                      "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
            bench.print_anchor_speed(record["anchors"])
            path = out / f"anchors_{resolve_device(args.device).type}.json"
        elif args.floor:
            path = out / f"floor_{resolve_device(args.device).type}.json"
            steps, repeats = args.steps or 100, args.repeats or 5
            speed = bench.floor_speed(args.device, steps, repeats, compiled=not args.eager_only,
                                      cells=args.cell, names=args.estimator, replicas=args.replicas)
            bench.print_floor_speed(speed)
            record = bench.floor_record(args.device, speed, path, steps, repeats)
        elif args.bound:
            record = bench.bound_record(args.device, args.bound_examples)
            bench.print_bound_speed(record["models"])
            path = out / f"bound_{resolve_device(args.device).type}.json"
        else:   # written once before the anchors (their compilations are the slow part) and again with them
            record = bench.training_record(args.device, args.steps or 200, args.repeats or 5,
                                           args.bound_examples, compiled=not args.eager_only)
            bench.print_training_record(record)
            path = write_json_atomic(out / f"{resolve_device(args.device).type}.json", record)
            record["anchors"] = bench.anchor_speed(args.device, args.steps or 200, args.repeats or 5,
                                                   compiled=not args.eager_only)
            bench.print_anchor_speed(record["anchors"])
    except (ConfigError, DataError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {write_json_atomic(path, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
