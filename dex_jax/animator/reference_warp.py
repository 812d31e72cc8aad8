"""Warped reference features (supplement A.2, Fig. S1b): reference tokens -> 3D volume -> warp -> tokens -> 1x1 conv.

A reference block's tokens (N, h*w, c) become a volume of 2c/h channels x h/2 depth x h x w, are warped from
the source pose to the driving pose (the content moves by P_d P_s^-1, as Stage 1 warps its appearance volume:
`dex_jax.geometry.warp_volume`), are flattened back to (N, h*w, c) and pass through a zero-initialised 1x1
conv; the result is added to the denoising block's hidden state after its self-attention (the UNet's
'residual' hook). SD-1.5 at 64x64 latents: 64x64x320 -> 10 x 32 x 64 x 64, 32x32x640 -> 40 x 16 x 32 x 32,
16x16x1280 -> 160 x 8 x 16 x 16, 8x8x1280 -> 320 x 4 x 8 x 8.

Axis order of the reshape (our choice; the paper does not give one):
- token t = row * w + col: row-major over the h x w grid, as Transformer2DModel flattens its NHWC input;
- channel j = k * (h/2) + d: channel-major, volume channel k in [0, 2c/h) outer and depth slice d in [0, h/2)
  inner, the order in which the Stage-1 appearance encoder lifts its 2D features into a volume;
- so volume[n, d, row, col, k] = tokens[n, row * w + col, k * (h/2) + d], a volume (N, D, H, W, C) whose
  axes are geometry's z (depth d, away from the camera), y (row, down) and x (col, right), each spanning
  [-1, 1] with voxel centres at (2i + 1)/size - 1. `volume_to_tokens` is the exact inverse.
"""

import flax.linen as nn

from dex_jax import geometry
from dex_jax.nn.layers import conv2d


def volume_shape(height, width, channels):
    """(volume channels 2c/h, depth h/2) of an h x w grid of c-channel tokens; other grids are a ValueError."""
    if height % 2 or (2 * channels) % height:
        raise ValueError(f"reference tokens of {height}x{width}x{channels} cannot become a volume of 2c/h channels "
                         f"x h/2 depth: h must be even and 2c/h = {2 * channels}/{height} an integer")
    return 2 * channels // height, height // 2


def tokens_to_volume(tokens, height, width):
    """(N, h*w, c) tokens -> (N, h/2, h, w, 2c/h) volume in the axis order of the module docstring."""
    n, length, c = tokens.shape
    if length != height * width:
        raise ValueError(f"{length} tokens do not form a {height}x{width} grid")
    channels, depth = volume_shape(height, width, c)
    return tokens.reshape(n, height, width, channels, depth).transpose(0, 4, 1, 2, 3)


def volume_to_tokens(volume):
    """(N, D, h, w, C) volume -> (N, h*w, C*D) tokens; the inverse of `tokens_to_volume`."""
    n, depth, height, width, channels = volume.shape
    return volume.transpose(0, 2, 3, 4, 1).reshape(n, height * width, channels * depth)


def warp_reference_tokens(tokens, height, width, source_pose, driving_pose):
    """Tokens (N, h*w, c) of an h x w grid, warped as a volume from `source_pose` to `driving_pose` ((N, 3, 4))."""
    volume = tokens_to_volume(tokens, height, width)
    return volume_to_tokens(geometry.warp_volume(volume, source_pose, driving_pose))


class WarpProjection(nn.Module):
    """The zero-initialised 1x1 convs (one per transformer block) that turn warped tokens into residuals.

    `blocks` are `reference.transformer_blocks` of the denoising UNet; the conv of the block at path
    (a, b, c) keeps its kernel (1, 1, c, c) and bias at a/b/c, mirroring the UNet's module paths.
    """

    blocks: tuple
    dtype: object = None

    @nn.compact
    def __call__(self, tokens):
        """{block path: warped tokens (N, L, c)} -> {block path: residual (N, L, c)}, for every block."""
        out = {}
        for head in dict.fromkeys(block.path[0] for block in self.blocks):
            inner = tuple(block._replace(path=block.path[1:]) for block in self.blocks if block.path[0] == head)
            if inner[0].path == ():
                x = tokens[(head,)]  # a 1x1 conv is pointwise: the tokens as an (L x 1) image
                conv = conv2d(inner[0].channels, 1, padding=0, dtype=self.dtype,
                              kernel_init=nn.initializers.zeros_init(), name=head)
                out[(head,)] = conv(x[:, :, None, :])[:, :, 0, :]
            else:
                below = WarpProjection(inner, self.dtype, name=head)(
                    {path[1:]: x for path, x in tokens.items() if path[0] == head})
                out.update({(head,) + path: x for path, x in below.items()})
        return out
