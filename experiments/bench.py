"""Time the same training work two ways and print the ratio.

    python -m experiments.bench [--seeds 5] [--steps 200] [--estimator gs] [--device auto]

(a) all seeds at once on the replica axis (one process, batched matmuls);
(b) the same seeds one after another, one single-seed run each.
Both do identical arithmetic per seed (a test proves replica r equals the single run with seed
r), so the ratio is the speed-up of the replica design on this machine. Warm-up steps are not
timed; on CUDA the clock stops only after a device synchronisation.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from vae.config import ConfigError, load_config
from vae.data import DataError
from vae.training import RunDirError, Trainer


def steps_per_second(seeds: list[int], steps: int, estimator: str, device: str, warmup: int = 10) -> float:
    cfg = load_config("configs/vae_categorical.yaml", [f"seeds={seeds}", f"steps={steps + warmup}",
                                                       f"estimator.name={estimator}", f"device={device}"])
    trainer = Trainer(cfg, log=lambda _: None)
    for _ in range(warmup):
        trainer.train_step()
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    return steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (replicas)")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per measurement")
    parser.add_argument("--estimator", default="gs", help="estimator name")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    try:
        together = steps_per_second(seeds, args.steps, args.estimator, args.device)
        alone = [steps_per_second([s], args.steps, args.estimator, args.device) for s in seeds]
    except (ConfigError, DataError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sequential = 1 / sum(1 / a for a in alone)   # steps/s of all seeds when run one after another
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else (
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    print(f"device: {device}; torch {torch.__version__}; categorical VAE 20x10, batch 100, "
          f"estimator {args.estimator}, {args.seeds} seeds, {args.steps} timed steps")
    print(f"replica axis, {args.seeds} seeds at once : {together:8.1f} steps/s "
          f"({together * args.seeds:8.1f} seed-steps/s)")
    print(f"one seed at a time, {args.seeds} runs       : {sequential:8.1f} steps/s "
          f"({sequential * args.seeds:8.1f} seed-steps/s)")
    print(f"speed-up of the replica axis         : {together / sequential:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
