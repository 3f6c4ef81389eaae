"""``st-gs``, straight-through Gumbel-softmax (Jang et al. 2017): the forward pass uses
``one_hot(argmax y)`` (an exact sample of q), the backward pass the gradient of ``gs``'s relaxed
sample ``y``. Biased.
"""

from __future__ import annotations

from vae.estimators.gumbel_softmax import GumbelSoftmax
from vae.estimators.registry import register


@register("st-gs")
class STGumbelSoftmax(GumbelSoftmax):
    """``st-gs``: forward ``one_hot(argmax(logits + g))``, backward the gradient of ``gs``."""

    display_name = "ST Gumbel-S."
    paper_column = 6
    relaxed_kl = False
    reference = "Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017"
    one_hot_forward = True
    hard = True
    summary = "one-hot argmax(logits+g) forward, Gumbel-softmax gradient backward"
