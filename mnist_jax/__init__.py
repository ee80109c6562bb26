"""The JAX mirror of `mnist_torch`: a jit-compiled Flax CNN trained with optax SGD."""
