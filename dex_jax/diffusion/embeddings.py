"""Sinusoidal timestep embedding and diffusers' TimestepEmbedding MLP (linear_1, SiLU, linear_2)."""

import math

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.nn.layers import dense


def timestep_embedding(timesteps, dim, flip_sin_to_cos=False, freq_shift=1.0, max_period=10000.0):
    """(B,) timesteps -> (B, dim) float32 [sin, cos] features; `flip_sin_to_cos` puts cos first.

    Frequencies are exp(-log(max_period) * i / (dim/2 - freq_shift)), i = 0 .. dim/2 - 1, as diffusers'
    get_timestep_embedding; an odd `dim` gets one trailing zero.
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    angles = jnp.asarray(timesteps, jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2, mapping sinusoidal features to the UNet's time embedding."""

    features: int
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        x = dense(self.features, dtype=self.dtype, axes=("embed", "mlp"), name="linear_1")(x)
        return dense(self.features, dtype=self.dtype, axes=("mlp", "embed"), name="linear_2")(nn.silu(x))
