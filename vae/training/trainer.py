"""The training loop as a function: a config in, a run directory out.

One call trains every seed of a configuration at once on the replica axis (vae/numerics/replicas.py):
the loss is ``sum_r mean_b [surrogate_rb + KL_rb]``, so each replica gets exactly the gradient of
its own run. Per step there is no host sync: training losses are kept on the device and read
every ``log_every`` steps, when they are also checked for inf / NaN.

Resuming is exact on CPU: the checkpoint holds the model, optimiser, estimator and temperature
states and the per-replica generator states, the data order is a function of (seed, epoch), and
evaluation uses generators of its own.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from vae.config import Config, ConfigError, config_from_dict, to_dict
from vae.data.images import BinarizedImages
from vae.estimators import ESTIMATORS
from vae.models.evaluation import eval_generator
from vae.numerics.replicas import ReplicaGenerator, derive_seed
from vae.store.run_dir import CHECKPOINT, SUMMARY, atomic_save, read_metrics
from vae.store.tracking import RunTracker, mean_std
from vae.training.compiled_step import CompiledStep, NotCompiled, compiles
from vae.training.diagnostics import encoder_gradient_variance
from vae.training.optim import load_optimizer_state, make_optimizer, prior_sgd_step
from vae.training.schedules import Temperature, short_of_floor
from vae.training.tasks import TASKS, check


class TrainingDiverged(RuntimeError):
    """A non-finite training loss; the message names the step and replica (``replica``: its index,
    None when the non-finite values were found in the parameters)."""

    def __init__(self, message: str, replica: int | None = None):
        super().__init__(message)
        self.replica = replica


class RunDirError(RuntimeError):
    """The output directory cannot be written, or a run to resume is missing or corrupt."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunDirError("device: 'cuda' requested but no CUDA device is available; use device=auto")
    return torch.device(name)


def default_run_dir(cfg: Config) -> Path:
    """``<out_dir>/<experiment>/<estimator>__<schedule>__seeds<..>__<time>``."""
    seeds = "-".join(map(str, cfg.seeds))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    unique = secrets.token_hex(2)  # two runs started in the same second get different directories
    estimator = TASKS[cfg.task].estimator_name(cfg)
    return (Path(cfg.out_dir) / cfg.experiment
            / f"{estimator}__{cfg.tau.schedule}__seeds{seeds}__{stamp}-{unique}")


def eval_every(cfg: Config) -> int:
    """Steps between the curves' evaluations: ``eval.every``, or (null) a tenth of the run, so a
    curve has about ten points whatever ``steps`` is."""
    return cfg.eval.every or max(1, math.ceil(cfg.steps / 10))


def learning_rate(cfg: Config, step: int) -> float | list[float]:
    """``lr * lr_decay ** floor(step / lr_decay_every)``: a pure function of the step (a list,
    one per replica, when ``optim.lr`` is one)."""
    decay = cfg.optim.lr_decay ** (step // cfg.optim.lr_decay_every)
    lr = cfg.optim.lr
    return [v * decay for v in lr] if isinstance(lr, list) else lr * decay


class Trainer:
    """Everything one run holds: data, model, estimator, temperature, optimiser, generators."""

    def __init__(self, cfg: Config, log: Callable[[str], None] = print):
        # denormal floats (below 1.2e-38, e.g. gradients of saturated sigmoids) make CPU matmuls up
        # to a hundred times slower; flushing them to zero changes no result that matters. First,
        # so that the threads torch starts later inherit it.
        torch.set_flush_denormal(True)
        self.cfg = check(cfg)
        self.device = resolve_device(cfg.device)
        self.data = BinarizedImages.for_config(cfg.data, self.device, log=log)
        r = len(cfg.seeds)
        self.rng = ReplicaGenerator(cfg.seeds, self.device)
        self.task = TASKS[cfg.task]
        model, estimator = self.task.build(cfg, self.rng, self.data)
        self.model, self.estimator = model.to(self.device), estimator.to(self.device)
        self.temperature = Temperature(cfg.tau, r, cfg.steps).to(self.device)
        # TF32 is a process-wide switch of torch's; bf16 autocast is entered around each step
        # and each evaluation (self.numerics()); the Gumbel and KL arithmetic stays in float32
        torch.set_float32_matmul_precision("high" if cfg.precision == "tf32" else "highest")
        # optim.prior_lr: the learned prior's logits by plain SGD of their own (no state), the rest by the
        # optimiser
        self.prior_params = [self.model.prior_free] if cfg.optim.prior_lr is not None else []
        params = [p for p
                  in (*self.model.parameters(), *self.estimator.parameters(), *self.temperature.parameters())
                  if all(p is not q for q in self.prior_params)]
        self.optimizer = make_optimizer(params, cfg.optim)
        self.log = log
        declared = ESTIMATORS.get(self.task.estimator_name(cfg))      # None: M2's summed class
        self.reads_tau = declared is not None and declared.reads_tau   # what the progress bar and notes go by
        # the step as one graph
        self.compiled_step = (CompiledStep(self, may_fall_back=cfg.compile == "auto")
                              if compiles(cfg, self.device) else None)
        if cfg.compile == "auto" and self.compiled_step is not None:
            log(f"compile=auto: the step is compiled ({cfg.steps:,} steps on the {self.device.type}; its "
                "second step compiles, seconds; compile=false trains eagerly)")
        self.step = 0
        # training wall time so far, over every process of the run
        self.timing = {"seconds": 0.0, "steps": 0}

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"step": self.step, "config": to_dict(self.cfg), "model": self.model.state_dict(),
                "estimator": self.estimator.state_dict(), "temperature": self.temperature.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": self.rng.state_dict(),
                "timing": dict(self.timing)}

    def parameters_finite(self) -> bool:
        """Whether every trainable parameter is finite (one host sync; checked before saving)."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]] + self.prior_params
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.estimator.load_state_dict(state["estimator"])
        self.temperature.load_state_dict(state["temperature"])
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.rng.load_state_dict(state["rng"])
        self.step = state["step"]
        self.timing = dict(state.get("timing", {"seconds": 0.0, "steps": 0}))   # older checkpoints: untimed

    def numerics(self) -> torch.autocast:
        """The context of every forward pass: bfloat16 autocast under ``precision=bf16``."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    # -- one step -------------------------------------------------------------------------
    def train_step(self) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One update of every replica; returns per-replica (loss [R], kl [R], estimator info)."""
        cfg, t = self.cfg, self.step
        batch = self.task.batch(self.model, self.data, t, self.rng, cfg)
        if self.compiled_step is not None:
            try:
                out = self.compiled_step(batch, learning_rate(cfg, t), t)
                self.step += 1
                return out
            except NotCompiled as err:     # compile: auto, and the step cannot be compiled here
                self.log(f"compile=auto: the step cannot be compiled here ({err}); it trains eagerly")
                self.compiled_step = None
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, t)
        with self.numerics():
            per_example, kl, info = self.task.loss(self.model, self.estimator, batch, rng=self.rng,
                                                   tau=self.temperature(t), step=t, cfg=cfg)   # [R, B]
        loss = per_example.mean(-1)                                              # [R]
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.prior_params:
            p.grad = None
        loss.sum().backward()
        self.optimizer.step()
        prior_sgd_step(self.prior_params, [p.grad for p in self.prior_params], self.prior_lr(t))
        self.step += 1
        return loss.detach(), kl.mean(-1), info

    def prior_lr(self, step: int) -> float:
        """``optim.prior_lr`` with the run's learning-rate decay (0 when the prior has no rate of its own)."""
        return ((self.cfg.optim.prior_lr or 0.0)
                * self.cfg.optim.lr_decay ** (step // self.cfg.optim.lr_decay_every))

    def gradient_variance(self) -> list[float]:
        """Variance of the encoder gradient over ``gradvar_draws`` draws, on the first validation
        batch, at the current parameters and tau; noise from generators of its own."""
        cfg = self.cfg
        x = self.data.splits["valid"][:cfg.data.batch_size].expand(len(cfg.seeds), -1, -1)
        rng = ReplicaGenerator([derive_seed("gradvar", s, self.step) for s in cfg.seeds], self.device)
        return encoder_gradient_variance(self.model, self.estimator, x, rng=rng,
                                         tau=self.temperature(self.step),
                                         step=self.step, num_draws=cfg.gradvar_draws).tolist()

    def evaluate(self, split: str) -> dict[str, list[float]]:
        """The task's curve metrics on ``split``, per replica."""
        rng = eval_generator(self.cfg.seeds, self.step, self.device)
        with self.numerics(), torch.no_grad():
            metrics = self.task.curve(self.model, self.data, split, rng, self.cfg)
        return {name: values.tolist() for name, values in metrics.items()}


def _first_bad(history: Tensor) -> tuple[int, int] | None:
    """(row, replica) of the first non-finite entry of ``history [T, R]``, or None."""
    bad = ~torch.isfinite(history)
    if not bool(bad.any()):
        return None
    row, replica = bad.nonzero()[0].tolist()
    return row, replica


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` inside the block, the caller's setting again after it
    (a sweep, or a figure's retraining, called in-process by a test or a notebook)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(cfg: Config | None, run_dir: Path | None = None, *, resume: bool = False, steps: int | None = None,
          log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Train one run, or with ``resume=True`` continue ``run_dir`` from its checkpoint (its saved
    config is used; ``cfg`` may be None), to ``steps`` if given: a finished run trains further
    (its old end numbers stay in ``metrics.jsonl``; ``summary.json`` is written anew at the new
    end). Returns the run directory."""
    if resume:
        if run_dir is None or not (Path(run_dir) / CHECKPOINT).exists():
            raise RunDirError(f"--resume: no {CHECKPOINT} in {run_dir}")
        try:
            state = torch.load(Path(run_dir) / CHECKPOINT, weights_only=True, map_location="cpu")
        except Exception as err:
            raise RunDirError(f"--resume: {Path(run_dir) / CHECKPOINT} is unreadable "
                              f"({type(err).__name__})") from err
        cfg = config_from_dict(state["config"])
        if steps is not None:
            cfg = _extended(cfg, steps)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    try:  # fail before any work if the output directory cannot be written
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        probe = run_dir.parent / f".write-test-{run_dir.name}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"out_dir: cannot write to {run_dir.parent} ({err.strerror})") from err

    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(f"run directory {run_dir} already holds a run; "
                          f"resume it with --resume or pick another")
    if resume and (run_dir / SUMMARY).exists():
        if state["step"] == cfg.steps:
            log(f"{run_dir} is already finished (summary.json exists); nothing to do")
            return run_dir
        (run_dir / SUMMARY).unlink()  # trained further: its numbers stay in metrics.jsonl
    trainer = Trainer(cfg, log=log)
    if resume:
        trainer.load_state_dict(state)
        log(f"resuming {run_dir} at step {trainer.step}")
    run_dir.mkdir(exist_ok=True)
    tracker = RunTracker(run_dir, to_dict(cfg), cfg.seeds, cfg.wandb_project, Path(cfg.out_dir).parent,
                         resume_step=trainer.step if resume else None, final_metric=trainer.task.final_metric)
    log(f"run directory: {run_dir} (device {trainer.device}, seeds {cfg.seeds})")
    note = short_of_floor(cfg.tau, cfg.steps) if trainer.reads_tau else None
    if note is not None:
        log(note)
    summary = None
    try:
        _loop(trainer, tracker, run_dir, progress)
        summary = _finish(trainer, tracker, progress, log)
        seconds, steps = trainer.timing["seconds"], trainer.timing["steps"]
        summary["train_seconds"] = round(seconds, 2)   # summed over the processes that trained it
        summary["steps_per_second"] = round(steps / seconds, 2) if steps else None   # None: no timed step
        # which step trained it (compile: auto decides)
        summary["compiled"] = trainer.compiled_step is not None
    finally:
        tracker.finish(summary)
    return run_dir


def _extended(cfg: Config, steps: int) -> Config:
    """``cfg`` with ``steps`` training steps: the one setting a resumed run may change."""
    if steps < cfg.steps:
        raise ConfigError(f"steps: a resumed run can only train further, got {steps} < its {cfg.steps}")
    if steps > cfg.steps and cfg.tau.schedule in ("linear", "cosine") and cfg.tau.anneal_steps is None:
        raise ConfigError(f"steps: this run's {cfg.tau.schedule} tau schedule ends at its last step "
                          "(tau.anneal_steps: null); training further would change the schedule it "
                          "trained with")
    return config_from_dict({**to_dict(cfg), "steps": steps})


def _loop(trainer: Trainer, tracker: RunTracker, run_dir: Path, progress: bool) -> None:
    cfg = trainer.cfg
    r = len(cfg.seeds)
    history = torch.zeros(cfg.log_every, r, device=trainer.device)   # training loss per step
    kl_history = torch.zeros_like(history)
    bar = tqdm(total=cfg.steps, initial=trainer.step, disable=not progress,
               desc=trainer.task.estimator_name(cfg), unit="step", dynamic_ncols=True)
    window_start = trainer.step       # first step of the current logging window (a multiple of log_every)
    start, first_step, before = time.perf_counter(), trainer.step, dict(trainer.timing)

    def clock() -> None:              # the run's training time, kept in every checkpoint
        trainer.timing = {"seconds": before["seconds"] + time.perf_counter() - start,
                          "steps": before["steps"] + trainer.step - first_step}
    while trainer.step < cfg.steps:
        loss, kl, info = trainer.train_step()
        row = (trainer.step - 1) % cfg.log_every
        history[row], kl_history[row] = loss, kl
        bar.update(1)
        done, last = trainer.step, trainer.step == cfg.steps
        at_log = done % cfg.log_every == 0 or last
        at_eval = done % eval_every(cfg) == 0 or last
        at_gradvar = cfg.gradvar_every > 0 and done % cfg.gradvar_every == 0
        at_checkpoint = done % cfg.checkpoint_every == 0 or last
        if not (at_log or at_eval or at_gradvar or at_checkpoint):
            continue                  # the common case: no host sync at all
        window = slice(0, done - window_start)
        bad = _first_bad(history[window])
        if bad is not None:
            _diverged(cfg, run_dir, f"at step {window_start + bad[0] + 1}, "
                                    f"replica {bad[1]} (seed {cfg.seeds[bad[1]]})", bar,
                      replica=bad[1])
        if at_log:
            metrics = {"loss": history[window].mean(0).tolist(), "kl": kl_history[window].mean(0).tolist(),
                       "tau": trainer.temperature.value(done - 1),
                       "lr": _one_per_replica(learning_rate(cfg, done - 1), r)}
            metrics.update({f"est/{k}": v.float().reshape(r, -1).mean(-1).tolist() for k, v in info.items()})
            tracker.log(done, "train", metrics)
            # only where tau does something
            shown = {"tau": f"{metrics['tau'][0]:.3f}"} if trainer.reads_tau else {}
            bar.set_postfix(loss=f"{sum(metrics['loss']) / r:.2f}", **shown)
            window_start = done
        if at_eval:
            for split in ("valid", "test", *(("train",) if cfg.eval.train_elbo else ())):
                tracker.log(done, split, trainer.evaluate(split))
        if at_gradvar:
            tracker.log(done, "train", {"encoder_grad_var": trainer.gradient_variance()})
        if at_checkpoint:
            if not trainer.parameters_finite():
                _diverged(cfg, run_dir, f"in the parameters after step {done}", bar)
            clock()
            atomic_save(trainer.state_dict(), run_dir / CHECKPOINT)
    clock()
    bar.close()


def _one_per_replica(value: float | list[float], r: int) -> list[float]:
    return value if isinstance(value, list) else [value] * r


def _diverged(cfg: Config, run_dir: Path, where: str, bar: tqdm, replica: int | None = None) -> None:
    bar.close()
    kept = (f"the last good checkpoint (step {torch.load(run_dir / CHECKPOINT, weights_only=True)['step']}) "
            f"is kept in {run_dir / CHECKPOINT}" if (run_dir / CHECKPOINT).exists()
            else "no checkpoint was written yet")
    raise TrainingDiverged(f"non-finite values {where}; {kept}", replica)


def final_numbers(rows: list[dict], steps: int, num_replicas: int) -> dict[str, dict]:
    """``{"<split>/<metric>": {"per_seed", "mean", "std"}}`` of the metric rows logged at ``steps``
    (replicas ``0 .. num_replicas - 1``): a metric appears only if every replica's value is finite."""
    finals: dict[str, list] = {}
    for row in (r for r in rows if r["step"] == steps):
        finals.setdefault(f"{row['split']}/{row['metric']}",
                          [None] * num_replicas)[row["replica"]] = row["value"]
    numbers = {}
    for key, values in sorted(finals.items()):
        if all(isinstance(v, float) and math.isfinite(v) for v in values):
            mean, std = mean_std(values)
            numbers[key] = {"per_seed": values, "mean": mean, "std": std}
    return numbers


class AnnouncedProgress:
    """The final bound's progress: a tqdm bar (when progress is on), and, after its first batch, one
    line saying how long the rest will take on this device (progress bar or not)."""

    def __init__(self, total: int, desc: str, progress: bool, log: Callable[[str], None]):
        self.bar = tqdm(total=total, disable=not progress, desc=desc, unit="ex")
        self.total, self.done, self.log, self.start = total, 0, log, time.perf_counter()

    def update(self, n: int) -> None:
        self.bar.update(n)
        first, self.done = self.done == 0, self.done + n
        if first and self.done < self.total:
            rest = (time.perf_counter() - self.start) / self.done * (self.total - self.done)
            self.log(f"  about {rest / 60:.1f} min more on this device" if rest >= 60
                     else f"  about {rest:.0f} s more")

    def close(self) -> None:
        self.bar.close()


def _finish(trainer: Trainer, tracker: RunTracker, progress: bool, log: Callable[[str], None]) -> dict:
    """The test bound with m discrete samples (announced: its size, how to cut it, and after its
    first batch the time it will take), and the run's summary."""
    cfg, e = trainer.cfg, trainer.cfg.eval
    examples = e.iw_examples or trainer.data.splits["test"].shape[0]
    metric = trainer.task.final_metric
    log(f"test {metric}: m = {e.iw_samples} samples on {examples:,} test digits, {len(cfg.seeds)} seed(s)"
        + ("" if e.iw_examples else "; eval.iw_examples=N bounds the first N digits only"))
    bar = AnnouncedProgress(examples, f"test {metric} m={e.iw_samples}", progress, log)
    rng = eval_generator(cfg.seeds, cfg.steps + 1, trainer.device)
    start = time.perf_counter()
    with trainer.numerics(), torch.no_grad():
        bound = trainer.task.final(trainer.model, trainer.data, rng, cfg, progress=bar).tolist()
    bar.close()
    tracker.log(cfg.steps, "test", {trainer.task.final_metric: bound})
    summary = {"experiment": cfg.experiment, "estimator": trainer.task.estimator_name(cfg),
               "tau_schedule": cfg.tau.schedule,
               "final_metric": f"test/{trainer.task.final_metric}",
               "seeds": cfg.seeds, "steps": cfg.steps, "device": str(trainer.device),
               "iw_samples": e.iw_samples, "iw_examples": examples,
               "iw_seconds": round(time.perf_counter() - start, 2)}
    summary.update(final_numbers(read_metrics(tracker.run_dir), cfg.steps, len(cfg.seeds)))
    return summary

