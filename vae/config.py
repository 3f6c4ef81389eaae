"""Run configuration: typed dataclasses, YAML loading, dotted overrides, validation.

A run is described by one :class:`Config`. YAML files (read with :func:`read_yaml`: ``yaml.safe_load``
that also reads ``3e-4`` as a number) and command-line overrides (``tau.schedule=exp``,
``seeds=[0,1,2]``, ``optim.lr=3e-4``; values parsed the same way) are merged
into the defaults below. An unknown key, a wrong type or an invalid value raises
:class:`ConfigError` with a one-line message naming the key and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from vae.data.images import BINARIZATIONS, DATASETS
from vae.estimators import ESTIMATORS
from vae.estimators.config import FORMER_SHARED_SETTINGS, EstimatorConfig, did_you_mean
from vae.numerics.replicas import ACTIVATIONS

SCHEDULES = ("constant", "exp", "linear", "cosine", "learned")
PRECISIONS = ("float32", "tf32", "bf16")


class ConfigError(ValueError):
    """Invalid configuration; the message names the key and what is allowed."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``3e-4``, ``1E5`` and ``5e4`` as floats.

    YAML 1.1 (PyYAML) calls a scalar a float only with a dot (``3.0e-4``), so ``3e-4`` would be the
    string '3e-4': the first learning-rate override of every ablation would be refused.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml(text: str) -> Any:
    """Parse YAML safely (no arbitrary objects), scientific notation read as numbers. Each text is
    parsed once (a sweep's expansion reads the same files and values hundreds of times) and the
    caller gets its own copy."""
    return copy.deepcopy(_parsed_yaml(text))


@functools.lru_cache(maxsize=4096)
def _parsed_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader


@dataclass
class ModelConfig:
    """The VAE (Jang et al. 2017, Section 4.2)."""

    kind: str = "categorical"  # "categorical" (N one-hot variables of K classes) or "bernoulli"
    num_latents: int = 20  # N: latent variables (20 categorical, or 200 Bernoulli)
    num_classes: int = 10  # K: classes per variable (2 for Bernoulli)
    # encoder hidden sizes; decoder mirrors; [] = linear
    # (the paper's notation); sbn: between stochastic layers
    hidden: list[int] = field(default_factory=lambda: [512, 256])
    layers: int = 2  # sbn: stochastic layers (the paper: 2)
    # "uniform" over each latent's K classes, or "learned" (one logit vector per latent)
    prior: str = "uniform"
    # between hidden layers: "relu", or "leaky_relu" (negative slope 0.3, the 2020 benchmark's)
    activation: str = "relu"
    # the decoder's last bias at initialisation: "default" (as every layer's), or "data_mean"
    # (vae: logit of the training images' mean, clipped to [0.001, 0.999], the 2020 benchmark's)
    output_bias: str = "default"


@dataclass
class TauConfig:
    """Relaxation temperature, a pure function of the global step t (see vae/training/schedules.py)."""

    schedule: str = "exp"  # constant | exp | linear | cosine | learned
    tau0: float = 1.0  # tau at step 0 (and the constant value)
    floor: float = 0.5  # lowest tau: exp clamps at it, linear and cosine end at it
    rate: float = 3e-5  # r in the paper's max(floor, tau0 * exp(-r t))
    update_every: int = 1000  # N: tau changes only every N steps (the paper's schedule)
    anneal_steps: int | None = None  # linear / cosine reach the floor here; None = all steps


@dataclass
class OptimConfig:
    """Optimiser of the encoder, decoder, estimator and learned-tau parameters."""

    name: str = "adam"  # "adam" or "sgd" (with momentum, the paper's Section 4 setting)
    lr: float | list[float] = 1e-3  # learning rate; or one per replica, lr[r] for seeds[r] (sweep --pack-lr)
    momentum: float = 0.9  # sgd only
    # model.prior=learned: its logits by plain SGD at this rate
    # (the 2020 benchmark: 1e-2); null: by the optimiser above
    prior_lr: float | None = None
    lr_decay: float = 1.0  # multiply lr by this every lr_decay_every steps (1.0 = constant)
    lr_decay_every: int = 1000  # steps between lr decays


@dataclass
class DataConfig:
    """Binarized MNIST (vae/data/images.py)."""

    # mnist | fashion_mnist | omniglot (28x28, Burda et al.'s split): vae/data/images.py DATASETS
    name: str = "mnist"
    # static (fixed draw, the paper's) | dynamic | threshold | none (vae: grey
    # levels as the Bernoulli likelihood's targets, the ReinMax benchmark's)
    binarization: str = "static"
    binarization_seed: int = 0  # seed of the static draw
    data_dir: str | None = None  # directory with the four IDX files; None: cache, then download
    batch_size: int = 100  # training batch size per replica


@dataclass
class EvalConfig:
    """Evaluation with discrete (one-hot) samples, never relaxed ones."""

    # steps between validation / test curves (and at the end); null: a tenth of `steps`, so ~10 points
    every: int | None = None
    batch_size: int = 1000  # examples per evaluation batch
    iw_samples: int = 1000  # m of the importance-weighted bound on the test set at the end
    iw_examples: int | None = None  # test examples in that bound; None = all 10,000
    iw_batch_size: int = 25  # examples per chunk of the bound (chunk holds examples x m samples)
    curve_samples: int = 100  # sbn: m of the NLL logged for valid and test every `every` steps
    # vae: the curves also on the training split (train/neg_elbo, one sample, on its first
    # curve_examples images; dynamic: freshly binarized): the 2020 benchmark's papers' number
    train_elbo: bool = False
    # examples of each split in those curves (the first ones); None = all 10,000
    curve_examples: int | None = None


@dataclass
class SSLConfig:
    """Semi-supervised classification with the M2 model (Jang et al. 2017, Section 4.3; vae/models/m2.py)."""

    # the class y of unlabelled images: "marginal" (summed over the C classes, exact) or an
    # estimator of the registry (gs, st-gs, ...: one sample of y, the estimator.* settings apply)
    y: str = "marginal"
    num_classes: int = 10  # C: classes of y (10 with MNIST's labels; any C >= 2 with labels=random)
    # "mnist" (the digits' classes) or "random" (one fixed
    # uniform draw in [0, C) per image: for timing with any C)
    labels: str = "mnist"
    # labelled training images, num_labelled / C per class, chosen by each seed from the 50,000
    num_labelled: int = 100
    # labelled images per step (per seed), beside data.batch_size unlabelled ones
    labelled_batch_size: int = 100
    # weight of the classification loss -log q(y | x) on
    # labelled images (the paper: from 0.1, 0.2, 0.3, 0.8, 1.0)
    alpha: float = 0.1
    latent_dim: int = 50  # D: dimensions of the Gaussian style variable z
    # channels of the three conv layers of q(y | x) and q(z | x, y); p(x | y, z) mirrors them
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])


@dataclass
class Config:
    """One training run (all seeds of one configuration)."""

    experiment: str = "vae_categorical"  # results go to <out_dir>/<experiment>/<run>/
    # modules imported first: your own estimators (vae.estimators.register)
    plugins: list[str] = field(default_factory=list)
    # "vae" (the paper's Section 4.2), "sbn" (Section 4.1: a digit's lower half from
    # its upper half) or "ssl" (Section 4.3: semi-supervised classification, M2)
    task: str = "vae"
    seeds: list[int] = field(default_factory=lambda: [0])  # one replica per seed, trained together
    steps: int = 50_000  # training steps
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    # "float32"; "tf32" (TF32 matmuls on CUDA); "bf16" (bfloat16 autocast) -- see results/README.md "Speed"
    precision: str = "float32"
    # the training step as one torch.compile graph (vae/training/compiled_step.py): true, false, or
    # "auto": where its compilation is repaid within the run (configs/README.md "Compiled steps")
    compile: bool | str = "auto"
    kl: str = "analytic"  # "analytic" KL to the uniform prior, or "relaxed" Monte Carlo (gs only)
    log_every: int = 100  # steps between logged training metrics (no host sync in between)
    checkpoint_every: int = 5000  # steps between checkpoints (a multiple of log_every)
    gradvar_every: int = 0  # steps between encoder-gradient variance measurements; 0 = off
    gradvar_draws: int = 100  # gradient draws per variance measurement
    out_dir: str = "results/runs"  # root of the local results store
    wandb_project: str = "discrete-vae"  # W&B project (mode from $WANDB_MODE, default offline)
    model: ModelConfig = field(default_factory=ModelConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    tau: TauConfig = field(default_factory=TauConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)


# ----------------------------------------------------------------------------- what each key means

def _field_comments(cls: type) -> dict[str, str]:
    """A dataclass's field comments, after the field on its line or in the comment lines right above
    it, its base classes' first (a subclass's Options extends its parent's)."""
    import inspect
    import textwrap

    comments: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        above: list[str] = []
        for line in textwrap.dedent(inspect.getsource(klass)).splitlines():
            if (comment := re.match(r"^    # (.*)$", line)):
                above.append(comment.group(1))
            elif (declared := re.match(r"^    (\w+): [^\n]*?(?:  # (.*))?$", line)):
                comments[declared.group(1)] = declared.group(2) or " ".join(above)
                above = []
            else:
                above = []
    return comments


def key_table(cls: type = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, meaning)`` of every config key, in declaration order. The meaning is
    the field's comment in its dataclass (:func:`_field_comments`): the one source of
    ``python -m experiments.train --keys`` and of configs/README.md's table (a test checks the
    table is this one)."""
    cls = cls or Config
    comments = _field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            rows += key_table(type(default), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", default, comments.get(f.name, "")))
    return rows


def option_table() -> list[tuple[str, Any, list[str], str]]:
    """``(estimator.options.<field>, default, estimators, meaning)`` of every option a registered
    estimator declares in its ``Options`` (vae.estimators.base.Estimator.Options), one row for the
    estimators that share a field, its default and its meaning (an Options inherited)."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    for name, cls in ESTIMATORS.items():
        if cls.Options is None:
            continue
        comments = _field_comments(cls.Options)
        for f in dataclasses.fields(cls.Options):
            key = (f"estimator.options.{f.name}", repr(f.default), comments.get(f.name, ""))
            rows.setdefault(key, []).append(name)
    defaults = {(f"estimator.options.{f.name}", repr(f.default)): f.default for cls in ESTIMATORS.values()
                if cls.Options is not None for f in dataclasses.fields(cls.Options)}
    return [(key, defaults[key, default], names, meaning) for (key, default, meaning), names in rows.items()]


def key_table_markdown() -> str:
    """:func:`key_table` as a markdown table (defaults as YAML literals)."""
    def literal(value: Any) -> str:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
        return f"`{text}`"

    lines = ["| key | default | meaning |", "|---|---|---|"]
    def text(meaning: str) -> str:   # markdown-safe: no table bars, no angle brackets read as HTML
        return meaning.replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")

    lines += [f"| `{key}` | {literal(default)} | {text(meaning)} |" for key, default, meaning in key_table()]
    lines += ["", "Each estimator's own settings (its `Options`), set as `estimator.options.<field>`:", "",
              "| key | default | estimators | meaning |", "|---|---|---|---|"]
    lines += [f"| `{key}` | {literal(default)} | {', '.join(names)} | {text(meaning)} |"
              for key, default, names, meaning in option_table()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- building

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ints are accepted where floats are)."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in get_args(tp):
            return None
        inner = [t for t in get_args(tp) if t is not type(None)]
        # `float | list[float]`: a list takes the list type
        lists = [t for t in inner if get_origin(t) is list]
        if lists and isinstance(value, list):
            return _coerce(value, lists[0], key)
        scalars = [t for t in inner if get_origin(t) is not list]
        if len(scalars) == 1:
            return _coerce(value, scalars[0], key)
        for candidate in scalars:                             # `bool | str`: the first type that takes it
            try:
                return _coerce(value, candidate, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {' or '.join(map(_type_name, scalars))}, got {value!r}")
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(tp)} fields, got {value!r}")
        return _build(tp, value, key + ".")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # steps=5e4
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    return value


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, Any]:
    """A config dataclass's field types (resolved once per class: a sweep builds thousands)."""
    return get_type_hints(cls)


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = _field_types(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key{did_you_mean(unknown[0], hints)}; "
                          f"allowed: {', '.join(hints)}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in values.items()})


NAMED_SECTIONS = ("estimator", "optim")  # sections with a `name`: `estimator=st-gs` sets estimator.name


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    if not parents and leaf in NAMED_SECTIONS and isinstance(value, str):
        parents, leaf = [leaf], "name"
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    # a section's value merges over the overrides of its keys before it (``model.hidden=[16]`` then
    # ``model={num_latents: 4}`` keeps the hidden layers): later overrides win key by key
    both_sections = isinstance(value, dict) and isinstance(node.get(leaf), dict)
    node[leaf] = _merge(node[leaf], value) if both_sections else value


def parse_overrides(overrides: list[str]) -> dict:
    """``["a.b=1", "seeds=[0,1]"]`` -> nested dict; each value is parsed as YAML."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{item}: overrides take the form key=value (e.g. tau.schedule=exp)")
        try:
            value = read_yaml(raw) if raw else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot parse value {raw!r}") from err
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


REPO = Path(__file__).resolve().parents[1]   # the repository root: where a relative path is looked for second


def resolve_path(path: str | Path) -> Path:
    """The one rule for every path a user types or a file names (``--config``, a sweep file, its
    ``base:`` configs): an absolute path as it is; a relative one from the current directory if it
    is there, else from the repository root (so the suite's own ``configs/...`` work from anywhere);
    if neither holds it, the current directory's, whose read then fails (:func:`unreadable`)."""
    path = Path(path)
    if path.is_absolute() or path.exists() or not (REPO / path).exists():
        return path
    return REPO / path


def unreadable(what: str, path: str | Path, err: OSError) -> str:
    """The one-line error for a path :func:`resolve_path` found nowhere: both places it looked."""
    where = ("" if Path(path).is_absolute()
             else f"; looked in the current directory {Path.cwd()}, then in {REPO}")
    return f"{what}: cannot read {path} ({err.strerror}{where})"


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any; :func:`resolve_path`), then ``overrides``;
    validated."""
    tree: dict = {}
    if path is not None:
        try:
            text = resolve_path(path).read_text()
        except OSError as err:
            raise ConfigError(unreadable("config", path, err)) from err
        try:
            tree = read_yaml(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config: {path} is not valid YAML ({str(err).splitlines()[0]})") from err
        if not isinstance(tree, dict):
            raise ConfigError(f"config: {path} must hold a mapping of keys")
        tree = {k: ({"name": v} if k in NAMED_SECTIONS and isinstance(v, str) else v)
                for k, v in tree.items()}
    return _checked(_merge(tree, parse_overrides(list(overrides))))


def to_dict(cfg: Config) -> dict:
    """The resolved config as plain data (for config.yaml, checkpoints and W&B)."""
    return dataclasses.asdict(cfg)


def config_from_dict(values: dict) -> Config:
    """Inverse of :func:`to_dict`, validated."""
    return _checked(values)


def options_reader(cfg: Config) -> str:
    """The estimator whose settings ``estimator.options`` holds: ``ssl.y`` where M2 samples its
    class through an estimator (``estimator.*`` then applies to it), else ``estimator.name``."""
    return cfg.ssl.y if cfg.task == "ssl" and cfg.ssl.y != "marginal" else cfg.estimator.name


def _checked(tree: dict) -> Config:
    """The config of a tree of settings, validated: its plugins imported (they register estimators),
    the estimator section's former shared settings translated (:func:`translate_estimator`), the
    options typed by the estimator's ``Options`` and resolved, every default filled in."""
    _check(isinstance(tree, dict), f"config: must hold a mapping of keys, got {type(tree).__name__}")
    former: dict[str, Any] = {}
    if isinstance(tree.get("estimator"), dict):
        section = dict(tree["estimator"])
        former = {k: section.pop(k) for k in list(section) if k in FORMER_SHARED_SETTINGS}
        tree = {**tree, "estimator": section}
    cfg = _build(Config, tree)
    for module in cfg.plugins:
        try:
            importlib.import_module(module)
        except Exception as err:  # whatever the module raises, the message names the key
            raise ConfigError(f"plugins: cannot import {module!r} ({type(err).__name__}: {err}); a module "
                              "importable from the current directory or PYTHONPATH is allowed") from err
    reader = options_reader(cfg)
    if reader in ESTIMATORS:
        cfg.estimator.options = translate_estimator(reader, former, cfg.estimator.options)
        cfg.estimator.options = _resolved_options(reader, cfg.estimator)
    validate(cfg)
    return cfg


def translate_estimator(reader: str, former: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the settings of :data:`FORMER_SHARED_SETTINGS` that an older config gave at
    the estimator section's top level: moved in where ``reader`` declares them (``options`` winning),
    dropped at their former defaults (every older record carries them all), refused otherwise."""
    declared = ESTIMATORS[reader].Options
    names = {f.name for f in dataclasses.fields(declared)} if declared is not None else set()
    options = dict(options)
    for key, value in former.items():
        if value == FORMER_SHARED_SETTINGS[key]:
            continue
        readers = [n for n, e in ESTIMATORS.items()
                   if e.Options is not None and key in {f.name for f in dataclasses.fields(e.Options)}]
        _check(key in names, f"estimator.{key}: {reader!r} does not read it; it is an option of "
                             f"{', '.join(readers)} (estimator.options.{key})")
        options.setdefault(key, value)
    return options


def _resolved_options(reader: str, settings: EstimatorConfig) -> dict[str, Any]:
    """Every field of ``reader``'s ``Options`` at ``settings.options`` (typed like any key, checked
    by the estimator's own rules, the rest at their defaults), or {} where it declares none."""
    declared = ESTIMATORS[reader].Options
    if declared is None:
        _check(not settings.options, f"estimator.options: {reader!r} declares no options "
                                     f"(got {', '.join(settings.options)})")
        return {}
    try:
        built = dataclasses.asdict(_build(declared, settings.options, "estimator.options."))
        ESTIMATORS[reader].options_of(dataclasses.replace(settings, name=reader, options=built))
    except ValueError as err:   # a type (ConfigError already) or an Options' own rule (base.refuse)
        raise ConfigError(str(err)) from None
    return built


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: Config) -> None:
    """Raise :class:`ConfigError` at the first invalid value. The rules of ``cfg.task`` (which keys
    it reads, which estimators apply) are the task's own: :func:`vae.training.tasks.check`."""
    try:
        cfg.estimator.validate(ESTIMATORS)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    m, t, o, d, e = cfg.model, cfg.tau, cfg.optim, cfg.data, cfg.eval
    _check(len(cfg.seeds) > 0, "seeds: must list at least one seed")
    lrs = o.lr if isinstance(o.lr, list) else [o.lr] * len(cfg.seeds)
    _check(len(lrs) == len(cfg.seeds),
           f"optim.lr: a list needs one learning rate per seed ({len(cfg.seeds)}), got {len(lrs)}")
    _check(len(set(zip(cfg.seeds, lrs))) == len(cfg.seeds),
           f"seeds: must be distinct (or, with a list optim.lr, distinct seed and learning rate pairs), "
           f"got {cfg.seeds}")
    _check(all(0 <= s < 2**31 for s in cfg.seeds), "seeds: each must be in [0, 2**31)")
    _check(cfg.steps >= 1, f"steps: must be >= 1, got {cfg.steps}")
    _check(cfg.device in ("auto", "cpu", "cuda"), f"device: {cfg.device!r}; allowed: auto, cpu, cuda")
    _check(cfg.kl in ("analytic", "relaxed"), f"kl: {cfg.kl!r}; allowed: analytic, relaxed")
    _check(cfg.precision in PRECISIONS, f"precision: {cfg.precision!r}; allowed: {', '.join(PRECISIONS)}")
    _check(cfg.compile in (True, False, "auto"), f"compile: {cfg.compile!r}; allowed: true, false, auto")
    _check(cfg.eval.curve_samples >= 1, f"eval.curve_samples: must be >= 1, got {cfg.eval.curve_samples}")
    if cfg.kl == "relaxed":
        relaxed = [name for name, cls in ESTIMATORS.items() if cls.relaxed_kl]
        _check(ESTIMATORS[cfg.estimator.name].relaxed_kl,
               f"kl: 'relaxed' needs an estimator that hands f the relaxed sample itself "
               f"({', '.join(relaxed)}), got {cfg.estimator.name!r}")
    _check(cfg.log_every >= 1, f"log_every: must be >= 1, got {cfg.log_every}")
    _check(cfg.checkpoint_every >= 1 and cfg.checkpoint_every % cfg.log_every == 0,
           f"checkpoint_every: must be a positive multiple of log_every ({cfg.log_every}), "
           f"got {cfg.checkpoint_every}")
    _check(cfg.gradvar_every >= 0, f"gradvar_every: must be >= 0, got {cfg.gradvar_every}")
    _check(cfg.gradvar_draws >= 2, f"gradvar_draws: must be >= 2, got {cfg.gradvar_draws}")
    _check(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", cfg.experiment) is not None,
           f"experiment: letters, digits, '_', '.', '-' (not starting with '.'), got {cfg.experiment!r}")
    _check(m.kind in ("categorical", "bernoulli"), f"model.kind: {m.kind!r}; allowed: categorical, bernoulli")
    _check(m.num_latents >= 1, f"model.num_latents: must be >= 1, got {m.num_latents}")
    _check(m.num_classes >= 2, f"model.num_classes: must be >= 2, got {m.num_classes}")
    _check(m.kind == "categorical" or m.num_classes == 2,
           f"model.num_classes: must be 2 for model.kind=bernoulli, got {m.num_classes}")
    _check(all(h >= 1 for h in m.hidden),
           f"model.hidden: must be a list of positive sizes ([] for affine maps), got {m.hidden}")
    _check(m.prior in ("uniform", "learned"), f"model.prior: {m.prior!r}; allowed: uniform, learned")
    _check(m.activation in ACTIVATIONS,
           f"model.activation: {m.activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    _check(m.output_bias in ("default", "data_mean"),
           f"model.output_bias: {m.output_bias!r}; allowed: default, data_mean")
    _check(o.prior_lr is None or (o.prior_lr > 0 and m.prior == "learned"),
           f"optim.prior_lr: must be > 0 and only with model.prior=learned (or null), got {o.prior_lr}")
    _check(t.schedule in SCHEDULES, f"tau.schedule: {t.schedule!r}; allowed: {', '.join(SCHEDULES)}")
    _check(t.tau0 > 0, f"tau.tau0: must be > 0, got {t.tau0}")
    _check(0 < t.floor <= t.tau0 or t.schedule == "constant",
           f"tau.floor: must be in (0, tau.tau0={t.tau0}], got {t.floor}")
    _check(t.schedule != "learned" or t.floor < t.tau0,
           f"tau.floor: the learned schedule keeps tau above floor, so it must be < tau.tau0={t.tau0}, "
           f"got {t.floor}")
    _check(t.rate >= 0, f"tau.rate: must be >= 0, got {t.rate}")
    _check(t.update_every >= 1, f"tau.update_every: must be >= 1, got {t.update_every}")
    _check(t.anneal_steps is None or t.anneal_steps >= 1,
           f"tau.anneal_steps: must be >= 1 or null, got {t.anneal_steps}")
    _check(o.name in ("adam", "sgd"), f"optim.name: {o.name!r}; allowed: adam, sgd")
    _check(all(lr > 0 for lr in lrs), f"optim.lr: must be > 0, got {o.lr}")
    _check(0 <= o.momentum < 1, f"optim.momentum: must be in [0, 1), got {o.momentum}")
    _check(0 < o.lr_decay <= 1, f"optim.lr_decay: must be in (0, 1], got {o.lr_decay}")
    _check(o.lr_decay_every >= 1, f"optim.lr_decay_every: must be >= 1, got {o.lr_decay_every}")
    _check(d.name in DATASETS,
           f"data.name: {d.name!r}{did_you_mean(d.name, DATASETS)}; allowed: {', '.join(DATASETS)}")
    _check(d.binarization in BINARIZATIONS,
           f"data.binarization: {d.binarization!r}; allowed: {', '.join(BINARIZATIONS)}")
    _check(1 <= d.batch_size <= 50_000,
           f"data.batch_size: must be in [1, 50000] (the training set), got {d.batch_size}")
    _check(e.every is None or e.every >= 1, f"eval.every: must be >= 1 or null, got {e.every}")
    _check(e.batch_size >= 1, f"eval.batch_size: must be >= 1, got {e.batch_size}")
    _check(e.iw_samples >= 1, f"eval.iw_samples: must be >= 1, got {e.iw_samples}")
    _check(e.iw_examples is None or 1 <= e.iw_examples <= 10_000,
           f"eval.iw_examples: must be in [1, 10000] or null, got {e.iw_examples}")
    _check(e.curve_examples is None or 1 <= e.curve_examples <= 10_000,
           f"eval.curve_examples: must be in [1, 10000] or null, got {e.curve_examples}")
    _check(e.iw_batch_size >= 1, f"eval.iw_batch_size: must be >= 1, got {e.iw_batch_size}")
    _validate_ssl(cfg)


def _validate_ssl(cfg: Config) -> None:
    """The ``ssl`` section (checked for every task: its defaults are valid)."""
    s = cfg.ssl
    _check(s.y == "marginal" or s.y in ESTIMATORS,
           f"ssl.y: unknown {s.y!r}; allowed: marginal, {', '.join(ESTIMATORS)}")
    _check(s.num_classes >= 2, f"ssl.num_classes: must be >= 2, got {s.num_classes}")
    _check(s.labels in ("mnist", "random"), f"ssl.labels: {s.labels!r}; allowed: mnist, random")
    _check(s.labels == "random" or s.num_classes == 10,
           f"ssl.num_classes: MNIST's labels have 10 classes, got {s.num_classes}; "
           f"other C need ssl.labels=random")
    _check(0 < s.num_labelled <= 50_000 and s.num_labelled % s.num_classes == 0,
           f"ssl.num_labelled: must be a positive multiple of ssl.num_classes={s.num_classes} (as many per "
           f"class) up to 50000, got {s.num_labelled}")
    _check(1 <= s.labelled_batch_size <= s.num_labelled,
           f"ssl.labelled_batch_size: must be in [1, ssl.num_labelled={s.num_labelled}], "
           f"got {s.labelled_batch_size}")
    _check(s.alpha >= 0, f"ssl.alpha: must be >= 0, got {s.alpha}")
    _check(s.latent_dim >= 1, f"ssl.latent_dim: must be >= 1, got {s.latent_dim}")
    _check(len(s.channels) == 3 and all(c >= 1 for c in s.channels),
           f"ssl.channels: must be three positive sizes (one per conv layer), got {s.channels}")
