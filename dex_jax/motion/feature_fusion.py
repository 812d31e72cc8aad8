"""Flatten & CNN (Fig. S1a) and the 5-layer appearance-latent CNN that feed the decoder."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.motion.appearance_encoder import GROUP_NORM_EPS
from dex_jax.nn.layers import conv2d, conv3d, dense
from dex_jax.nn.norms import group_norm


def flatten_depth(volume):
    """(N, D, H, W, C) -> (N, H, W, D * C), depth-major channels."""
    n, d, h, w, c = volume.shape
    return volume.transpose(0, 2, 3, 1, 4).reshape(n, h, w, d * c)


class FlattenCNN(nn.Module):
    """concat(source, warped) volumes -> ResBlock3D halving H and W to `out_channels` -> flatten depth.

    Paper: 2 x (32 ch, 16x64x64) -> (32 ch, 16x32x32) -> 32x32x512.
    """

    out_channels: int
    norm_groups: int
    dtype: object = None

    @nn.compact
    def __call__(self, source_volume, warped_volume):
        if source_volume.shape != warped_volume.shape:
            raise ValueError(f"volume shapes differ: {source_volume.shape} vs {warped_volume.shape}")
        x = jnp.concatenate([source_volume, warped_volume], axis=-1)
        groups_in = min(self.norm_groups, x.shape[-1])
        h = nn.relu(group_norm(groups_in, GROUP_NORM_EPS, self.dtype, "norm1")(x))
        h = conv3d(self.out_channels, 3, strides=(1, 2, 2), padding=1, dtype=self.dtype, name="conv1")(h)
        h = nn.relu(group_norm(self.norm_groups, GROUP_NORM_EPS, self.dtype, "norm2")(h))
        h = conv3d(self.out_channels, 3, padding=1, dtype=self.dtype, name="conv2")(h)
        shortcut = nn.avg_pool(x, (1, 2, 2), (1, 2, 2))
        shortcut = conv3d(self.out_channels, 1, dtype=self.dtype, name="shortcut")(shortcut)
        return flatten_depth(h + shortcut)


class AppearanceLatent(nn.Module):
    """Source volume -> depth-flattened map -> 5 stride-2 convs (leaky ReLU) -> appearance latent (N, latent_dim).

    flatten=True (supplement A.1, the paper model): the last conv's output is flattened into the latent, so
    latent_dim must equal its size (paper: 64x64 in, 2x2x512 out = 2048). flatten=False (ours, the default, which
    the bundled `tiny` model was trained with): the output is mean-pooled and a dense layer makes the latent.
    """

    channels: Sequence[int]
    latent_dim: int
    flatten: bool = False
    dtype: object = None

    @nn.compact
    def __call__(self, volume):
        x = flatten_depth(volume)
        for i, channels in enumerate(self.channels):
            x = conv2d(channels, 3, strides=2, padding=1, dtype=self.dtype, name=f"conv_{i}")(x)
            x = nn.leaky_relu(x, 0.2)
        if not self.flatten:
            return dense(self.latent_dim, dtype=self.dtype, name="proj")(jnp.mean(x, axis=(1, 2)))
        n, h, w, c = x.shape
        if h * w * c != self.latent_dim:
            raise ValueError(f"appearance_latent: flatten=True makes the latent the last conv's {h}x{w}x{c} = "
                             f"{h * w * c} values, but latent_dim is {self.latent_dim}")
        return x.reshape(n, h * w * c)
