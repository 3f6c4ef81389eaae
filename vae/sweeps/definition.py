"""Sweep files and their points: what ``python -m experiments.sweep FILE [--preset P]`` runs, and where.

A sweep file is a W&B grid sweep plus keys of our own::

    name: tau_ablation # runs go to <results>/sweeps/<name>/<preset>/ (name: the file's stem by default)
    method: grid                       # the only method
    metric: {name: valid/neg_elbo, goal: minimize}   # optional; what tables select on (goal:
                                       # minimize, the default, or maximize, e.g. valid/accuracy)
    base: configs/vae_categorical.yaml # a config file, or a list of them (then one more axis);
                                       # relative: from here, else the repository (resolve_path)
    parameters:                        # dotted config key -> {values: [...]} (an axis) or {value: v}
      estimator.name: {values: [gs, st-gs]}
      tau: {values: [{schedule: constant, tau0: 0.5}, {schedule: linear}]}
      # or estimator.name: {applicable: {max_passes: 4, exclude: [gs]}}: every registered estimator
      # that applies to the base (its declarations), within a cost, of some families or of the
      # paper's Table 1 (Applicable); `true`: no limits
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
keeps the old behaviour changes no run's directory). Training the points is
vae/sweeps/running.py's. Bad input (unknown key or preset, missing file, invalid value) prints one
line and exits with 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vae.config import (REPO, Config, ConfigError, config_from_dict, load_config, options_reader, read_yaml,
                        resolve_path, to_dict, unreadable)
from vae.estimators import ESTIMATORS
from vae.estimators.base import FAMILIES
from vae.estimators.config import did_you_mean
from vae.store.records import final, select_best
from vae.store.run_dir import CHECKPOINT, FAILED, SUMMARY, load_summary, read_config_text
from vae.training.tasks import TASKS, at_equal_cost, check

PRESETS = ("tiny", "quick", "converged", "paper")
AS_WRITTEN = "none"  # --preset none: the sweep file as written, no preset's overrides
STORE = "sweeps"  # <results>/sweeps/<sweep name>/<preset>/<run>: the committed run records
GOALS = ("minimize", "maximize")   # a sweep metric's goal: the best point has the lowest / highest value
# a point's key beside the config's: its steps at that estimator's decoder evaluations
EQUAL_COST = "equal_cost"
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
        return saved is not None and what_it_computes(to_dict(saved)) == what_it_computes(to_dict(self.cfg))


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
    """``estimator.name: {applicable: true}`` or ``{applicable: {max_passes: P, family: [...], paper:
    true, reads_tau: B, exclude: [...]}}``: an axis of every registered estimator whose declarations allow the
    point's resolved config (its task, latent kind and shape, the lowest tau its schedule reaches: the
    checks ``train`` makes), in the registry's order, except ``exclude``, those spending more than
    ``max_passes`` decoder passes per example and step (:meth:`vae.training.tasks.Task.decoder_passes`),
    those of no family in ``family`` (:data:`vae.estimators.base.FAMILIES`; empty: any) and, with
    ``paper: true``, those without a column in the paper's Table 1 (``paper_column``), and with
    ``reads_tau``, those whose ``reads_tau`` differs (a temperature grid for those that read it). Resolved per
    base, so each base config gets the estimators that apply to it; a point's directory is the one
    the name written out gives."""

    max_passes: float | None = None
    exclude: tuple[str, ...] = ()
    family: tuple[str, ...] = ()
    paper: bool = False
    reads_tau: bool | None = None

    @classmethod
    def parse(cls, spec: Any, where: str) -> Applicable:
        if spec is True:
            return cls()
        allowed = {"max_passes", "exclude", "family", "paper", "reads_tau"}
        _require(isinstance(spec, dict) and set(spec) <= allowed,
                 f"{where}.applicable: expected true or a mapping with keys {', '.join(sorted(allowed))}, "
                 f"got {spec!r}")
        passes, exclude = spec.get("max_passes"), spec.get("exclude", [])
        _require(passes is None or (isinstance(passes, (int, float)) and passes > 0),
                 f"{where}.applicable.max_passes: expected a positive number, got {passes!r}")
        _require(isinstance(exclude, list) and all(isinstance(n, str) for n in exclude),
                 f"{where}.applicable.exclude: expected a list of estimator names, got {exclude!r}")
        for name in exclude:
            _require(name in ESTIMATORS, f"{where}.applicable.exclude: unknown estimator {name!r}"
                     f"{did_you_mean(name, ESTIMATORS)}")
        family, paper = spec.get("family", []), spec.get("paper", False)
        _require(isinstance(family, list) and all(f in FAMILIES for f in family),
                 f"{where}.applicable.family: expected a list of families ({', '.join(FAMILIES)}), "
                 f"got {family!r}")
        _require(isinstance(paper, bool), f"{where}.applicable.paper: expected true or false, got {paper!r}")
        reads_tau = spec.get("reads_tau")
        _require(reads_tau is None or isinstance(reads_tau, bool),
                 f"{where}.applicable.reads_tau: expected true or false, got {reads_tau!r}")
        return cls(passes, tuple(exclude), tuple(family), paper, reads_tau)

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
        for name, cls in list(ESTIMATORS.items()):
            if (name in self.exclude or self.family and cls.family not in self.family
                    or self.paper and cls.paper_column is None
                    or self.reads_tau is not None and cls.reads_tau != self.reads_tau):
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
             f"{where}.{key}: expected {{values: [...]}}, {{value: v}} or (estimator.name) {{applicable: "
             f"...}}, got {spec!r}")
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
        _require(base_path(base).is_file(),
                 f"base: config file {base} not found (a relative path is looked for in "
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
    return Sweep(path, tree.get("name", path.stem), metric["name"], metric.get("goal", "minimize"), bases,
                 axes, fixed, include, select, presets)


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


def what_it_computes(values: dict) -> dict:
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


def short_key(key: str) -> str:
    """``estimator.options.<field>`` -> ``estimator.<field>``, any other key as it is: how an estimator
    option is named in a run's identity, slug and table column, the key the settings that were shared
    before had (vae.estimators.config.FORMER_SHARED_SETTINGS), so their runs keep their directories."""
    return key.replace("estimator.options.", "estimator.", 1) if key.startswith("estimator.options.") else key


def changed_options(cfg: Config) -> dict[str, Any]:
    """The estimator options of ``cfg`` that differ from their ``Options`` defaults."""
    declared = ESTIMATORS[reader].Options if (reader := options_reader(cfg)) in ESTIMATORS else None
    defaults = dataclasses.asdict(declared()) if declared is not None else {}
    return {k: v for k, v in cfg.estimator.options.items() if k not in defaults or defaults[k] != v}


def identity(cfg: Config) -> dict[str, Any]:
    """The settings of ``cfg`` that differ from the defaults, ``out_dir`` and ``compile`` aside
    (:func:`what_it_computes`): what a run's directory hash is taken over. An estimator option
    counts where it differs from its ``Options`` default (:func:`changed_options`), under its
    :func:`short_key`."""
    defaults = flat_settings(to_dict(Config()))
    settings = what_it_computes(to_dict(cfg))
    del settings["estimator"]["options"]
    changed = {k: v for k, v in flat_settings(settings).items() if k not in defaults or defaults[k] != v}
    return changed | {short_key(f"estimator.options.{k}"): v for k, v in changed_options(cfg).items()}


def _digest(cfg: Config) -> str:
    """The hash of :func:`identity`: equal for equal resolved configs, so a changed setting never
    reuses an old run."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:8]


def run_name(point_values: dict[str, Any], base: str, digest: str) -> str:
    """``<slug>__<digest>``: the slug reads the point's values (in the order of their
    :func:`short_key`, so reordering a sweep file's axes moves no run)."""
    ordered = sorted(point_values.items(), key=lambda item: short_key(item[0]))
    slug = "__".join([Path(base).stem, *(_slug(k, v) for k, v in ordered)])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", slug) + "__" + digest


def expand(sweep: Sweep, preset: str, results_dir: Path,
           entries: list[dict[str, Any]] | None = None, seeds: list[int] | None = None) -> list[Point]:
    """Every point of ``sweep`` under ``preset`` (``AS_WRITTEN``: no preset), in a fixed order, with
    its resolved config; a point whose resolved config equals an earlier one's is left out (the
    two would be one run). ``entries``: these include entries instead of the grid and the file's
    own (the preset's settings and its axes beyond the grid's apply to them as to any entry).
    ``seeds``: these seeds instead of the preset's, as if the preset set them (``sweep --seeds``;
    a point whose own values set its seeds keeps them)."""
    _require(preset == AS_WRITTEN or preset in sweep.presets,
             f"--preset: {preset!r} is not defined in {sweep.path}; defined: "
             f"{', '.join(sweep.presets) or 'none'} ({AS_WRITTEN}: the file as written)")
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
    if seeds is not None:
        preset_fixed["seeds"] = list(seeds)
    axes = {**sweep.axes, **preset_axes}       # a preset axis replaces a grid axis of the same key
    extra = {k: v for k, v in preset_axes.items() if k not in sweep.axes}
    grid = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if entries is not None:
        grid, include = [], _include_list(entries, "entries")
    included = [{**own, **dict(zip(extra, combo))} for entry in include
                for own in _entry_points(entry, "include") for combo in itertools.product(*extra.values())]
    for values in included:
        _require(values.get("base", sweep.bases[0]) in sweep.bases,
                 f"include: base {values.get('base')!r} is not one of the sweep's bases "
                 f"({', '.join(sweep.bases)})")
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
                                results_dir / STORE / sweep.name / preset / run_name(values, base, digest)))
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
            yield from (({**values, "estimator.name": name}, base)
                        for base in bases if name in per_base[base])


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
