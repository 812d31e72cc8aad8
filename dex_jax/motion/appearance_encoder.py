"""3D appearance encoder: source image -> 2D CNN -> feature volume (N, D, H/4, W/4, C) (paper) -> 3D resblocks."""

from typing import Sequence

import flax.linen as nn

from dex_jax.nn.layers import conv2d, conv3d
from dex_jax.nn.norms import group_norm

GROUP_NORM_EPS = 1e-6


class ResBlock3d(nn.Module):
    """Pre-activation 3D residual block (GroupNorm, ReLU, conv3x3x3, twice) with an identity shortcut."""

    norm_groups: int
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        h = nn.relu(group_norm(self.norm_groups, GROUP_NORM_EPS, self.dtype, "norm1")(x))
        h = conv3d(channels, 3, padding=1, dtype=self.dtype, name="conv1")(h)
        h = nn.relu(group_norm(self.norm_groups, GROUP_NORM_EPS, self.dtype, "norm2")(h))
        h = conv3d(channels, 3, padding=1, dtype=self.dtype, name="conv2")(h)
        return x + h


class AppearanceEncoder(nn.Module):
    """Image (N, S, S, 3) -> volume (N, volume_depth, s, s, volume_channels) (LivePortrait's F_s layout).

    s = S / 2^(len(block_channels) - 1): the 2D trunk is a same-resolution conv followed by one conv+avg-pool
    down block per further entry of block_channels (paper: two, s = S/4); a 1x1 conv lifts to
    `feature_channels = volume_channels * volume_depth`, which is reshaped channel-major (c, d) into depth,
    then refined by `num_resblocks` 3D residual blocks.
    """

    block_channels: Sequence[int]
    feature_channels: int
    volume_channels: int
    volume_depth: int
    num_resblocks: int
    norm_groups: int
    dtype: object = None

    @nn.compact
    def __call__(self, image):
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"appearance encoder expects NHWC RGB images, got shape {image.shape}")
        if self.feature_channels != self.volume_channels * self.volume_depth:
            raise ValueError(
                f"feature_channels {self.feature_channels} != volume_channels {self.volume_channels}"
                f" x volume_depth {self.volume_depth}")
        x = conv2d(self.block_channels[0], 3, padding=1, dtype=self.dtype, name="stem")(image)
        x = nn.relu(group_norm(self.norm_groups, GROUP_NORM_EPS, self.dtype, "stem_norm")(x))
        for i, channels in enumerate(self.block_channels[1:]):
            x = conv2d(channels, 3, padding=1, dtype=self.dtype, name=f"down_{i}")(x)
            x = nn.relu(group_norm(self.norm_groups, GROUP_NORM_EPS, self.dtype, f"down_{i}_norm")(x))
            x = nn.avg_pool(x, (2, 2), (2, 2))
        x = conv2d(self.feature_channels, 1, dtype=self.dtype, name="lift")(x)
        n, h, w, _ = x.shape
        volume = x.reshape(n, h, w, self.volume_channels, self.volume_depth).transpose(0, 4, 1, 2, 3)
        for i in range(self.num_resblocks):
            volume = ResBlock3d(self.norm_groups, dtype=self.dtype, name=f"resblock_{i}")(volume)
        return volume
