"""Time the same training work several ways in one process and print the ratios.

    python -m experiments.bench [--device auto] [--steps 200] [--repeats 5] [--bound-examples N]

On the categorical VAE of configs/vae_categorical.yaml (20 x 10 latents, the notebook MLP, batch
100, Gumbel-softmax, Adam), after warm-up, the median of ``--repeats`` timings of each:

(a) a plain PyTorch loop as public code writes it: a ``DataLoader`` over a float tensor,
    ``nn.Sequential`` networks, ``F.gumbel_softmax``, ``loss.item()`` every step;
(b) the suite's training step for one seed (``Trainer.train_step``: data on the device, no host
    sync per step);
(c) the suite's replica step with R = 1, 5, 10 seeds at once (seed-steps/s = R x steps/s);
(d) the m = 1000 importance-weighted test bound (``--bound-examples`` test digits: all 10,000 on
    CUDA; 1,000 by default on the CPU, where all of them take minutes).

Prints steps/s and each one's ratio to (a), and writes the numbers as JSON to
``results/bench/<device>.json``. On CUDA every clock stops after a device synchronisation.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vae.config import Config, ConfigError, load_config
from vae.data import DataError
from vae.evaluation import eval_generator, importance_weighted_bound
from vae.training import RunDirError, Trainer

CONFIG = "configs/vae_categorical.yaml"
REPLICAS = (1, 5, 10)


def _timed(step: Callable[[], None], steps: int, repeats: int, sync: Callable[[], None], warmup: int = 10) -> float:
    """Median steps/s of ``repeats`` runs of ``steps`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def plain_loop(cfg: Config, trainer: Trainer) -> Callable[[], None]:
    """(a): one step of the loop public code writes (same sizes, same data, same device)."""
    m, device = cfg.model, trainer.device
    sizes = [784, *m.hidden, m.num_latents * m.num_classes]
    encoder = nn.Sequential(*[layer for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
                              for layer in ([nn.ReLU()] if i else []) + [nn.Linear(a, b)]]).to(device)
    sizes = sizes[::-1]
    decoder = nn.Sequential(*[layer for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
                              for layer in ([nn.ReLU()] if i else []) + [nn.Linear(a, b)]]).to(device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=cfg.optim.lr)
    data = torch.utils.data.TensorDataset(trainer.data.splits["train"].cpu())
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True)
    batches = iter(loader)
    losses = []

    def step() -> None:
        nonlocal batches
        try:
            (x,) = next(batches)
        except StopIteration:
            batches = iter(loader)
            (x,) = next(batches)
        x = x.to(device)
        logits = encoder(x).view(-1, m.num_latents, m.num_classes)
        z = F.gumbel_softmax(logits, tau=1.0)
        recon = F.binary_cross_entropy_with_logits(decoder(z.flatten(1)), x, reduction="none").sum(-1)
        log_q = F.log_softmax(logits, -1)
        kl = (log_q.exp() * (log_q + torch.log(torch.tensor(float(m.num_classes))))).sum((-1, -2))
        loss = (recon + kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--bound-examples", type=int, default=None,
                        help="test digits in the m = 1000 bound (default: all on CUDA, 1000 on the CPU)")
    parser.add_argument("--out", default="results/bench", help="folder of the JSON record")
    args = parser.parse_args(argv)
    try:
        if args.steps < 1 or args.repeats < 1:
            raise ConfigError("--steps and --repeats: must be >= 1")
        one = Trainer(load_config(CONFIG, [f"device={args.device}"]), log=lambda _: None)
        device = one.device
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        rates = {"(a) plain PyTorch loop": _timed(plain_loop(one.cfg, one), args.steps, args.repeats, sync),
                 "(b) suite, one seed": _timed(one.train_step, args.steps, args.repeats, sync)}
        for r in REPLICAS:
            trainer = Trainer(load_config(CONFIG, [f"device={args.device}", f"seeds={list(range(r))}"]),
                              log=lambda _: None)
            rates[f"(c) replica axis, R = {r}"] = _timed(trainer.train_step, args.steps, args.repeats, sync)
        examples = args.bound_examples or (10_000 if device.type == "cuda" else 1_000)
        sync()
        start = time.perf_counter()
        importance_weighted_bound(one.model, one.data, "test", eval_generator([0], 0, device), 1000,
                                  one.cfg.eval.iw_batch_size, examples)
        sync()
        bound_seconds = time.perf_counter() - start
    except (ConfigError, DataError, RunDirError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    base = rates["(a) plain PyTorch loop"]
    print(f"device: {name}; torch {torch.__version__}; categorical VAE 20x10, MLP 512-256, batch 100, gs, Adam; "
          f"median of {args.repeats} x {args.steps} steps after warm-up")
    for label, rate in rates.items():
        replicas = int(label.rsplit(" ", 1)[1]) if label.startswith("(c)") else 1
        print(f"{label:28s} {rate:9.1f} steps/s {rate * replicas:9.1f} seed-steps/s "
              f"{rate * replicas / base:7.2f}x (a)")
    print(f"(d) m = 1000 bound, {examples} test digits: {bound_seconds:.1f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"device": name, "torch": torch.__version__, "steps": args.steps, "repeats": args.repeats,
              "steps_per_second": rates, "bound_examples": examples, "bound_seconds": round(bound_seconds, 2),
              "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = out / f"{device.type}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
