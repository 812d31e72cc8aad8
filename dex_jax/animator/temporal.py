"""The temporal module (Stage 3; supplement A.2, Fig. S1b): self-attention over the frames of a clip.

Layout: the denoiser's batch holds clips of F consecutive frames, clip-major: row r is frame r % F of clip r // F
(N = clips x F rows; the condition variants a sampler stacks are whole clips each). In every transformer block of
the denoising UNet, right after the expression attention, the block's tokens (N, L, C) are regrouped as
(clips, F, L, C) and then (clips x L, F, C): each token position of each clip attends over that clip's F frames.
The module's output, back in (N, L, C), is added to the block's hidden state.

The module (our reading of the paper's "temporal attention module", AnimateDiff's motion module in shape):
GroupNorm over each clip (per channel group, statistics over its frames and tokens) -> linear proj_in ->
`attention_layers` x [LayerNorm, + sin/cos frame positions (frame index 0..F-1), self-attention over the frames,
residual] -> LayerNorm, GEGLU feed-forward, residual -> linear proj_out, zero-initialised. A fresh module therefore
adds exactly zero: the Stage-2 animator is unchanged until Stage 3 trains it.

Config (`model.temporal` of an animator config; absent or enabled=False: no temporal module, no params):
  enabled           bool
  heads             attention heads (every transformer block's width must divide by it)
  attention_layers  temporal self-attention layers per module (AnimateDiff: 2)
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.diffusion.embeddings import timestep_embedding
from dex_jax.diffusion.transformer import GROUP_NORM_EPS, LAYER_NORM_EPS, Attention, FeedForward
from dex_jax.nn.layers import dense
from dex_jax.nn.norms import group_norm, layer_norm

TEMPORAL_FIELDS = ("enabled", "heads", "attention_layers")


def frame_positions(frames, dim):
    """(frames, dim) fixed sin/cos position of each frame of a clip: [sin, cos] halves at 10000^(-i/(dim/2))."""
    return timestep_embedding(jnp.arange(frames), dim, flip_sin_to_cos=False, freq_shift=0.0)


def to_frame_sequences(tokens, frames):
    """(clips*F, L, C) clip-major tokens -> (clips*L, F, C): one sequence over the frames per clip and position."""
    rows, length, channels = tokens.shape
    clips = rows // frames
    return tokens.reshape(clips, frames, length, channels).transpose(0, 2, 1, 3).reshape(-1, frames, channels)


def from_frame_sequences(sequences, frames, length):
    """The inverse of `to_frame_sequences`: (clips*L, F, C) -> (clips*F, L, C)."""
    channels = sequences.shape[-1]
    return sequences.reshape(-1, length, frames, channels).transpose(0, 2, 1, 3).reshape(-1, length, channels)


class TemporalModule(nn.Module):
    """Temporal self-attention over clips of `frames` frames (module docstring); returns the update to add."""

    heads: int
    attention_layers: int = 2
    norm_groups: int = 32
    attention_implementation: str | None = None
    dtype: object = None

    @nn.compact
    def __call__(self, tokens, frames):
        """`tokens` (N, L, C), N a multiple of `frames` (a Python int) -> (N, L, C), zero for a fresh module."""
        rows, length, channels = tokens.shape
        if frames < 1 or rows % frames:
            raise ValueError(f"the temporal module needs whole clips: {rows} rows do not split into clips of "
                             f"{frames} frames")
        clip_tokens = tokens.reshape(rows // frames, frames * length, channels)
        x = group_norm(self.norm_groups, GROUP_NORM_EPS, self.dtype, name="norm")(clip_tokens)
        x = to_frame_sequences(x.reshape(rows, length, channels), frames)
        x = dense(channels, dtype=self.dtype, axes=("embed", "heads"), name="proj_in")(x)
        position = frame_positions(frames, channels).astype(x.dtype)
        for i in range(self.attention_layers):
            normed = layer_norm(LAYER_NORM_EPS, self.dtype, name=f"norm_{i}")(x) + position
            x = x + Attention(self.heads, channels // self.heads, channels, False, self.attention_implementation,
                              self.dtype, name=f"attention_{i}")(normed, normed)
        x = x + FeedForward(channels, dtype=self.dtype, name="ff")(layer_norm(LAYER_NORM_EPS, self.dtype,
                                                                              name="norm_ff")(x))
        x = dense(channels, dtype=self.dtype, kernel_init=nn.initializers.zeros_init(), axes=("heads", "embed"),
                  name="proj_out")(x)
        return from_frame_sequences(x, frames, length)


def temporal_factory(config, unet):
    """A `TemporalModule` factory (called with name=...) for the denoising `unet` from `config` (the model's
    `temporal`); None when it is absent or not enabled. ValueError for unknown fields or a width `heads` does
    not divide."""
    if config is None or not config.get("enabled", False):
        return None
    unknown = sorted(set(config.keys()) - set(TEMPORAL_FIELDS))
    if unknown:
        raise ValueError(f"model.temporal may set {TEMPORAL_FIELDS}, got unknown {unknown}")
    heads, layers = int(config.heads), int(config.attention_layers)
    if heads < 1 or layers < 1:
        raise ValueError(f"model.temporal.heads and attention_layers must be at least 1, got {heads} and {layers}")
    uneven = [c for c in unet.block_out_channels if c % heads]
    if uneven:
        raise ValueError(f"model.temporal.heads {heads} does not divide the UNet's block widths {uneven}")
    return functools.partial(TemporalModule, heads, layers, unet.norm_num_groups, unet.attention_implementation,
                             unet.dtype)


def is_temporal(path):
    """True for a param path (a tuple of names) inside a temporal module."""
    return "temporal" in path
