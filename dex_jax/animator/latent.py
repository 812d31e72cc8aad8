"""The animator's latent codec: how [-1, 1] NHWC images become the UNets' input latents and back.

A train config's `latent` section picks the kind:
  'vae'             the SD VAE (`latent.vae`, a configs/vae_model.py config; weights from a converted SD folder,
                    `latent.vae_from`, read by dex_jax.train.animator_checkpoint): latents are the posterior mean
                    times the VAE's scaling factor (0.18215 for SD-1.5), decoding divides by it first. The mean,
                    not a posterior sample, is our choice for both the reference and the training targets: it
                    makes the codec deterministic.
  'space_to_depth'  no weights: every `latent.factor` x `latent.factor` pixel block becomes one latent pixel of
                    3 * factor^2 channels (channel index (row * factor + col) * 3 + rgb, in-block row and column),
                    unscaled. Exact and invertible: decode(encode(x)) == x. For CPU-sized configs, where no VAE is
                    trained or loaded.
`build_codec(latent_config)` gives a `LatentCodec`; its encode and decode take the codec's params (the VAE's,
or None for space_to_depth) explicitly, so a jitted caller passes them as arguments, not constants.
"""

import dataclasses

from dex_jax.diffusion.vae import AutoencoderKL, vae_from_config

KINDS = ("vae", "space_to_depth")


def space_to_depth(images, factor):
    """(N, H, W, C) -> (N, H/f, W/f, f*f*C): each f x f block in row-major order, channels innermost."""
    n, height, width, channels = images.shape
    if height % factor or width % factor:
        raise ValueError(f"space_to_depth by {factor} needs H and W divisible by it, got {images.shape}")
    blocks = images.reshape(n, height // factor, factor, width // factor, factor, channels)
    return blocks.transpose(0, 1, 3, 2, 4, 5).reshape(n, height // factor, width // factor, factor * factor * channels)


def depth_to_space(latents, factor):
    """The inverse of `space_to_depth`: (N, h, w, f*f*C) -> (N, h*f, w*f, C)."""
    n, height, width, depth = latents.shape
    channels, rest = divmod(depth, factor * factor)
    if rest:
        raise ValueError(f"depth_to_space by {factor} needs channels divisible by {factor * factor}, "
                         f"got {latents.shape}")
    blocks = latents.reshape(n, height, width, factor, factor, channels)
    return blocks.transpose(0, 1, 3, 2, 4, 5).reshape(n, height * factor, width * factor, channels)


@dataclasses.dataclass(frozen=True)
class LatentCodec:
    """Images (N, H, W, 3) in [-1, 1] <-> latents (N, H/factor, W/factor, channels)."""

    kind: str
    factor: int
    channels: int
    vae: AutoencoderKL | None = None

    def encode(self, params, images):
        """Latents of `images`; `params` the VAE's params (ignored for space_to_depth)."""
        if self.vae is None:
            return space_to_depth(images, self.factor)
        posterior = self.vae.apply({"params": params}, images, method=AutoencoderKL.encode)
        return posterior.mode() * self.vae.scaling_factor

    def decode(self, params, latents):
        """Images in about [-1, 1] (a VAE's output is not clipped) of `latents`."""
        if self.vae is None:
            return depth_to_space(latents, self.factor)
        return self.vae.apply({"params": params}, latents / self.vae.scaling_factor, method=AutoencoderKL.decode)

    def latent_size(self, image_size):
        """The latent side of a square image of `image_size`; ValueError when the factor does not divide it."""
        if image_size % self.factor:
            raise ValueError(f"image size {image_size} is not a multiple of the latent codec's factor {self.factor}")
        return image_size // self.factor


def build_codec(latent_config):
    """The `LatentCodec` a train config's `latent` section describes; ValueError for an unknown kind or factor."""
    kind = latent_config.kind
    if kind == "vae":
        vae = vae_from_config(latent_config.vae)
        return LatentCodec(kind, vae.downsample_factor, vae.latent_channels, vae)
    if kind == "space_to_depth":
        factor = int(latent_config.factor)
        if factor < 1:
            raise ValueError(f"latent.factor must be a positive integer, got {latent_config.factor!r}")
        return LatentCodec(kind, factor, 3 * factor * factor)
    raise ValueError(f"latent.kind must be one of {KINDS}, got {kind!r}")
