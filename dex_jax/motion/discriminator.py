"""StyleGAN2 residual discriminator: image (N, S, S, 3) -> realness logit (N,) in float32."""

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.nn.stylegan import ConvLayer, EqualLinear, ResBlock, minibatch_stddev


class Discriminator(nn.Module):
    """1x1 ConvLayer from RGB to channels[0]; ResBlocks with blur-downsample to channels[1:], halving the
    size each time down to 4x4; minibatch stddev (+1 channel); 3x3 ConvLayer; dense + leaky; dense -> 1.

    `channels` lists the width per resolution from the image size down to 4x4, so the image size is
    4 * 2^(len(channels) - 1) (paper: 256 with 128, 256, 512, 512, 512, 512, 512).
    """

    channels: tuple = (128, 256, 512, 512, 512, 512, 512)
    mbstd_group: int = 4
    dtype: object = None

    @nn.compact
    def __call__(self, image):
        size = 4 * 2 ** (len(self.channels) - 1)
        if image.ndim != 4 or image.shape[1:] != (size, size, 3):
            raise ValueError(f"discriminator: expected images (N, {size}, {size}, 3), got shape {image.shape}")
        x = ConvLayer(self.channels[0], 1, dtype=self.dtype, name="from_rgb")(image)
        for i, width in enumerate(self.channels[1:]):
            x = ResBlock(width, dtype=self.dtype, name=f"block_{i}")(x)
        x = minibatch_stddev(x, self.mbstd_group)
        x = ConvLayer(self.channels[-1], 3, dtype=self.dtype, name="final_conv")(x)
        x = x.reshape(x.shape[0], -1)
        x = EqualLinear(self.channels[-1], activate=True, dtype=self.dtype, name="final_dense")(x)
        return EqualLinear(1, dtype=self.dtype, name="logit")(x)[:, 0].astype(jnp.float32)
