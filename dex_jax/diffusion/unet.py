"""UNet2DConditionModel for SD-1.x configurations, NHWC, with diffusers' parameter names."""

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.diffusion.embeddings import TimestepEmbedding, timestep_embedding
from dex_jax.diffusion.resnet import IMAGE_AXES
from dex_jax.diffusion.transformer import child_extras
from dex_jax.diffusion.unet_blocks import (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    DownBlock2D,
    UNetMidBlock2DCrossAttn,
    UpBlock2D,
)
from dex_jax.nn.layers import conv2d
from dex_jax.nn.norms import group_norm

DOWN_BLOCKS = {"CrossAttnDownBlock2D": CrossAttnDownBlock2D, "DownBlock2D": DownBlock2D}
UP_BLOCKS = {"CrossAttnUpBlock2D": CrossAttnUpBlock2D, "UpBlock2D": UpBlock2D}


def zero_input_channels_init(base, first_zero_channel):
    """A conv kernel initialiser: `base` for input channels below `first_zero_channel`, zeros from there on."""

    def init(key, shape, dtype=jnp.float32):
        return base(key, shape, dtype).at[:, :, first_zero_channel:, :].set(0)

    return init


class UNet2DConditionModel(nn.Module):
    """(sample NHWC, timesteps, encoder_hidden_states (B, L, cross_attention_dim)) -> NHWC noise prediction.

    `attention_head_dim` is the number of heads per block (an int or one per down block), as
    SD-1.x configs use it. `extra_in_channels` adds zero-initialised conv_in input channels after
    the first `in_channels`. `extras`, `expression` and `temporal` (a module factory for every transformer block)
    are the hooks of dex_jax.diffusion.transformer.
    """

    sample_size: int = 64
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    attention_head_dim: int | tuple = 8
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    use_linear_projection: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    down_block_types: tuple = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    extra_in_channels: int = 0
    expression_dim: int | None = None
    attention_implementation: str | None = None
    dtype: object = None
    temporal: object = None

    def _heads(self):
        heads = self.attention_head_dim
        return (heads,) * len(self.block_out_channels) if isinstance(heads, int) else tuple(heads)

    def _check_inputs(self, sample, encoder_hidden_states, expression):
        channels = self.in_channels + self.extra_in_channels
        factor = 2 ** (len(self.block_out_channels) - 1)
        if sample.ndim != 4 or sample.shape[-1] != channels:
            raise ValueError(f"sample must be NHWC with {channels} channels, got shape {sample.shape}")
        if sample.shape[1] % factor or sample.shape[2] % factor:
            raise ValueError(f"sample height and width must be multiples of {factor}, got {sample.shape[1:3]}")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[-1] != self.cross_attention_dim:
            raise ValueError(f"encoder_hidden_states must be (B, L, {self.cross_attention_dim}), "
                             f"got {encoder_hidden_states.shape}")
        if expression is not None and self.expression_dim is None:
            raise ValueError("expression tokens given but this UNet has no expression attention (expression_dim=None)")

    def _block_kwargs(self, out_channels, heads, num_layers):
        return dict(out_channels=out_channels, num_layers=num_layers, heads=heads, norm_groups=self.norm_num_groups,
                    eps=self.norm_eps, use_linear_projection=self.use_linear_projection,
                    expression_dim=self.expression_dim, attention_implementation=self.attention_implementation,
                    dtype=self.dtype, temporal=self.temporal)

    @nn.compact
    def __call__(self, sample, timesteps, encoder_hidden_states, extras=None, expression=None):
        self._check_inputs(sample, encoder_hidden_states, expression)
        batch = sample.shape[0]
        channels, heads = self.block_out_channels, self._heads()
        context = encoder_hidden_states.astype(self.dtype or jnp.float32)

        timesteps = jnp.broadcast_to(jnp.asarray(timesteps).reshape(-1), (batch,))
        emb = timestep_embedding(timesteps, channels[0], self.flip_sin_to_cos, self.freq_shift)
        temb = TimestepEmbedding(channels[0] * 4, self.dtype, name="time_embedding")(emb.astype(self.dtype or jnp.float32))

        conv_in_init = zero_input_channels_init(nn.initializers.lecun_normal(), self.in_channels)
        x = conv2d(channels[0], 3, padding=1, dtype=self.dtype, kernel_init=conv_in_init, name="conv_in")(sample)
        skips = [x]
        for i, block_type in enumerate(self.down_block_types):
            name = f"down_blocks_{i}"
            block = DOWN_BLOCKS[block_type](**self._block_kwargs(channels[i], heads[i], self.layers_per_block),
                                            add_downsample=i < len(channels) - 1, name=name)
            x, block_skips = block(x, temb, context, child_extras(extras, name), expression)
            skips.extend(block_skips)

        x = UNetMidBlock2DCrossAttn(**self._block_kwargs(channels[-1], heads[-1], 1), name="mid_block")(
            x, temb, context, child_extras(extras, "mid_block"), expression)

        num_layers = self.layers_per_block + 1
        for i, block_type in enumerate(self.up_block_types):
            name = f"up_blocks_{i}"
            level = len(channels) - 1 - i
            block = UP_BLOCKS[block_type](**self._block_kwargs(channels[level], heads[level], num_layers),
                                          add_upsample=level > 0, name=name)
            x = block(x, skips[-num_layers:], temb, context, child_extras(extras, name), expression)
            skips = skips[:-num_layers]
            x = nn.with_logical_constraint(x, IMAGE_AXES)

        x = nn.silu(group_norm(self.norm_num_groups, self.norm_eps, self.dtype, name="conv_norm_out")(x))
        x = conv2d(self.out_channels, 3, padding=1, dtype=self.dtype, name="conv_out")(x)
        return x.astype(jnp.float32)


def unet_from_config(config):
    """A UNet2DConditionModel from a configs/unet_model.py ConfigDict (lists become tuples, dtype names dtypes)."""
    fields = {key: tuple(value) if isinstance(value, (list, tuple)) else value for key, value in config.items()}
    for key, known in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        unknown = [name for name in fields[key] if name not in known]
        if unknown:
            raise ValueError(f"unsupported {key} {unknown}; this UNet implements {sorted(known)}")
    fields["dtype"] = jnp.dtype(fields.get("dtype") or "float32")
    return UNet2DConditionModel(**fields)


def init_inputs(config):
    """The smallest valid (args, kwargs) for `init` of `unet_from_config(config)` (zeros; batch 1)."""
    side = 2 ** (len(config.block_out_channels) - 1)
    args = (jnp.zeros((1, side, side, config.in_channels + config.extra_in_channels)), jnp.zeros((1,)),
            jnp.zeros((1, 1, config.cross_attention_dim)))
    kwargs = {} if config.expression_dim is None else {"expression": jnp.zeros((1, 1, config.expression_dim))}
    return args, kwargs
