"""`make gpu-check`: everything that needs a GPU, in one prepared script (336 s on one H100 before
the compiled steps' timings; run it with a time limit of about 10 minutes).

    python -m experiments.gpu_check --data-dir data/mnist --out results/gpu_check
    python -m experiments.gpu_check --export-data data/mnist      # here, first: MNIST as IDX files

Meant for a GPU machine with its own Python and no network: it installs nothing, imports wandb
nowhere (every run sets ``WANDB_MODE=disabled``), and reads MNIST from IDX files that travel with
the working tree (``--export-data`` writes them from this machine's cache). It records the machine
(Python, torch, the GPU), then times each step and its outcome, a failing step never stopping the next:

1. alone (a timing, first, as it matters most): ``experiments.bench --device cuda`` (the plain
   loop, the suite's step, the replica axis and a ``paper``-preset pack eager and with
   ``compile=true``, the whole step as one CUDA graph, with the preset's hours both ways; the
   bound);
2. side by side (nothing timed): the tests marked ``gpu`` (``pytest -m gpu``; pytest must be
   importable there), the ``tiny`` preset of every sweep file and of Figure 5(a)'s bench; then
   every figure and table's ``tiny`` preset, on CUDA;
3. alone, one after the other (timings): Figure 5(a)'s speed of ``marginal`` against ``gs`` per
   number of classes (``experiments.bench --ssl-classes``, converged preset, 100 steps a repeat),
   eager and compiled; where the VAE's and M2's step times go (``experiments.bench --profile``);
   numeric modes: the categorical VAE trained 5,000 steps in float32, tf32, bf16 and float32 with
   ``compile=true``, steps/s and the m = 1000 bound on all 10,000 test digits (minus float32's).

Writes ``<out>/gpu_check.{md,json}`` (the report, to paste into the README; rewritten after each
step: a check cut short keeps what it finished), the bench records (:data:`RECORDS`) and the
profile, ``<out>/profile_cuda.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from vae.data.images import export_idx, load_images
from vae.reporting.bench import gpu_check_markdown
from vae.store.run_dir import load_summary, write_json_atomic, write_text_atomic

SWEEPS = sorted(Path("configs/sweeps").glob("*.yaml"))
FIGURES = ("fig1", "fig3", "fig4", "fig5", "tau-ablation", "gradvar", "samples")
TABLES = ("table1", "table2", "model-question")
MODES = {"float32": [], "tf32": ["precision=tf32"], "bf16": ["precision=bf16"],
         "float32, compiled": ["compile=true"]}
MODE_STEPS = 5000
# timed steps per repeat of Figure 5(a)'s bench (the converged preset's 20 are too few on a GPU)
SSL_SPEED_STEPS = 100
RECORDS = {"bench": "cuda.json", "ssl_speed": "ssl_speed_cuda.json",
           "ssl_speed_compiled": "ssl_speed_cuda_compiled.json"}
STEP_TIMEOUT, BENCH_TIMEOUT = 300, 480   # s for a step, and the bench (it compiles ten steps)


def run(command: list[str], env: dict[str, str], timeout: int = STEP_TIMEOUT) -> tuple[bool, str, float]:
    """Run one command; (succeeded, the end of its output, seconds)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        ok, output = done.returncode == 0, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        ok, output = False, f"timed out after {timeout} s: {err.stdout or ''}"
    return ok, output[-2000:], time.perf_counter() - start


def numeric_modes(env: dict[str, str], workdir: Path, rows: list[dict], done: Callable[[], None]) -> None:
    """Train and bound the categorical VAE once per numeric mode: a row each (read from its run),
    then ``done()``."""
    for mode, overrides in MODES.items():
        run_dir = workdir / "modes" / mode.replace(", ", "-")
        command = [sys.executable, "-m", "experiments.train", "--no-progress", "--config",
                   "configs/vae_categorical.yaml", "--run-dir", str(run_dir), f"steps={MODE_STEPS}",
                   "device=cuda", f"out_dir={workdir / 'modes'}",
                   "eval.every=5000", "checkpoint_every=5000", *overrides]
        ok, output, seconds = run(command, env)
        row = {"mode": mode, "ok": ok, "seconds": round(seconds, 1)}
        if ok:
            summary = load_summary(run_dir)
            row.update(steps_per_second=summary["steps_per_second"], bound=summary["test/iw_bound"]["mean"],
                       bound_seconds=summary["iw_seconds"])
        else:
            row["output"] = output
        float32 = rows[0] if rows else row                            # the first mode
        if "bound" in row and "bound" in float32:
            row["bound_minus_float32"] = round(row["bound"] - float32["bound"], 3)
        rows.append(row)
        done()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/mnist", help="the four MNIST IDX files")
    parser.add_argument("--out", default="results/gpu_check", help="folder of the report")
    parser.add_argument("--export-data", metavar="DIR",
                        help="write MNIST from this machine's cache as IDX files to DIR, and stop")
    args = parser.parse_args(argv)
    if args.export_data:
        print("\n".join(f"wrote {p}" for p in export_idx(load_images(), Path(args.export_data))))
        return 0
    if not torch.cuda.is_available():
        print("error: gpu-check: no CUDA device here; run it on the GPU machine (see README 'GPU')",
              file=sys.stderr)
        return 2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    env = dict(os.environ, WANDB_MODE="disabled", VAE_DATA_DIR=str(workdir / "cache"), PYTHONUNBUFFERED="1")
    load_images(Path(args.data_dir), workdir / "cache")       # fills the cache every later step reads
    report: dict = {"python": platform.python_version(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(), "steps": [], "modes": []}
    started = time.perf_counter()

    def write_report() -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        for key, name in RECORDS.items():
            report[key] = json.loads((out / name).read_text()) if (out / name).exists() else None
        profile = out / "profile_cuda.txt"
        report["profile"] = ([line for line in profile.read_text().splitlines()
                              if line.startswith(("== ", "CUDA runtime"))]
                             if profile.exists() else None)
        write_json_atomic(out / "gpu_check.json", report)
        write_text_atomic(out / "gpu_check.md", gpu_check_markdown(report, MODE_STEPS))

    def record(name: str, outcome: tuple[bool, str, float]) -> None:
        ok, output, seconds = outcome
        report["steps"].append({"step": name, "ok": ok, "seconds": round(seconds, 1), "output": output})
        print(f"{'ok  ' if ok else 'FAIL'} {seconds:6.1f} s  {name}", flush=True)
        write_report()

    def side_by_side(commands: dict[str, list[str]]) -> None:
        with ThreadPoolExecutor(len(commands)) as pool:
            outcomes = {name: pool.submit(run, command, env) for name, command in commands.items()}
            for name, outcome in outcomes.items():
                record(name, outcome.result())

    write_report()                                              # the machine, before any step
    results = workdir / "results"
    python = sys.executable
    record("bench on cuda", run([python, "-m", "experiments.bench", "--device", "cuda", "--out", str(out)],
                                env, BENCH_TIMEOUT))
    side_by_side({"pytest -m gpu": [python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]}
                 | {f"sweep {sweep.name} tiny": [python, "-m", "experiments.sweep", str(sweep), "--preset",
                                                 "tiny", "--results-dir", str(results), "--no-progress"]
                    for sweep in SWEEPS}
                 | {"Figure 5(a) speed tiny": [python, "-m", "experiments.bench", "--ssl-classes", "--preset",
                                               "tiny",
                                               "--device", "cuda", "--out", str(results / "bench" / "tiny")]})
    side_by_side({f"figure {figure} tiny": [python, "-m", "experiments.figures", figure, "--preset", "tiny",
                                            "--results-dir", str(results)] for figure in FIGURES}
                 | {f"table {table} tiny": [python, "-m", "experiments.tables", table, "--preset", "tiny",
                                            "--results-dir", str(results)] for table in TABLES})
    for flags, label in (([], ""), (["--compiled"], ", compiled")):
        record(f"Figure 5(a) speed on cuda{label}",
               run([python, "-m", "experiments.bench", "--ssl-classes", *flags,
                    "--device", "cuda", "--preset", "converged", "--steps",
                    str(SSL_SPEED_STEPS), "--out", str(out)], env))
    record("profile on cuda", run([python, "-m", "experiments.bench", "--profile", "--device", "cuda",
                                   "--preset", "converged", "--out", str(out)], env))
    numeric_modes(env, workdir, report["modes"], write_report)
    print(gpu_check_markdown(report, MODE_STEPS))
    return 0 if all(s["ok"] for s in report["steps"] + report["modes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
