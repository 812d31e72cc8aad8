"""diffusers' ResnetBlock2D, Downsample2D and Upsample2D in NHWC, with diffusers' submodule names."""

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.nn.layers import conv2d, dense
from dex_jax.nn.norms import group_norm

IMAGE_AXES = ("batch", "height", "width", "embed")


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv3x3, plus a projected time embedding, GroupNorm-SiLU-conv3x3, and a skip."""

    out_channels: int
    groups: int = 32
    eps: float = 1e-6
    dtype: object = None

    @nn.compact
    def __call__(self, x, temb=None):
        h = nn.silu(group_norm(self.groups, self.eps, self.dtype, name="norm1")(x))
        h = conv2d(self.out_channels, 3, padding=1, dtype=self.dtype, name="conv1")(h)
        if temb is not None:
            t = dense(self.out_channels, dtype=self.dtype, name="time_emb_proj")(nn.silu(temb))
            h = h + t[:, None, None, :]
        h = nn.silu(group_norm(self.groups, self.eps, self.dtype, name="norm2")(h))
        h = conv2d(self.out_channels, 3, padding=1, dtype=self.dtype, name="conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = conv2d(self.out_channels, 1, padding=0, dtype=self.dtype, name="conv_shortcut")(x)
        return nn.with_logical_constraint(x + h, IMAGE_AXES)


class Downsample2D(nn.Module):
    """Stride-2 conv3x3; padding=0 is the VAE form that pads one zero row/column at bottom/right first."""

    out_channels: int
    padding: int = 1
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv2d(self.out_channels, 3, strides=2, padding=self.padding, dtype=self.dtype, name="conv")(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 upsampling followed by conv3x3."""

    out_channels: int
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return conv2d(self.out_channels, 3, padding=1, dtype=self.dtype, name="conv")(x)
