"""Semi-supervised classification with M2 (Section 4.3): the marginal objective against an
enumeration of the classes, the class frequencies of sampled y, the importance-weighted bound
against torch's densities, the labelled set, replica independence, the task end to end, and the
classifier-gradient measurement of ``experiments.ssl_gradients`` (exact for the marginal, unbiased
for RLOO, biased for ST-GS).

Exact checks use a tiny M2 (conv channels 4, 4, 4; D = 3) with the z noise fixed, so the marginal
objective and the per-class single-sample objectives see the same draws. The frequency test is a
z-test per class: 20,000 draws of y for one image, Bonferroni over the C = 10 classes at
family-wise level 1e-3 (|count - N pi_c| <= z * sqrt(N pi_c (1 - pi_c))).
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from conftest import estimator_config, float32_rtol, run_main, small_networks
from vae.config import ConfigError, SSLConfig, load_config
from vae.data.images import BinarizedImages
from vae.estimators import ESTIMATORS, build_estimator
from vae.models import m2
from vae.numerics.replicas import ReplicaConv2d, ReplicaGenerator, from_groups, to_groups
from vae.store.run_dir import read_metrics
from vae.training.tasks import check
from vae.training.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[1]
C, D, CHANNELS = 10, 3, [4, 4, 4]
NUM_DRAWS = 20_000
ALPHA = 1e-3
TWO_RANDOM_CLASSES = ["ssl.labels=random", "ssl.num_classes=2"]


def ssl_overrides(out_dir: Path) -> list[str]:
    """A semi-supervised run of seconds on a CPU: tiny networks, 2 labelled images per class."""
    return [f"out_dir={out_dir}", "task=ssl", "experiment=ssl_m2", "ssl.channels=[4,4,4]", "ssl.latent_dim=3",
            "ssl.num_labelled=20", "ssl.labelled_batch_size=10", "data.batch_size=20", "steps=12",
            "log_every=2", "checkpoint_every=4", "eval.every=6", "eval.batch_size=1000", "eval.iw_samples=4",
            "eval.iw_examples=20", "eval.curve_examples=200", "tau.update_every=2", "tau.rate=0.05"]


class FixedNoise:
    """Stands in for the generator of z's noise: ``normal(shape)`` returns the given ``eps``."""

    def __init__(self, eps: Tensor):
        self.eps = eps

    def __len__(self) -> int:                                                 # the replicas
        return self.eps.shape[0]

    def normal(self, shape: torch.Size) -> Tensor:
        assert tuple(shape) == tuple(self.eps.shape), (shape, self.eps.shape)
        return self.eps


class ZeroNoise(ReplicaGenerator):
    """Generators whose ``normal(shape)`` is zeros: z = mu, so f(y) is a deterministic function of y
    and the exact gradient over y a closed form; y is drawn with the generators' uniforms."""

    def __init__(self, seed: int = 0):
        super().__init__([seed])

    def normal(self, shape: torch.Size) -> Tensor:
        return torch.zeros(shape)


def tiny(seed: int = 0, batch: int = 3, dtype: torch.dtype = torch.float32) -> tuple[m2.M2, Tensor]:
    model = m2.M2(C, D, CHANNELS, ReplicaGenerator([seed])).to(dtype)
    x = (torch.rand(1, batch, 784, generator=torch.Generator().manual_seed(seed)) < 0.3).to(dtype)
    return model, x


def one_hot(c: int, batch: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return F.one_hot(torch.full((1, batch), c), C).to(dtype)                # [1, B, C]


def test_replica_convolutions_are_r_independent_convolutions():
    rng = ReplicaGenerator([3, 4, 5])
    x = torch.randn(3, 2, 2 * 7 * 7, dtype=torch.float64)                     # [R, M, C_in * H * W]
    for transposed, conv in ((False, F.conv2d), (True, F.conv_transpose2d)):   # float64: the algebra
        layer = ReplicaConv2d(2, 5, 3, 2, 1, rng, transposed=transposed).double()
        out = from_groups(layer(to_groups(x, 2, 7)), 3)                       # [R, M, C_out * H' * W']
        for r in range(3):
            alone = conv(x[r].reshape(2, 2, 7, 7), layer.weight[r], layer.bias[r], stride=2, padding=1)
            torch.testing.assert_close(out[r], alone.flatten(1))


def test_marginal_objective_is_the_expectation_over_the_ten_classes_of_the_single_sample_objective():
    """-U(x) = sum_c q(c | x) f(c) + KL(q(y | x) || uniform) = sum_c q(c | x) [-L(x, c)] - H(q(y | x)),
    class c's z drawn with the same noise eps_c in the three. Gradients: the style encoder's and
    the decoder's equal the enumeration's; the classifier's logits get the closed form
    q_c (f_c - E_q f) + q_c (log q_c - E_q log q). The point is the algebra, so it is computed in
    float64 (torch's float64 tolerances, rtol 1e-7: the sums of C = 10 terms of |f| ~ 500 nats round
    off near 1e-13, whatever kernels the CPU picks)."""
    model, x = tiny(batch=3, dtype=torch.float64)
    logits = model.classify(x).detach().requires_grad_()                      # [1, B, C]
    model.classify = lambda _: logits
    # [R, C, B, D]: one z per class
    eps = torch.randn(1, C, 3, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    marginal, kl, info = m2.unlabelled_loss(model, m2.marginal(C, 1), x, rng=FixedNoise(eps), tau=1.0, step=0)
    assert info["decoder_evals"].item() == C

    q = torch.softmax(logits, -1)
    from_x = model.style_features(x)
    single = torch.stack([m2.class_loss(model, x, from_x, one_hot(c, 3, x.dtype), FixedNoise(eps[:, c]))
                          for c in range(C)], -1)                             # f(c): [1, B, C]
    kl_uniform = (q * (q.log() + math.log(C))).sum(-1)
    enumerated = (q * single).sum(-1) + kl_uniform
    torch.testing.assert_close(marginal, enumerated)
    torch.testing.assert_close(kl, kl_uniform.detach())
    labelled = torch.stack([m2.labelled_loss(model, x, torch.full((1, 3), c), FixedNoise(eps[:, c]))[0]
                            for c in range(C)], -1)                           # -L(x, c): [1, B, C]
    torch.testing.assert_close(marginal, (q * labelled).sum(-1) + (q * q.log()).sum(-1))

    generative = [p for name, p in model.named_parameters() if not name.startswith("classifier")]
    got = torch.autograd.grad(marginal.sum(), [logits, *generative], retain_graph=True)
    for g, want in zip(got[1:], torch.autograd.grad(enumerated.sum(), generative)):
        torch.testing.assert_close(g, want)
    f, log_q = single.detach(), q.detach().log()
    closed_form = q.detach() * (f - (q.detach() * f).sum(-1, keepdim=True)
                                + log_q - (q.detach() * log_q).sum(-1, keepdim=True))
    torch.testing.assert_close(got[0], closed_form)


@pytest.mark.parametrize("name", ["gs", "st-gs"])
def test_sampled_y_has_the_class_frequencies_of_q(name: str):
    """The y that reaches q(z | x, y) and p(x | y, z) is drawn from q(y | x): argmax counts of
    20,000 draws within the Bonferroni z bound of N pi_c for every class (st-gs: exactly one-hot;
    gs: relaxed, on the simplex)."""
    model, x = tiny(batch=1)
    pi = torch.softmax(torch.linspace(-1.5, 1.5, C), 0)                       # 0.03 .. 0.26
    with torch.no_grad():                                                     # q(y | x) = pi for every x
        model.classifier_out.weight.zero_()
        model.classifier_out.bias.copy_(pi.log())
    seen = []
    decode = model.decode
    model.decode = lambda y, z: seen.append(y.detach()) or decode(y, z)
    m2.unlabelled_loss(model, build_estimator(name, latent_shape=(1, C)), x.expand(1, NUM_DRAWS, -1),
                       rng=ReplicaGenerator([7]), tau=0.5, step=0)
    (y,) = seen                                                               # one pass: [1, N, C]
    torch.testing.assert_close(y.sum(-1), torch.ones(1, NUM_DRAWS))
    assert bool(((y == 0) | (y == 1)).all()) == (name == "st-gs")
    counts = torch.bincount(y[0].argmax(-1), minlength=C).float()
    z_crit = torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * C), dtype=torch.float64)).item()
    z = (counts - NUM_DRAWS * pi).abs() / (NUM_DRAWS * pi * (1 - pi)).sqrt()
    assert z.max().item() <= z_crit, f"{name}: class z-scores {z.tolist()} > {z_crit:.2f}"


def admitted(name: str) -> bool:
    """Whether the config takes ``ssl.y=name`` for C = 10 (at a constant tau of 1, which reinmax needs)."""
    try:
        check(load_config(None, ["task=ssl", f"ssl.y={name}", "tau.schedule=constant"]))
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if admitted(n)])
def test_every_admitted_estimator_gives_a_finite_loss_and_gradient(name: str):
    model, x = tiny(batch=4)
    estimator = build_estimator(estimator_config(name, **small_networks(name)), latent_shape=(1, C),
                                context_dim=784)
    labelled_y = torch.arange(4).unsqueeze(0)
    loss, kl, info = m2.training_loss(model, estimator, x, x, labelled_y, rng=ReplicaGenerator([3]), tau=1.0,
                                      step=0, alpha=0.1)
    assert loss.shape == kl.shape == (1, 4) and bool(torch.isfinite(loss).all())
    grads = torch.autograd.grad(loss.mean(), list(model.parameters()))
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def test_importance_weighted_bound_is_the_sum_over_classes_of_torch_densities():
    """m = 2 with fixed noise: -log sum_y p(y) (1/m) sum_i p(x | y, z_iy) N(z_iy; 0, I) / N(z_iy; mu,
    sigma^2), in float64 (the algebra; torch's float64 tolerances)."""
    model, x = tiny(batch=3, dtype=torch.float64)
    data = BinarizedImages({"test": x[0]}, "static")
    # [R, m, C, B, D]
    eps = torch.randn(1, 2, C, 3, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    bound = m2.importance_weighted_bound(model, data, "test", FixedNoise(eps), num_samples=2, batch_size=3)
    with torch.no_grad():
        from_x = model.style_features(x)
        log_w = torch.zeros(2, C, 3, dtype=torch.float64)
        for c in range(C):
            mu, log_var = model.style(from_x, one_hot(c, 3, x.dtype))        # [1, B, D]
            q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
            for i in range(2):
                z = q.mean + q.stddev * eps[:, i, c]
                log_px = -F.binary_cross_entropy_with_logits(model.decode(one_hot(c, 3, x.dtype), z), x,
                                                             reduction="none").sum(-1)
                log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
                log_w[i, c] = (log_px + log_pz - q.log_prob(z).sum(-1) - math.log(C))[0]
    want = -(torch.logsumexp(log_w.flatten(0, 1), 0) - math.log(2)).mean()
    torch.testing.assert_close(bound, want.reshape(1))


def test_labelled_set_is_balanced_chosen_by_the_seed_and_visited_once_per_epoch(shared_cache, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    data = BinarizedImages.load("static", "cpu", log=lambda _: None)
    labels = data.labels["train"]
    chosen = m2.LabelledSet.choose(data.splits["train"], labels, [0, 1], 30, C, dynamic=False)
    assert chosen.x.shape == (2, 30, 784) and chosen.y.shape == (2, 30)
    index = torch.stack([m2.labelled_indices(labels, seed, 3, C) for seed in (0, 1)])
    assert torch.equal(chosen.y, labels[index]) and torch.equal(chosen.x, data.splits["train"][index])
    for r in range(2):
        assert (torch.bincount(chosen.y[r], minlength=C).tolist() == [3] * C
                and len(set(index[r].tolist())) == 30)
    assert set(index[0].tolist()) != set(index[1].tolist())                  # each seed its own images
    batches = [chosen.batch(step, 10, ReplicaGenerator([0, 1])) for step in range(3)]   # one epoch
    for r in range(2):
        rows = torch.cat([x[r] for x, _ in batches])
        assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, chosen.x[r].tolist()))
        assert torch.equal(torch.cat([y[r] for _, y in batches]).sort().values, chosen.y[r].sort().values)
    random = m2.class_labels(data, "valid", SSLConfig(labels="random", num_classes=37))
    assert random.shape == (10_000,) and set(random.tolist()) == set(range(37))


def metric_table(run_dir: Path) -> dict[tuple, float]:
    return {(r["step"], r["split"], r["metric"], r["seed"]): r["value"] for r in read_metrics(run_dir)}


def test_replica_r_of_a_multi_seed_ssl_run_equals_the_single_seed_run(shared_cache, tmp_path, monkeypatch):
    """st-gs with dynamic binarization (noise in y, z and the pixels of both batches); two random
    classes keep the evaluations (every image through the decoder once per class) short."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    base = ssl_overrides(tmp_path) + ["ssl.y=st-gs", "data.binarization=dynamic", *TWO_RANDOM_CLASSES]
    both = metric_table(train(load_config(None, base + ["seeds=[4,9]"]), tmp_path / "both", progress=False))
    alone = metric_table(train(load_config(None, base + ["seeds=[9]"]), tmp_path / "alone", progress=False))
    from_both = {k: v for k, v in both.items() if k[3] == 9}
    assert from_both.keys() == alone.keys() and len(alone) > 20
    # float tolerance: grouped convolutions may sum in another order; one step's loss sums 784
    # pixels of 20 + 10 images (float32_rtol, tests/conftest.py), near-zero values absolutely
    for key, value in alone.items():
        assert from_both[key] == pytest.approx(value, rel=float32_rtol(784 * 30), abs=1e-4), key
    for metric in ("neg_elbo", "accuracy"):   # the curves: every eval.every steps, on both held-out splits
        assert ({(k[0], k[1]) for k in alone if k[2] == metric}
                == {(s, split) for s in (6, 12) for split in ("valid", "test")})


def test_a_trainer_restored_from_its_state_continues_exactly(shared_cache, tmp_path, monkeypatch):
    """Resuming is exact: the labelled set (buffers not saved) is rebuilt from the seeds, its
    batches are a function of the step, and the generators' states are in the checkpoint."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, ssl_overrides(tmp_path) + ["ssl.y=gs", "data.binarization=dynamic", "seeds=[1,2]",
                                                       *TWO_RANDOM_CLASSES])
    first = Trainer(cfg, log=lambda _: None)
    for _ in range(3):
        first.train_step()
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)
    saved.seek(0)
    second = Trainer(cfg, log=lambda _: None)
    second.load_state_dict(torch.load(saved, weights_only=True))
    # across an epoch of labelled batches
    for _ in range(3):
        assert torch.equal(first.train_step()[0], second.train_step()[0])


def test_ssl_trains_mnist_labels_with_y_marginalised_through_the_harness(shared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, ssl_overrides(tmp_path) + ["eval.every=12"])
    summary = json.loads((train(cfg, tmp_path / "run", progress=False) / "summary.json").read_text())
    assert summary["estimator"] == "marginal" and summary["final_metric"] == "test/iw_bound"
    assert_finished(summary, decoder_evals=10)


def assert_finished(summary: dict, decoder_evals: int) -> None:
    """Finite training losses and final metrics; the bound with y summed tighter than the ELBO."""
    for key in ("train/loss", "train/kl", "train/est/labelled_nelbo", "train/est/labelled_ce",
                "valid/neg_elbo", "valid/accuracy", "test/neg_elbo", "test/accuracy", "test/iw_bound"):
        assert all(math.isfinite(v) for v in summary[key]["per_seed"]), key
    assert all(0 <= a <= 1 for a in summary["test/accuracy"]["per_seed"])
    assert set(summary["train/est/decoder_evals"]["per_seed"]) == {decoder_evals}
    # m = 4, in expectation
    assert summary["test/iw_bound"]["mean"] <= summary["test/neg_elbo"]["mean"] + 1.0


def test_cli_trains_the_ssl_config_with_gs_and_random_labels(shared_cache, tmp_path):
    done = run_main("experiments.train", ["--no-progress", "--config", "configs/ssl_m2.yaml",
                                          *ssl_overrides(tmp_path), "ssl.y=gs", "eval.every=12",
                                          "ssl.labels=random", "ssl.num_classes=4"], shared_cache)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = Path(next(line for line in done.stdout.splitlines()
                        if line.startswith("results: ")).removeprefix("results: "))
    assert run_dir.parent.name == "ssl_m2" and run_dir.name.startswith("gs__exp__")
    assert re.search(r"^test/accuracy 0\.\d\d \(1 seed\)$", done.stdout, re.M), done.stdout
    assert_finished(json.loads((run_dir / "summary.json").read_text()), decoder_evals=1)


@pytest.mark.parametrize("override, message", [
    ("ssl.y=magic", r"^ssl\.y: unknown 'magic'; allowed: marginal, exact, gs"),
    ("task=ssl ssl.y=vimco",
     r"^ssl\.y: 'vimco' is for task vae, not ssl; for task ssl with categorical latents use exact, gs, "),
    ("task=ssl ssl.y=arm", r"^ssl\.y: 'arm' is for bernoulli latents, not categorical ones; for task ssl"),
    ("ssl.num_classes=1 ssl.labels=random", r"^ssl\.num_classes: must be >= 2"),
    ("ssl.num_classes=20", r"^ssl\.num_classes: MNIST's labels have 10 classes, got 20"),
    ("ssl.labels=cifar", r"^ssl\.labels: 'cifar'; allowed: mnist, random"),
    ("ssl.num_labelled=105", r"^ssl\.num_labelled: must be a positive multiple of ssl\.num_classes=10"),
    ("ssl.labelled_batch_size=200", r"^ssl\.labelled_batch_size: must be in \[1, ssl\.num_labelled=100\]"),
    ("ssl.alpha=-0.1", r"^ssl\.alpha: must be >= 0"),
    ("ssl.alpha=lots", r"^ssl\.alpha: expected float"),
    ("ssl.latent_dim=0", r"^ssl\.latent_dim: must be >= 1"),
    ("ssl.channels=[8,8]", r"^ssl\.channels: must be three positive sizes"),
    ("task=ssl gradvar_every=10", r"^gradvar_every: .* set 0 for task=ssl"),
    ("task=ssl kl=relaxed", r"^kl: task 'ssl' has the analytic KLs"),
])
def test_invalid_ssl_values_name_the_key(override, message):
    """Through the config's rules and then its task's (vae.training.tasks.check), as every run passes them."""
    with pytest.raises(ConfigError, match=message) as info:
        check(load_config(None, override.split()))
    assert "\n" not in str(info.value)


def test_more_labelled_images_than_a_class_holds_is_a_config_error(shared_cache, monkeypatch):
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    cfg = load_config(None, ["task=ssl", "ssl.num_labelled=50000", "device=cpu"])
    with pytest.raises(ConfigError, match=r"^ssl\.num_labelled: class \d has \d+ training images, fewer than "
                                          r"num_labelled / C = 5000$"):
        Trainer(cfg, log=lambda _: None)


def exact_logit_gradient(model: m2.M2, x: Tensor) -> tuple[Tensor, float]:
    """The gradient of -U(x) with respect to the logits of q(y | x) at z = mu (:class:`ZeroNoise`), in
    closed form: q_c (f_c - E_q f) + q_c (log q_c - E_q log q), ``[1, B, C]``; and a bound on the
    round-off of sums of C terms of size |f| in the model's dtype (C * 100 eps max |f|: 2e-13 |f|
    in float64, where the tests below compute)."""
    with torch.no_grad():
        q = torch.softmax(model.classify(x), -1)
        from_x = model.style_features(x)
        f = torch.stack([m2.class_loss(model, x, from_x, one_hot(c, x.shape[1], x.dtype), ZeroNoise())
                         for c in range(C)], -1)
    a = f + q.log()
    return q * (a - (q * a).sum(-1, keepdim=True)), C * 100 * torch.finfo(x.dtype).eps * f.abs().max().item()


def test_logit_gradients_of_the_marginal_are_the_closed_form_for_every_draw_and_digit():
    """With z = mu the summed objective is deterministic: each of 5 draws, computed two or one copies
    of the batch per pass, is the closed-form gradient of each digit (a mixed-up digit or draw fails:
    the class enters the decoder 30x more strongly than at initialisation, so that the digits'
    gradients differ by over 10x the round-off). In float64: the point is the algebra."""
    model, x = tiny(batch=3, dtype=torch.float64)
    with torch.no_grad():
        model.decoder[0].weight[:, :C] *= 30                                  # [R, C + D, c3, 4, 4]: y's rows
    draws = m2.logit_gradients(model, m2.marginal(C, 1), x, rng=ZeroNoise(), tau=1.0, step=0, draws=5,
                               images_per_pass=6)
    assert draws.shape == (5, 1, 3, C)
    want, round_off = exact_logit_gradient(model, x)
    assert (want[0, 0] - want[0, 1]).abs().max() > 10 * round_off            # a swap of digits would fail
    for draw in draws:
        torch.testing.assert_close(draw, want, rtol=0, atol=round_off)


def test_logit_gradients_of_rloo_are_unbiased():
    """RLOO (4 samples of y) is unbiased: the mean of 4,000 draws of its logit gradient is the closed
    form within z * SE per coordinate (SE = sample std / sqrt(4000)), Bonferroni over the B * C = 20
    coordinates at family-wise level 1e-3. ST-GS on the same digits is biased: its mean is farther
    than that (and the check would see it). In float64, so no float32 kernel moves a z-score."""
    model, x = tiny(batch=2, dtype=torch.float64)
    want = exact_logit_gradient(model, x)[0][0]                               # [B, C]
    z_crit = torch.special.ndtri(torch.tensor(1 - ALPHA / (2 * 2 * C), dtype=torch.float64)).item()

    def z_scores(name: str) -> Tensor:
        draws = m2.logit_gradients(model, build_estimator(name, latent_shape=(1, C)), x, rng=ZeroNoise(5),
                                   tau=1.0, step=0, draws=4000)[:, 0]        # [D, B, C]
        se = draws.std(0) / math.sqrt(draws.shape[0])
        return (draws.mean(0) - want).abs() / se

    assert z_scores("rloo").max().item() <= z_crit
    assert z_scores("st-gs").max().item() > z_crit


def test_gradient_agreement_measures_cosine_top_class_bias_and_spread():
    """On constructed draws of one replica's two images (exact norms sqrt(6) and 5; the batch's sqrt(31))."""
    exact = torch.tensor([[[1.0, -2.0, 1.0], [0.0, 3.0, -4.0]]])               # [R=1, B=2, C=3]
    v = torch.tensor([[[0.5, 0.5, -1.0], [3.0, 0.0, 0.0]]])                   # ||v|| = sqrt(10.5)
    # mean exact, each draw off by v
    stats = m2.gradient_agreement(torch.stack([exact + v, exact - v]), exact)
    assert stats == pytest.approx({"cosine": 1.0, "top_class": 1.0, "bias": 0.0,
                                   "spread": math.sqrt(10.5 / 31)})
    stats = m2.gradient_agreement(-exact.unsqueeze(0), exact)                 # the opposite direction
    assert stats == pytest.approx({"cosine": -1.0, "top_class": 0.0, "bias": 2.0, "spread": 0.0})
    swapped = exact.clone()
    swapped[0, 1] = torch.tensor([0.0, -4.0, 3.0])                            # image 2 raises another class
    stats = m2.gradient_agreement(swapped.unsqueeze(0), exact)
    # image 1's share of the norm
    assert stats["top_class"] == pytest.approx(math.sqrt(6) / (math.sqrt(6) + 5))
    assert (stats["cosine"] == pytest.approx((6 - 24) / 31)
            and stats["bias"] == pytest.approx(math.sqrt(98 / 31)))
    # an image with no gradient at all
    flat = torch.zeros(1, 1, 3)
    stats = m2.gradient_agreement(torch.cat([exact, flat], 1).unsqueeze(0), torch.cat([exact, flat], 1))
    assert stats == pytest.approx({"cosine": 1.0, "top_class": 1.0, "bias": 0.0, "spread": 0.0})


def test_ssl_gradients_cli_tables_a_finished_run_and_rejects_bad_input(shared_cache, tmp_path, monkeypatch,
                                                                       capsys):
    from experiments.ssl_gradients import main

    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    run_dir = train(load_config(None, ssl_overrides(tmp_path) + ["ssl.y=st-gs"]), tmp_path / "run",
                    progress=False)
    out = tmp_path / "gradients.md"
    assert main([str(run_dir), "--estimator", "marginal", "--estimator", "st-gs@0.5", "--draws", "3",
                 "--examples", "4", "--results-dir", str(tmp_path), "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[:2] for row in rows] == [["| marginal, fresh z", "1"], ["| ST Gumbel-S.", "0.5"]]
    for row in rows:
        cosine, top, bias, spread = (float(v) for v in row.strip("| ").split(" | ")[2:])
        assert -1 <= cosine <= 1 and 0 <= top <= 100 and bias >= 0 and spread >= 0
    assert "--estimator marginal@1 --estimator st-gs@0.5 --draws 3 --examples 4" in out.read_text()
    capsys.readouterr()
    for args, message in [([str(run_dir), "--estimator", "nvil"],
                           "--estimator nvil: trains a state of its own"),
                          ([str(run_dir), "--estimator", "gs@0"], "--estimator gs@0: tau.tau0: must be > 0"),
                          ([str(tmp_path)], "not a finished run directory")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("y", ["marginal", "gs"])
def test_a_compiled_ssl_step_is_one_graph(shared_cache, tmp_path, monkeypatch, y):
    """compile=true for M2 (vae/training/compiled_step.py), Figure 5(a)'s two modes: ``torch._dynamo.explain``
    of the step from the task's batch (unlabelled and labelled images) on finds no graph break."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    trainer = Trainer(load_config(None, ssl_overrides(tmp_path) + [f"ssl.y={y}", "seeds=[0,1]", "device=cpu",
                                                                  "compile=true"]), log=lambda _: None)
    trainer.train_step()   # the first step plans the draws, eagerly
    batch = trainer.task.batch(trainer.model, trainer.data, 1, trainer.rng, trainer.cfg)
    assert trainer.compiled_step.graph_breaks(batch, 1) == []


@pytest.mark.slow
@pytest.mark.parametrize("y", ["marginal", "gs"])
def test_compiled_ssl_steps_compute_the_eager_steps_losses(shared_cache, tmp_path, monkeypatch, y):
    """compile=true changes M2's speed, not its numbers: compiled steps give the eager steps'
    losses, sums over the batch's 784-pixel images (float32_rtol of 784 x 20; atol: 1e-4 of the
    loss's scale). Slow (the convolutions' compilation: 30-50 s each here): ``make test-all``."""
    monkeypatch.setenv("VAE_DATA_DIR", str(shared_cache))
    base = ssl_overrides(tmp_path) + [f"ssl.y={y}", "seeds=[0,1]", "device=cpu"]
    eager, compiled = (Trainer(load_config(None, base + [f"compile={flag}"]), log=lambda _: None)
                       for flag in ("false", "true"))
    for _ in range(4):
        (loss, kl, _), (loss_c, kl_c, _) = (t.train_step() for t in (eager, compiled))
        torch.testing.assert_close(loss_c, loss, rtol=float32_rtol(784 * 20),
                                   atol=1e-4 * loss.abs().max().item())
        torch.testing.assert_close(kl_c, kl, rtol=float32_rtol(784 * 20), atol=1e-4)
