"""The training objective exactly as the trainer computes it, shared with the diagnostics and tests.

Per example, with the posterior logits ``l = a * encoder(x)`` (``a`` the estimator's
:meth:`~vae.estimators.base.Estimator.logit_scale`, 1 except for slope-annealed ST):

    loss = surrogate(l, f) + KL(q(z | x) || p(z)),    f(z) = -log p(x | z)

whose value is a single-sample negative ELBO for hard-sample estimators (a relaxed objective,
not a bound, for ``gs``) and whose gradient is the estimator's estimate of the negative ELBO's
gradient. For a multi-sample-bound estimator (``vimco``) f is the whole negative log-weight
``-log p(x | z) - log p(z) + log q(z | x)`` and the loss is the estimator's negative k-sample
bound, with no KL added. If the estimator asks for variance normalisation
(:meth:`~vae.estimators.base.Estimator.encoder_gradient_scale`, ``s [R]``), the logits pass
through :func:`vae.estimators.glue.run_estimator` first, so the *whole* encoder gradient -- the estimator's
and the KL's -- is divided by ``s``, while the decoder's and the prior's are not.
"""

from __future__ import annotations

from torch import Tensor

from vae.estimators import Estimator
from vae.estimators.glue import run_estimator
from vae.models.discrete_vae import DiscreteVAE
from vae.numerics.gumbel import log_prob_one_hot
from vae.numerics.replicas import ReplicaGenerator


def training_loss(model: DiscreteVAE, estimator: Estimator, x: Tensor, *, rng: ReplicaGenerator,
                  tau: float | Tensor, step: int,
                  kl: str = "analytic") -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The per-example training loss ``[R, B]``, its KL term ``[R, B]`` (detached) and the
    estimator's info, for a batch ``x [R, B, D]`` at ``step``.

    ``kl`` is ``analytic`` or ``relaxed`` (a one-sample Monte Carlo KL between Concrete
    distributions, for ``gs``). Sets ``model.logit_scale`` to the estimator's slope at ``step``.
    The info adds ``decoder_evals``: how many times the decoder ran per example (its cost, for
    comparisons at equal compute).
    """
    model.logit_scale.fill_(estimator.logit_scale(step))

    def objective(logits: Tensor):
        def f(z: Tensor) -> Tensor:
            loss = model.reconstruction_loss(z, x)                             # [R, *S, B]
            if estimator.multi_sample_bound:         # the whole negative log-weight -log p(x, z) / q(z | x)
                loss = loss - model.log_prior(z) + log_prob_one_hot(logits, z)
            return loss
        return f

    # logits [R, B, N, K], surrogate [R, B]
    logits, surrogate, info = run_estimator(estimator, model.encode(x), objective, rng=rng, tau=tau,
                                            step=step, context=x)
    kl_term = model.kl(logits) if kl == "analytic" else model.relaxed_kl(logits, tau, rng)
    if estimator.multi_sample_bound:                 # the KL is inside the bound; logged, not added
        return surrogate, kl_term.detach(), info
    return surrogate + kl_term, kl_term.detach(), info
