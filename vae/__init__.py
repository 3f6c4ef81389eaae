"""Discrete-latent VAEs with Gumbel-softmax and its rivals: the library behind experiments/."""
