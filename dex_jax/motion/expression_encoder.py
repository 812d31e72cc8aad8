"""Stage-1 latent expression encoder: FAN trunk on the face crop, then a small conv head to a 1D latent."""

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.motion.fan import FAN
from dex_jax.nn.layers import conv2d, dense


class ExpressionEncoder(nn.Module):
    """Face crop (N, image_size, image_size, 3) in [-1, 1] -> expression latent (N, latent_dim).

    The FAN trunk sees the crop in [0, 1], as face-alignment's FAN does; `norm` is its normalisation (fan.NORMS).
    The head reads the trunk features with the landmark heatmaps: two stride-2 3x3 convs, global average pool,
    dense.
    """

    image_size: int = 224
    channels: int = 256
    hourglass_depth: int = 4
    num_landmarks: int = 68
    latent_dim: int = 512
    dtype: object = None
    norm: str = "affine"

    @nn.compact
    def __call__(self, image):
        size = self.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (size, size, 3):
            raise ValueError(
                f"expression encoder expects face crops of shape (N, {size}, {size}, 3), got {tuple(image.shape)}")
        heatmaps, features = FAN(self.channels, self.hourglass_depth, self.num_landmarks, self.dtype, self.norm,
                                 name="fan")((image + 1) / 2)
        x = jnp.concatenate([features, heatmaps], axis=-1)
        x = nn.relu(conv2d(self.channels, 3, strides=2, padding=1, dtype=self.dtype, name="head_conv1")(x))
        x = nn.relu(conv2d(2 * self.channels, 3, strides=2, padding=1, dtype=self.dtype, name="head_conv2")(x))
        return dense(self.latent_dim, dtype=self.dtype, name="head_dense")(x.mean(axis=(1, 2)))
