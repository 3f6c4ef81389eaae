"""Config loading: defaults, YAML, dotted overrides, and one-line errors that name the key."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from vae.config import Config, ConfigError, config_from_dict, load_config, read_yaml, to_dict
from vae.estimators import ESTIMATORS
from vae.training.tasks import check

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_categorical_config_is_the_defaults():
    """configs/vae_categorical.yaml lists every key with its default: the two cannot drift."""
    assert load_config(CONFIGS / "vae_categorical.yaml") == Config()


def test_shipped_configs_list_every_key():
    def keys(tree, prefix=""):
        return {prefix + k if not isinstance(v, dict) else kk
                for k, v in tree.items()
                for kk in (keys(v, prefix + k + ".") if isinstance(v, dict) else [None])} - {None}

    expected = keys(to_dict(Config()))
    for name in ("vae_categorical.yaml", "vae_bernoulli.yaml"):
        assert keys(yaml.safe_load((CONFIGS / name).read_text())) == expected, name


def test_bernoulli_config_is_200_binary_latents():
    cfg = load_config(CONFIGS / "vae_bernoulli.yaml")
    assert (cfg.model.kind, cfg.model.num_latents, cfg.model.num_classes) == ("bernoulli", 200, 2)


@pytest.mark.parametrize("name", ["vae_categorical", "vae_bernoulli"])
def test_linear_configs_differ_from_the_mlp_ones_only_in_the_hidden_layers(name):
    mlp, linear = load_config(CONFIGS / f"{name}.yaml"), load_config(CONFIGS / f"{name}_linear.yaml")
    assert linear.model.hidden == [] and mlp.model.hidden == [512, 256]
    linear.model.hidden, linear.experiment = mlp.model.hidden, mlp.experiment
    assert linear == mlp


def test_overrides_are_typed_yaml_values():
    cfg = load_config(None, ["estimator.name=st-gs", "seeds=[0,1,2]", "tau.tau0=2", "eval.iw_examples=null"])
    assert cfg.estimator.name == "st-gs" and cfg.seeds == [0, 1, 2]
    assert cfg.tau.tau0 == 2.0 and isinstance(cfg.tau.tau0, float) and cfg.eval.iw_examples is None


def test_scientific_notation_is_a_number_in_overrides_and_files(tmp_path):
    """YAML 1.1 reads 3e-4 as a string; the suite reads it as the number a researcher meant."""
    cfg = load_config(None, ["optim.lr=3e-4", "tau.rate=1E-4", "steps=5e4", "eval.iw_examples=1e3"])
    assert (cfg.optim.lr, cfg.tau.rate, cfg.steps, cfg.eval.iw_examples) == (3e-4, 1e-4, 50000, 1000)
    assert isinstance(cfg.steps, int) and isinstance(cfg.eval.iw_examples, int)
    (tmp_path / "c.yaml").write_text("optim: {lr: 3e-4}\ntau: {rate: -2e+3}\nexperiment: 1e-3x\n")
    with pytest.raises(ConfigError, match=r"^tau\.rate: must be >= 0"):  # read as the number -2000
        load_config(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml", ["tau.rate=2e-5"]).optim.lr == 3e-4
    assert read_yaml("[1, 0x10, 1_000, abc, 2.5e1]") == [1, 16, 1000, "abc", 25.0]  # the rest is YAML 1.1
    with pytest.raises(ConfigError, match=r"^steps: expected int, got 2500\.5$"):
        load_config(None, ["steps=2.5005e3"])  # an int field takes a float only if it is integral


def test_a_learning_rate_per_replica_is_a_list_beside_the_seeds():
    cfg = load_config(None, ["seeds=[0,0,1]", "optim.lr=[1e-3,3e-3,1e-3]"])
    assert cfg.optim.lr == [1e-3, 3e-3, 1e-3] and all(isinstance(v, float) for v in cfg.optim.lr)
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg


def test_a_section_given_a_string_sets_its_name():
    cfg = load_config(None, ["estimator=st-gs", "optim=sgd", "estimator.num_samples=3"])
    assert (cfg.estimator.name, cfg.estimator.num_samples, cfg.optim.name) == ("st-gs", 3, "sgd")
    with pytest.raises(ConfigError, match="^estimator.name: unknown 'magic'"):
        load_config(None, ["estimator=magic"])


def test_a_section_value_merges_over_the_overrides_of_its_keys_before_it():
    """A sweep point's ``model: {num_classes: 8, num_latents: 4}`` after its preset's
    ``model.hidden=[16]`` keeps the hidden layers, and a later key still wins over the section."""
    cfg = load_config("configs/categorical_benchmark.yaml",
                      ["model.hidden=[16]", "model={num_classes: 8, num_latents: 4}", "model.num_latents=5"])
    assert (cfg.model.hidden, cfg.model.num_classes, cfg.model.num_latents) == ([16], 8, 5)
    cfg = load_config(None, ["tau.rate=0.5", "tau={schedule: constant, tau0: 2.0}"])
    assert (cfg.tau.schedule, cfg.tau.tau0, cfg.tau.rate) == ("constant", 2.0, 0.5)


def test_round_trip_through_plain_data():
    cfg = load_config(None, ["model.kind=bernoulli", "model.num_latents=200", "model.num_classes=2"])
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg


@pytest.mark.parametrize("override, message", [
    ("tau.temperature=1", r"^tau\.temperature: unknown key; allowed: schedule, tau0"),
    ("colour=red", r"^colour: unknown key"),
    ("optim.lrr=0.1", r"^optim\.lrr: unknown key \(did you mean 'lr'\?\); allowed: name, lr"),
    ("estimator.name=rlo", r"^estimator\.name: unknown 'rlo' \(did you mean 'rloo'\?\); allowed: "),
    ("tau.tau0=0", r"^tau\.tau0: must be > 0"),
    ("tau.tau0=-1", r"^tau\.tau0: must be > 0"),
    ("optim.lr=0", r"^optim\.lr: must be > 0"),
    ("estimator.name=vqvae", r"^estimator\.name: unknown 'vqvae'; allowed: .*gs"),
    ("tau.schedule=step", r"^tau\.schedule: 'step'; allowed: constant, exp"),
    ("data.name=omniglott",
     r"^data\.name: 'omniglott' \(did you mean 'omniglot'\?\); allowed: mnist, fashion_mnist, omniglot"),
    ("data.binarization=grey", r"^data\.binarization: 'grey'; allowed: static, dynamic, threshold, none"),
    ("model.activation=gelu", r"^model\.activation: 'gelu'; allowed: relu, leaky_relu"),
    ("model.output_bias=mean", r"^model\.output_bias: 'mean'; allowed: default, data_mean"),
    ("optim.prior_lr=0.01", r"^optim\.prior_lr: must be > 0 and only with model\.prior=learned"),
    ("task=gan", r"^task: 'gan'; allowed: vae, sbn, ssl$"),
    ("task=sbn model.activation=leaky_relu",
     r"^model\.activation / model\.output_bias: other than relu / default only for task vae, not sbn$"),
    ("task=ssl data.name=fashion_mnist",
     r"^data\.name: task ssl \(M2, Table 2\) runs on mnist, not fashion_mnist$"),
    ("seeds=[]", r"^seeds: must list at least one seed"),
    ("steps=many", r"^steps: expected int, got 'many'"),
    ("steps=1.5", r"^steps: expected int"),
    ("model.hidden=64", r"^model\.hidden: expected a list"),
    ("model.hidden=[0]", r"^model\.hidden: must be a list of positive sizes"),
    ("model.prior=flat", r"^model\.prior: 'flat'; allowed: uniform, learned"),
    ("estimator.name=darn estimator.options.darn_point=half",
     r"^estimator\.options\.darn_point: must be uniform or mean, got 'half'$"),
    ("estimator.options.gap=2", r"^estimator\.options: 'gs' declares no options \(got gap\)$"),
    ("estimator.ema_decay=0.5",    # the former spelling, for an estimator that does not read it
     r"^estimator\.ema_decay: 'gs' does not read it; it is an option of .*nvil.* "
     r"\(estimator\.options\.ema_decay\)$"),
    ("estimator.name=arm",
     r"^estimator\.name: 'arm' is for bernoulli latents, not categorical ones; for task "
                              r"vae with categorical latents use gs, .*rloo"),
    ("estimator.name=reinmax",
     r"^estimator\.name: 'reinmax' needs tau >= 1 throughout, but the schedule reaches 0.5; "),
    ("kl=relaxed estimator.name=st-gs", r"^kl: 'relaxed' needs .*gs"),
    ("checkpoint_every=150", r"^checkpoint_every: must be a positive multiple of log_every"),
    ("model.kind=bernoulli", r"^model\.num_classes: must be 2"),
    ("device=tpu", r"^device: 'tpu'; allowed"),
    ("tau.tau0=.inf", r"^tau\.tau0: must be a finite number"),
    ("optim.lr=.nan", r"^optim\.lr: must be a finite number"),
    ("seeds=[0,1] optim.lr=[0.1]", r"^optim\.lr: a list needs one learning rate per seed \(2\), got 1"),
    ("seeds=[0,0] optim.lr=[0.1,0.1]",
     r"^seeds: must be distinct \(or, with a list optim\.lr, distinct seed and"),
    ("seeds=[0,1] optim.lr=[0.1,-1]", r"^optim\.lr: must be > 0"),
    ("seeds=[0,0]", r"^seeds: must be distinct"),
    ("data.batch_size=60000", r"^data\.batch_size: must be in \[1, 50000\]"),
    ("eval.curve_examples=0", r"^eval\.curve_examples: must be in \[1, 10000\] or null"),
    ("experiment=..", r"^experiment: letters, digits"),
    ("tau.schedule=learned tau.floor=1.0", r"^tau\.floor: the learned schedule keeps tau above floor"),
])
def test_invalid_values_name_the_key(override, message):
    """Through what every run and sweep point passes: the config's rules,
    then its task's (vae.training.tasks.check)."""
    with pytest.raises(ConfigError, match=message) as info:
        check(load_config(None, override.split()))
    assert "\n" not in str(info.value)


def test_every_field_has_a_comment_in_the_shipped_config():
    text = (CONFIGS / "vae_categorical.yaml").read_text()
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"no comment on: {line}"
    assert len(fields(Config)) > 10


def test_bad_yaml_file_is_a_config_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", sorted(n for n, e in ESTIMATORS.items() if e.positive_options))
def test_an_estimator_option_declared_positive_is_refused_at_zero_in_one_line(name):
    """Every option an estimator declares in ``positive_options`` (read from the registry,
    not listed here)."""
    for option in ESTIMATORS[name].positive_options:
        with pytest.raises(ConfigError, match=rf"^estimator\.options\.{option}: must be > 0, got 0(\.0)?$"):
            load_config(None, [f"estimator.name={name}", f"estimator.options.{option}=0"])


def test_an_older_config_s_estimator_settings_are_translated_into_the_estimator_s_options():
    """vae.estimators.config.FORMER_SHARED_SETTINGS: at the section's top level (files and records
    from before each estimator declared its own), such a setting moves into the options of the
    estimator that declares it, an explicit option winning; at its former default it is dropped
    for any estimator (old records carry them all); the options come back resolved."""
    from vae.estimators.config import FORMER_SHARED_SETTINGS

    cfg = load_config(None, ["estimator.name=st-annealed", "estimator.slope_rate=0.1"])
    assert cfg.estimator.options == {"slope_rate": 0.1, "max_slope": 5.0}
    cfg = load_config(None, ["estimator.name=st-annealed", "estimator.slope_rate=0.1",
                             "estimator.options.slope_rate=0.2"])
    assert cfg.estimator.options["slope_rate"] == 0.2
    at_defaults = [f"estimator.{k}={yaml.safe_dump(v, default_flow_style=True).split(chr(10))[0]}"
                   for k, v in FORMER_SHARED_SETTINGS.items()]
    assert load_config(None, ["estimator.name=st-gs", *at_defaults]).estimator.options == {}
    reinforce = load_config(None, ["estimator.name=reinforce-ema", *at_defaults,
                                   "estimator.variance_normalisation=false"])
    assert reinforce.estimator.options == {"ema_decay": 0.9, "variance_normalisation": False}


def test_each_former_shared_setting_is_an_option_at_the_default_it_had():
    """The translation drops a former setting at its former default: right only because the option
    that took it over has that default (the former ``variance_normalisation: null`` meant on)."""
    from vae.estimators.config import FORMER_SHARED_SETTINGS

    defaults = {f.name: f.default for cls in ESTIMATORS.values() if cls.Options is not None
                for f in dataclasses.fields(cls.Options)}
    former = {**FORMER_SHARED_SETTINGS, "variance_normalisation": True}
    assert {k: defaults.get(k) for k in former} == former


def test_one_path_rule_the_current_directory_first_then_the_repository(tmp_path, monkeypatch):
    """``--config`` and a sweep's ``base:`` alike: a relative path is read from where you are, else
    from the repository (the suite's own configs work from anywhere); one found in neither is one
    line naming both places."""
    from vae.config import REPO, resolve_path
    from vae.sweeps.definition import base_path

    monkeypatch.chdir(tmp_path)
    assert load_config("configs/vae_bernoulli_linear.yaml").model.hidden == []       # the repository's
    assert resolve_path("configs/vae_bernoulli_linear.yaml") == REPO / "configs/vae_bernoulli_linear.yaml"
    (tmp_path / "configs").mkdir()
    # one of your own, same name
    (tmp_path / "configs/vae_bernoulli_linear.yaml").write_text("steps: 7\n")
    assert load_config("configs/vae_bernoulli_linear.yaml").steps == 7
    assert base_path("configs/vae_bernoulli_linear.yaml") == Path("configs/vae_bernoulli_linear.yaml")
    with pytest.raises(ConfigError,
                       match=rf"^config: cannot read configs/nope.yaml \(.*; looked in the current "
                             rf"directory {re.escape(str(tmp_path))}, then in {re.escape(str(REPO))}\)$"):
        load_config("configs/nope.yaml")
