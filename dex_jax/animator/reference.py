"""Where the reference network meets the denoiser: the UNet's transformer blocks and the tokens they hand over.

Every BasicTransformerBlock of an SD-1.x UNet sits at a module path such as
('down_blocks_0', 'attentions_1', 'transformer_blocks_0') and works on the token grid of one UNet level
(level i: latent height and width / 2^i) with the block's `block_out_channels[level]` channels. The reference
UNet (run at t = 0 on the source latent) sows each block's norm1-normed tokens; `sown_tokens` turns that
collection into a reference tree, a nested dict keyed by those paths whose leaves are (sources, h*w, c) tokens,
which the denoiser's block at the same path receives.
"""

from typing import NamedTuple

import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

from dex_jax.diffusion.unet import DOWN_BLOCKS, UP_BLOCKS


class TransformerBlock(NamedTuple):
    """One BasicTransformerBlock: its module path, its UNet level and its channel width."""

    path: tuple
    level: int
    channels: int

    def grid(self, height, width):
        """The (h, w) token grid of this block for a latent of height x width."""
        return height >> self.level, width >> self.level


def transformer_blocks(unet):
    """Every BasicTransformerBlock of `unet` (a UNet2DConditionModel) in call order: down, mid, up."""
    channels = unet.block_out_channels
    top = len(channels) - 1
    blocks = []

    def add(block, count, level):
        blocks.extend(TransformerBlock((block, f"attentions_{j}", "transformer_blocks_0"), level, channels[level])
                      for j in range(count))

    for i, kind in enumerate(unet.down_block_types):
        if DOWN_BLOCKS[kind].cross_attention:
            add(f"down_blocks_{i}", unet.layers_per_block, i)
    add("mid_block", 1, top)
    for i, kind in enumerate(unet.up_block_types):
        if UP_BLOCKS[kind].cross_attention:
            add(f"up_blocks_{i}", unet.layers_per_block + 1, top - i)
    return tuple(blocks)


def sown_tokens(collection):
    """A reference-mode pass's 'reference' collection -> the reference tree {block path: normed tokens}.

    Each block's tokens are the last ones it sowed in that pass.
    """
    return unflatten_dict({path[:-1]: value[-1] for path, value in flatten_dict(collection).items()
                           if path[-1] == "normed_hidden"})


def zero_tokens(blocks, sources, height, width, dtype):
    """A reference tree of zeros, shaped as the blocks' tokens for `sources` latents of height x width."""
    tree = {}
    for block in blocks:
        h, w = block.grid(height, width)
        tree[block.path] = jnp.zeros((sources, h * w, block.channels), dtype)
    return unflatten_dict(tree)


def block_tokens(reference, blocks):
    """{path: tokens} for `blocks` from a reference tree; a tree that lacks a block or has others is a ValueError."""
    flat = flatten_dict(reference)
    expected = {block.path for block in blocks}
    if set(flat) != expected:
        missing = sorted("/".join(p) for p in expected - set(flat))
        unexpected = sorted("/".join(p) for p in set(flat) - expected)
        raise ValueError(f"reference features do not fit this animator: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return flat
