"""The SD-1.x UNet's down, mid and up blocks, named as diffusers names them (resnets_i, attentions_i, ...)."""

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.diffusion.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from dex_jax.diffusion.transformer import Transformer2DModel, child_extras


class _BlockFields(nn.Module):
    """Fields every UNet block shares; `heads` is the number of attention heads (SD-1.x semantics)."""

    out_channels: int
    num_layers: int = 2
    heads: int = 8
    norm_groups: int = 32
    eps: float = 1e-5
    use_linear_projection: bool = False
    expression_dim: int | None = None
    attention_implementation: str | None = None
    dtype: object = None
    temporal: object = None

    def resnet(self, i):
        return ResnetBlock2D(self.out_channels, self.norm_groups, self.eps, self.dtype, name=f"resnets_{i}")

    def transformer(self, i, x, context, extras, expression):
        name = f"attentions_{i}"
        return Transformer2DModel(
            self.heads, self.out_channels // self.heads, 1, self.norm_groups, self.use_linear_projection,
            self.expression_dim, self.attention_implementation, self.dtype, self.temporal, name=name)(
            x, context, child_extras(extras, name), expression)


class _DownBlock(_BlockFields):
    """num_layers resnets (each followed by a transformer when cross_attention) and a stride-2 conv."""

    add_downsample: bool = True
    cross_attention: bool = True

    @nn.compact
    def __call__(self, x, temb, context, extras=None, expression=None):
        """Returns the block's output and the skip states it hands to the up path, in order."""
        skips = []
        for i in range(self.num_layers):
            x = self.resnet(i)(x, temb)
            if self.cross_attention:
                x = self.transformer(i, x, context, extras, expression)
            skips.append(x)
        if self.add_downsample:
            x = Downsample2D(self.out_channels, 1, self.dtype, name="downsamplers_0")(x)
            skips.append(x)
        return x, skips


class CrossAttnDownBlock2D(_DownBlock):
    """diffusers' CrossAttnDownBlock2D."""

    cross_attention: bool = True


class DownBlock2D(_DownBlock):
    """diffusers' DownBlock2D (resnets only)."""

    cross_attention: bool = False


class UNetMidBlock2DCrossAttn(_BlockFields):
    """resnets_0, then for each layer a transformer and a resnet (one layer in SD-1.x)."""

    num_layers: int = 1

    @nn.compact
    def __call__(self, x, temb, context, extras=None, expression=None):
        x = self.resnet(0)(x, temb)
        for i in range(self.num_layers):
            x = self.transformer(i, x, context, extras, expression)
            x = self.resnet(i + 1)(x, temb)
        return x


class _UpBlock(_BlockFields):
    """num_layers resnets on [x, skip] concatenations (each followed by a transformer when cross_attention)."""

    add_upsample: bool = True
    cross_attention: bool = True

    @nn.compact
    def __call__(self, x, skips, temb, context, extras=None, expression=None):
        """`skips` are this block's skip states in down-path order; they are used from the last."""
        if len(skips) != self.num_layers:
            raise ValueError(f"up block needs {self.num_layers} skip states, got {len(skips)}")
        for i, skip in enumerate(reversed(skips)):
            x = self.resnet(i)(jnp.concatenate([x, skip], axis=-1), temb)
            if self.cross_attention:
                x = self.transformer(i, x, context, extras, expression)
        if self.add_upsample:
            x = Upsample2D(self.out_channels, self.dtype, name="upsamplers_0")(x)
        return x


class CrossAttnUpBlock2D(_UpBlock):
    """diffusers' CrossAttnUpBlock2D."""

    cross_attention: bool = True


class UpBlock2D(_UpBlock):
    """diffusers' UpBlock2D (resnets only)."""

    cross_attention: bool = False
