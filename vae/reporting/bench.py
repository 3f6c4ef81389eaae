"""Timing the same training work several ways in one process: what ``python -m experiments.bench`` runs.

    python -m experiments.bench [--device auto] [--steps 200] [--repeats 5] [--bound-examples N]
    python -m experiments.bench --ssl-classes [--preset quick] [--device auto] [--steps S] [--repeats N]
    python -m experiments.bench --profile [--preset quick] [--device auto] [--steps 10]

On the categorical VAE of configs/vae_categorical.yaml (20 x 10 latents, the notebook MLP, batch
100, Gumbel-softmax, Adam), after warm-up, the median of ``--repeats`` timings of each:

(a) a plain PyTorch loop as public code writes it: a ``DataLoader`` over a float tensor,
    ``nn.Sequential`` networks, ``F.gumbel_softmax``, ``loss.item()`` every step;
(a′) the best loop written by hand (:func:`hand_loop`): the training set on the device, batches
    by random indices, no host sync, torch's fused Adam;
(b) the suite's training step for one seed (``Trainer.train_step``: data on the device, no host
    sync per step);
(c) the suite's replica step with R = 1, 5, 10 seeds at once (seed-steps/s = R x steps/s), eager
    and with ``compile=true`` (the step as one graph, vae/training/compiled_step.py; its compilation falls
    in the warm-up; ``--eager-only`` leaves the compiled timings out, here and in (e) and the
    anchors);
(d) the m = 1000 importance-weighted test bound of the affine and the MLP VAE, categorical and
    Bernoulli (configs/vae_*.yaml), the suite's (:func:`vae.models.evaluation.importance_weighted_bound`)
    against the implementation it replaced (:func:`reference_bound`: one-hot Gumbel-max samples
    through the decoder's matmul, ``binary_cross_entropy_with_logits``), each one seed on
    ``--bound-examples`` test digits (default 200; per seed for all 10,000 by proportion; the
    median of 3 timings, the two's interleaved: the reference's time moves with the machine), with the
    effective GFLOP/s of the decoder's work and the same matmul's own, and the largest difference
    of the two on the same samples (the replaced arithmetic, untimed, on the suite's inverse-CDF
    samples) (``--bound``: only this);
(e) one pack of Table 1's ``paper`` preset as ``sweep --pack-lr`` trains it: categorical GS, its
    6 learning rates x 5 seeds on the replica axis (R = 30, SGD, a learning rate per replica),
    timed over a tenth of ``--steps`` per repeat, eager and compiled; from each, the training time
    of the whole preset (all its packs, at this pack's cost per step: estimators with more decoder
    passes cost more).

(f) every estimator's step against its *matmul floor* (:mod:`vae.reporting.step_cost`): the step's own
    matrix products, recorded from one eager step and timed alone in the same process, on the
    linear 200-Bernoulli VAE at batch 50 (the 2020 benchmark's) and 100 and the affine categorical
    VAE at batch 100, the notebook's MLP VAE and the two SBNs, one seed, eager and compiled, with
    the ratio step / floor, the compilation's seconds and the steps that repay them, and where the
    eager step's time goes by part (sampling, estimator, model and loss, backward, optimiser)
    (``--floor``: only this, written to ``floor_<device>.json``; ``--estimator`` and ``--cell``
    pick some);

and, per model (affine and MLP) and estimator (GS, ST-GS, RLOO), the suite's step, eager and
compiled, against (a′) written for that estimator (:func:`anchor_speed`; ``--anchors``: only this). Prints
steps/s and each one's ratio to (a) and (a′), and writes the numbers as JSON to
``results/bench/<device>.json``. On CUDA every clock stops after a device synchronisation.

``--ssl-classes`` (Figure 5(a), ``make fig5``) times instead the semi-supervised M2 training step
(configs/ssl_m2.yaml) with the unlabelled digits' class summed (``ssl.y=marginal``, C decoder passes
per digit) and sampled with Gumbel-softmax (``ssl.y=gs``, one pass), for C classes of random labels
(``ssl.labels=random``), both modes on the same device in this process, after warm-up, the median
of the repeats. ``--preset`` picks the classes and the budget (:data:`SSL_BENCH`; ``tiny``: tiny
networks, the tests' code path). Prints steps/s and the speed-up gs / marginal per C, and writes
them to ``<out>/ssl_speed_<device>.json``.

``--profile`` asks where a step's time goes rather than how long it takes (:func:`profile_steps`):
on a GPU, whether the device is busy or waits on the host's launches and synchronisations.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vae.config import Config, config_from_dict, load_config, to_dict
from vae.data.images import BinarizedImages
from vae.estimators import ESTIMATORS, applicable, column_order
from vae.estimators.sampling import class_boundaries, sample_classes_by_inverse_cdf
from vae.models.discrete_vae import DiscreteVAE
from vae.models.evaluation import eval_generator, importance_weighted_bound, negative_log_mean_weight
from vae.numerics.gumbel import log_prob_one_hot
from vae.reporting.step_cost import matmul_floor, record_matmuls, step_parts
from vae.store.run_dir import write_json_atomic
from vae.sweeps.definition import expand, read_sweep
from vae.sweeps.running import Pack, pack_by_lr
from vae.training.schedules import lowest_tau
from vae.training.trainer import Trainer, resolve_device

CONFIG = "configs/vae_categorical.yaml"
PAPER_SWEEP, PAPER_PRESET = "configs/sweeps/table1.yaml", "paper"   # (e): its packs under --pack-lr
REPLICAS = (1, 5, 10)
SSL_CONFIG = "configs/ssl_m2.yaml"
SSL_MODES = ("marginal", "gs")
# --ssl-classes per preset: the classes C timed, timed steps per repeat, repeats, warm-up steps, overrides
SSL_BENCH = {
    "tiny": {"classes": [10, 20], "steps": 2, "repeats": 1, "warmup": 1,
             "overrides": ["ssl.channels=[2,2,2]", "ssl.latent_dim=2", "ssl.labelled_batch_size=10",
                           "data.batch_size=20"]},
    "quick": {"classes": [10, 20, 50, 100], "steps": 5, "repeats": 3, "warmup": 2, "overrides": []},
    "converged": {"classes": [10, 20, 50, 100], "steps": 20, "repeats": 5, "warmup": 5, "overrides": []},
    "paper": {"classes": [10, 20, 50, 100], "steps": 100, "repeats": 5, "warmup": 10, "overrides": []},
}


def median_rate(step: Callable[[], None], steps: int, repeats: int, sync: Callable[[], None],
                warmup: int = 10) -> float:
    """Median steps/s of ``repeats`` runs of ``steps`` calls, after ``warmup`` calls."""
    return median_rates({"": step}, steps, repeats, sync, warmup)[""]


def median_rates(steps_of: dict[str, Callable[[], None]], steps: int, repeats: int, sync: Callable[[], None],
                 warmup: int = 10) -> dict[str, float]:
    """:func:`median_rate` of each step function, their repeats interleaved (a, b, c, a, b, c, ...),
    so that a change in the machine's load during the measurement moves all of them alike."""
    for step in steps_of.values():
        for _ in range(warmup):
            step()
    rates: dict[str, list[float]] = {name: [] for name in steps_of}
    for _ in range(repeats):
        for name, step in steps_of.items():
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync()
            rates[name].append(steps / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def device_name(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3`` or ``CPU x86_64, 2 threads``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"


def kernel_path(device: torch.device) -> str:
    """Which CPU kernels torch runs (``ATen AVX512, oneDNN up to AVX2``: ``ATEN_CPU_CAPABILITY`` and
    ``ONEDNN_MAX_CPU_ISA`` choose lower ones on a machine that has more), or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"ATen {torch.backends.cpu.get_cpu_capability()}, "
            f"oneDNN up to {os.environ.get('ONEDNN_MAX_CPU_ISA', 'its best')}")


def device_sync(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def ssl_speed(device: str, preset: str, steps: int | None, repeats: int | None, out: Path,
              compiled: bool = False) -> Path:
    """Figure 5(a): training steps/s of ``marginal`` and ``gs`` per number of classes (module
    docstring), eager or (``compiled``) with ``compile=true``; returns the JSON record's path."""
    budget = SSL_BENCH[preset]
    steps, repeats = steps or budget["steps"], repeats or budget["repeats"]
    # step 2 compiles (step 1 plans, eagerly)
    warmup = max(budget["warmup"], 2) if compiled else budget["warmup"]
    rates: dict[str, dict[str, float]] = {mode: {} for mode in SSL_MODES}
    for c in budget["classes"]:
        for mode in SSL_MODES:
            overrides = [f"device={device}", "ssl.labels=random", f"ssl.num_classes={c}", f"ssl.y={mode}",
                         *budget["overrides"], f"compile={str(compiled).lower()}"]
            trainer = Trainer(load_config(SSL_CONFIG, overrides), log=lambda _: None)
            rates[mode][str(c)] = median_rate(trainer.train_step, steps, repeats, device_sync(trainer.device),
                                              warmup)
    speedup = {c: rates["gs"][c] / rates["marginal"][c] for c in rates["gs"]}
    name = device_name(trainer.device)
    print(f"device: {name}; torch {torch.__version__}; M2 of {SSL_CONFIG} ({preset}), random labels"
          f"{', compile=true' if compiled else ''}; median of {repeats} x {steps} steps after {warmup} "
          f"warm-up steps")
    for c, ratio in speedup.items():
        print(f"C = {c:>3}: marginal {rates['marginal'][c]:8.2f} steps/s, gs {rates['gs'][c]:8.2f} steps/s, "
              f"gs / marginal {ratio:5.2f}x")
    record = {"device": name, "torch": torch.__version__, "config": SSL_CONFIG, "preset": preset,
              "overrides": budget["overrides"], "compile": compiled, "steps": steps, "repeats": repeats,
              "warmup": warmup,
              "steps_per_second": rates, "speedup": speedup, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    return write_json_atomic(out / f"ssl_speed_{trainer.device.type}{'_compiled' if compiled else ''}.json",
                             record)


def profile_steps(device: str, preset: str, steps: int, out: Path) -> Path:
    """Where a training step's time goes (``--profile``): ``torch.profiler`` over ``steps`` steps,
    after warm-up, of the categorical VAE (GS) and of the M2 step with C = 10 (marginal and gs, the
    preset's overrides). Per workload: wall ms per step under the profiler, the host's self time
    and the device's busy time per step (their gap is time the GPU waits for the host), the CUDA
    runtime calls per step (kernel launches, copies, synchronisations), and the operators with the
    most self time. Prints it all and writes it to ``<out>/profile_<device>.txt``; returns the path."""
    workloads = {"categorical VAE, gs": (CONFIG, []),
                 **{f"M2 {mode}, C = 10": (SSL_CONFIG,
                                           [f"ssl.y={mode}", "ssl.labels=random", "ssl.num_classes=10",
                                            *SSL_BENCH[preset]["overrides"]]) for mode in SSL_MODES}}
    lines = []
    for label, (config, overrides) in workloads.items():
        trainer = Trainer(load_config(config, [f"device={device}", "compile=false", *overrides]),
                          log=lambda _: None)
        sync = device_sync(trainer.device)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        for _ in range(3):
            trainer.train_step()
        sync()
        with torch.profiler.profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            sync()
            wall = time.perf_counter() - start
        averages = prof.key_averages()
        host = sum(e.self_cpu_time_total for e in averages) / steps / 1000
        busy = sum(e.self_device_time_total for e in averages) / steps / 1000
        runtime = sorted((e for e in averages if e.key.startswith("cu")), key=lambda e: -e.count)
        calls = ", ".join(f"{e.key} {e.count / steps:.0f}" for e in runtime[:6]) or "none (no CUDA)"
        sort_by = "self_device_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
        lines += [f"== {label}: {1000 * wall / steps:.2f} ms per step under the profiler ({steps} steps); "
                  f"host self time {host:.2f} ms, device busy {busy:.2f} ms per step",
                  f"CUDA runtime calls per step: {calls}", averages.table(sort_by=sort_by, row_limit=12), ""]
    text = (f"device: {device_name(trainer.device)}; torch {torch.__version__}; measured "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n" + "\n".join(lines))
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"profile_{trainer.device.type}.txt"
    path.write_text(text)
    return path


BOUND_CONFIGS = ("configs/vae_categorical_linear.yaml", "configs/vae_categorical.yaml",
                 "configs/vae_bernoulli_linear.yaml", "configs/vae_bernoulli.yaml")
BOUND_SAMPLES, BOUND_CHUNK = 1000, 100     # m, and the samples per pass of the replaced implementation
BOUND_REPEATS = 3                          # timings of each bound in (d), interleaved; their median counts


def gumbel_max_classes(logits: torch.Tensor, rng, s: int) -> torch.Tensor:
    """The replaced implementation's samples: ``argmax(logits + g)``,
    g Gumbel ``-log(-log u)`` out of place."""
    shape = (logits.shape[0], s, *logits.shape[1:])
    u = rng.uniform(shape).clamp_(torch.finfo(torch.float32).tiny, 1.0 - torch.finfo(torch.float32).eps / 2)
    return (logits.unsqueeze(1) - torch.log(-torch.log(u))).argmax(-1)


def inverse_cdf_classes(logits: torch.Tensor, rng, s: int) -> torch.Tensor:
    """The suite's samples (:func:`vae.estimators.sampling.sample_classes_by_inverse_cdf`)."""
    return sample_classes_by_inverse_cdf(class_boundaries(logits), rng, num_samples=s)


def reference_bound(model: DiscreteVAE, data: BinarizedImages, split: str, rng, num_samples: int,
                    batch_size: int, max_examples: int | None = None,
                    sample: Callable[[torch.Tensor, object, int], torch.Tensor] = gumbel_max_classes
                    ) -> torch.Tensor:
    """The m-sample bound as the suite computed it before (2026-11): one-hot z ``[R, S, B, N, K]``
    (classes from ``sample``: Gumbel-max as it was, or :func:`inverse_cdf_classes`, the suite's
    samples) through the decoder's matmul, ``-log p(x | z)`` by ``binary_cross_entropy_with_logits``
    over the 784 pixels, ``log q`` and ``log p`` as products with z."""
    def log_weights(x: torch.Tensor):
        logits = model.encode(x)

        def draw(s: int) -> torch.Tensor:
            z = F.one_hot(sample(logits, rng, s), logits.shape[-1]).float()
            return -model.reconstruction_loss(z, x) + model.log_prior(z) - log_prob_one_hot(logits, z)
        return draw

    return negative_log_mean_weight(data, split, len(rng), num_samples, batch_size, BOUND_CHUNK, log_weights,
                                    max_examples)


def bound_speed(device: str, examples: int) -> dict[str, dict]:
    """(d): per model of :data:`BOUND_CONFIGS`, the reference and the suite's bound on the first
    ``examples`` test digits (one seed, a freshly initialised model: the cost does not depend on the
    weights), the median of :data:`BOUND_REPEATS` interleaved timings of each: seconds, per-seed
    seconds for 10,000 digits, the speed-up, the largest difference of
    the two bounds on the same samples, and GFLOP/s: the decoder's work as dense matmuls
    (2 x in x out per layer and sample) over the suite's time, and the same matmuls' own, timed alone."""
    out = {}
    for config in BOUND_CONFIGS:
        # the model only: no step is compiled
        cfg = load_config(config, [f"device={device}", "compile=false"])
        trainer = Trainer(cfg, log=lambda _: None)
        sync, model, e = device_sync(trainer.device), trainer.model, cfg.eval
        timings, bounds = {"reference": [], "suite": []}, {}
        for _ in range(BOUND_REPEATS):
            for name, bound in (("reference", reference_bound), ("suite", importance_weighted_bound)):
                rng = eval_generator([0], 0, trainer.device)
                with torch.no_grad():
                    sync()
                    start = time.perf_counter()
                    bounds[name] = bound(model, trainer.data, "test", rng, BOUND_SAMPLES, e.iw_batch_size,
                                         examples)
                    sync()
                timings[name].append(time.perf_counter() - start)
        seconds = {name: statistics.median(t) for name, t in timings.items()}
        with torch.no_grad():                        # untimed: the replaced arithmetic on the suite's samples
            same_samples = reference_bound(model, trainer.data, "test",
                                           eval_generator([0], 0, trainer.device),
                                           BOUND_SAMPLES, e.iw_batch_size, examples, inverse_cdf_classes)
        sizes = [m.weight.shape[1:] for m in model.decoder if hasattr(m, "weight")]     # (in, out) per layer
        flops = 2 * sum(a * b for a, b in sizes) * BOUND_SAMPLES * examples
        rows = BOUND_CHUNK * e.iw_batch_size
        inputs = [torch.randn(1, rows, a, device=trainer.device) for a, _ in sizes]
        weights = [torch.randn(1, a, b, device=trainer.device) for a, b in sizes]
        matmul = median_rate(lambda: [torch.bmm(h, w) for h, w in zip(inputs, weights)], 5, 5, sync, warmup=2)
        out[config] = {"hidden": cfg.model.hidden, "kind": cfg.model.kind, "examples": examples,
                       "seconds": {k: round(v, 3) for k, v in seconds.items()},
                       "seconds_per_seed_10000": {k: round(v * 10_000 / examples, 1)
                                                  for k, v in seconds.items()},
                       "speedup": round(seconds["reference"] / seconds["suite"], 2),
                       "max_abs_difference": (bounds["suite"] - same_samples).abs().max().item(),
                       "effective_gflops": round(flops / seconds["suite"] / 1e9, 1),
                       "matmul_gflops": round(2 * sum(a * b for a, b in sizes) * rows * matmul / 1e9, 1)}
    return out


def print_bound_speed(speed: dict[str, dict]) -> None:
    for config, s in speed.items():
        print(f"(d) m = {BOUND_SAMPLES} bound, {config} ({s['examples']} digits): reference "
              f"{s['seconds_per_seed_10000']['reference']:.1f} s, suite "
              f"{s['seconds_per_seed_10000']['suite']:.1f} s per seed on 10,000 digits, {s['speedup']:.2f}x; "
              f"decoder {s['effective_gflops']:.0f} GFLOP/s of the matmul's {s['matmul_gflops']:.0f}; "
              f"|difference| {s['max_abs_difference']:.1e} nats")


def _networks(cfg: Config, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The VAE's encoder and decoder as public code writes them: ``nn.Sequential`` of ``nn.Linear``."""
    m = cfg.model
    sizes = [784, *m.hidden, m.num_latents * m.num_classes]
    encoder = nn.Sequential(*[layer for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
                              for layer in ([nn.ReLU()] if i else []) + [nn.Linear(a, b)]]).to(device)
    sizes = sizes[::-1]
    decoder = nn.Sequential(*[layer for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
                              for layer in ([nn.ReLU()] if i else []) + [nn.Linear(a, b)]]).to(device)
    return encoder, decoder


def _categorical_kl(logits: torch.Tensor) -> torch.Tensor:
    """KL(q || uniform) per example, written out: ``[B, N, K] -> [B]``."""
    log_q = F.log_softmax(logits, -1)
    return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum((-1, -2))


def plain_loop(cfg: Config, trainer: Trainer) -> Callable[[], None]:
    """(a): one step of the loop public code writes (same sizes, same data, same device)."""
    m, device = cfg.model, trainer.device
    encoder, decoder = _networks(cfg, device)
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
        loss = (recon + _categorical_kl(logits)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    return step


def hand_loop(cfg: Config, trainer: Trainer) -> Callable[[], None]:
    """(a′): the best loop written by hand for the same step: the training set on the device,
    each batch drawn by random indices, no host synchronisation, torch's fused Adam, the estimator
    written out (``gs`` / ``st-gs``: ``F.gumbel_softmax`` soft / hard at tau = 1; ``rloo``:
    ``estimator.num_samples`` one-hot samples, the leave-one-out baseline, the score-function
    surrogate), the analytic KL to the uniform prior."""
    m, device, name = cfg.model, trainer.device, cfg.estimator.name
    if name not in ANCHOR_ESTIMATORS:
        raise ValueError(f"the hand-written loop has {', '.join(ANCHOR_ESTIMATORS)}, not {name!r}")
    encoder, decoder = _networks(cfg, device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=cfg.optim.lr, fused=True)
    train, k = trainer.data.splits["train"].to(device), cfg.estimator.num_samples

    def step() -> None:
        x = train[torch.randint(0, train.shape[0], (cfg.data.batch_size,), device=device)]
        logits = encoder(x).view(-1, m.num_latents, m.num_classes)                 # [B, N, K]
        if name == "rloo":
            with torch.no_grad():
                z = F.one_hot(torch.distributions.Categorical(logits=logits).sample((k,)),
                              m.num_classes).float()
            recon = F.binary_cross_entropy_with_logits(decoder(z.flatten(2)), x.expand(k, -1, -1),
                                                       reduction="none").sum(-1)   # [k, B]
            log_q = (z * F.log_softmax(logits, -1)).sum((-1, -2))
            baseline = (recon.sum(0, keepdim=True) - recon) / (k - 1)
            recon = (recon + (recon - baseline).detach() * (log_q - log_q.detach())).mean(0)   # value: recon
        else:
            z = F.gumbel_softmax(logits, tau=1.0, hard=name == "st-gs")
            recon = F.binary_cross_entropy_with_logits(decoder(z.flatten(1)), x, reduction="none").sum(-1)
        loss = (recon + _categorical_kl(logits)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


ANCHOR_CONFIGS = ("configs/vae_categorical_linear.yaml", "configs/vae_categorical.yaml")
ANCHOR_ESTIMATORS = ("gs", "st-gs", "rloo")


def anchor_speed(device: str, steps: int, repeats: int, compiled: bool = True) -> dict[str, dict[str, dict]]:
    """The suite's training step (one seed), eager and (``compiled``) with ``compile=true``,
    against (a′), :func:`hand_loop`, per model of :data:`ANCHOR_CONFIGS` and estimator of
    :data:`ANCHOR_ESTIMATORS`: steps/s of each (the median of ``repeats`` x ``steps`` after
    warm-up, which holds the compilation; the three's repeats interleaved) and the ratios suite / (a′)."""
    out: dict[str, dict[str, dict]] = {}
    for config in ANCHOR_CONFIGS:
        for name in ANCHOR_ESTIMATORS:
            trainer = Trainer(load_config(config,
                                          [f"device={device}", f"estimator.name={name}", "compile=false"]),
                              log=lambda _: None)
            contenders = {"hand_loop": hand_loop(trainer.cfg, trainer), "suite": trainer.train_step}
            if compiled:
                contenders["suite_compiled"] = Trainer(load_config(config, [f"device={device}",
                                                                            f"estimator.name={name}",
                                                                            "compile=true"]),
                                                       log=lambda _: None).train_step
            rates = median_rates(contenders, steps, repeats, device_sync(trainer.device))
            row = out.setdefault(config, {})[name] = {key: round(rate, 1) for key, rate in rates.items()}
            row["ratio"] = round(rates["suite"] / rates["hand_loop"], 2)
            if compiled:
                row["ratio_compiled"] = round(rates["suite_compiled"] / rates["hand_loop"], 2)
    return out


def print_anchor_speed(speed: dict[str, dict[str, dict]]) -> None:
    for config, by_name in speed.items():
        for name, s in by_name.items():
            graph = (f"; compiled {s['suite_compiled']:7.1f} steps/s, {s['ratio_compiled']:.2f}x (a′)"
                     if "suite_compiled" in s else "")
            print(f"{config} {name:6s}: (a′) hand-written loop {s['hand_loop']:7.1f} steps/s, suite "
                  f"{s['suite']:7.1f} steps/s, {s['ratio']:.2f}x (a′){graph}")


#: (f): the models whose every estimator's step is timed against its matmul floor, with the overrides
#: that make the cell: the 2020 benchmark's linear 200-Bernoulli VAE at its batch of 50, the paper's
#: two affine VAEs and the notebook's MLP at the suite's batch of 100, and the paper's two SBNs.
FLOOR_CELLS = {"bernoulli linear, batch 50": ("configs/vae_bernoulli_linear.yaml", ["data.batch_size=50"]),
               "bernoulli linear, batch 100": ("configs/vae_bernoulli_linear.yaml", []),
               "categorical linear, batch 100": ("configs/vae_categorical_linear.yaml", []),
               "categorical MLP, batch 100": ("configs/vae_categorical.yaml", []),
               "SBN bernoulli, batch 100": ("configs/sbn_bernoulli.yaml", []),
               "SBN categorical, batch 100": ("configs/sbn_categorical.yaml", [])}


def floor_estimators(cfg: Config) -> dict[str, list[str]]:
    """The estimators (f) times on ``cfg``'s model, each with the overrides it needs: every one whose
    declarations let it run there, at the config's temperature schedule or, if it needs a higher
    tau (its ``min_tau``: ReinMax), at a constant tau of its ``min_tau``; in the tables' order."""
    m, out = cfg.model, {}
    every_tau = math.inf                     # min_tau decides below, not here
    for name in applicable(task=cfg.task, kind=m.kind, lowest_tau=every_tau,
                           latent_shape=(m.num_latents, m.num_classes)):
        least = ESTIMATORS[name].min_tau
        fits = least is None or least <= lowest_tau(cfg.tau, cfg.steps)
        out[name] = [] if fits else ["tau.schedule=constant", f"tau.tau0={least}"]
    return dict(sorted(out.items(), key=lambda item: column_order(item[0])))


def floor_speed(device: str, steps: int, repeats: int, compiled: bool = True, cells: list[str] | None = None,
                names: list[str] | None = None, replicas: int = 1) -> dict[str, dict[str, dict]]:
    """(f): per cell of :data:`FLOOR_CELLS` (``cells``: some of them) and every estimator that applies
    to it (:func:`floor_estimators`; ``names``: some of them), one seed's training step in ms, eager
    and (``compiled``) with ``compile=true`` (the median of ``repeats`` x ``steps`` after warm-up; the
    two interleaved), against its matmul floor: the step's own matrix products, recorded from one
    eager step and replayed alone (:mod:`vae.reporting.step_cost`), and where the eager step's time goes
    (:func:`vae.reporting.step_cost.step_parts`: sampling, estimator, model and loss, backward, optimiser,
    data, matmuls, by the profiler's self times). Compiled, also the seconds its compilation
    took (the second step: the first plans the noise, eagerly) and the steps after which the faster
    step has repaid them (what ``compile: auto``'s rule rests on, configs/README.md). With
    ``replicas`` R > 1, also the step of R seeds at once on the replica axis, eager and compiled
    (timed with the others), as seed-steps/s against one seed's steps/s: what the axis buys per seed."""
    out: dict[str, dict[str, dict]] = {}
    for cell in cells or FLOOR_CELLS:
        config, overrides = FLOOR_CELLS[cell]
        apply = floor_estimators(load_config(config, [f"device={device}", *overrides]))
        for name, tau in ((n, t) for n, t in apply.items() if names is None or n in names):
            def trainer(compile_step: bool, r: int = 1) -> Trainer:
                return Trainer(load_config(config,
                                           [f"device={device}", *overrides, *tau, f"estimator.name={name}",
                                            f"compile={str(compile_step).lower()}",
                                            f"seeds={list(range(r))}"]),
                               log=lambda _: None)
            eager = trainer(False)
            sync = device_sync(eager.device)
            eager.train_step()                            # the optimiser's state exists from here on
            calls = record_matmuls(eager.train_step)
            contenders = {"eager": eager.train_step}
            if compiled:
                graph = trainer(True)
                graph.train_step()
                sync()
                start = time.perf_counter()
                graph.train_step()                        # compiles
                sync()
                compile_seconds = time.perf_counter() - start
                contenders["compiled"] = graph.train_step
            if replicas > 1:
                for key in list(contenders):
                    contenders[f"{key}, R = {replicas}"] = trainer(key == "compiled", replicas).train_step
            rates = median_rates(contenders, steps, repeats, sync, warmup=max(3, steps // 10))
            floor = matmul_floor(calls, repeats, sync)
            row = out.setdefault(cell, {})[name] = {
                "floor_ms": round(1000 * floor, 3), "matmuls": len(calls),
                "gflop": round(sum(c.flops() for c in calls) / 1e9, 4), "overrides": tau}
            for key in ("eager", "compiled") if compiled else ("eager",):
                row[f"{key}_ms"] = round(1000 / rates[key], 3)
                row[f"{key}_over_floor"] = round(1 / rates[key] / floor, 2)
                if replicas > 1:
                    row.setdefault("replica_axis",
                                   {"replicas": replicas})[f"{key}_seed_steps_vs_one_seed"] = round(
                        replicas * rates[f"{key}, R = {replicas}"] / rates[key], 2)
            row["eager_parts_ms"] = {part: round(1000 * t, 3)
                                     for part, t in step_parts(eager.train_step, 1 / rates["eager"]).items()}
            if compiled:
                saving = 1 / rates["eager"] - 1 / rates["compiled"]
                row["compile_seconds"] = round(compile_seconds, 1)
                row["compile_repaid_after_steps"] = round(compile_seconds / saving) if saving > 0 else None
    return out


def floor_record(device: str, speed: dict[str, dict[str, dict]], path: Path, steps: int,
                 repeats: int) -> dict:
    """The JSON record ``floor_<device>.json`` holds: ``speed`` (:func:`floor_speed`, each row
    stamped with when and over how many ``steps`` and ``repeats`` it was measured) merged into the record at
    ``path`` if one is there from the same device and torch, so that ``--estimator`` or ``--cell`` measures
    some rows again and keeps the others."""
    record = {"device": device_name(resolve_device(device)), "torch": torch.__version__,
              "kernels": kernel_path(resolve_device(device)), "floor": {}}
    if path.exists():
        previous = json.loads(path.read_text())
        if all(previous.get(key) == record[key] for key in ("device", "torch", "kernels")):
            record["floor"] = previous["floor"]
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    for cell, rows in speed.items():
        record["floor"].setdefault(cell, {}).update(
            {name: {**row, "steps": steps, "repeats": repeats, "measured": now}
             for name, row in rows.items()})
    cells = list(FLOOR_CELLS)
    record["floor"] = {cell: dict(sorted(rows.items(), key=lambda item: column_order(item[0])))
                       for cell, rows in sorted(record["floor"].items(),
                                                key=lambda item: cells.index(item[0]) if item[0] in cells
                                                else len(cells))}
    return record


def print_floor_speed(speed: dict[str, dict[str, dict]]) -> None:
    for cell, by_name in speed.items():
        print(f"(f) {cell}: ms per step (one seed) against the step's own matrix products timed alone")
        for name, s in by_name.items():
            repaid = s.get("compile_repaid_after_steps")
            graph = (f", compiled {s['compiled_ms']:6.2f} ms ({s['compiled_over_floor']:4.1f}x; compiling "
                     f"took {s['compile_seconds']:.0f} s, "
                     f"repaid after {f'{repaid:,} steps' if repaid else 'never'})"
                     if "compiled_ms" in s else "")
            print(f"    {name:16s} floor {s['floor_ms']:6.3f} ms ({s['matmuls']:2d} products, "
                  f"{s['gflop']:.3f} GFLOP): eager {s['eager_ms']:6.2f} ms "
                  f"({s['eager_over_floor']:4.1f}x){graph}")
            print("        eager, where it goes: "
                  + ", ".join(f"{part} {ms:.2f}" for part, ms in s["eager_parts_ms"].items()))
            if "replica_axis" in s:
                axis = s["replica_axis"]
                print(f"        R = {axis['replicas']} seeds at once: " + ", ".join(
                    f"{key.split('_')[0]} {value:.2f}x one seed's seed-steps/s" for key, value in axis.items()
                    if key != "replicas"))


def paper_packs(device: str) -> tuple[list, Config]:
    """(e): Table 1's paper preset under ``--pack-lr`` (its units: packs and any lone points), and
    the config of its categorical GS pack on ``device``."""
    # grouped only: nothing is read or written under these paths
    units = pack_by_lr(expand(read_sweep(PAPER_SWEEP), PAPER_PRESET, Path("results")), Path("results/packs"))
    gs = next(u for u in units if isinstance(u, Pack) and u.cfg.estimator.name == "gs"
              and u.cfg.model.kind == "categorical")
    return units, config_from_dict({**to_dict(gs.cfg), "device": device})


def bound_record(device: str, examples: int) -> dict:
    """(d) alone (``--bound``): the bound's timings as the JSON record ``bound_<device>.json`` holds."""
    speed = bound_speed(device, examples)
    return {"device": device_name(resolve_device(device)), "torch": torch.__version__,
            "samples": BOUND_SAMPLES, "models": speed, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}


def training_record(device: str, steps: int, repeats: int, bound_examples: int,
                    compiled: bool = True) -> dict:
    """(a), (b), (c), (e) and (d): the JSON record ``<device>.json`` holds (module docstring), but
    for its ``anchors`` (:func:`anchor_speed`, which ``python -m experiments.bench`` adds after
    writing this part once); (c) and (e) also with ``compile=true`` when ``compiled``."""
    one = Trainer(load_config(CONFIG, [f"device={device}", "compile=false"]), log=lambda _: None)
    sync = device_sync(one.device)
    rates = {"(a) plain PyTorch loop": median_rate(plain_loop(one.cfg, one), steps, repeats, sync),
             "(a′) best hand-written loop": median_rate(hand_loop(one.cfg, one), steps, repeats, sync),
             "(b) suite, one seed": median_rate(one.train_step, steps, repeats, sync)}
    replicas, hours = {}, {}
    units, pack_cfg = paper_packs(device)
    for compile_step in (False, True) if compiled else (False,):
        def timed(cfg: Config, label: str, timed_steps: int, r: int) -> float:
            label = f"{label}, compiled" if compile_step else label
            trainer = Trainer(config_from_dict({**to_dict(cfg), "compile": compile_step}), log=lambda _: None)
            rates[label], replicas[label] = median_rate(trainer.train_step, timed_steps, repeats, sync), r
            return rates[label]
        for r in REPLICAS:
            timed(load_config(CONFIG, [f"device={device}", f"seeds={list(range(r))}"]),
                  f"(c) replica axis, R = {r}", steps, r)
        pack = timed(pack_cfg, f"(e) a paper-preset pack, R = {len(pack_cfg.seeds)}", max(2, steps // 10),
                     len(pack_cfg.seeds))
        hours["estimated_training_hours_compiled" if compile_step else "estimated_training_hours"] = round(
            len(units) * pack_cfg.steps / pack / 3600, 2)
    paper = {"sweep": PAPER_SWEEP, "preset": PAPER_PRESET, "units": len(units), "steps": pack_cfg.steps,
             "points": sum(len(u.points) if isinstance(u, Pack) else 1 for u in units), **hours}
    return {"device": device_name(one.device), "torch": torch.__version__, "steps": steps, "repeats": repeats,
            "steps_per_second": rates, "replicas": replicas, "paper_preset": paper,
            "bound": bound_speed(device, bound_examples), "measured": time.strftime("%Y-%m-%d %H:%M:%S")}


def print_training_record(record: dict) -> None:
    base = record["steps_per_second"]["(a) plain PyTorch loop"]
    best = record["steps_per_second"]["(a′) best hand-written loop"]
    print(f"device: {record['device']}; torch {record['torch']}; categorical VAE 20x10, MLP 512-256, batch "
          f"100, gs, Adam; median of {record['repeats']} x {record['steps']} steps after warm-up")
    for label, rate in record["steps_per_second"].items():
        seeds = record["replicas"].get(label, 1)
        print(f"{label:42s} {rate:9.1f} steps/s {rate * seeds:9.1f} seed-steps/s "
              f"{rate * seeds / base:7.2f}x (a) {rate * seeds / best:7.2f}x (a′)")
    print_bound_speed(record["bound"])
    paper = record["paper_preset"]
    print(f"{paper['sweep']} --preset {paper['preset']} --pack-lr: {paper['points']} points in "
          f"{paper['units']} runs; at (e)'s steps/s their {paper['steps']:,} steps each take "
          f"{paper['estimated_training_hours']:.1f} h "
          "of training" + (f", {paper['estimated_training_hours_compiled']:.1f} h compiled"
                           if "estimated_training_hours_compiled" in paper else "")
          + " (at GS's cost per step; without the bounds)")


def gpu_check_markdown(report: dict, mode_steps: int) -> str:
    """``make gpu-check``'s report (experiments/gpu_check.py) as markdown: the machine, each step's outcome
    and time, and the timings it recorded (bench, Figure 5(a)'s speed, the profile, the numeric modes
    of ``mode_steps`` steps each)."""
    lines = [f"GPU check on {report['device']} (Python {report['python']}, torch {report['torch']}): "
             f"{report['seconds']:.0f} s in all.", "", "| step | outcome | seconds |", "|---|---|---|"]
    lines += [f"| {s['step']} | {'ok' if s['ok'] else 'FAILED'} | {s['seconds']:.1f} |"
              for s in report["steps"]]
    if report.get("bench"):
        rates = report["bench"]["steps_per_second"]
        base = rates["(a) plain PyTorch loop"]
        lines += ["", "| bench (categorical VAE, MLP, batch 100) | steps/s | seed-steps/s / (a) |",
                  "|---|---|---|"]
        for label, rate in rates.items():
            lines.append(f"| {label} | {rate:.1f} | "
                         f"{rate * report['bench']['replicas'].get(label, 1) / base:.2f}x |")
        for config, bound in report["bench"]["bound"].items():
            lines.append(f"| (d) m = 1000 bound, {config}, s per seed on 10,000 digits (reference / suite) | "
                         f"{bound['seconds_per_seed_10000']['reference']} / "
                         f"{bound['seconds_per_seed_10000']['suite']} | {bound['speedup']:.2f}x |")
        paper = report["bench"]["paper_preset"]
        compiled = paper.get("estimated_training_hours_compiled")
        lines += ["", f"{paper['sweep']} --preset {paper['preset']} --pack-lr: {paper['points']} points in "
                      f"{paper['units']} runs, about {paper['estimated_training_hours']:.1f} h of training "
                      f"at (e)'s steps/s (GS's cost per step)"
                      f"{f', {compiled:.1f} h with compile=true' if compiled else ''}."]
    for key, title in (("ssl_speed", "Figure 5(a)"), ("ssl_speed_compiled", "Figure 5(a), compile=true")):
        if report.get(key):
            rates = report[key]["steps_per_second"]
            lines += ["", f"| {title}: classes C | marginal steps/s | gs steps/s | gs / marginal |",
                      "|---|---|---|---|"]
            lines += [f"| {c} | {rates['marginal'][c]:.1f} | {rates['gs'][c]:.1f} | {ratio:.2f}x |"
                      for c, ratio in report[key]["speedup"].items()]
    if report.get("profile"):
        lines += ["", "Profile (`experiments.bench --profile`; the operator tables are in profile_cuda.txt):",
                  "", *[f"- {line.removeprefix('== ')}" for line in report["profile"]]]
    lines += ["", f"| numeric mode ({mode_steps} steps, gs) | steps/s | test bound m = 1000 | − float32 |",
              "|---|---|---|---|"]
    for m in report.get("modes", []):
        if m["ok"]:
            lines.append(f"| {m['mode']} | {m['steps_per_second']:.0f} | {m['bound']:.2f} | "
                         f"{m.get('bound_minus_float32', 0):+.2f} |")
        else:
            lines.append(f"| {m['mode']} | FAILED | | |")
    return "\n".join(lines) + "\n"
