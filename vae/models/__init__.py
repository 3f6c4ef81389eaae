"""The three models of the paper's Section 4 with their losses and held-out numbers: the VAE (discrete_vae,
objectives), the stochastic binary network (sbn), the semi-supervised M2 (m2), and the bounds they share
(evaluation)."""
