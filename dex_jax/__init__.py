"""dex_jax: DeX-Portrait in JAX/Flax (motion trainer, diffusion animator, data, training, evaluation)."""

__version__ = "0.1.0"
