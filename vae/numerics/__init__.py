"""The replica axis (R seeds in one step: generators, layers) and the Gumbel numerics (noise, Gumbel-softmax,
the Concrete and one-hot densities, the working dtype)."""
