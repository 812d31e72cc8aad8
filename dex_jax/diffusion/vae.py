"""diffusers' AutoencoderKL in NHWC: Encoder, Decoder and the diagonal Gaussian, with diffusers' param names."""

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from dex_jax.diffusion.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from dex_jax.nn.attention import dot_product_attention
from dex_jax.nn.layers import conv2d, dense
from dex_jax.nn.norms import group_norm

EPS = 1e-6


@flax.struct.dataclass
class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)) over NHWC latents; logvar clamped to [-30, 20]."""

    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments):
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, -30.0, 20.0))

    @property
    def std(self):
        return jnp.exp(0.5 * self.logvar)

    def sample(self, rng):
        return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

    def mode(self):
        return self.mean

    def kl(self):
        """KL(q || N(0, I)) per example, summed over H, W, C."""
        return 0.5 * jnp.sum(self.mean ** 2 + jnp.exp(self.logvar) - 1.0 - self.logvar, axis=(1, 2, 3))


class SpatialSelfAttention(nn.Module):
    """diffusers' Attention as the VAE mid block uses it: GroupNorm, one head over all pixels, residual."""

    groups: int
    attention_implementation: str | None = None
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        tokens = group_norm(self.groups, EPS, self.dtype, name="group_norm")(x).reshape(b, h * w, 1, c)
        q, k, v = (dense(c, dtype=self.dtype, axes=("embed", "heads"), name=name)(tokens)
                   for name in ("to_q", "to_k", "to_v"))
        out = dot_product_attention(q, k, v, self.attention_implementation).reshape(b, h, w, c)
        return x + dense(c, dtype=self.dtype, axes=("heads", "embed"), name="to_out_0")(out)


class MidBlock(nn.Module):
    """UNetMidBlock2D without time embedding: resnet, (attention), resnet."""

    channels: int
    groups: int
    add_attention: bool = True
    attention_implementation: str | None = None
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        x = ResnetBlock2D(self.channels, self.groups, EPS, self.dtype, name="resnets_0")(x)
        if self.add_attention:
            x = SpatialSelfAttention(self.groups, self.attention_implementation, self.dtype, name="attentions_0")(x)
        return ResnetBlock2D(self.channels, self.groups, EPS, self.dtype, name="resnets_1")(x)


class ResnetBlocks2D(nn.Module):
    """`num_layers` resnets and a resampler: diffusers' DownEncoderBlock2D ("down") or UpDecoderBlock2D ("up").

    "down" is the VAE's asymmetric-padding stride-2 downsampler, "up" nearest x2 upsampling and a conv; the last
    block of each side has `resample=None`.
    """

    channels: int
    num_layers: int
    groups: int
    resample: str | None = None
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            x = ResnetBlock2D(self.channels, self.groups, EPS, self.dtype, name=f"resnets_{i}")(x)
        if self.resample == "down":
            x = Downsample2D(self.channels, padding=0, dtype=self.dtype, name="downsamplers_0")(x)
        elif self.resample == "up":
            x = Upsample2D(self.channels, dtype=self.dtype, name="upsamplers_0")(x)
        return x


class Coder(nn.Module):
    """What the Encoder and Decoder share: their fields, the mid block and the GroupNorm-SiLU-conv_out head."""

    out_channels: int
    block_out_channels: tuple
    layers_per_block: int
    groups: int
    add_attention: bool = True
    attention_implementation: str | None = None
    dtype: object = None

    def _mid(self, x):
        return MidBlock(self.block_out_channels[-1], self.groups, self.add_attention, self.attention_implementation,
                        self.dtype, name="mid_block")(x)

    def _head(self, x):
        x = nn.silu(group_norm(self.groups, EPS, self.dtype, name="conv_norm_out")(x))
        return conv2d(self.out_channels, 3, padding=1, dtype=self.dtype, name="conv_out")(x)


class Encoder(Coder):
    """Image (B, H, W, in) -> Gaussian moments (B, H/f, W/f, out_channels = 2 * latent) before quant_conv."""

    @nn.compact
    def __call__(self, x):
        x = conv2d(self.block_out_channels[0], 3, padding=1, dtype=self.dtype, name="conv_in")(x)
        last = len(self.block_out_channels) - 1
        for i, channels in enumerate(self.block_out_channels):
            x = ResnetBlocks2D(channels, self.layers_per_block, self.groups, "down" if i < last else None,
                               self.dtype, name=f"down_blocks_{i}")(x)
        return self._head(self._mid(x))


class Decoder(Coder):
    """Latents (B, h, w, latent) after post_quant_conv -> image (B, h*f, w*f, out_channels)."""

    @nn.compact
    def __call__(self, z):
        x = conv2d(self.block_out_channels[-1], 3, padding=1, dtype=self.dtype, name="conv_in")(z)
        x = self._mid(x)
        last = len(self.block_out_channels) - 1
        for i, channels in enumerate(reversed(self.block_out_channels)):
            x = ResnetBlocks2D(channels, self.layers_per_block + 1, self.groups, "up" if i < last else None,
                               self.dtype, name=f"up_blocks_{i}")(x)
        return self._head(x)


class AutoencoderKL(nn.Module):
    """The SD VAE. `encode(x)` -> DiagonalGaussian, `decode(z)` -> image; both NHWC, images in [-1, 1].

    Diffusion runs on `scaling_factor * encode(x).sample(rng)` (or `.mode()`); decode `z / scaling_factor`.
    Calling the module decodes the posterior mode (diffusers' forward without sampling).
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    attention_implementation: str | None = None
    dtype: object = None

    def setup(self):
        common = dict(block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
                      groups=self.norm_num_groups, add_attention=self.mid_block_add_attention,
                      attention_implementation=self.attention_implementation, dtype=self.dtype)
        self.encoder = Encoder(2 * self.latent_channels, **common)
        self.decoder = Decoder(self.out_channels, **common)
        if self.use_quant_conv:
            self.quant_conv = conv2d(2 * self.latent_channels, 1, padding=0, dtype=self.dtype)
        if self.use_post_quant_conv:
            self.post_quant_conv = conv2d(self.latent_channels, 1, padding=0, dtype=self.dtype)

    @property
    def downsample_factor(self):
        return 2 ** (len(self.block_out_channels) - 1)

    def encode(self, x):
        """Image (B, H, W, in_channels), H and W multiples of the downsample factor -> posterior."""
        f = self.downsample_factor
        if x.ndim != 4 or x.shape[-1] != self.in_channels or x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"VAE.encode wants (B, H, W, {self.in_channels}) with H, W multiples of {f}, "
                             f"got {x.shape}")
        moments = self.encoder(x)
        if self.use_quant_conv:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments)

    def decode(self, z):
        """Latents (B, h, w, latent_channels) -> image (B, h * f, w * f, out_channels)."""
        if z.ndim != 4 or z.shape[-1] != self.latent_channels:
            raise ValueError(f"VAE.decode wants (B, h, w, {self.latent_channels}) latents, got {z.shape}")
        if self.use_post_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def __call__(self, x):
        return self.decode(self.encode(x).mode())


def vae_from_config(config):
    """An AutoencoderKL from a configs/vae_model.py ConfigDict (lists become tuples, dtype names dtypes)."""
    fields = {key: tuple(value) if isinstance(value, (list, tuple)) else value for key, value in config.items()}
    fields["dtype"] = jnp.dtype(fields.get("dtype") or "float32")
    return AutoencoderKL(**fields)
