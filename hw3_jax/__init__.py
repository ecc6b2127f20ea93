"""hw3-jax: a JAX/Flax reimplementation of a homework on sequence models."""

__version__ = "0.1.0"
