"""Training a sweep's points resumably, one after another or on worker processes (vae/sweeps/definition.py
says what the points are and where their run directories lie).

A second call finds its runs again: a finished run (``summary.json``) whose saved config equals the point's is
skipped; one whose config differs (a changed default) is ``stale`` and trained again; an unfinished one with a
checkpoint is resumed; anything else starts afresh. A run that diverges is recorded in
``failed.txt`` and skipped from then on (delete its directory to retry); the others go on.
The run directories, checkpoints aside, are the records the figures and tables are drawn from;
the repository commits them (``.gitignore`` leaves out the checkpoints). ``--pack-lr`` trains the
points that differ only in ``optim.lr`` as one run with a learning rate per replica (:class:`Pack`)
and then gives each point the records it would have had alone. ``--seeds`` asks for more seeds than a
finished record has: only the missing seeds train (:class:`TopUp`), and the two records are merged
into the point's.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import multiprocessing
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vae.config import Config, config_from_dict, read_yaml, to_dict
from vae.store.records import final, git_commit
from vae.store.run_dir import (CHECKPOINT, FAILED, load_summary, mark_failed, read_config_text, read_metrics,
                               read_sweep_info, write_config, write_metrics, write_summary, write_sweep_info)
from vae.sweeps.definition import STORE, Point, Sweep, SweepError, run_name, what_it_computes
from vae.sweeps.wandb_agents import register, start_agents, wandb_config
from vae.training.trainer import TrainingDiverged, final_numbers, torch_threads, train

# <results>/packs/<sweep name>/<preset>/<pack>: packs in training (--pack-lr), never committed
PACKS = "packs"


@dataclass(frozen=True)
class Pack:
    """Points that differ only in ``optim.lr``, trained as one run with a learning rate per
    replica (``--pack-lr``): replicas ``k*S .. (k+1)*S - 1`` are point k's S seeds. The pack trains
    in a directory of its own (resumable like any run); when it ends, each point's run directory
    gets the records it would have had alone (:func:`split_pack`) and the pack's directory goes."""

    points: tuple[Point, ...]
    run_dir: Path

    @property
    def cfg(self) -> Config:
        values = to_dict(self.points[0].cfg)
        values["seeds"] = [s for p in self.points for s in p.cfg.seeds]
        values["optim"]["lr"] = [p.cfg.optim.lr for p in self.points for _ in p.cfg.seeds]
        return config_from_dict(values)


@dataclass(frozen=True)
class TopUp:
    """A point whose config a finished record (``earlier``) already trained with some of its seeds:
    only the others train, as a run of their own in a directory of its own (resumable like any
    run, never committed); when it ends, :func:`merge_seeds` writes the point's records from the
    two and the directory goes. Replica r of a run trains as the single-seed run of its seed
    (tests/test_training.py), so the merged record is the one the point trained at once would
    leave, to float round-off."""

    point: Point
    earlier: Point
    run_dir: Path

    @property
    def points(self) -> tuple[Point, ...]:
        return (self.point,)

    @property
    def cfg(self) -> Config:
        return replace(self.point.cfg, seeds=self.added_seeds)

    @property
    def added_seeds(self) -> list[int]:
        return [s for s in self.point.cfg.seeds if s not in self.earlier.cfg.seeds]


def _apart_from_seeds(cfg: Config) -> str:
    values = what_it_computes(to_dict(cfg))
    values.pop("seeds", None)
    return json.dumps(values, sort_keys=True)


def top_ups(todo: list[Point], earlier: list[Point], packs_dir: Path) -> dict[Path, TopUp]:
    """Per run directory of ``todo``, the :class:`TopUp` that brings it to ``done`` from a finished
    point of ``earlier`` (the same sweep under its preset's own seeds) whose config differs from
    it only in seeds, all of them among the point's."""
    finished = {_apart_from_seeds(p.cfg): p for p in earlier if p.status() == "done"}
    out = {}
    for point in todo:
        found = finished.get(_apart_from_seeds(point.cfg))
        if found is not None and set(found.cfg.seeds) < set(point.cfg.seeds):
            added = "-".join(str(s) for s in point.cfg.seeds if s not in found.cfg.seeds)
            out[point.run_dir] = TopUp(point, found, packs_dir / f"{point.run_dir.name}__seeds_{added}")
    return out


def merge_seeds(unit: TopUp, info: dict[str, Any]) -> None:
    """Write the point's records from the earlier record's and the added seeds' run: its config,
    every metric row (replica renumbered to its seed's place in the point's seeds), its summary
    (the final numbers of all its seeds; training and bound times summed, so its steps/s is that of
    all its seeds one after the other; the added run's own in ``seeds_added``) and ``sweep.json``
    (the earlier run's, with the added run's commit in ``seeds_added``); the summary last, so a
    kill on the way leaves the point unfinished, not half-merged."""
    point, order = unit.point, unit.point.cfg.seeds
    rows = []
    for run_dir, seeds in ((unit.earlier.run_dir, unit.earlier.cfg.seeds), (unit.run_dir, unit.added_seeds)):
        rows += [{**r, "replica": order.index(seeds[r["replica"]])} for r in read_metrics(run_dir)]
    rows.sort(key=lambda r: r["step"])          # stable: per step, the earlier seeds' rows first
    earlier, added = load_summary(unit.earlier.run_dir), load_summary(unit.run_dir)
    merged = {k: v for k, v in earlier.items() if not (isinstance(v, dict) and "per_seed" in v)}
    merged.update(final_numbers(rows, point.cfg.steps, len(order)))
    train_seconds = round(earlier["train_seconds"] + added["train_seconds"], 2)
    merged.update(seeds=order, train_seconds=train_seconds,
                  iw_seconds=round(earlier["iw_seconds"] + added["iw_seconds"], 2),
                  steps_per_second=round(point.cfg.steps / train_seconds, 2) if train_seconds else None,
                  seeds_added={"seeds": unit.added_seeds, **{k: added.get(k) for k in
                               ("train_seconds", "iw_seconds", "steps_per_second", "compiled")}})
    shutil.rmtree(point.run_dir, ignore_errors=True)   # leftovers of a stale run
    point.run_dir.mkdir(parents=True)
    write_config(point.run_dir, to_dict(point.cfg))
    write_metrics(point.run_dir, rows)
    write_sweep_info(point.run_dir, {**(read_sweep_info(unit.earlier.run_dir) or {}), "values": point.values,
                                     "seeds_added": {**info, "from": unit.earlier.run_dir.name}})
    write_summary(point.run_dir, merged)


def pack_by_lr(points: list[Point], packs_dir: Path) -> list[Point | Pack]:
    """``points`` with those that differ only in ``optim.lr`` gathered into packs (in the order of
    their first point); a point with no such partner stays as it is."""
    groups: dict[str, list[Point]] = {}
    for point in points:
        values = what_it_computes(to_dict(point.cfg))
        values["optim"] = {k: v for k, v in values["optim"].items() if k != "lr"}
        groups.setdefault(json.dumps(values, sort_keys=True), []).append(point)
    return [members[0] if len(members) == 1 else make_pack(members, packs_dir) for members in groups.values()]


def units_to_train(todo: list[Point], pack_lr: bool, packs_dir: Path,
                   earlier: list[Point] | None = None) -> list[Point | Pack | TopUp]:
    """What a sweep trains: the points of ``todo`` that a finished record of ``earlier`` has some
    seeds of, as :class:`TopUp` units (first); the others as they are, or (``pack_lr``) packed by
    learning rate, except a point with a checkpoint of its own, which resumes alone (first)."""
    topped = top_ups(todo, earlier or [], packs_dir)
    rest = [p for p in todo if p.run_dir not in topped]
    if not pack_lr:
        return [*topped.values(), *rest]
    resuming = [p for p in rest if p.status() == "resume"]
    return [*topped.values(), *resuming, *pack_by_lr([p for p in rest if p not in resuming], packs_dir)]


def make_pack(members: list[Point], packs_dir: Path) -> Pack:
    """The pack of ``members`` (ordered by learning rate), in a directory named by its members."""
    digest = hashlib.sha256("\n".join(sorted(p.run_dir.name for p in members)).encode()).hexdigest()[:8]
    others = {k: v for k, v in members[0].values.items() if k != "optim.lr"}
    return Pack(tuple(sorted(members, key=lambda p: p.cfg.optim.lr)),
                packs_dir / run_name(others, members[0].base, f"lr-pack__{digest}"))


def split_pack(pack: Pack, info: dict[str, Any]) -> None:
    """Write each point's records from the finished pack's: its config, its replicas' metric rows
    (renumbered from 0), its summary (its seeds' final numbers; the pack's training and bound time
    shared equally, so its steps/s is the pack's times the number of points; the pack's own in
    ``packed``) and ``sweep.json``."""
    rows = read_metrics(pack.run_dir)
    summary = load_summary(pack.run_dir)
    k = len(pack.points)
    offset = 0
    for point in pack.points:
        own = range(offset, offset + len(point.cfg.seeds))
        mine_rows = [{**r, "replica": r["replica"] - offset} for r in rows if r["replica"] in own]
        shutil.rmtree(point.run_dir, ignore_errors=True)   # leftovers of a stale run
        point.run_dir.mkdir(parents=True)
        write_config(point.run_dir, to_dict(point.cfg))
        write_metrics(point.run_dir, mine_rows)
        mine = {key: value for key, value in summary.items() if not isinstance(value, dict)}
        mine.update(final_numbers(mine_rows, point.cfg.steps, len(own)))
        rate = summary["steps_per_second"]
        mine.update(seeds=point.cfg.seeds, train_seconds=round(summary["train_seconds"] / k, 2),
                    iw_seconds=round(summary["iw_seconds"] / k, 2),
                    steps_per_second=rate and round(rate * k, 2),
                    packed={"points": k, "train_seconds": summary["train_seconds"],
                            "iw_seconds": summary["iw_seconds"], "steps_per_second": rate})
        write_summary(point.run_dir, mine)
        write_sweep_info(point.run_dir,
                         {**info, "base": point.base, "values": point.values, "pack": pack.run_dir.name})
        offset = own.stop


@contextmanager
def _lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` so that two sweeps never train the same run."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".sweep.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another sweep of {directory} to finish", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def run_point(point: Point, sweep: Sweep, preset: str, progress: bool, commit: str,
              threads: int | None = None) -> tuple[str, float]:
    """Bring one point to ``done``; returns (``finished`` or ``diverged``, seconds taken).

    ``commit`` is the code's commit when the sweep started (what its processes run, whatever is
    committed while they train), recorded in ``sweep.json``. ``threads`` sets torch's intra-op
    threads first (in a worker process of ``--workers``).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        if point.status() == "resume":
            train(None, point.run_dir, resume=True, progress=progress)
        else:   # leftovers of a run killed before its first checkpoint, or a stale run
            shutil.rmtree(point.run_dir, ignore_errors=True)
            train(point.cfg, point.run_dir, progress=progress)
        outcome = "finished"
    except TrainingDiverged as err:
        mark_failed(point.run_dir, str(err))
        outcome = "diverged"
    info = {"sweep": str(sweep.path), "preset": preset, "base": point.base, "values": point.values,
            "outcome": outcome, "commit": commit, "ended": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_sweep_info(point.run_dir, info)
    return outcome, time.perf_counter() - start


def run_unit(unit: Point | Pack | TopUp, sweep: Sweep, preset: str, progress: bool, commit: str,
             threads: int | None = None) -> list[tuple[str, float]]:
    """Bring a point or a pack to ``done``; returns (outcome, seconds) per point. When a replica of
    a pack diverges, its point is marked failed (alone it takes the same steps) and the others
    are packed again; non-finite parameters, which name no replica, send every point to train
    alone."""
    if isinstance(unit, Point):
        return [run_point(unit, sweep, preset, progress, commit, threads)]
    if threads is not None:
        torch.set_num_threads(threads)
    if isinstance(unit, TopUp):
        return [run_top_up(unit, progress, commit)]
    start = time.perf_counter()
    pack_cfg = unit.cfg
    info = {"sweep": str(sweep.path), "preset": preset, "commit": commit}
    try:
        train_resuming(unit.run_dir, pack_cfg, progress)
    except TrainingDiverged as err:
        shutil.rmtree(unit.run_dir, ignore_errors=True)
        if err.replica is None:
            print(f"a pack of {len(unit.points)} learning rates diverged ({err}); "
                  f"training its points one by one",
                  flush=True)
            return [run_point(point, sweep, preset, progress, commit) for point in unit.points]
        bad = unit.points[err.replica // len(unit.points[0].cfg.seeds)]
        print(f"learning rate {bad.cfg.optim.lr:g} of a pack diverged ({err}); packing the others again",
              flush=True)
        shutil.rmtree(bad.run_dir, ignore_errors=True)
        bad.run_dir.mkdir(parents=True)
        write_config(bad.run_dir, to_dict(bad.cfg))
        mark_failed(bad.run_dir, f"in a pack of learning rates ({unit.run_dir.name}): {err}")
        write_sweep_info(bad.run_dir, {**info, "base": bad.base, "values": bad.values, "outcome": "diverged",
                                       "pack": unit.run_dir.name,
                                       "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
        rest = [p for p in unit.points if p is not bad]
        again = rest[0] if len(rest) == 1 else make_pack(rest, unit.run_dir.parent)
        results = dict(zip((p.run_dir for p in rest), run_unit(again, sweep, preset, progress, commit)))
        return [results.get(p.run_dir, ("diverged", time.perf_counter() - start)) for p in unit.points]
    split_pack(unit, {**info, "outcome": "finished", "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
    shutil.rmtree(unit.run_dir)
    seconds = (time.perf_counter() - start) / len(unit.points)
    return [("finished", seconds)] * len(unit.points)


def train_resuming(run_dir: Path, cfg: Config, progress: bool) -> None:
    """Train a pack's or a top-up's run (a directory of the sweep's own, not a point's): resumed
    where it has a checkpoint under exactly ``cfg``, else afresh."""
    saved = read_config_text(run_dir)
    if (run_dir / CHECKPOINT).exists() and saved is not None and read_yaml(saved) == to_dict(cfg):
        train(None, run_dir, resume=True, progress=progress)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        train(cfg, run_dir, progress=progress)


def run_top_up(unit: TopUp, progress: bool, commit: str) -> tuple[str, float]:
    """Train the added seeds of ``unit`` (resuming their run where it has a checkpoint under the
    same config), then merge them into the point's records (:func:`merge_seeds`); a divergence
    marks the point failed, as it would have trained with those seeds at once."""
    start = time.perf_counter()
    try:
        train_resuming(unit.run_dir, unit.cfg, progress)
    except TrainingDiverged as err:
        shutil.rmtree(unit.point.run_dir, ignore_errors=True)
        unit.point.run_dir.mkdir(parents=True)
        write_config(unit.point.run_dir, to_dict(unit.point.cfg))
        mark_failed(unit.point.run_dir,
                    f"seeds {unit.added_seeds}, added to {unit.earlier.run_dir.name}: {err}")
        shutil.rmtree(unit.run_dir, ignore_errors=True)
        return "diverged", time.perf_counter() - start
    merge_seeds(unit, {"seeds": unit.added_seeds, "commit": commit,
                       "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
    shutil.rmtree(unit.run_dir)
    return "finished", time.perf_counter() - start


def _die_with_parent() -> None:
    """In a worker process: be sent SIGTERM when the sweep process ends, however it ends (Linux;
    elsewhere a killed sweep's workers finish their current run). Without it a killed sweep
    leaves its workers training on, beside the sweep started again."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)    # PR_SET_PDEATHSIG = 1


def threads_per_worker(workers: int) -> int:
    """A run's default torch threads: torch's own count (the cores, or ``OMP_NUM_THREADS`` where set)
    shared among ``workers``, at least 1. Two processes that together ask for more threads than
    there are free cores make a small model's step many times slower (each parallel operator
    waits on a thread that is not running), so a sweep started where a test or another sweep
    holds a core asks for fewer."""
    return max(1, torch.get_num_threads() // workers)


def run_points(todo: list[Point | Pack | TopUp], heads: dict[Path, str], sweep: Sweep, preset: str,
               workers: int,
               progress: bool, commit: str,
               threads: int | None = None) -> Iterator[tuple[str, Point, str, float]]:
    """Run ``todo`` (points and packs) one after another, or on ``workers`` processes, each with
    ``threads`` torch threads (default: the threads torch would use, ``torch.get_num_threads()``,
    which honours ``OMP_NUM_THREADS``, divided by ``workers``: small networks use threads poorly,
    so two one-thread processes outpace one two-thread process); yields (heading, point, outcome,
    seconds) per point, ``heads`` giving each point's heading by its run directory."""
    threads = threads or threads_per_worker(workers)

    def members(unit: Point | Pack | TopUp) -> tuple[Point, ...]:
        return (unit,) if isinstance(unit, Point) else unit.points
    if workers == 1:
        with torch_threads(threads):   # the caller's setting again after (a test calling main in-process)
            for unit in todo:
                resumed = (unit.status() == "resume" if isinstance(unit, Point)
                           else (unit.run_dir / CHECKPOINT).exists())
                for point in members(unit):
                    print(f"{heads[point.run_dir]}: {'resumed' if resumed else 'started'}"
                          + (f" (in a pack of {len(unit.points)} learning rates)" if isinstance(unit, Pack)
                             else f" (seeds {unit.added_seeds}, added to {unit.earlier.run_dir.name})"
                             if isinstance(unit, TopUp) else ""),
                          flush=True)
                results = run_unit(unit, sweep, preset, progress, commit)
                for point, result in zip(members(unit), results):
                    yield heads[point.run_dir], point, *result
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with_parent)
    try:
        futures = {pool.submit(run_unit, unit, sweep, preset, False, commit, threads): unit for unit in todo}
        for future in as_completed(futures):
            for point, result in zip(members(futures[future]), future.result()):
                yield heads[point.run_dir], point, *result
    finally:
        pool.shutdown(cancel_futures=True)


def register_with_wandb(sweep: Sweep, preset: str, points: list[Point], results_dir: Path,
                        agents: int) -> int:
    """``--wandb``: register the points with W&B, print how to start agents, start ``agents`` here."""
    projects = {p.cfg.wandb_project for p in points}
    if len(projects) != 1:
        raise SweepError(f"--wandb: the points log to several W&B projects ({', '.join(sorted(projects))})")
    config = wandb_config(sweep.path, sweep.name, sweep.metric, sweep.goal, preset,
                          [p.run_dir.name for p in points], results_dir)
    full_id = register(config, projects.pop())
    print(f"registered W&B sweep {full_id}: {len(points)} points of {sweep.path} (preset {preset})")
    print("start an agent on each machine (from a clone of this repository, same commit):")
    print(f"  wandb agent {full_id}")
    if agents:
        return start_agents(full_id, agents)
    return 0


def train_points(sweep: Sweep, points: list[Point], preset: str, results_dir: Path, *, workers: int = 1,
                 threads: int | None = None, pack_lr: bool = False, progress: bool = False,
                 earlier: list[Point] | None = None) -> Counter[str]:
    """Train the points of ``sweep`` that are not finished (or failed), resumably, printing a line
    per point as it ends; returns the count of each outcome (``done``, ``failed``, ``trained``,
    ``resumed``, ``diverged``...). ``earlier``: finished points with fewer seeds, which train only
    the seeds they lack (:class:`TopUp`). Holds the sweep's lock, so two calls never train one run."""
    outcomes: Counter[str] = Counter()
    n = len(points)
    with _lock(results_dir / STORE / sweep.name):
        todo, heads = [], {}
        for i, point in enumerate(points, 1):
            head, status = f"[{i}/{n}] {point.label}", point.status()
            if status in ("done", "failed"):
                outcomes[status] += 1
                print(f"{head}: {status}" + (f" (see {FAILED})" if status == "failed" else ""))
            else:
                todo.append(point)
                heads[point.run_dir] = head
        units = units_to_train(todo, pack_lr, results_dir / PACKS / sweep.name / preset, earlier)
        runs = run_points(units, heads, sweep, preset, workers, progress and workers == 1,
                          commit=git_commit(), threads=threads)
        for head, point, outcome, seconds in runs:
            outcomes[outcome] += 1
            summary = load_summary(point.run_dir)
            key = summary.get("final_metric", "test/iw_bound") if summary else ""
            value = final(summary, key)
            detail = f", {key} {value[0]:.2f}" if value else f" ({FAILED})"
            print(f"{head}: {outcome} in {seconds:.0f} s{detail}", flush=True)
    return outcomes
