"""Gradient estimators against the exact gradient on enumerable problems, and their contracts.

The oracle is :class:`vae.estimators.exact.Exact` differentiated by autograd (itself checked against
a hand-written ``itertools.product`` enumeration). Problems are tiny ``DiscreteVAE``s with 64
latent states: 3 categorical variables x 4 classes, and 6 Bernoulli variables. Many independent
estimates come from one batched call (``vae.training.diagnostics.draw_gradients`` puts draws on the replica
axis). The point of these tests is the algebra, so problems, estimators and oracles compute in
float64: no CPU's choice of float32 kernels can move a z-score or an equality (the noise is the
same float32 draw either way).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import itertools
import math
import re
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from conftest import BUILT_IN, NORMALISED, accepted_tau, estimator_cases, estimator_config
from vae.config import ConfigError, load_config
from vae.estimators import (ESTIMATORS, Estimator, EstimatorConfig, applicable, build_estimator, column_order,
                            register)
from vae.estimators.arms import arms_unit_gradient, dirichlet_copula
from vae.estimators.exact import all_states
from vae.estimators.sampling import sample_one_hot
from vae.models.discrete_vae import DiscreteVAE, categorical_kl
from vae.models.objectives import training_loss
from vae.numerics.gumbel import gumbel_noise, log_prob_one_hot
from vae.numerics.replicas import NoiseSource, ReplicaGenerator
from vae.training.diagnostics import draw_gradients, exact_gradients, make_toy_problem
from vae.training.tasks import check

KINDS = {"categorical": (3, 4), "bernoulli": (6, 2)}  # (N, K): both 64 states
DATA_DIM = 5
ESTIMATOR_NAMES = tuple(BUILT_IN)
EVERY = estimator_cases("vae", sampled=False, bound=None)   # every (estimator, kind) that applies to a VAE
NUM_DRAWS = 4000
# Family-wise false-alarm rate of each z-test; Bonferroni over every gradient coordinate tested.
ALPHA = 1e-3
DTYPE = torch.float64
# Absolute slack for round-off between the batched draws and the single-replica oracle: gradients
# of size ~10 summed over 64 states in float64 round off near 1e-13.
ABS_TOL = 1e-10


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A seed derived from the test's own name, so each test draws its own fixed noise."""
    return zlib.crc32(request.node.name.encode())


def problem(kind: str, seed: int = 0) -> tuple[DiscreteVAE, Tensor]:
    n, k = KINDS[kind]
    return make_toy_problem(kind, n, k, data_dim=DATA_DIM, seed=seed, dtype=DTYPE)


def build(name: str, kind: str, num_replicas: int = 1, **overrides: object):
    return build_estimator(estimator_config(name, **overrides), num_replicas=num_replicas,
                           latent_shape=KINDS[kind], context_dim=DATA_DIM,
                           rng=ReplicaGenerator(list(range(num_replicas)))).to(DTYPE)


def z_scores(draws: dict[str, Tensor], exact: dict[str, Tensor], scale: float = 1.0):
    """``(max_z, z_crit)``: the largest |mean - exact| / se over coordinates, and the threshold.

    ``se`` is the standard error of the Monte Carlo mean (sample std / sqrt(D)). Under the null
    (unbiased) each |z| exceeds ``z_crit = Phi^-1(1 - ALPHA / (2P))`` with probability ALPHA / P,
    so all P coordinates pass with probability >= 1 - ALPHA (Bonferroni). ABS_TOL is added to se's
    multiple to absorb float32 round-off.
    """
    num_coords = sum(g.shape[1] for g in draws.values())
    z_crit = torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * num_coords), dtype=torch.float64))
    worst = 0.0
    for name, g in draws.items():
        mean, se = g.mean(0) * scale, g.std(0) * scale / math.sqrt(g.shape[0])
        excess = ((mean - exact[name]).abs() - ABS_TOL).clamp(min=0) / se.clamp(min=1e-12)
        worst = max(worst, excess.max().item())
    return worst, z_crit.item()


def test_register_refuses_a_taken_name_and_a_class_that_is_not_an_estimator() -> None:
    with pytest.raises(ValueError, match=r"^register\('gs'\): the name is taken by GumbelSoftmax"):
        register("gs")(type("Mine", (Estimator,), {"estimate": lambda self, *a, **k: None}))
    with pytest.raises(TypeError, match="not a subclass of vae.estimators.Estimator"):
        register("mine")(int)
    assert register("gs")(ESTIMATORS["gs"]) is ESTIMATORS["gs"] and "mine" not in ESTIMATORS


@pytest.mark.parametrize(("field", "value"), [("name", "foo"), ("num_samples", 1)])
def test_config_rejects_invalid_values(field: str, value: object) -> None:
    cfg = EstimatorConfig(**{field: value})
    with pytest.raises(ValueError, match=f"^estimator.{field}: "):
        cfg.validate(ESTIMATORS)
    EstimatorConfig().validate(ESTIMATORS)


#: Values an option's own rule refuses (its Options' __post_init__; the > 0 of positive_options is
#: tests/test_config.py's), by option: every estimator declaring the option is checked.
REFUSED = {"ema_decay": [1.0, -0.1], "slope_rate": [-1.0], "max_slope": [0.5], "darn_point": ["half"]}


@pytest.mark.parametrize(("name", "option", "value"), [
    (name, f.name, value) for name, cls in BUILT_IN.items() if cls.Options is not None
    for f in dataclasses.fields(cls.Options) for value in REFUSED.get(f.name, [])])
def test_an_option_s_own_rule_refuses_a_value_in_one_line_naming_it(name: str, option: str,
                                                                    value: object) -> None:
    """The estimator refuses it when built, and the config refuses it when loaded, in the same words."""
    with pytest.raises(ValueError, match=rf"^estimator\.options\.{option}: must be .*, got "):
        ESTIMATORS[name].options_of(estimator_config(name, **{option: value}))
    with pytest.raises(ConfigError, match=rf"^estimator\.options\.{option}: must be .*, got "):
        load_config(None, [f"estimator.name={name}", f"estimator.options.{option}={value}"])


def test_every_rule_of_refused_values_belongs_to_an_option_that_exists() -> None:
    declared = {f.name for cls in BUILT_IN.values() if cls.Options is not None
                for f in dataclasses.fields(cls.Options)}
    assert set(REFUSED) <= declared


def test_an_option_the_estimator_does_not_declare_is_refused_naming_those_it_does() -> None:
    with pytest.raises(ValueError,
                       match=r"^estimator\.options\.gap: 'gs' has no such option; allowed: none$"):
        build("gs", "categorical", gap=1.0)
    with pytest.raises(ValueError, match=r"^estimator\.options\.ema: 'nvil' has no such option; allowed: "
                                         r"baseline_hidden, ema_decay, variance_normalisation$"):
        build("nvil", "categorical", ema=0.5)


def test_exact_matches_hand_enumeration() -> None:
    model, x = make_toy_problem("categorical", 2, 3, data_dim=DATA_DIM, seed=3, dtype=DTYPE)
    exact = build_estimator(EstimatorConfig(name="exact"), num_replicas=1, latent_shape=(2, 3),
                            context_dim=DATA_DIM, rng=ReplicaGenerator([0]))
    logits = model.encode(x)                                                 # [1, B, 2, 3]
    surrogate, _ = exact(logits, lambda z: model.reconstruction_loss(z, x),
                         rng=ReplicaGenerator([0]), tau=1.0, step=0, context=x)
    probs = torch.softmax(logits, -1)
    manual = torch.zeros_like(surrogate)
    for i, j in itertools.product(range(3), range(3)):
        z = F.one_hot(torch.tensor([i, j]), 3).to(DTYPE).expand_as(logits)
        manual = manual + probs[..., 0, i] * probs[..., 1, j] * model.reconstruction_loss(z, x)
    torch.testing.assert_close(surrogate, manual)
    params = list(model.parameters())
    for g, m in zip(torch.autograd.grad(surrogate.sum(), params, retain_graph=True),
                    torch.autograd.grad(manual.sum(), params), strict=True):
        torch.testing.assert_close(g, m)


@pytest.mark.parametrize("name", [n for n, cls in BUILT_IN.items() if "categorical" not in cls.kinds])
def test_an_estimator_refuses_latents_it_does_not_declare_and_names_those_that_apply(name: str) -> None:
    """The config refuses it in one line that lists the estimators that do apply, computed from the
    declarations (vae.estimators.applicable); building it for K > 2 is a ValueError too."""
    with pytest.raises(ConfigError) as refused:
        check(load_config(None, [f"estimator.name={name}", "model.hidden=[]"]))
    others = applicable(task="vae", kind="categorical", lowest_tau=0.5, latent_shape=(20, 10))
    assert str(refused.value) == (f"estimator.name: {name!r} is for bernoulli latents, not categorical ones; "
                                  f"for task vae with categorical latents use {', '.join(others)}")
    assert name not in others and "gs" in others and "exact" not in others   # 10^20 states: exact refuses
    with pytest.raises(ValueError, match="is for Bernoulli latents"):
        build(name, "categorical")


def test_exact_refuses_large_latent_spaces() -> None:
    with pytest.raises(ValueError, match="estimator.options.max_states"):
        build_estimator(EstimatorConfig(name="exact"), num_replicas=1, latent_shape=(20, 10),
                        context_dim=DATA_DIM, rng=ReplicaGenerator([0]))


def test_one_hot_samples_follow_the_categorical(seed: int) -> None:
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    z = sample_one_hot(logits.expand(1, 20000, 1, 4), ReplicaGenerator([seed]))
    counts = z.sum((0, 1, 2))
    expected = 20000 * torch.softmax(logits, -1)
    chi2 = ((counts - expected).square() / expected).sum()
    assert chi2 < 16.27  # chi-square, 3 degrees of freedom, p = 1e-3


@pytest.mark.parametrize(("name", "kind"), estimator_cases("vae", unbiased=True))
def test_unbiased_estimators_match_exact(name: str, kind: str, seed: int) -> None:
    model, x = problem(kind)
    estimator = build(name, kind)
    assert estimator.unbiased
    draws = draw_gradients(model, estimator, x, tau=1.0, num_draws=NUM_DRAWS, seed=seed)
    worst, z_crit = z_scores(draws, exact_gradients(model, x))
    assert worst <= z_crit, f"{name}: max z-score {worst:.2f} > {z_crit:.2f}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", NORMALISED)
def test_variance_normalisation_divides_the_whole_encoder_gradient_of_the_training_loss(
        name: str, kind: str, seed: int) -> None:
    """The training loss as the trainer computes it (``vae.models.objectives.training_loss``: surrogate +
    analytic KL), with centre c = 2 and variance v = 9 frozen (eval mode), so s = 3: the mean
    encoder gradient is ``(g_recon + g_KL) / 3`` -- not ``g_recon / 3 + g_KL``, which is what
    dividing only the score term gives -- and the decoder gradient is not divided."""
    model, x = problem(kind)
    estimator = build(name, kind)                       # variance normalisation on by default
    estimator.normaliser.mean.fill_(2.0)
    estimator.normaliser.var.fill_(9.0)
    estimator.eval()
    draws = draw_gradients(model, estimator, x, tau=1.0, num_draws=NUM_DRAWS, seed=seed, loss="training")
    if name == "darn":  # biased, but the rescaling is exact: compare with the same noise at s = 1
        estimator.normaliser.var.fill_(0.0)
        plain = draw_gradients(model, estimator, x, tau=1.0, num_draws=NUM_DRAWS, seed=seed, loss="training")
        torch.testing.assert_close(draws["encoder"] * 3, plain["encoder"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(draws["decoder"], plain["decoder"])
        return
    whole = exact_gradients(model, x, loss="training")                 # g_recon + g_KL
    recon = exact_gradients(model, x)                                  # g_recon
    worst, z_crit = z_scores(draws, {"encoder": whole["encoder"] / 3, "decoder": whole["decoder"]})
    assert worst <= z_crit, f"{name}: max z-score {worst:.2f} > {z_crit:.2f}"
    score_only = recon["encoder"] / 3 + (whole["encoder"] - recon["encoder"])
    worst, z_crit = z_scores({"encoder": draws["encoder"]}, {"encoder": score_only})
    assert worst > z_crit, f"{name}: cannot tell the whole-gradient scaling from the score-only one"


@pytest.mark.parametrize("name", NORMALISED)
def test_variance_normalisation_is_on_by_default_and_can_be_turned_off(name: str) -> None:
    assert build(name, "categorical").encoder_gradient_scale() is not None
    assert build(name, "categorical", variance_normalisation=False).encoder_gradient_scale() is None
    assert build("rloo", "categorical").encoder_gradient_scale() is None


@pytest.mark.parametrize("kind", KINDS)
def test_muprop_is_exact_for_linear_objectives(kind: str, seed: int) -> None:
    """For f linear in z the Taylor control variate is f itself: every draw is the exact gradient."""
    n, k = KINDS[kind]
    weight = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
    logits = torch.randn(1, 3, n, k, generator=torch.Generator().manual_seed(seed + 1), dtype=DTYPE,
                         requires_grad=True)

    def f(z: Tensor) -> Tensor:
        return (z * weight).sum((-1, -2))

    def grad(name: str) -> Tensor:
        surrogate, _ = build(name, kind)(logits, f, rng=ReplicaGenerator([seed]), tau=1.0, step=0,
                                         context=torch.zeros(1, 3, DATA_DIM, dtype=DTYPE))
        return torch.autograd.grad(surrogate.sum(), logits)[0]

    torch.testing.assert_close(grad("muprop"), grad("exact"))


def darn_draws(point: str, logits: Tensor, f, seed: int) -> tuple[Tensor, Tensor]:
    """NUM_DRAWS ``darn`` gradients w.r.t. ``logits [1, B, N, K]`` (one per replica) and the
    exact gradient of ``E_q[f]``."""
    n, k = logits.shape[-2:]
    many = logits.detach().expand(NUM_DRAWS, *logits.shape[1:]).clone().requires_grad_(True)
    darn = build_estimator(estimator_config("darn", darn_point=point), num_replicas=NUM_DRAWS,
                           latent_shape=(n, k), context_dim=1, rng=ReplicaGenerator([0])).to(DTYPE)
    rng = ReplicaGenerator(torch.randint(2**62, (NUM_DRAWS,),
                                         generator=torch.Generator().manual_seed(seed)).tolist())
    surrogate, _ = darn(many, f, rng=rng, tau=1.0, step=0, context=torch.zeros(NUM_DRAWS, logits.shape[1], 1))
    draws = torch.autograd.grad(surrogate.sum(), many)[0].flatten(1)                # [D, P]
    exact = build_estimator(EstimatorConfig(name="exact"), num_replicas=1, latent_shape=(n, k),
                            context_dim=1, rng=ReplicaGenerator([0]))
    exact, _ = exact(logits, f, rng=ReplicaGenerator([0]), tau=1.0, step=0,
                     context=torch.zeros(1, logits.shape[1], 1))
    return draws, torch.autograd.grad(exact.sum(), logits)[0].flatten()


def test_darn_half_estimator_is_unbiased_for_objectives_quadratic_in_binary_units(seed: int) -> None:
    """Gu et al. (2016, eq. 6): for a binary unit the 1/2 estimator's mean is
    (f'(0) + f'(1)) / 2 . grad mu, which is the exact (f(1) - f(0)) grad mu when f is quadratic."""
    gen = torch.Generator().manual_seed(seed)
    free = torch.randn(1, 3, 6, 1, generator=gen, dtype=DTYPE)
    logits = torch.cat([torch.zeros_like(free), free], -1).requires_grad_(True)     # [1, B, 6, 2]
    a, b = torch.randn(6, 6, generator=gen, dtype=DTYPE), torch.randn(6, generator=gen, dtype=DTYPE)

    def f(z: Tensor) -> Tensor:
        x = z[..., 1]
        return ((x @ a) * x).sum(-1) + x @ b

    draws, exact = darn_draws("uniform", logits, f, seed)
    worst, z_crit = z_scores({"logits": draws}, {"logits": exact})
    assert worst <= z_crit, f"max z-score {worst:.2f} > {z_crit:.2f}"


def test_darn_at_the_mean_estimates_the_mean_field_gradient(seed: int) -> None:
    """With z_bar = mu the per-variable signals average to f'(mu) . grad mu: the gradient of
    f(softmax(logits)), not of E_q[f] (which the z-test then tells apart for a nonlinear f)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 2, 3, 4, generator=gen, dtype=DTYPE).requires_grad_(True)
    weight = torch.randn(3, 4, generator=gen, dtype=DTYPE)

    def f(z: Tensor) -> Tensor:
        return (z * weight).sum((-1, -2)).square()

    draws, exact = darn_draws("mean", logits, f, seed)
    mean_field = torch.autograd.grad(f(torch.softmax(logits, -1)).sum(), logits)[0].flatten()
    worst, z_crit = z_scores({"logits": draws}, {"logits": mean_field})
    assert worst <= z_crit, f"max z-score {worst:.2f} > {z_crit:.2f}"
    worst, z_crit = z_scores({"logits": draws}, {"logits": exact})
    assert worst > z_crit


@pytest.mark.parametrize(("name", "kind"), estimator_cases("vae", unbiased=False))
def test_biased_estimators_are_measurably_biased_but_aligned(name: str, kind: str,
                                                             seed: int) -> None:
    """The z-test that passes the unbiased estimators detects these ones' bias; their mean
    encoder gradient still points the exact gradient's way (cosine > 0.5)."""
    model, x = problem(kind)
    estimator = build(name, kind)
    assert not estimator.unbiased
    draws = draw_gradients(model, estimator, x, tau=accepted_tau(name), num_draws=NUM_DRAWS, seed=seed,
                           step=10**5)
    exact = exact_gradients(model, x)
    worst, z_crit = z_scores(draws, exact)
    assert math.isfinite(worst) and worst > z_crit
    assert torch.cosine_similarity(draws["encoder"].mean(0), exact["encoder"], dim=0) > 0.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hard", [False, True])
def test_gs_is_the_gradient_of_the_relaxed_objective(kind: str, hard: bool, seed: int) -> None:
    x = problem(kind)[1].expand(3, -1, -1)
    model = DiscreteVAE(kind, *KINDS[kind], [8], ReplicaGenerator([1, 2, 3]), data_dim=DATA_DIM).to(DTYPE)
    tau, seeds = 0.7, [seed, seed + 1, seed + 2]
    params = list(model.parameters())
    logits = model.encode(x)
    surrogate, info = build("st-gs" if hard else "gs", kind, 3)(
        logits, lambda z: model.reconstruction_loss(z, x), rng=ReplicaGenerator(seeds), tau=tau,
        step=0, context=x)
    grads = torch.autograd.grad(surrogate.sum(), params, retain_graph=True)

    soft = torch.softmax((logits + gumbel_noise(logits.shape, ReplicaGenerator(seeds))) / tau, -1)
    z = soft
    if hard:
        z = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(DTYPE) - soft.detach() + soft
    manual = torch.autograd.grad(model.reconstruction_loss(z, x).sum(), params)
    for g, m in zip(grads, manual, strict=True):
        torch.testing.assert_close(g, m)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", [0, 20000, 10**6])
def test_st_annealed_samples_differentiates_and_regularises_one_distribution(kind: str, step: int,
                                                                             seed: int) -> None:
    """Through the trainer's loss, with slope a = min(5, 1 + 1e-4 t): the forward sample is drawn
    from softmax(a l), the backward pass is the straight-through gradient of softmax(a l), and the
    KL is that of softmax(a l) -- one distribution, the one evaluation then uses too."""
    slope = min(5.0, 1 + 1e-4 * step)
    model, x = problem(kind, seed=seed % 1000)
    estimator = build("st-annealed", kind, slope_rate=1e-4, max_slope=5.0)
    params = list(model.parameters())
    loss, kl, info = training_loss(model, estimator, x, rng=ReplicaGenerator([seed]), tau=1.0, step=step)
    assert (info["slope"].tolist() == [pytest.approx(slope)]
            and model.logit_scale.item() == pytest.approx(slope))

    free = model.encoder(x).unflatten(-1, (KINDS[kind][0], -1))       # the encoder's raw output l
    logits = slope * (torch.cat([torch.zeros_like(free), free], -1) if kind == "bernoulli" else free)
    z = sample_one_hot(logits, ReplicaGenerator([seed]))               # the same noise
    probs = torch.softmax(logits, -1)
    manual = (model.reconstruction_loss(z + probs - probs.detach(), x)
              + categorical_kl(logits, torch.zeros(KINDS[kind][1])))
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(kl, categorical_kl(logits, torch.zeros(KINDS[kind][1])))
    for g, m in zip(torch.autograd.grad(loss.sum(), params, retain_graph=True),
                    torch.autograd.grad(manual.sum(), params), strict=True):
        torch.testing.assert_close(g, m)
    assert torch.allclose(model.encode(x), logits)                   # what evaluation sees


@pytest.mark.parametrize(("name", "kind"), [(n, k) for n, k in EVERY if BUILT_IN[n].one_hot_forward])
def test_what_a_one_hot_estimator_hands_f_is_exactly_one_hot(name: str, kind: str, seed: int) -> None:
    """Every estimator that declares ``one_hot_forward`` evaluates f at exact one-hot states only:
    a straight-through sample ``z + (s - s.detach())`` is exactly z, where ``z + s - s.detach()``
    is not (1 + s - s rounds away from 1 in a quarter of float32 draws)."""
    model, x = problem(kind)
    seen: list[Tensor] = []

    def f(z: Tensor) -> Tensor:
        seen.append(z.detach())
        return model.reconstruction_loss(z, x)

    build(name,
          kind)(model.encode(x), f, rng=ReplicaGenerator([seed]), tau=accepted_tau(name), step=0, context=x)
    assert seen
    for points in seen:
        assert ((points == 0) | (points == 1)).all() and (points.sum(-1) == 1).all()


@pytest.mark.parametrize(("name", "kind"), EVERY)
def test_estimates_are_shaped_finite_and_deterministic(name: str, kind: str, seed: int) -> None:
    r, b = 2, 3
    model = DiscreteVAE(kind, *KINDS[kind], [8], ReplicaGenerator([5, 6]), data_dim=DATA_DIM)
    x = (torch.rand(r, b, DATA_DIM, generator=torch.Generator().manual_seed(seed)) < 0.5).float()
    params = list(model.parameters())

    def run() -> tuple[Tensor, ...]:
        estimator = build(name, kind, num_replicas=r)
        surrogate, info = estimator(model.encode(x), lambda z: model.reconstruction_loss(z, x),
                                    rng=ReplicaGenerator([seed, seed + 1]), tau=1.2, step=3,
                                    context=x)
        assert surrogate.shape == (r, b)
        for value in info.values():
            assert value.shape[0] == r and not value.requires_grad
        return torch.autograd.grad(surrogate.sum(), params + list(estimator.parameters()))

    first, second = run(), run()
    for g, again, p in zip(first, second, params, strict=False):
        assert g.shape == p.shape and torch.isfinite(g).all()
        assert torch.equal(g, again)


@pytest.mark.parametrize("name", NORMALISED)
def test_state_survives_a_state_dict_round_trip(name: str, seed: int) -> None:
    x = problem("categorical")[1].expand(2, -1, -1)
    model = DiscreteVAE("categorical", 3, 4, [8], ReplicaGenerator([1, 2]), data_dim=DATA_DIM).to(DTYPE)
    trained = build(name, "categorical", num_replicas=2)
    rng = ReplicaGenerator([seed, seed + 1])
    for step in range(5):
        trained(model.encode(x), lambda z: model.reconstruction_loss(z, x), rng=rng, tau=1.0,
                step=step, context=x)
    assert (trained.normaliser.mean != 0).all() and (trained.normaliser.var != 0).all()

    restored = build_estimator(EstimatorConfig(name=name), num_replicas=2,
                               latent_shape=(3, 4), context_dim=DATA_DIM,
                               rng=ReplicaGenerator([seed + 7, seed + 8])).to(DTYPE)
    restored.load_state_dict(trained.state_dict())
    for (key, a), (_, b) in zip(trained.state_dict().items(), restored.state_dict().items(),
                                strict=True):
        assert torch.equal(a, b), key
    if name == "nvil":
        assert any(key.startswith("baseline_net.") for key in restored.state_dict())

    outputs = [est(model.encode(x), lambda z: model.reconstruction_loss(z, x),
                   rng=ReplicaGenerator([3, 4]), tau=1.0, step=5, context=x)[1]
               for est in (trained, restored)]
    for key in outputs[0]:
        assert torch.equal(outputs[0][key], outputs[1][key]), key


def test_moving_averages_update_only_in_training_mode(seed: int) -> None:
    model, x = problem("bernoulli")
    estimator = build("reinforce-ema", "bernoulli").eval()
    estimator(model.encode(x), lambda z: model.reconstruction_loss(z, x),
              rng=ReplicaGenerator([seed]), tau=1.0, step=0, context=x)
    assert (estimator.normaliser.mean == 0).all() and (estimator.normaliser.var == 0).all()


def test_nvil_baseline_is_trained_through_the_surrogate(seed: int) -> None:
    """The surrogate's value is f(z); SGD on it fits the baseline to the centred signal."""
    model, x = problem("categorical")
    estimator = build("nvil", "categorical", ema_decay=0.0)
    optimiser = torch.optim.SGD(estimator.parameters(), lr=1e-3)
    rng = ReplicaGenerator([seed])
    errors = []
    for step in range(200):
        logits = model.encode(x).detach()
        surrogate, info = estimator(logits, lambda z: model.reconstruction_loss(z, x).detach(),
                                    rng=rng, tau=1.0, step=step, context=x)
        optimiser.zero_grad()
        surrogate.sum().backward()
        optimiser.step()
        errors.append(info["baseline_mse"])
    assert torch.stack(errors[-50:]).mean() < 0.5 * torch.stack(errors[:10]).mean()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_estimators_run_on_cuda(name: str, seed: int) -> None:
    kind = "categorical" if "categorical" in BUILT_IN[name].kinds else "bernoulli"
    model, x = problem(kind)
    model, x = model.cuda(), x.cuda()
    estimator = build(name, kind).cuda()
    surrogate, info = estimator(model.encode(x), lambda z: model.reconstruction_loss(z, x),
                                rng=ReplicaGenerator([seed], device="cuda"), tau=accepted_tau(name), step=3,
                                context=x)
    grads = torch.autograd.grad(surrogate.sum(), list(model.parameters()))
    assert all(g.is_cuda and torch.isfinite(g).all() for g in grads)
    assert all(value.is_cuda for value in info.values())


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_every_estimator_works_on_plain_tensors_without_a_replica_axis(name: str, seed: int) -> None:
    """logits [B, N, K], f on [..., B, N, K], torch's global generator: what a user's model has."""
    torch.manual_seed(seed)
    k = 4 if "categorical" in BUILT_IN[name].kinds else 2
    logits = torch.randn(4, 3, k, requires_grad=True)
    weight = torch.randn(3, k)
    x = torch.randn(4, DATA_DIM)

    def f(z: Tensor) -> Tensor:
        assert z.shape[-3:] == (4, 3, k)
        return (z * weight).sum((-1, -2)).square()

    estimator = build_estimator(name, latent_shape=(3, k), context_dim=DATA_DIM)
    surrogate, info = estimator(logits, f, tau=1.2, context=x)
    assert surrogate.shape == (4,) and all(v.dim() == 0 or v.shape[0] != 1 for v in info.values())
    (grad,) = torch.autograd.grad(surrogate.sum(), logits)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_every_estimator_works_in_float32_float64_and_bfloat16(name: str, dtype: torch.dtype,
                                                               seed: int) -> None:
    """Plain tensors of one dtype (the estimator's state cast to it, as ``model.to(dtype)`` does):
    f sees z in that dtype, the surrogate comes back in it (float32 for bfloat16, a loss's
    precision), and the gradient is finite and not all zero; also with the estimator's state left
    in float32 beside float64 logits."""
    k = 4 if "categorical" in BUILT_IN[name].kinds else 2
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 3, k, generator=gen).to(dtype).requires_grad_(True)
    weight, x = torch.randn(3, k, generator=gen).to(dtype), torch.randn(4, DATA_DIM, generator=gen).to(dtype)
    seen: list[torch.dtype] = []

    def f(z: Tensor) -> Tensor:
        seen.append(z.dtype)
        return (z * weight).sum((-1, -2)).square()

    for cast in (True, False) if dtype == torch.float64 else (True,):
        estimator = build_estimator(name, latent_shape=(3, k), context_dim=DATA_DIM)
        estimator = estimator.to(dtype if dtype != torch.bfloat16 else torch.float32) if cast else estimator
        surrogate, _ = estimator(logits, f, tau=accepted_tau(name, 1.2), context=x)
        (grad,) = torch.autograd.grad(surrogate.sum(), logits)
        assert (set(seen) == {dtype}
                and surrogate.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype))
        assert grad.dtype == dtype and torch.isfinite(grad.float()).all() and grad.abs().sum() > 0


def test_building_an_estimator_without_what_it_needs_is_a_one_line_value_error() -> None:
    with pytest.raises(ValueError, match=r"^nvil: needs context_dim >= 1"):
        build_estimator("nvil", latent_shape=(20, 10))
    with pytest.raises(ValueError, match=r"^build_estimator: latent_shape must be \(N, K\)"):
        build_estimator("gs", latent_shape=(20,))


def test_arms_at_two_samples_is_disarm() -> None:
    """For k = 2 the Dirichlet copula is the antithetic pair (u, 1 - u) (to float rounding) and
    ARMS's unit gradient on the pair is DisARM's, unit by unit, for either sign of phi (float64:
    the point is algebra)."""
    generator = torch.Generator().manual_seed(5)
    u = dirichlet_copula((1, 2, 3000, 7), generator, torch.device("cpu")).double()
    # float32 draws: u_1 + u_2 = 2 - (e_1 + e_2) / (e_1 + e_2), two divisions, a sum and two
    # subtractions near 1, each rounded by at most half an ulp (2^-24): within 3 * 2^-23 = 3.6e-7
    torch.testing.assert_close(u[:, 0] + u[:, 1], torch.ones_like(u[:, 0]), rtol=0, atol=3 * 2.0 ** -23)
    phi = 3 * torch.randn(1, 3000, 7, generator=generator, dtype=DTYPE)
    v = torch.rand(1, 3000, 7, generator=generator, dtype=DTYPE)
    b, b_anti = (v > torch.sigmoid(-phi)).to(DTYPE), (v < torch.sigmoid(phi)).to(DTYPE)
    f_b, f_anti = torch.randn(2, 1, 3000, generator=generator, dtype=DTYPE)
    disarm = (f_b - f_anti)[..., None] * build("disarm", "bernoulli").unit_weights(v, b, b_anti, phi)
    arms = arms_unit_gradient(torch.stack([f_anti, f_b], 1), torch.stack([b_anti, b], 1), torch.sigmoid(phi),
                              torch.sigmoid(-phi.abs()))
    torch.testing.assert_close(arms, disarm, rtol=1e-12, atol=1e-12)


def test_the_dirichlet_copula_has_uniform_marginals_and_its_stated_joint_cdf() -> None:
    """What ARMS samples from: each u_i uniform (P(u_i < a) = a) and any two with joint CDF
    C(a, a) = (2 a^(1/(k-1)) - 1)_+^(k-1), at k = 4 over 200,000 draws: every frequency within 5
    standard errors sqrt(P (1 - P) / n) of its value (a false alarm about once in 3.5 million)."""
    k, n = 4, 200_000
    u = dirichlet_copula((1, k, n), torch.Generator().manual_seed(3), torch.device("cpu")).double()
    for a in (0.05, 0.3, 0.5, 0.8):
        for frequency, expected in (((u[0, 0] < a).double().mean(), a),
                                    (((u[0, 1] < a) & (u[0, 2] < a)).double().mean(),
                                     max(2 * a ** (1 / (k - 1)) - 1, 0) ** (k - 1))):
            se = math.sqrt(max(expected * (1 - expected), 1 / n) / n)
            assert abs(frequency.item() - expected) <= 5 * se, (a, frequency.item(), expected)


def test_gumbel_rao_has_the_mean_of_st_gs_and_a_fraction_of_its_variance() -> None:
    """Rao-Blackwellisation: E[gumbel-rao | D] is st-gs's conditional mean, so the means agree (a
    two-sample z-test, Bonferroni over coordinates) and the variance can only drop; with M = 10
    draws at tau = 0.7 it must drop below 60% of st-gs's (measured here: 52%; the variance
    estimates of 4,000 draws are good to a few percent; M = 1 gives 1.0, M = 100 0.48)."""
    model, x = problem("categorical")
    draws = {name: draw_gradients(model, build(name, "categorical"), x, tau=0.7, num_draws=NUM_DRAWS,
                                  seed=11 + i)["encoder"] for i, name in enumerate(["st-gs", "gumbel-rao"])}
    st, rao = draws["st-gs"], draws["gumbel-rao"]
    se = (st.var(0) / NUM_DRAWS + rao.var(0) / NUM_DRAWS).sqrt()
    z_crit = torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * st.shape[1]), dtype=torch.float64)).item()
    assert ((((st.mean(0) - rao.mean(0)).abs() - ABS_TOL).clamp(min=0) / se.clamp(min=1e-12)).max() <= z_crit)
    assert rao.var(0).sum() < 0.6 * st.var(0).sum()


@pytest.mark.parametrize(("tau", "exact"), [(1.0, True), (2.0, False)])
def test_reinmax_is_unbiased_for_quadratic_objectives_at_tau_one_only(tau: float, exact: bool,
                                                                      seed: int) -> None:
    """Liu et al. (2023): ReinMax's backward pass is Heun's (trapezoid) rule, exact for f
    quadratic in z at tau = 1 (straight-through, Euler's rule, is not); at tau = 2 the z-test
    detects its bias."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 3, 3, 4, generator=gen, dtype=DTYPE).requires_grad_(True)
    a, b = torch.randn(12, 12, generator=gen, dtype=DTYPE), torch.randn(12, generator=gen, dtype=DTYPE)

    def f(z: Tensor) -> Tensor:
        flat = z.flatten(-2)
        return ((flat @ a) * flat).sum(-1) + flat @ b

    many = logits.detach().expand(NUM_DRAWS, -1, -1, -1).clone().requires_grad_(True)
    rng = ReplicaGenerator(torch.randint(2**62, (NUM_DRAWS,), generator=gen).tolist())
    surrogate, _ = build("reinmax", "categorical", num_replicas=NUM_DRAWS)(many, f, rng=rng, tau=tau)
    draws = torch.autograd.grad(surrogate.sum(), many)[0].flatten(1)
    expected, _ = build("exact", "categorical")(logits, f, rng=ReplicaGenerator([0]))
    truth = torch.autograd.grad(expected.sum(), logits)[0].flatten()
    worst, z_crit = z_scores({"logits": draws}, {"logits": truth})
    assert (worst <= z_crit) == exact, f"max z-score {worst:.2f}, threshold {z_crit:.2f}"
    with pytest.raises(ValueError, match="tau >= 1"):
        build("reinmax", "categorical")(logits, f, tau=0.5)


def exact_multi_sample_bound(model: DiscreteVAE, x: Tensor, k: int) -> Tensor:
    """``sum_b E[log (1/k) sum_j w_j]`` over all k-tuples of latent states (enumeration), with
    ``log w = log p(x | z) + log p(z) - log q(z | x)``: differentiable in every parameter."""
    logits = model.encode(x)                                                # [1, B, N, K]
    states = all_states(model.num_latents, model.num_classes).to(x.dtype)   # [S, N, K]
    tuples = torch.tensor(list(itertools.product(range(states.shape[0]), repeat=k)))   # [S^k, k]
    z = states[tuples][None, :, :, None].expand(-1, -1, -1, x.shape[1], -1, -1)        # [1, S^k, k, B, N, K]
    log_q = log_prob_one_hot(logits, z)                                     # [1, S^k, k, B]
    log_w = -model.reconstruction_loss(z, x) + model.log_prior(z) - log_q
    bound = torch.logsumexp(log_w, dim=2) - math.log(k)                     # [1, S^k, B]
    return (log_q.sum(2).exp() * bound).sum()


@pytest.mark.parametrize("kind", KINDS)
def test_vimco_is_unbiased_for_its_multi_sample_bound_through_the_trainers_loss(kind: str, seed: int) -> None:
    """Through vae.models.objectives.training_loss (which passes f = -log w and adds no KL), the mean of
    VIMCO's encoder and decoder gradients is the exact gradient of -E[L_k], k = 2, enumerated
    over all 64^2 pairs of latent states."""
    model, x = problem(kind)
    bound = exact_multi_sample_bound(model, x, k=2)
    exact = dict(zip(["encoder", "decoder"], (torch.cat([g.flatten() for g in torch.autograd.grad(
        -bound, list(part.parameters()), retain_graph=True)]) for part in (model.encoder, model.decoder))))
    draws = draw_gradients(model, build("vimco", kind, num_samples=2), x, tau=1.0, num_draws=NUM_DRAWS,
                           seed=seed, loss="training")
    worst, z_crit = z_scores(draws, exact)
    assert worst <= z_crit, f"max z-score {worst:.2f} > {z_crit:.2f}"


def moved(estimator, seed: int):
    """``estimator`` with every parameter of its own moved away from its initial value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in estimator.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    return estimator


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_control_variate_estimators_stay_unbiased_after_their_parameters_move(name: str, kind: str,
                                                                            seed: int) -> None:
    model, x = problem(kind)
    estimator = moved(build(name, kind), seed)
    assert estimator.eta.item() != 1.0 and estimator.log_temperature.exp().item() != 0.5
    draws = draw_gradients(model, estimator, x, tau=1.0, num_draws=NUM_DRAWS, seed=seed)
    worst, z_crit = z_scores(draws, exact_gradients(model, x))
    assert worst <= z_crit, f"{name}: max z-score {worst:.2f} > {z_crit:.2f}"


@pytest.mark.parametrize("name", ["rebar", "relax"])
def test_control_variate_parameters_descend_the_estimators_variance(name: str, seed: int) -> None:
    """Trained by an optimiser on the surrogate alone (the model fixed), from a poor start (eta =
    0.5, lambda = 2), eta, lambda (and r) lower the variance of the encoder gradient: measured with
    1,000 draws before and after 150 steps, it must fall to a tenth (on this problem it is 42 at
    eta = 0.5 and 0.05 at eta = 1, lambda = 0.5)."""
    model, x = problem("categorical")
    estimator = build(name, "categorical")
    with torch.no_grad():
        estimator.eta.fill_(0.5)
        estimator.log_temperature.fill_(math.log(2.0))

    def encoder_variance() -> float:
        draws = draw_gradients(model, estimator, x, tau=1.0, num_draws=1000, seed=seed)["encoder"]
        return draws.var(0).sum().item()

    before = encoder_variance()
    optimiser = torch.optim.Adam(estimator.parameters(), lr=0.05)
    rng = ReplicaGenerator([seed])
    for step in range(150):
        surrogate, _ = estimator(model.encode(x), lambda z: model.reconstruction_loss(z, x), rng=rng,
                                 step=step)
        optimiser.zero_grad()
        surrogate.sum().backward()
        optimiser.step()
    assert encoder_variance() < 0.1 * before


@pytest.mark.parametrize(("name", "kind"), EVERY)
def test_declared_cost_is_the_decoder_passes_the_trainer_counts(name: str, kind: str, seed: int) -> None:
    """``decoder_passes`` (what tables and the leaderboard read as the estimator's cost) is the
    ``decoder_evals`` the VAE's training loss counts, at the defaults and at other settings."""
    model, x = problem(kind)
    for overrides in ({}, {"num_samples": 3}):
        estimator = build(name, kind, **overrides)
        _, _, info = training_loss(model, estimator, x, rng=ReplicaGenerator([seed]), tau=accepted_tau(name),
                                   step=0)
        declared = type(estimator).decoder_passes(estimator.cfg, KINDS[kind])
        assert info["decoder_evals"].tolist() == [declared], overrides


def test_no_library_file_names_a_built_in_estimator_outside_its_own_module() -> None:
    """What is true of one estimator is said by its class: no file of vae/ or experiments/ names a
    built-in estimator (as a quoted string) but the estimator's own module, the registry, and the
    places whose subject is a named estimator (listed here with the reason)."""
    allowed = {
        "vae/estimators/__init__.py": "the builder's example in its docstring",
        "vae/estimators/config.py": "the default estimator (gs, the paper's)",
        "vae/training/diagnostics.py": "the exact gradient is the `exact` estimator's, by definition",
        "vae/models/m2.py": "M2's marginalisation is the `exact` estimator on its class",
        "vae/reporting/tables.py": "the paper's numbers per estimator (Table 1, Table 2's modes)",
        "vae/reporting/figures.py": "figures about named estimators (GS and ST-GS; the toy panels)",
        "experiments/demo.py": "the demo trains GS, ST-GS and SF",
        "vae/reporting/bench.py": "the benchmark times a GS step",
        "experiments/gpu_check.py": "the GPU check times a GS step",
        "experiments/ssl_gradients.py": "its default rows: GS, ST-GS, RLOO (the measurement's subject)",
        "vae/reporting/gradient_quality.py": "its method: the checkpoint is RLOO's run, "
                                             "the reference IndeCateR's draws",
    }
    repo = Path(__file__).resolve().parents[1]
    quoted = re.compile(r"""["'](%s)["']"""
                        % "|".join(re.escape(n) for n in sorted(BUILT_IN, key=len, reverse=True)))
    own = {name: Path(inspect.getfile(cls)).resolve().relative_to(repo).as_posix()
           for name, cls in BUILT_IN.items()}
    offences = []
    for path in [*sorted((repo / "vae").rglob("*.py")), *sorted((repo / "experiments").glob("*.py"))]:
        rel = path.relative_to(repo).as_posix()
        if rel in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            offences += [f"{rel}:{number} names {m.group(1)!r}"
                         for m in quoted.finditer(line) if own[m.group(1)] != rel]
    assert not offences, "\n".join(offences)


def _name_lists(node: object, where: str) -> list[tuple[str, frozenset[str]]]:
    """Every list of three or more built-in estimator names in a parsed YAML document (``where``: its
    dotted path), as (path, names)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _name_lists(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        names = frozenset(v for v in node if isinstance(v, str) and v in BUILT_IN)
        found += [(where, names)] if len(names) >= 3 else []
        for i, value in enumerate(node):
            found += _name_lists(value, f"{where}.{i}")
    return found


def test_no_test_or_config_keeps_a_hand_list_of_estimators_the_registry_could_give() -> None:
    """A new estimator joins the shared tests and the sweeps with no edit to them: no test file and no
    config file holds a list of three or more built-in estimators' names (a tuple, list or set in
    Python, a YAML list) but the ones allowed here, each a choice the registry cannot make, with the
    reason. Whole sets come from the registry and its declarations (``estimator_cases``,
    ``applicable``, a sweep's ``{applicable: ...}`` axis)."""
    allowed = {
        ("tests/test_estimators.py", frozenset({"zgr", "reinmax", "st"})):
            "its subject: ZGR and ReinMax agree on binary latents, ST differs",
        ("tests/test_leaderboard.py", frozenset({"disarm", "rloo", "st-gs"})):
            "the tiny 2020 board's entry and the two the test measures",
        ("tests/test_reproduce.py", frozenset({"gs", "st-gs", "reinmax"})):
            "the paper preset's exclusions, as configs/sweeps/table1.yaml writes them",
        ("tests/test_step_cost.py", frozenset({"rloo", "st-gs", "vimco"})):
            "the rows the bench measures: one relaxed sample, k samples, a multi-sample bound",
        ("tests/test_step_cost.py", frozenset({"gs", "st-gs", "rloo"})):
            "rows measured again and kept",
        ("configs/sweeps/modern.yaml", frozenset({"rloo", "arm", "disarm", "relax", "double-cv", "vimco",
                                                  "gs", "st-gs"})):
            "a budget: the 2020 papers' own estimators and the relaxed anchors on the cells beyond "
            "linear MNIST, where every estimator that applies runs (an applicable axis)",
        ("tests/test_reproduce.py", frozenset({"arm", "disarm", "relax"})):
            "members the family selector must give",
        ("configs/sweeps/ssl_estimators.yaml", frozenset({"rloo", "gumbel-rao", "st"})):
            "each a control for one explanation of ST-GS's accuracy (the file's comment)",
        ("configs/sweeps/table1.yaml", frozenset({"gs", "st-gs", "reinmax"})):
            "the paper preset's exclusions from its applicable axis: they get τ settings of their own",
    }
    this = inspect.getsourcelines(
        test_no_test_or_config_keeps_a_hand_list_of_estimators_the_registry_could_give)
    repo = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted((repo / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)) and not (     # (the list above)
                    path.name == "test_estimators.py" and this[1] <= node.lineno < this[1] + len(this[0])):
                names = frozenset(e.value for e in node.elts
                                  if isinstance(e, ast.Constant) and e.value in BUILT_IN)
                if len(names) >= 3:
                    found.append((path.relative_to(repo).as_posix(), f"line {node.lineno}", names))
    for path in sorted((repo / "configs").rglob("*.yaml")):
        found += [(path.relative_to(repo).as_posix(), where, names)
                  for where, names in _name_lists(yaml.safe_load(path.read_text()), "")]
    offences = [f"{file} {where}: {', '.join(sorted(names))}" for file, where, names in found
                if (file, names) not in allowed]
    assert not offences, "\n".join(offences)
    assert {(file, names) for file, _, names in found} == set(allowed)      # no reason left over


def test_the_declared_kinds_and_tasks_are_the_suites() -> None:
    from vae.estimators.base import KINDS as DECLARABLE_KINDS
    from vae.estimators.base import TASKS as DECLARABLE_TASKS
    from vae.training.tasks import TASKS

    assert DECLARABLE_TASKS == tuple(TASKS) and DECLARABLE_KINDS == ("categorical", "bernoulli")
    for name, cls in BUILT_IN.items():
        assert cls.tasks <= set(TASKS) and cls.kinds <= set(DECLARABLE_KINDS), name


@pytest.mark.parametrize("kind", KINDS)
def test_indecater_with_several_samples_is_unbiased_and_costs_its_declared_passes(kind: str,
                                                                                  seed: int) -> None:
    """IndeCateR at S = 3 samples (its default S = 1 is in the z-test above): unbiased for the
    encoder and the decoder, and S (N (K - 1) + 1) decoder passes per example (3 x 10 = 30 on the
    3 x 4 categorical problem, 3 x 7 = 21 on the 6-unit Bernoulli one)."""
    model, x = problem(kind)
    estimator = build("indecater", kind, samples=3)
    draws = draw_gradients(model, estimator, x, tau=1.0, num_draws=NUM_DRAWS, seed=seed)
    worst, z_crit = z_scores(draws, exact_gradients(model, x))
    assert worst <= z_crit, f"max z-score {worst:.2f} > {z_crit:.2f}"
    _, _, info = training_loss(model, estimator, x, rng=ReplicaGenerator([seed]), tau=1.0, step=0)
    n, k = KINDS[kind]
    assert info["decoder_evals"].tolist() == [3.0 * (n * (k - 1) + 1)]


@pytest.mark.parametrize("kind", KINDS)
def test_zgr_is_unbiased_for_objectives_quadratic_in_z_where_st_is_not(kind: str, seed: int) -> None:
    """Shekhovtsov (2023): ZGR's mean is the exact gradient of E_q[f] for f quadratic in the one-hot z
    (z^T A z + b^T z, A and b random); straight-through's is not (the z-test sees its bias)."""
    n, k = KINDS[kind]
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 3, n, k, generator=gen, dtype=DTYPE)
    if kind == "bernoulli":
        logits = torch.cat([torch.zeros_like(logits[..., :1]), logits[..., 1:]], -1)
    logits.requires_grad_(True)
    a, b = (torch.randn(n * k, n * k, generator=gen, dtype=DTYPE),
            torch.randn(n * k, generator=gen, dtype=DTYPE))

    def f(z: Tensor) -> Tensor:
        flat = z.flatten(-2)
        return ((flat @ a) * flat).sum(-1) + flat @ b

    expected, _ = build("exact", kind)(logits, f, rng=ReplicaGenerator([0]))
    truth = torch.autograd.grad(expected.sum(), logits)[0].flatten()
    many = logits.detach().expand(NUM_DRAWS, -1, -1, -1).clone().requires_grad_(True)
    rng = ReplicaGenerator(torch.randint(2**62, (NUM_DRAWS,), generator=gen).tolist())
    for name, unbiased in (("zgr", True), ("st", False)):
        surrogate, _ = build(name, kind, num_replicas=NUM_DRAWS)(many, f, rng=rng)
        draws = torch.autograd.grad(surrogate.sum(), many)[0].flatten(1)
        worst, z_crit = z_scores({"logits": draws}, {"logits": truth})
        assert (worst <= z_crit) == unbiased, f"{name}: max z-score {worst:.2f}, threshold {z_crit:.2f}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha", [0.7, -1.5])
def test_double_cv_is_unbiased_for_any_weight_of_its_control_variate(kind: str, alpha: float,
                                                                     seed: int) -> None:
    """Double CV starts at alpha = 0, where it is RLOO (the z-test above); its closed-form
    correction must cancel the linear control variate's mean at any alpha the training reaches."""
    model, x = problem(kind)
    estimator = build("double-cv", kind)
    estimator.alpha.data.fill_(alpha)
    draws = draw_gradients(model, estimator, x, tau=1.0, num_draws=NUM_DRAWS, seed=seed)
    worst, z_crit = z_scores(draws, exact_gradients(model, x))
    assert worst <= z_crit, f"max z-score {worst:.2f} > {z_crit:.2f}"


@pytest.mark.parametrize("num_samples", [2, 3])
def test_rodeo_is_unbiased_for_any_network_and_weights_of_its_control_variates(num_samples: int,
                                                                               seed: int) -> None:
    """RODEO starts at alpha = beta = 0, where it is RLOO (the z-test above covers that); its Stein
    control variates must keep their mean zero at whatever network, alpha and beta the training
    reaches: here a random network (weights ~ N(0, 1), one fixed draw) and alpha, beta of both signs, at k = 2
    (the authors' discrete_stein_avg) and k = 3 (their output_avg)."""
    model, x = problem("bernoulli")
    estimator = build("rodeo", "bernoulli", num_samples=num_samples)
    generator = torch.Generator().manual_seed(0)   # one fixed network: one whose outputs move with b
    with torch.no_grad():
        for parameter in estimator.network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
        estimator.alpha.fill_(6.0)
        estimator.beta.fill_(-1.3)
    draws = draw_gradients(model, estimator, x, tau=1.0, num_draws=NUM_DRAWS, seed=seed)
    worst, z_crit = z_scores(draws, exact_gradients(model, x))
    assert worst <= z_crit, f"max z-score {worst:.2f} > {z_crit:.2f}"


@pytest.mark.parametrize("kind", KINDS)
def test_unordered_set_draws_distinct_states_and_is_unbiased_for_two_samples(kind: str, seed: int) -> None:
    """Kool et al. (2020) at k = 2 (its default k = 4 is in the z-test above); its stochastic beam
    search returns k distinct states of the joint (without replacement)."""
    from vae.estimators.unordered_set import sample_without_replacement

    model, x = problem(kind)
    draws = draw_gradients(model, build("unordered-set", kind, num_samples=2), x, tau=1.0,
                           num_draws=NUM_DRAWS, seed=seed)
    worst, z_crit = z_scores(draws, exact_gradients(model, x))
    assert worst <= z_crit, f"max z-score {worst:.2f} > {z_crit:.2f}"
    n, k = KINDS[kind]
    logits = torch.randn(3, 50, n, k, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
    states = sample_without_replacement(logits, ReplicaGenerator([1, 2, 3]), 8)            # [R, 8, B, N]
    distinct = {tuple(s.tolist()) for s in states[1, :, 7]}
    assert len(distinct) == 8


def test_unordered_set_ratios_are_the_set_probabilities_of_sampling_without_replacement() -> None:
    """The integrals the estimator computes equal the probabilities of the unordered sets, summed
    over their orders (Plackett-Luce: each draw's probability renormalised over what is left),
    for a 7-state distribution, a set of 4 and every leave-one-out and leave-two-out set."""
    import itertools

    from vae.estimators.unordered_set import set_ratios

    def set_probability(chosen: list[int], p: list[float], removed: tuple[int, ...] = ()) -> float:
        left, total = 1.0 - sum(p[j] for j in removed), 0.0
        for order in itertools.permutations(chosen):
            prob, used = 1.0, 0.0
            for i in order:
                prob, used = prob * p[i] / (left - used), used + p[i]
            total += prob
        return total

    p = torch.softmax(torch.randn(7, generator=torch.Generator().manual_seed(1), dtype=DTYPE) * 1.5,
                      0).tolist()
    chosen = [0, 2, 3, 5]
    r1, r2 = set_ratios(torch.tensor([p[i] for i in chosen], dtype=DTYPE).log().view(1, 4, 1))
    for a, s in enumerate(chosen):
        rest = [t for t in chosen if t != s]
        expected = set_probability(rest, p, (s,)) / set_probability(chosen, p)
        assert r1[0, a, 0].item() == pytest.approx(expected, rel=1e-9)
        for b, t in enumerate(chosen):
            pair = set_probability([u for u in rest if u != t], p, (s, t)) / set_probability(rest, p, (s,))
            assert r2[0, a, b, 0].item() == pytest.approx(1.0 if s == t else pair, rel=1e-9)


@pytest.mark.parametrize(("name", "kind"), EVERY)
def test_an_estimator_reads_tau_exactly_when_it_declares_so(name: str, kind: str, seed: int) -> None:
    """``reads_tau`` (what the progress bar and the tau checks go by) is true to the code: with the
    same noise, tau = 1 and tau = 2 give an estimator that declares it reads tau other gradients,
    and one that does not the same surrogate and gradients, exactly."""
    model, x = problem(kind, seed)

    def draw(tau: float) -> tuple[Tensor, ...]:
        estimator = build(name, kind)
        logits = model.encode(x).detach().requires_grad_(True)
        surrogate, _ = estimator(logits, lambda z: model.reconstruction_loss(z, x),
                                 rng=ReplicaGenerator([seed]), tau=tau, context=x)
        return (surrogate, *torch.autograd.grad(surrogate.sum(), logits))

    one, two = draw(1.0), draw(2.0)
    same = all(torch.equal(a, b) for a, b in zip(one, two))
    declared = BUILT_IN[name].reads_tau
    assert same != declared, (f"{name}: reads_tau={declared}, yet tau {'did not move' if same else 'moved'} "
                              f"its gradient")


@pytest.mark.parametrize("name", ESTIMATOR_NAMES)
def test_the_plain_tensor_call_checks_its_inputs_as_the_config_does(name: str) -> None:
    """One ``ValueError`` naming the argument: flat logits, integer logits, and for an estimator that
    reads tau a tau <= 0 or infinite (the config refuses those too)."""
    k = 4 if "categorical" in BUILT_IN[name].kinds else 2
    estimator = build_estimator(name, latent_shape=(3, k), context_dim=DATA_DIM)
    f = lambda z: z.sum((-1, -2))                                           # noqa: E731
    with pytest.raises(ValueError,
                       match=r"^logits: .*needs \[B, 3, \d+\] or \[R, B, 3, \d+\].*got shape \(4, "):
        estimator(torch.randn(4, 3 * k), f)
    with pytest.raises(ValueError, match="^logits: .*floating-point"):
        estimator(torch.zeros(4, 3, k, dtype=torch.long), f, context=torch.randn(4, DATA_DIM))
    for tau in (0.0, -1.0, math.inf):
        if BUILT_IN[name].reads_tau:
            with pytest.raises(ValueError, match=f"^tau: .*must be > 0 and finite, got {tau}"):
                estimator(torch.randn(4, 3, k), f, tau=tau, context=torch.randn(4, DATA_DIM))


def test_the_catalogue_is_generated_from_the_declarations_and_the_page_shows_it(tmp_path, monkeypatch):
    """vae/estimators/README.md "Estimators" shows :func:`vae.estimators.catalogue` as it is: one
    row per registered name, its "biased?" cell "no" exactly where the class declares ``unbiased``;
    ``python -m experiments.catalogue`` rewrites the block, a plugin's estimator getting a row from
    its docstring, and refuses a page without the markers (exit 2, the page untouched)."""
    from experiments import catalogue as catalogue_cli
    from vae.estimators import catalogue

    page = Path(__file__).resolve().parents[1] / "vae" / "estimators" / "README.md"
    shown = re.search(r"<!-- catalogue -->\n(.*?)<!-- /catalogue -->", page.read_text(), flags=re.S)
    assert shown is not None and shown.group(1) == catalogue(), "run: python -m experiments.catalogue"
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| .*? \| (yes|no)\b[^|]*\| [^|]*\|$", shown.group(1), flags=re.M)
    assert [name for name, _ in rows] == sorted(BUILT_IN, key=column_order)
    assert all((biased == "no") == BUILT_IN[name].unbiased for name, biased in rows)

    (tmp_path / "plugin_for_catalogue.py").write_text(
        'from vae.estimators import register\nfrom vae.estimators.rloo import RLOO\n\n\n'
        '@register("rloo-copy")\nclass Copy(RLOO):\n    """RLOO | copied, for a test."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    copy = tmp_path / "README.md"
    copy.write_text("before\n<!-- catalogue -->\nstale\n<!-- /catalogue -->\nafter\n")
    assert catalogue_cli.main(["--plugins", "plugin_for_catalogue", "--readme", str(copy)]) == 0
    text = copy.read_text()
    assert (text.startswith("before\n<!-- catalogue -->\n| name |")
            and text.endswith("<!-- /catalogue -->\nafter\n"))
    assert "| `rloo-copy` | RLOO \\| copied, for a test. | no | — |" in text and "stale" not in text
    copy.write_text("no markers\n")
    assert catalogue_cli.main(["--readme", str(copy)]) == 2 and copy.read_text() == "no markers\n"
    assert catalogue_cli.main(["--plugins", "no_such_module_here", "--readme", str(copy)]) == 2
    assert copy.read_text() == "no markers\n"


@pytest.mark.parametrize(("kind", "num_classes"), [("bernoulli", 2), ("categorical", 3)])
def test_reinmax_at_tau_one_is_zgr(kind: str, num_classes: int) -> None:
    """Algebra, so in float64 on the same draws: at tau = 1 ReinMax's Jacobian of the one-hot z,
    2 J(pi_1) - J(p)/2 with pi_1 = (z + p)/2 and J(v) = diag(v) - v v^T, is
    diag(z) + diag(p)/2 - (z z^T + z p^T + p z^T)/2, and ZGR's, (J(p) + (z - p)(z - p)^T)/2, is
    diag(p)/2 + (z z^T - z p^T - p z^T)/2: they differ by diag(z) - z z^T, which is 0 for a
    one-hot z. (Why the two rows of the 2020 board agree to round-off.)"""
    model, x = make_toy_problem(kind, 3, num_classes, dtype=torch.float64)
    grads = {name: draw_gradients(model, build_estimator(name, latent_shape=(3, num_classes),
                                                         context_dim=5).double(),
                                  x, tau=1.0, num_draws=8, seed=1) for name in ("zgr", "reinmax", "st")}
    for group in ("encoder", "decoder"):
        torch.testing.assert_close(grads["reinmax"][group], grads["zgr"][group], rtol=1e-12, atol=1e-14)
    # the draws can tell estimators apart
    assert not torch.allclose(grads["st"]["encoder"], grads["zgr"]["encoder"])


#: The authors' package, PyPI ``redge`` 0.1.0, read from its wheel (never installed) and pinned.
REDGE_WHEEL = ("redge==0.1.0", "ca6f3aa5a86c13d8c33f89da455ea51fd19538784bc055e29d023dc5906d465d")


class GivenNoise(NoiseSource):
    """Hands out given normal draws and uniform ones, in order (one replica)."""

    def __init__(self, normals: list[Tensor], uniforms: list[Tensor]):
        self.normals, self.uniforms = list(normals), list(uniforms)

    def __len__(self) -> int:
        return 1

    def normal(self, shape):
        return self.normals.pop(0).reshape(shape)

    def uniform(self, shape):
        return self.uniforms.pop(0).reshape(shape)


@pytest.fixture(scope="module")
def redge_package(tmp_path_factory) -> Path:
    """The wheel's files, fetched with ``pip download`` and checked against the pinned sha256;
    the test is skipped, saying why, where the package index cannot be reached."""
    import hashlib
    import subprocess
    import sys
    import zipfile

    where = tmp_path_factory.mktemp("redge")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(where),
                           REDGE_WHEEL[0]], capture_output=True, text=True, timeout=300)
    wheels = sorted(where.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"pip download {REDGE_WHEEL[0]} failed: the package index is not reachable here "
                    f"({(done.stderr.strip().splitlines() or ['no wheel'])[-1]})")
    assert hashlib.sha256(wheels[0].read_bytes()).hexdigest() == REDGE_WHEEL[1]
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(where / "files")
    return where / "files"


@pytest.mark.parametrize("name, theirs_in", [("redge", "ddim.redge"), ("redge-cov", "redge_cov.redge_cov"),
                                             ("reindge", "reindge.reindge")])
@pytest.mark.parametrize("steps, t_1", [(5, 0.5), (2, 0.3), (9, 0.9)])
def test_redge_is_the_authors_package_s_redge_on_the_same_noise(redge_package, monkeypatch, name, theirs_in,
                                                                steps, t_1):
    """The estimator the trainer runs against its function in the authors' package: the same
    Gaussian start and Gumbel draws (theirs ``-log E``, E exponential; ours ``-log(-log u)`` from
    ``u = exp(-E)``) give the same one-hot sample and the same gradient of a linear f, in float64.
    Their ReinDGE at 2 steps gives the logits no gradient (its sample does not depend on them, so
    the hook that adds the last step's term never runs; vae/estimators/reindge.py): there the
    samples agree and ours has the last step's term alone."""
    import types

    package = types.ModuleType("redge")                 # its modules without its __init__ (which
    package.__path__ = [str(redge_package / "redge")]   # imports the reinmax package)
    monkeypatch.setitem(sys.modules, "redge", package)
    module, function, before = *theirs_in.split("."), set(sys.modules)
    module_of_theirs = importlib.import_module(f"redge.{module}")
    sample = getattr(module_of_theirs, function)
    for loaded in set(sys.modules) - before:           # their modules gone again
        del sys.modules[loaded]

    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)         # their schedule and draws in float64 as well
        try:
            logits = torch.randn(7, 5, 6, generator=torch.Generator().manual_seed(steps)).requires_grad_()
            weights = torch.randn(7, 5, 6, generator=torch.Generator().manual_seed(11))
            torch.manual_seed(0)
            extra = {"reindge_fn": module_of_theirs.ddim_mod} if name == "reindge" else {}
            theirs = sample(logits, n_steps=steps, t_1=t_1, hard=True, **extra)
            (weights * theirs).sum().backward()   # their ReinDGE adds its term in a hook on logits
            their_grad, logits.grad = logits.grad, None
            torch.manual_seed(0)                       # their draws again: the start, then the Gumbels
            start = torch.randn(7, 5, 6)
            exponential = torch.empty(7, 5, 6).exponential_()
        finally:
            torch.set_default_dtype(torch.float32)
    ours = build_estimator(estimator_config(name, denoising_steps=steps, t_1=t_1), latent_shape=(5, 6))
    seen = []
    surrogate, _ = ours(logits, lambda z: seen.append(z.detach()) or (weights * z).sum((-1, -2)),
                        rng=GivenNoise([start], [torch.exp(-exponential)]))
    (our_grad,) = torch.autograd.grad(surrogate.sum(), logits)
    assert torch.equal(seen[0], theirs.detach())
    if (name, steps) == ("reindge", 2):
        assert their_grad is None and bool(our_grad.abs().sum() > 0)
        return
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-9, atol=1e-12)
