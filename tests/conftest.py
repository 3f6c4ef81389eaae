"""Shared fixtures: a synthetic MNIST in IDX format, so no test needs the network or real data."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import math
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from vae.data.images import write_idx
from vae.estimators import ESTIMATORS, EstimatorConfig
from vae.estimators.signal import NormalisedSignalEstimator

REPO = Path(__file__).resolve().parents[1]

# The built-in estimators, collected before any test registers one of its own. Tests choose among
# them by what the classes declare (where they apply, bias), never by lists of names.
BUILT_IN = dict(ESTIMATORS)
# the estimators with a moving-average centre and variance normalisation (their shared class says so)
NORMALISED = [name for name, cls in BUILT_IN.items() if issubclass(cls, NormalisedSignalEstimator)]

# As the trainer does: denormal floats in thousands of replicas' gradients (some seeds of the
# statistical tests) make CPU matmuls a hundred times slower. The setting is per thread, so the
# tests' own computations run on this one thread (subprocesses keep torch's default).
torch.set_flush_denormal(True)
torch.set_num_threads(1)


def fake_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """Digit-like uint8 images: a random bright blob per image on a dark background."""
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre = 8 + 12 * torch.rand(n, 2, generator=generator)
    dist2 = (ys - centre[:, 0, None, None]) ** 2 + (xs - centre[:, 1, None, None]) ** 2
    return (255 * torch.exp(-dist2 / 18)).to(torch.uint8)


@pytest.fixture(scope="session")
def fake_mnist_dir(tmp_path_factory) -> Path:
    """Four IDX files of the real sizes (60k + 10k images), train files gzipped, test files not."""
    root = tmp_path_factory.mktemp("idx")
    gen = torch.Generator().manual_seed(1234)
    write_idx(root / "train-images-idx3-ubyte.gz", fake_images(60_000, gen))
    write_idx(root / "train-labels-idx1-ubyte.gz",
              torch.randint(0, 10, (60_000,), generator=gen, dtype=torch.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", fake_images(10_000, gen))
    write_idx(root / "t10k-labels-idx1-ubyte",
              torch.randint(0, 10, (10_000,), generator=gen, dtype=torch.uint8))
    return root


@pytest.fixture(autouse=True)
def _isolated_environment(request, tmp_path, monkeypatch):
    """Every test gets its own data cache, W&B is off unless a test turns it on, and torch's global
    generator is seeded from the test's own name: a test draws the same numbers whichever worker
    runs it and whatever ran before it."""
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


@pytest.fixture(autouse=True)
def _built_in_estimators_only(tmp_path_factory):
    """A test that loads a plugin in-process (a command line's ``main`` with ``plugins``, a sweep with
    `plugins:` read by `expand`) leaves the registry as it found it: the next test sees the built-ins
    only, and imports its own plugin module afresh (two tests may write one module name)."""
    modules = set(sys.modules)
    yield
    ESTIMATORS.clear()
    ESTIMATORS.update(BUILT_IN)
    base = str(tmp_path_factory.getbasetemp())
    for name in set(sys.modules) - modules:
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(base):
            del sys.modules[name]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory, fake_mnist_dir) -> Path:
    """A data cache already filled from the fake IDX files (saves re-reading them per test)."""
    from vae.data.images import load_images, static_binarization

    cache = tmp_path_factory.mktemp("cache")
    # the fake IDX files serve both (the 2020 benchmark's tiny preset)
    for name in ("mnist", "fashion_mnist"):
        images = load_images(fake_mnist_dir, cache, log=lambda _: None, name=name)
        static_binarization(images, 0, cache, name=name)
    return cache


@pytest.fixture(scope="session")
def tiny_results(shared_cache, tmp_path_factory, worker_id) -> tuple[Path, str]:
    """``make -j2 figures PRESET=tiny`` once per test run (``-o install``: the environment running
    the tests is the one to use; ``-j2`` also checks that the sweeps run side by side, each once, whichever
    targets share it); returns the results directory and the make output. Read by test_reproduce.py and, as
    its committed entries, test_leaderboard.py: under pytest-xdist the first worker to ask builds it
    in the run's shared temporary directory while the other waits on a lock, so it is built once."""
    import fcntl
    import subprocess
    import sys

    base = tmp_path_factory.getbasetemp()
    root = base if worker_id == "master" else base.parent        # the run's directory, shared by its workers
    results, output = root / "tiny_results", root / "tiny_results.out"
    with open(root / "tiny_results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not output.exists():
            shutil.rmtree(results, ignore_errors=True)
            command = ["make", "--no-print-directory", "-j2", "--output-sync=target", "-o", "install",
                       "figures", "PRESET=tiny", "WORKERS=1", f"RESULTS={results}", f"PY={sys.executable}"]
            done = subprocess.run(command, cwd=REPO, env=env_with_cache(shared_cache), capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            output.write_text(done.stdout)
    return results, output.read_text()


def tiny_overrides(out_dir: Path) -> list[str]:
    """Config overrides for a training run that takes seconds on a CPU."""
    return [f"out_dir={out_dir}", "model.hidden=[32,16]", "steps=12", "log_every=2",
            "checkpoint_every=4", "eval.every=6", "eval.batch_size=5000", "eval.iw_samples=4",
            "eval.iw_examples=20", "eval.curve_examples=200", "tau.update_every=2", "tau.rate=0.05"]


def env_with_cache(cache: Path) -> dict[str, str]:
    """Environment for a subprocess: the given data cache, W&B off, the repo importable, one
    thread (as the tests' own process: a run continued in a subprocess then sums in the same
    order, and two test workers do not oversubscribe two cores)."""
    env = dict(os.environ, VAE_DATA_DIR=str(cache), WANDB_MODE="disabled", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return env


def run_main(module: str, args: list[str], cache: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` run from ``cwd`` (the repository) with the data cache ``cache`` and W&B off,
    as its process would run it, but in this one: the command line's ``main`` (an argument error's
    SystemExit as its status), its stdout and stderr captured, the environment and the working
    directory restored after; an interpreter's start-up (about 2 s) saved a call."""
    out, err, before, where = io.StringIO(), io.StringIO(), dict(os.environ), os.getcwd()
    os.environ.update(VAE_DATA_DIR=str(cache), WANDB_MODE="disabled")
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = importlib.import_module(module).main(args)
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 2
    finally:
        os.chdir(where)
        os.environ.clear()
        os.environ.update(before)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def plugin_sweep(base: str, plugin: str, names: list[str], overrides: list[str]) -> str:
    """A sweep file's text: ``base``, the ``plugin`` module, the estimators ``names`` and the dotted
    ``overrides`` (``key=value``, e.g. :func:`tiny_overrides` without its out_dir) as fixed values."""
    return (f"base: {base}\nparameters:\n  plugins: {{value: [{plugin}]}}\n  estimator.name: {{values: "
            f"[{', '.join(names)}]}}\n"
            + "".join(f"  {o.split('=')[0]}: {{value: {o.split('=', 1)[1]}}}\n" for o in overrides))


FLOAT32_EPS = torch.finfo(torch.float32).eps


def markdown_tables(text: str) -> list[tuple[str, str]]:
    """The (caption, table) pairs of a markdown file that ``vae.reporting.tables.to_markdown`` wrote, in
    order: each caption (its paragraphs, a provenance line among them) above its table."""
    chunks = re.split(r"(?<=\|)\n\n(?!\| )", text.strip())         # after a table, before a caption
    return [tuple(re.split(r"\n\n(?=\| )", chunk, maxsplit=1)) for chunk in chunks]


def float32_rtol(terms: int) -> float:
    """Relative tolerance between two float32 computations of one sum of ``terms`` positive terms
    that add them in other orders (another kernel, blocking or replica count): the round-off of
    each addition is at most eps/2 of the partial sum and, rounding errors being independent in
    sign, accumulates like a random walk, std about ``sqrt(terms) * eps / 2`` of the sum; this
    allows 8 such standard deviations, ``4 sqrt(terms) eps``."""
    return 4 * math.sqrt(terms) * FLOAT32_EPS


def estimator_config(name: str, **settings) -> EstimatorConfig:
    """``name``'s config with the tests' keyword ``settings``: ``num_samples``, shared by every
    estimator, and otherwise the estimator's own options (``slope_rate=0.5``)."""
    shared = {key: settings.pop(key) for key in list(settings) if key == "num_samples"}
    return EstimatorConfig(name=name, **shared, options=settings)


def small_networks(name: str) -> dict[str, int]:
    """``baseline_hidden=8`` where the estimator declares that option (a baseline or control-variate
    network, 100 units by default): the tests' many replicas train small ones."""
    options = ESTIMATORS[name].Options
    declared = {f.name for f in dataclasses.fields(options)} if options is not None else set()
    return {"baseline_hidden": 8} if "baseline_hidden" in declared else {}


def estimator_cases(task: str, *, unbiased: bool | None = None, sampled: bool = True,
                    bound: bool | None = False) -> list[tuple[str, str]]:
    """``(name, latent kind)`` for every built-in estimator that applies to ``task`` with that kind
    (its ``kinds`` and ``tasks``), filtered by its declarations: ``unbiased`` (None: either),
    ``sampled`` (leave out the ``exact`` oracle), ``bound`` (``multi_sample_bound``; None: either)."""
    return [(name, kind) for name, cls in BUILT_IN.items() for kind in ("categorical", "bernoulli")
            if task in cls.tasks and kind in cls.kinds and (unbiased is None or cls.unbiased == unbiased)
            and not (sampled and cls.family == "enumeration")
            and (bound is None or cls.multi_sample_bound == bound)]


def accepted_tau(name: str, tau: float = 1.0) -> float:
    """``tau``, raised to the estimator's declared ``min_tau`` if it needs more (``reinmax``: 1)."""
    return max(tau, BUILT_IN[name].min_tau or 0.0)


def tau_overrides(name: str) -> list[str]:
    """Config overrides that give ``name`` a schedule it accepts (a constant tau at its ``min_tau``)."""
    floor = BUILT_IN[name].min_tau
    return [] if floor is None else ["tau.schedule=constant", f"tau.tau0={floor}"]
