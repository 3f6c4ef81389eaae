"""Sweep files, their points and their runs: what ``python -m experiments.sweep FILE [--preset P]`` runs.

A sweep file is a W&B grid sweep plus keys of our own::

    name: tau_ablation                 # runs go to <results>/sweeps/<name>/<preset>/ (name: the file's stem by default)
    method: grid                       # the only method
    metric: {name: valid/neg_elbo, goal: minimize}   # optional; what tables select on (goal:
                                       # minimize, the default, or maximize, e.g. valid/accuracy)
    base: configs/vae_categorical.yaml # a config file, or a list of them (then one more axis);
                                       # relative: from here, else the repository (resolve_path)
    parameters:                        # dotted config key -> {values: [...]} (an axis) or {value: v}
      estimator.name: {values: [gs, st-gs]}
      tau: {values: [{schedule: constant, tau0: 0.5}, {schedule: linear}]}
      # or estimator.name: {applicable: {max_passes: 4, exclude: [gs]}}: every registered estimator
      # that applies to the base (its declarations), within a cost (Applicable); `true`: no limits
    include:                           # extra points next to the grid, each a mapping of overrides;
      - {estimator.name: rloo}         # a value written {values: [...]} makes the entry a small grid;
      - {base: configs/vae_bernoulli.yaml, estimator.name: arm}   # `base:` only for that base
      - {estimator.name: indecater, equal_cost: rloo}   # steps scaled to rloo's decoder evaluations
    select: [optim.lr]                 # axes chosen on `metric` by the tables (default: optim.lr)
    presets:                           # dotted overrides per budget; {values: [...]} adds an axis
                                       # (or replaces the grid's axis of that key); `include:`
                                       # replaces the file's include list for that preset
      quick: {steps: 2000, seeds: [0, 1]}
      paper: {steps: 50000, optim.lr: {values: [1.0e-4, 1.0e-3]}}

Without ``--preset`` a file with presets runs ``quick`` and a file without runs as written
(``--preset none``). Points whose resolved configs are equal are one run (the first listed).
Every point gets a deterministic run directory ``<results>/sweeps/<name>/<preset>/<slug>__<hash>``
(``none`` for the file as written): the
slug reads the point's own values, the hash is that of every setting of its resolved config that
differs from the defaults of ``vae/config.py`` (so a config key added later with a default that
keeps the old behaviour changes no run's directory). A second call finds its runs again: a
finished run (``summary.json``) whose saved config equals the point's is skipped; one whose
config differs (a changed default) is ``stale`` and trained again; an unfinished one with a
checkpoint is resumed; anything else starts afresh. A run that diverges is recorded in
``failed.txt`` and skipped from then on (delete its directory to retry); the others go on.
The run directories, checkpoints aside, are the records the figures and tables are drawn from;
the repository commits them (``.gitignore`` leaves out the checkpoints). ``--pack-lr`` trains the
points that differ only in ``optim.lr`` as one run with a learning rate per replica (:class:`Pack`)
and then gives each point the records it would have had alone.
Bad input (unknown key or preset, missing file, invalid value) prints one line and exits with 2.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import itertools
import json
import multiprocessing
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from vae.config import (REPO, Config, ConfigError, config_from_dict, load_config, read_yaml, resolve_path, to_dict,
                        unreadable)
from vae.results import final, git_commit, select_best
from vae.store import (CHECKPOINT, FAILED, SUMMARY, load_summary, mark_failed, read_config_text, read_metrics,
                       write_config, write_metrics, write_summary, write_sweep_info)
from vae.estimators import ESTIMATORS
from vae.estimators.config import did_you_mean
from vae.tasks import TASKS, at_equal_cost, check
from vae.wandb_sweep import register, start_agents, wandb_config
from vae.training import TrainingDiverged, final_numbers, torch_threads, train

PRESETS = ("tiny", "quick", "converged", "paper")
AS_WRITTEN = "none"  # --preset none: the sweep file as written, no preset's overrides
STORE = "sweeps"  # <results>/sweeps/<sweep name>/<preset>/<run>: the committed run records
PACKS = "packs"   # <results>/packs/<sweep name>/<preset>/<pack>: packs in training (--pack-lr), never committed
GOALS = ("minimize", "maximize")   # a sweep metric's goal: the best point has the lowest / highest value
EQUAL_COST = "equal_cost"  # a point's key beside the config's: its steps at that estimator's decoder evaluations
SWEEP_KEYS = {"name", "description", "method", "metric", "base", "parameters", "include", "select", "presets"}


class SweepError(ValueError):
    """An invalid sweep file or argument; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Point:
    """One run of a sweep: a base config file plus overrides, resolved and placed."""

    base: str                # the config file it starts from
    values: dict[str, Any]   # what sets it apart from the other points (its axes' values)
    cfg: Config              # the resolved config
    run_dir: Path            # where it is (or will be) stored

    @property
    def label(self) -> str:
        """Readable name for progress lines and legends: ``vae_categorical gs``."""
        return " ".join([Path(self.base).stem, *(_slug(k, v) for k, v in self.values.items())])

    def status(self) -> str:
        """``done``, ``failed``, ``resume`` (a checkpoint exists), ``stale`` (any of those, under
        another config) or ``new``."""
        state = next((name for name, marker in (("done", SUMMARY), ("failed", FAILED), ("resume", CHECKPOINT))
                      if (self.run_dir / marker).exists()), "new")
        return "stale" if state != "new" and not self.saved_config_matches() else state

    def saved_config(self) -> Config | None:
        """The config the run's ``config.yaml`` records (keys it lacks at their defaults), or None
        where it has none or one that is not a config."""
        try:
            text = read_config_text(self.run_dir)
            return None if text is None else config_from_dict(read_yaml(text))
        except (OSError, yaml.YAMLError, ConfigError, TypeError):
            return None

    def trained_compiled(self) -> bool:
        """Whether the run's step was compiled (its record says so: ``compile`` is not part of a
        point's identity, so the point's own config need not): its summary's ``compiled`` (what
        ``compile: auto`` decided), or, in a record from before that entry, ``compile: true`` in
        its config (a record older than ``compile`` itself was trained eagerly)."""
        if (self.run_dir / SUMMARY).exists():
            compiled = load_summary(self.run_dir).get("compiled")
            if compiled is not None:
                return bool(compiled)
        saved = self.saved_config()
        return saved is not None and saved.compile is True

    def saved_config_matches(self) -> bool:
        """Whether the run's ``config.yaml`` is this point's config."""
        saved = self.saved_config()
        return saved is not None and _what_it_computes(to_dict(saved)) == _what_it_computes(to_dict(self.cfg))


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


def pack_by_lr(points: list[Point], packs_dir: Path) -> list[Point | Pack]:
    """``points`` with those that differ only in ``optim.lr`` gathered into packs (in the order of
    their first point); a point with no such partner stays as it is."""
    groups: dict[str, list[Point]] = {}
    for point in points:
        values = _what_it_computes(to_dict(point.cfg))
        values["optim"] = {k: v for k, v in values["optim"].items() if k != "lr"}
        groups.setdefault(json.dumps(values, sort_keys=True), []).append(point)
    return [members[0] if len(members) == 1 else make_pack(members, packs_dir) for members in groups.values()]


def units_to_train(todo: list[Point], pack_lr: bool, packs_dir: Path) -> list[Point | Pack]:
    """What a sweep trains: ``todo`` as it is, or (``pack_lr``) packed by learning rate, except a
    point with a checkpoint of its own, which resumes alone (first)."""
    if not pack_lr:
        return todo
    resuming = [p for p in todo if p.status() == "resume"]
    return resuming + pack_by_lr([p for p in todo if p not in resuming], packs_dir)


def make_pack(members: list[Point], packs_dir: Path) -> Pack:
    """The pack of ``members`` (ordered by learning rate), in a directory named by its members."""
    digest = hashlib.sha256("\n".join(sorted(p.run_dir.name for p in members)).encode()).hexdigest()[:8]
    others = {k: v for k, v in members[0].values.items() if k != "optim.lr"}
    return Pack(tuple(sorted(members, key=lambda p: p.cfg.optim.lr)),
                packs_dir / _run_name(others, members[0].base, f"lr-pack__{digest}"))


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
                    iw_seconds=round(summary["iw_seconds"] / k, 2), steps_per_second=rate and round(rate * k, 2),
                    packed={"points": k, "train_seconds": summary["train_seconds"], "iw_seconds": summary["iw_seconds"],
                            "steps_per_second": rate})
        write_summary(point.run_dir, mine)
        write_sweep_info(point.run_dir, {**info, "base": point.base, "values": point.values, "pack": pack.run_dir.name})
        offset = own.stop


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file."""

    path: Path
    name: str
    metric: str                                # the selection metric
    goal: str                                  # minimize or maximize `metric`
    bases: list[str]
    axes: dict[str, list[Any]]                 # grid axes: dotted key -> values
    fixed: dict[str, Any]                      # constant parameters ({value: v})
    include: list[dict[str, Any]]              # extra points (a {values: [...]} value: an axis of that entry)
    select: list[str]                          # axes chosen on `metric` by best_points
    presets: dict[str, dict[str, Any]]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SweepError(message)


@dataclass(frozen=True)
class Applicable:
    """``estimator.name: {applicable: true}`` or ``{applicable: {max_passes: P, exclude: [...]}}``: an
    axis of every registered estimator whose declarations allow the point's resolved config (its task,
    latent kind and shape, the lowest tau its schedule reaches: the checks ``train`` makes), in the
    registry's order, except ``exclude`` and those spending more than ``max_passes`` decoder passes per
    example and step (:meth:`vae.tasks.Task.decoder_passes`). Resolved per base, so each base config
    gets the estimators that apply to it; a point's directory is the one the name written out gives."""

    max_passes: float | None = None
    exclude: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: Any, where: str) -> Applicable:
        if spec is True:
            return cls()
        allowed = {"max_passes", "exclude"}
        _require(isinstance(spec, dict) and set(spec) <= allowed,
                 f"{where}.applicable: expected true or a mapping with keys {', '.join(sorted(allowed))}, got {spec!r}")
        passes, exclude = spec.get("max_passes"), spec.get("exclude", [])
        _require(passes is None or (isinstance(passes, (int, float)) and passes > 0),
                 f"{where}.applicable.max_passes: expected a positive number, got {passes!r}")
        _require(isinstance(exclude, list) and all(isinstance(n, str) for n in exclude),
                 f"{where}.applicable.exclude: expected a list of estimator names, got {exclude!r}")
        for name in exclude:
            _require(name in ESTIMATORS, f"{where}.applicable.exclude: unknown estimator {name!r}"
                     f"{did_you_mean(name, ESTIMATORS)}")
        return cls(passes, tuple(exclude))

    def names(self, base: str, overrides: list[str]) -> list[str]:
        """The estimators this axis gives on ``base`` with ``overrides`` (``key=value`` strings);
        resolved once per axis, base file (its text), overrides and registry (a sweep file's
        expansion asks for every base and preset, and the board's for every cell)."""
        names, first_error, path = [], None, base_path(base)
        try:
            load_config(path, overrides)    # imports the config's plugins: they join the registry
        except ValueError as err:
            first_error = err
        key = (self, str(path), path.read_text() if path.is_file() else None, tuple(overrides),
               tuple((n, id(c)) for n, c in ESTIMATORS.items()))
        if key in _APPLICABLE_NAMES:
            return list(_APPLICABLE_NAMES[key])
        for name in list(ESTIMATORS):
            if name in self.exclude:
                continue
            try:
                cfg = check(load_config(path, [*overrides, f"estimator.name={name}"]))
            except ValueError as err:      # does not apply here (or a config error: reported below)
                first_error = first_error or err
                continue
            if self.max_passes is None or TASKS[cfg.task].decoder_passes(cfg) <= self.max_passes:
                names.append(name)
        _require(bool(names), f"estimator.name: applicable: no registered estimator applies to {base} "
                              f"with these settings ({first_error})")
        _APPLICABLE_NAMES[key] = names
        return list(names)


_APPLICABLE_NAMES: dict[tuple, list[str]] = {}   # Applicable.names' answers by its key


def _axis_or_value(key: str, spec: Any, where: str) -> tuple[bool, Any]:
    """``{values: [...]}`` -> (True, list); ``{value: v}`` -> (False, v); ``estimator.name:
    {applicable: ...}`` -> (True, [:class:`Applicable`]), resolved per base by :func:`expand`;
    anything else is invalid."""
    if key == "estimator.name" and isinstance(spec, dict) and set(spec) == {"applicable"}:
        return True, [Applicable.parse(spec["applicable"], f"{where}.{key}")]
    _require(isinstance(spec, dict) and len(spec) == 1 and set(spec) <= {"values", "value"},
             f"{where}.{key}: expected {{values: [...]}}, {{value: v}} or (estimator.name) {{applicable: ...}}, "
             f"got {spec!r}")
    if "values" in spec:
        _require(isinstance(spec["values"], list) and len(spec["values"]) > 0,
                 f"{where}.{key}.values: expected a non-empty list, got {spec['values']!r}")
        return True, spec["values"]
    return False, spec["value"]


def read_sweep(path: str | Path) -> Sweep:
    """Parse and check a sweep file (the configs of its points are checked by :func:`expand`)."""
    typed, path = path, resolve_path(path)
    try:
        tree = read_yaml(path.read_text())
    except OSError as err:
        raise SweepError(unreadable("sweep", typed, err)) from err
    except yaml.YAMLError as err:
        raise SweepError(f"sweep: {path} is not valid YAML ({str(err).splitlines()[0]})") from err
    _require(isinstance(tree, dict), f"sweep: {path} must hold a mapping of keys")
    unknown = sorted(set(tree) - SWEEP_KEYS)
    if unknown:
        raise SweepError(f"{unknown[0]}: unknown sweep key; allowed: {', '.join(sorted(SWEEP_KEYS))}")
    _require(tree.get("method", "grid") == "grid", f"method: {tree.get('method')!r}; allowed: grid")
    metric = tree.get("metric", {"name": "valid/neg_elbo", "goal": "minimize"})
    _require(isinstance(metric, dict) and metric.get("goal", "minimize") in GOALS and "name" in metric,
             f"metric: expected {{name: <split>/<metric>, goal: minimize or maximize}}, got {metric!r}")
    bases = tree.get("base")
    bases = [bases] if isinstance(bases, str) else bases
    _require(isinstance(bases, list) and bases and all(isinstance(b, str) for b in bases),
             f"base: expected a config file or a list of them, got {tree.get('base')!r}")
    for base in bases:
        _require(base_path(base).is_file(), f"base: config file {base} not found (a relative path is looked for in "
                                            f"the current directory {Path.cwd()}, then in {REPO})")
    axes, fixed = {}, {}
    for key, spec in (tree.get("parameters") or {}).items():
        is_axis, value = _axis_or_value(key, spec, "parameters")
        (axes if is_axis else fixed)[key] = value
    include = _include_list(tree.get("include"), "include")
    select = tree.get("select", ["optim.lr"])
    _require(isinstance(select, list) and all(isinstance(k, str) for k in select),
             f"select: expected a list of dotted keys, got {select!r}")
    presets = tree.get("presets") or {}
    _require(isinstance(presets, dict) and all(isinstance(p, dict) for p in presets.values()),
             "presets: expected a mapping from preset name to a mapping of overrides")
    unknown = sorted(set(presets) - set(PRESETS))
    if unknown:
        raise SweepError(f"presets.{unknown[0]}: unknown preset; allowed: {', '.join(PRESETS)}")
    for name, preset in presets.items():
        if "include" in preset:
            _include_list(preset["include"], f"presets.{name}.include")
    return Sweep(path, tree.get("name", path.stem), metric["name"], metric.get("goal", "minimize"), bases, axes, fixed,
                 include, select, presets)


def base_path(base: str) -> Path:
    """Where a sweep's ``base:`` config lives: :func:`vae.config.resolve_path`, the one rule."""
    return resolve_path(base)


def _include_list(value: Any, where: str) -> list[dict[str, Any]]:
    value = value or []
    _require(isinstance(value, list) and all(isinstance(p, dict) for p in value),
             f"{where}: expected a list of mappings of overrides, got {value!r}")
    return value


def _is_axis(spec: Any) -> bool:
    return isinstance(spec, dict) and set(spec) in ({"values"}, {"applicable"})


def _entry_points(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """An include entry's points: its {values: [...]} values are axes, the rest fixed."""
    axes = {k: _axis_or_value(k, v, where)[1] for k, v in entry.items() if _is_axis(v)}
    fixed = {k: v for k, v in entry.items() if k not in axes}
    return [{**fixed, **dict(zip(axes, combo))} for combo in itertools.product(*axes.values())]


def _yaml_value(value: Any) -> str:
    """A value as a one-line YAML literal, as ``key=value`` overrides expect (``1.0e-05``, ``[0, 1]``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def _slug(key: str, value: Any) -> str:
    """Short readable form of one override: strings as they are, numbers after the key's last part."""
    leaf = key.rsplit(".", 1)[-1]
    if key == EQUAL_COST:
        return f"{EQUAL_COST}={value}"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "-".join(_slug(k, v) for k, v in value.items())
    if isinstance(value, list):
        return f"{leaf}=" + ("-".join(map(str, value)) or "none")
    return f"{leaf}={value}"


def _what_it_computes(values: dict) -> dict:
    """A config's ``values`` without ``out_dir`` (a store can move) and ``compile`` (it changes how
    fast a run computes, not its numbers beyond float round-off, tests/test_training.py): neither
    is part of a run's identity, so ``sweep --compile`` trains the same points, and a record
    trained either way serves them."""
    return {k: v for k, v in values.items() if k not in ("out_dir", "compile")}


def flat_settings(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def identity(cfg: Config) -> dict[str, Any]:
    """The settings of ``cfg`` that differ from the defaults, ``out_dir`` and ``compile`` aside
    (:func:`_what_it_computes`): what a run's directory hash is taken over."""
    defaults = flat_settings(to_dict(Config()))
    return {k: v for k, v in flat_settings(_what_it_computes(to_dict(cfg))).items()
            if k not in defaults or defaults[k] != v}


def _digest(cfg: Config) -> str:
    """The hash of :func:`identity`: equal for equal resolved configs, so a changed setting never
    reuses an old run."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]


def _run_name(point_values: dict[str, Any], base: str, digest: str) -> str:
    """``<slug>__<digest>``: the slug reads the point's values (in key order, so reordering a sweep
    file's axes moves no run)."""
    slug = "__".join([Path(base).stem, *(_slug(k, v) for k, v in sorted(point_values.items()))])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", slug) + "__" + digest


def expand(sweep: Sweep, preset: str, results_dir: Path, entries: list[dict[str, Any]] | None = None) -> list[Point]:
    """Every point of ``sweep`` under ``preset`` (``AS_WRITTEN``: no preset), in a fixed order, with
    its resolved config; a point whose resolved config equals an earlier one's is left out (the
    two would be one run). ``entries``: these include entries instead of the grid and the file's
    own (the preset's settings and its axes beyond the grid's apply to them as to any entry)."""
    _require(preset == AS_WRITTEN or preset in sweep.presets,
             f"--preset: {preset!r} is not defined in {sweep.path}; defined: {', '.join(sweep.presets) or 'none'}"
             f" ({AS_WRITTEN}: the file as written)")
    chosen = sweep.presets.get(preset, {})
    preset_axes, preset_fixed = {}, {}
    include = chosen.get("include", sweep.include)
    for key, spec in chosen.items():
        if key == "include":
            continue
        if _is_axis(spec):                                  # an axis; any other value is an override
            preset_axes[key] = _axis_or_value(key, spec, f"presets.{preset}")[1]
        else:
            preset_fixed[key] = spec
    axes = {**sweep.axes, **preset_axes}       # a preset axis replaces a grid axis of the same key
    extra = {k: v for k, v in preset_axes.items() if k not in sweep.axes}
    grid = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if entries is not None:
        grid, include = [], _include_list(entries, "entries")
    included = [{**own, **dict(zip(extra, combo))} for entry in include
                for own in _entry_points(entry, "include") for combo in itertools.product(*extra.values())]
    for values in included:
        _require(values.get("base", sweep.bases[0]) in sweep.bases,
                 f"include: base {values.get('base')!r} is not one of the sweep's bases ({', '.join(sweep.bases)})")
    points, digests = [], set()
    for values, base in _with_bases(sweep, grid + included, preset_fixed):
        # bases innermost: each estimator's runs on both VAEs come together
        overrides = {**sweep.fixed, **preset_fixed, **values, "experiment": sweep.name,
                     "out_dir": str(results_dir / STORE)}
        reference = overrides.pop(EQUAL_COST, None)
        try:
            cfg = load_config(base_path(base), [f"{k}={_yaml_value(v)}" for k, v in overrides.items()])
            cfg = check(cfg if reference is None else at_equal_cost(cfg, reference))
        except ValueError as err:      # ConfigError included
            raise SweepError(f"{sweep.path}: {err}") from err
        digest = _digest(cfg)
        if digest not in digests:
            digests.add(digest)
            points.append(Point(base, values, cfg,
                                results_dir / STORE / sweep.name / preset / _run_name(values, base, digest)))
    return points


def _with_bases(sweep: Sweep, entries: list[dict[str, Any]], preset_fixed: dict[str, Any]
                ) -> Iterator[tuple[dict[str, Any], str]]:
    """Each entry's (values, base) pairs, bases innermost: the sweep's bases or the entry's own
    ``base``, and an :class:`Applicable` estimator axis resolved to the names that apply on each."""
    for entry in entries:
        values = dict(entry)
        only = values.pop("base", None)
        bases = sweep.bases if only is None else [only]
        axis = values.get("estimator.name")
        if not isinstance(axis, Applicable):
            yield from ((values, base) for base in bases)
            continue
        fixed = {**sweep.fixed, **preset_fixed, **{k: v for k, v in values.items() if k != "estimator.name"}}
        overrides = [f"{k}={_yaml_value(v)}" for k, v in fixed.items() if k != EQUAL_COST]
        per_base = {base: axis.names(base, overrides) for base in bases}
        for name in ESTIMATORS:
            yield from (({**values, "estimator.name": name}, base) for base in bases if name in per_base[base])


def best_points(sweep: Sweep, points: list[Point]) -> list[Point]:
    """Of each set of points that differ only in the ``select`` axes (``optim.lr`` by default),
    the one with the best ``sweep.metric`` at the end of training (the lowest, or the highest
    under ``goal: maximize``): the paper's per-estimator choice of learning rate (and temperature
    schedule) on the validation set. Without such axes every point is its own set."""
    def group(point: Point) -> tuple:
        others = {k: v for k, v in point.values.items() if k not in sweep.select}
        return point.base, json.dumps(others, sort_keys=True)

    sign = -1.0 if sweep.goal == "maximize" else 1.0     # select_best keeps the lowest score

    def score(point: Point) -> float | None:
        value = final(load_summary(point.run_dir), sweep.metric)
        return None if value is None else sign * value[0]

    return list(select_best(points, group, score).values())


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


def run_unit(unit: Point | Pack, sweep: Sweep, preset: str, progress: bool, commit: str,
             threads: int | None = None) -> list[tuple[str, float]]:
    """Bring a point or a pack to ``done``; returns (outcome, seconds) per point. When a replica of
    a pack diverges, its point is marked failed (alone it takes the same steps) and the others
    are packed again; non-finite parameters, which name no replica, send every point to train
    alone."""
    if isinstance(unit, Point):
        return [run_point(unit, sweep, preset, progress, commit, threads)]
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    pack_cfg = unit.cfg
    info = {"sweep": str(sweep.path), "preset": preset, "commit": commit}
    try:
        saved = read_config_text(unit.run_dir)
        resumable = (unit.run_dir / CHECKPOINT).exists() and saved is not None and read_yaml(saved) == to_dict(pack_cfg)
        if resumable:
            train(None, unit.run_dir, resume=True, progress=progress)
        else:
            shutil.rmtree(unit.run_dir, ignore_errors=True)
            train(pack_cfg, unit.run_dir, progress=progress)
    except TrainingDiverged as err:
        shutil.rmtree(unit.run_dir, ignore_errors=True)
        if err.replica is None:
            print(f"a pack of {len(unit.points)} learning rates diverged ({err}); training its points one by one",
                  flush=True)
            return [run_point(point, sweep, preset, progress, commit) for point in unit.points]
        bad = unit.points[err.replica // len(unit.points[0].cfg.seeds)]
        print(f"learning rate {bad.cfg.optim.lr:g} of a pack diverged ({err}); packing the others again", flush=True)
        shutil.rmtree(bad.run_dir, ignore_errors=True)
        bad.run_dir.mkdir(parents=True)
        write_config(bad.run_dir, to_dict(bad.cfg))
        mark_failed(bad.run_dir, f"in a pack of learning rates ({unit.run_dir.name}): {err}")
        write_sweep_info(bad.run_dir, {**info, "base": bad.base, "values": bad.values, "outcome": "diverged",
                                       "pack": unit.run_dir.name, "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
        rest = [p for p in unit.points if p is not bad]
        again = rest[0] if len(rest) == 1 else make_pack(rest, unit.run_dir.parent)
        results = dict(zip((p.run_dir for p in rest), run_unit(again, sweep, preset, progress, commit)))
        return [results.get(p.run_dir, ("diverged", time.perf_counter() - start)) for p in unit.points]
    split_pack(unit, {**info, "outcome": "finished", "ended": time.strftime("%Y-%m-%d %H:%M:%S")})
    shutil.rmtree(unit.run_dir)
    seconds = (time.perf_counter() - start) / len(unit.points)
    return [("finished", seconds)] * len(unit.points)


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


def run_points(todo: list[Point | Pack], heads: dict[Path, str], sweep: Sweep, preset: str, workers: int,
               progress: bool, commit: str, threads: int | None = None) -> Iterator[tuple[str, Point, str, float]]:
    """Run ``todo`` (points and packs) one after another, or on ``workers`` processes, each with
    ``threads`` torch threads (default: the threads torch would use, ``torch.get_num_threads()``,
    which honours ``OMP_NUM_THREADS``, divided by ``workers``: small networks use threads poorly,
    so two one-thread processes outpace one two-thread process); yields (heading, point, outcome,
    seconds) per point, ``heads`` giving each point's heading by its run directory."""
    threads = threads or threads_per_worker(workers)

    def members(unit: Point | Pack) -> tuple[Point, ...]:
        return unit.points if isinstance(unit, Pack) else (unit,)
    if workers == 1:
        with torch_threads(threads):   # the caller's setting again after (a test calling main in-process)
            for unit in todo:
                resumed = (unit.run_dir / CHECKPOINT).exists() if isinstance(unit, Pack) else unit.status() == "resume"
                for point in members(unit):
                    print(f"{heads[point.run_dir]}: {'resumed' if resumed else 'started'}"
                          + (f" (in a pack of {len(unit.points)} learning rates)" if isinstance(unit, Pack) else ""),
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


def register_with_wandb(sweep: Sweep, preset: str, points: list[Point], results_dir: Path, agents: int) -> int:
    """``--wandb``: register the points with W&B, print how to start agents, start ``agents`` here."""
    projects = {p.cfg.wandb_project for p in points}
    _require(len(projects) == 1, f"--wandb: the points log to several W&B projects ({', '.join(sorted(projects))})")
    config = wandb_config(sweep.path, sweep.name, sweep.metric, sweep.goal, preset, [p.run_dir.name for p in points],
                          results_dir)
    full_id = register(config, projects.pop())
    print(f"registered W&B sweep {full_id}: {len(points)} points of {sweep.path} (preset {preset})")
    print("start an agent on each machine (from a clone of this repository, same commit):")
    print(f"  wandb agent {full_id}")
    if agents:
        return start_agents(full_id, agents)
    return 0


def train_points(sweep: Sweep, points: list[Point], preset: str, results_dir: Path, *, workers: int = 1,
                 threads: int | None = None, pack_lr: bool = False, progress: bool = False) -> Counter[str]:
    """Train the points of ``sweep`` that are not finished (or failed), resumably, printing a line
    per point as it ends; returns the count of each outcome (``done``, ``failed``, ``trained``,
    ``resumed``, ``diverged``...). Holds the sweep's lock, so two calls never train one run."""
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
        units = units_to_train(todo, pack_lr, results_dir / PACKS / sweep.name / preset)
        runs = run_points(units, heads, sweep, preset, workers, progress and workers == 1, commit=git_commit(),
                          threads=threads)
        for head, point, outcome, seconds in runs:
            outcomes[outcome] += 1
            summary = load_summary(point.run_dir)
            key = summary.get("final_metric", "test/iw_bound") if summary else ""
            value = final(summary, key)
            detail = f", {key} {value[0]:.2f}" if value else f" ({FAILED})"
            print(f"{head}: {outcome} in {seconds:.0f} s{detail}", flush=True)
    return outcomes

