"""Stage-1 latent expression encoder: FAN trunk on the face crop, then a small conv head to a 1D latent."""

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.motion.fan import FAN
from dex_jax.nn.layers import conv2d, dense


class ExpressionEncoder(nn.Module):
    """Face crop (N, image_size, image_size, 3) in [-1, 1] -> expression latent (N, latent_dim).

    The FAN trunk sees the crop in [0, 1], as face-alignment's FAN does; `norm` is its normalisation (fan.NORMS).
    The head reads the trunk features with the landmark heatmaps: two stride-2 3x3 convs, a pool, dense (ours;
    the paper names only the FAN). `pool_grid` 0 averages the map over all positions; n > 0 averages it to an
    n x n grid and flattens it, so the dense layer knows where a feature is (the eyes from the mouth): on
    SynthHeads a small CNN reads eye closing at held-out R^2 0.62-0.64 from a flattened map and 0.22-0.34 from a
    global pool (docs/experiments/learnability.md). The head's map (image_size / 16 wide) must divide by n.
    """

    image_size: int = 224
    channels: int = 256
    hourglass_depth: int = 4
    num_landmarks: int = 68
    latent_dim: int = 512
    dtype: object = None
    norm: str = "affine"
    pool_grid: int = 0

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
        return dense(self.latent_dim, dtype=self.dtype, name="head_dense")(self._pool(x))

    def _pool(self, x):
        n, side = self.pool_grid, x.shape[1]
        if not n:
            return x.mean(axis=(1, 2))
        if n < 0 or side % n:
            raise ValueError(f"expression encoder: pool_grid {n} does not divide the head's {side}x{side} map "
                             f"(image_size {self.image_size} / 16)")
        x = x.reshape(x.shape[0], n, side // n, n, side // n, x.shape[-1]).mean(axis=(2, 4))
        return x.reshape(x.shape[0], -1)
