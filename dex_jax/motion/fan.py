"""FAN trunk as in face-alignment's `FAN(num_modules=1)`, with width, hourglass depth, landmarks and norm as fields."""

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.nn.layers import conv2d
from dex_jax.nn.norms import Affine, group_norm

NORMS = ("affine", "group")


def norm_layer(kind, dtype, name):
    """The trunk's normalisation: `affine`, a frozen BatchNorm folded to scale and shift (what imported weights
    need), or `group`, GroupNorm with at most 32 groups of at least 4 channels (what training from scratch
    needs). Both hold the params `scale` and `bias`, so one checkpoint fits either."""
    if kind == "affine":
        return Affine(dtype, name=name)
    return lambda x: group_norm(max(1, min(32, x.shape[-1] // 4)), 1e-5, dtype, name)(x)


def avg_pool_2x2(x):
    """2x2 average pooling with stride 2 (NHWC); an odd last row or column is averaged with itself."""
    n, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return x.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c).mean(axis=(2, 4))


def upsample_2x_to(x, height, width):
    """Nearest-neighbour 2x upsampling (NHWC), cropped to (height, width)."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return x[:, :height, :width]


class ConvBlock(nn.Module):
    """Pre-activation residual block: three 3x3 convs (features/2, /4, /4) whose outputs are concatenated."""

    features: int
    dtype: object = None
    norm: str = "affine"

    @nn.compact
    def __call__(self, x):
        def bn_relu_conv(h, width, index):
            h = nn.relu(norm_layer(self.norm, self.dtype, f"bn{index}")(h))
            return conv2d(width, 3, padding=1, use_bias=False, dtype=self.dtype, name=f"conv{index}")(h)

        out1 = bn_relu_conv(x, self.features // 2, 1)
        out2 = bn_relu_conv(out1, self.features // 4, 2)
        out3 = bn_relu_conv(out2, self.features // 4, 3)
        residual = x
        if x.shape[-1] != self.features:
            residual = nn.relu(norm_layer(self.norm, self.dtype, "downsample_0")(x))
            residual = conv2d(self.features, 1, padding=0, use_bias=False, dtype=self.dtype,
                              name="downsample_2")(residual)
        return jnp.concatenate([out1, out2, out3], axis=-1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass of ConvBlocks: an upper branch at full size plus a pooled, deeper, upsampled branch."""

    depth: int
    features: int
    dtype: object = None
    norm: str = "affine"

    @nn.compact
    def __call__(self, x):
        def block(name):
            return ConvBlock(self.features, self.dtype, self.norm, name=name)

        def level(index, inp):
            upper = block(f"b1_{index}")(inp)
            lower = block(f"b2_{index}")(avg_pool_2x2(inp))
            lower = level(index - 1, lower) if index > 1 else block(f"b2_plus_{index}")(lower)
            lower = block(f"b3_{index}")(lower)
            return upper + upsample_2x_to(lower, inp.shape[1], inp.shape[2])

        return level(self.depth, x)


class FAN(nn.Module):
    """RGB (N, H, W, 3) in [0, 1] -> (heatmaps (N, H/4, W/4, num_landmarks), trunk features (N, H/4, W/4, channels)).

    With the defaults this is face-alignment's single-stack FAN; submodule names mirror its parameter names.
    The stem widths are channels/4 and channels/2 (64 and 128 at 256). Sizes that are not multiples of
    4 * 2**hourglass_depth (224 with depth 4) work too: pooling keeps odd edges and upsampling crops.
    `norm` is one of NORMS (see norm_layer).
    """

    channels: int = 256
    hourglass_depth: int = 4
    num_landmarks: int = 68
    dtype: object = None
    norm: str = "affine"

    @nn.compact
    def __call__(self, x):
        if self.channels % 8 or self.channels <= 0:
            raise ValueError(f"FAN channels must be a positive multiple of 8, got {self.channels}")
        if self.hourglass_depth < 1:
            raise ValueError(f"FAN hourglass_depth must be at least 1, got {self.hourglass_depth}")
        if self.norm not in NORMS:
            raise ValueError(f"FAN norm must be one of {NORMS}, got {self.norm!r}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"FAN expects RGB images of shape (N, H, W, 3), got {x.shape}")
        c, dt, norm = self.channels, self.dtype, self.norm
        x = conv2d(c // 4, 7, strides=2, padding=3, dtype=dt, name="conv1")(x)
        x = nn.relu(norm_layer(norm, dt, "bn1")(x))
        x = avg_pool_2x2(ConvBlock(c // 2, dt, norm, name="conv2")(x))
        x = ConvBlock(c // 2, dt, norm, name="conv3")(x)
        x = ConvBlock(c, dt, norm, name="conv4")(x)
        x = HourGlass(self.hourglass_depth, c, dt, norm, name="m0")(x)
        x = ConvBlock(c, dt, norm, name="top_m_0")(x)
        x = conv2d(c, 1, padding=0, dtype=dt, name="conv_last0")(x)
        features = nn.relu(norm_layer(norm, dt, "bn_end0")(x))
        heatmaps = conv2d(self.num_landmarks, 1, padding=0, dtype=dt, name="l0")(features)
        return heatmaps, features
