"""Fig. S1a decoder: inject StyleConv at r; StyleConv x2 down to r/2^num_down and up to r*2^len(up); toRGB* skips."""

import flax.linen as nn

from dex_jax.nn.stylegan import StyledConv, ToRGB


class ExpressionConditionedDecoder(nn.Module):
    """(features (N, r, r, channels), style (N, style_dim)) -> image (N, R, R, 3), R = r * 2^len(up_channels).

    Every StyleConv is modulated by the same style code (appearance latent ++ expression latent).
      inject: StyleConv(channels) at r x r (the 4th StyleConv of the StyleGAN2 order 8, 16, 32, inject).
      down branch from inject: StyleConv x2 at r, then num_down blocks of StyleConv(down 2) + StyleConv,
        all `channels` wide (paper: 32 -> 16 -> 8, 512 ch).
      up branch from inject: per up_channels entry c, StyleConv(up 2, c) + StyleConv(c)
        (paper: 64, 128, 256 with 512, 256, 128 ch).
      toRGB* chain over resolutions lowest -> highest (down-branch outputs at <= r, up-branch above r):
        skip_0 = toRGB*(f_0) with skip_channels[0]; skip_i = up2(1x1(skip_{i-1})) + toRGB*(f_i) with
        skip_channels[i] (paper: 8:96, 16:48, 32:24, 64:12, 128:6, 256:3). The last skip is the image,
        linear like StyleGAN2's output (no tanh), roughly in [-1, 1] once trained.
    """

    channels: int = 512
    num_down: int = 2
    up_channels: tuple = (512, 256, 128)
    skip_channels: tuple = (96, 48, 24, 12, 6, 3)
    dtype: object = None

    def _check(self, features, style):
        levels = self.num_down + 1 + len(self.up_channels)
        if len(self.skip_channels) != levels:
            raise ValueError(f"decoder: skip_channels has {len(self.skip_channels)} entries, expected "
                             f"num_down + 1 + len(up_channels) = {levels}")
        if self.skip_channels[-1] != 3:
            raise ValueError(f"decoder: the last skip_channels entry must be 3 (RGB), got {self.skip_channels[-1]}")
        if features.ndim != 4 or features.shape[1] != features.shape[2]:
            raise ValueError(f"decoder: features must be (N, r, r, C), got shape {features.shape}")
        if features.shape[-1] != self.channels:
            raise ValueError(f"decoder: features have {features.shape[-1]} channels, expected {self.channels}")
        if features.shape[1] % 2 ** self.num_down:
            raise ValueError(f"decoder: feature size {features.shape[1]} is not divisible by 2^num_down "
                             f"= {2 ** self.num_down}")
        if style.ndim != 2 or style.shape[0] != features.shape[0]:
            raise ValueError(f"decoder: style must be (N, style_dim) with N = {features.shape[0]}, "
                             f"got shape {style.shape}")

    @nn.compact
    def __call__(self, features, style):
        self._check(features, style)
        injected = StyledConv(self.channels, dtype=self.dtype, name="inject")(features, style)

        down, x = [], injected
        for i in range(self.num_down + 1):
            x = StyledConv(self.channels, down=i > 0, dtype=self.dtype, name=f"down_{i}_conv0")(x, style)
            x = StyledConv(self.channels, dtype=self.dtype, name=f"down_{i}_conv1")(x, style)
            down.append(x)

        up, x = [], injected
        for i, width in enumerate(self.up_channels):
            x = StyledConv(width, up=True, dtype=self.dtype, name=f"up_{i}_conv0")(x, style)
            x = StyledConv(width, dtype=self.dtype, name=f"up_{i}_conv1")(x, style)
            up.append(x)

        skip = None
        for i, (level, width) in enumerate(zip(down[::-1] + up, self.skip_channels)):
            skip = ToRGB(width, dtype=self.dtype, name=f"to_rgb_{i}")(level, style, skip)
        return skip
