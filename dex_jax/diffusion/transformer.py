"""diffusers' Transformer2DModel and BasicTransformerBlock, with the animator's hooks.

Hooks (all off by default), set per block so that every block can get its own:
- reference mode: every BasicTransformerBlock sows its norm1-normed tokens (B, L, C) into the
  collection 'reference' under the name 'normed_hidden'. Nothing is stored unless `apply` is
  called with `mutable=['reference']` (nor by `init`); the collection then nests like the params
  (down_blocks_0/attentions_0/transformer_blocks_0/normed_hidden, a 1-tuple).
- `extras`, a nested dict mirroring the module path (see `reference_to_extras`); at a block,
  'extra_kv' (B or 1, Le, C) are tokens appended to self-attention's keys/values
  (keys/values = concat(own normed tokens, extra_kv)); 'extra_kv_keep' (B,) bool, with extra_kv,
  lets only the rows where it is True attend to extra_kv (the others attend to their own tokens
  alone, as without extra_kv); and 'residual' (B or 1, L, C) is added to the block's hidden state
  right after the self-attention residual, before norm2/attn2.
- `expression_dim`: when set, each block has `norm_expr` + `attn_expr`, a cross-attention over
  separate tokens (B or 1, Le, expression_dim) placed after attn2, whose `to_out_0` starts at zero.
  Its params exist only if `init` gets expression tokens; a call without them skips it.
- `temporal`: when set, a module factory (called with name='temporal') whose module each block calls as
  module(hidden state (B, L, C), frames) right after the expression attention, adding its output to the hidden
  state; `frames` is the block's extras 'temporal_frames' (an int, default 1): the batch holds clips of that many
  frames, clip-major (dex_jax.animator.temporal).
"""

import flax.linen as nn
import jax.numpy as jnp
from flax.traverse_util import flatten_dict, unflatten_dict

from dex_jax.nn.attention import dot_product_attention
from dex_jax.nn.layers import conv2d, dense
from dex_jax.nn.norms import group_norm, layer_norm

TOKEN_AXES = ("batch", "length", "embed")
LAYER_NORM_EPS = 1e-5
GROUP_NORM_EPS = 1e-6


def child_extras(extras, name):
    """The part of a nested extras dict that belongs to child module `name` (None when absent)."""
    return None if extras is None else extras.get(name)


def reference_to_extras(reference):
    """The 'reference' collection of a reference-mode pass -> extras giving each block its tokens as extra_kv."""
    flat = flatten_dict(reference)
    return unflatten_dict({path[:-1] + ("extra_kv",): value[0] for path, value in flat.items()
                           if path[-1] == "normed_hidden"})


def _match_batch(tokens, like, width, what):
    """`tokens` in the batch size and dtype of `like` (a batch of 1 broadcasts); other mismatches fail."""
    batch = like.shape[0]
    if tokens.ndim != 3 or tokens.shape[-1] != width or tokens.shape[0] not in (1, batch):
        raise ValueError(f"{what} must have shape ({batch} or 1, tokens, {width}), got {tokens.shape}")
    return jnp.broadcast_to(tokens, (batch,) + tokens.shape[1:]).astype(like.dtype)


class Attention(nn.Module):
    """Multi-head attention with diffusers' names: to_q, to_k, to_v (no bias) and to_out_0."""

    heads: int
    head_dim: int
    out_features: int
    zero_init_out: bool = False
    implementation: str | None = None
    dtype: object = None

    @nn.compact
    def __call__(self, x, context, kv_lengths=None):
        """`kv_lengths` (B,) int: row b attends to the first kv_lengths[b] context tokens only (None: all)."""
        inner = self.heads * self.head_dim

        def project(name, tokens):
            out = dense(inner, use_bias=False, dtype=self.dtype, axes=("embed", "heads"), name=name)(tokens)
            return out.reshape(out.shape[:2] + (self.heads, self.head_dim))

        q, k, v = project("to_q", x), project("to_k", context), project("to_v", context)
        out = dot_product_attention(q, k, v, self.implementation, kv_lengths).reshape(x.shape[:2] + (inner,))
        init = nn.initializers.zeros_init() if self.zero_init_out else nn.initializers.lecun_normal()
        return dense(self.out_features, dtype=self.dtype, kernel_init=init, axes=("heads", "embed"),
                     name="to_out_0")(out)


class GEGLU(nn.Module):
    """proj to 2*inner, split into (hidden, gate), hidden * gelu(gate) with exact gelu."""

    inner: int
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        hidden, gate = jnp.split(dense(2 * self.inner, dtype=self.dtype, axes=("embed", "mlp"), name="proj")(x), 2, -1)
        return hidden * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """diffusers' FeedForward with GEGLU: net_0 (GEGLU, 4x width) then net_2 (linear back)."""

    dim: int
    mult: int = 4
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        x = GEGLU(self.dim * self.mult, dtype=self.dtype, name="net_0")(x)
        return dense(self.dim, dtype=self.dtype, axes=("mlp", "embed"), name="net_2")(x)


class BasicTransformerBlock(nn.Module):
    """LayerNorm pre-norm self-attention, cross-attention (and optional expression attention), GEGLU FF."""

    dim: int
    heads: int
    head_dim: int
    expression_dim: int | None = None
    attention_implementation: str | None = None
    dtype: object = None
    temporal: object = None

    def _attention(self, name, zero_init_out=False):
        return Attention(self.heads, self.head_dim, self.dim, zero_init_out, self.attention_implementation,
                         self.dtype, name=name)

    @nn.compact
    def __call__(self, x, context, extras=None, expression=None):
        extras = extras or {}
        normed = layer_norm(LAYER_NORM_EPS, self.dtype, name="norm1")(x)
        if not self.is_initializing():
            self.sow("reference", "normed_hidden", normed)
        kv, kv_lengths = normed, None
        if "extra_kv" in extras:
            kv = jnp.concatenate([normed, _match_batch(extras["extra_kv"], normed, self.dim, "extra_kv")], axis=1)
            if "extra_kv_keep" in extras:
                keep = extras["extra_kv_keep"]
                if keep.shape != (x.shape[0],):
                    raise ValueError(f"extra_kv_keep must have shape ({x.shape[0]},), got {keep.shape}")
                kv_lengths = jnp.where(keep, kv.shape[1], normed.shape[1]).astype(jnp.int32)
        x = x + self._attention("attn1")(normed, kv, kv_lengths)
        if "residual" in extras:
            x = x + _match_batch(extras["residual"], x, self.dim, "residual")
        x = x + self._attention("attn2")(layer_norm(LAYER_NORM_EPS, self.dtype, name="norm2")(x), context)
        if self.expression_dim is not None and expression is not None:
            expression = _match_batch(expression, x, self.expression_dim, "expression tokens")
            x = x + self._attention("attn_expr", zero_init_out=True)(
                layer_norm(LAYER_NORM_EPS, self.dtype, name="norm_expr")(x), expression)
        if self.temporal is not None:
            x = x + self.temporal(name="temporal")(x, extras.get("temporal_frames", 1))
        x = x + FeedForward(self.dim, dtype=self.dtype, name="ff")(layer_norm(LAYER_NORM_EPS, self.dtype, name="norm3")(x))
        return nn.with_logical_constraint(x, TOKEN_AXES)


class Transformer2DModel(nn.Module):
    """GroupNorm, proj_in (linear or 1x1 conv), BasicTransformerBlocks over H*W tokens, proj_out, residual."""

    heads: int
    head_dim: int
    num_layers: int = 1
    norm_groups: int = 32
    use_linear_projection: bool = False
    expression_dim: int | None = None
    attention_implementation: str | None = None
    dtype: object = None
    temporal: object = None

    @nn.compact
    def __call__(self, x, context, extras=None, expression=None):
        b, h, w, c = x.shape
        inner = self.heads * self.head_dim
        tokens = group_norm(self.norm_groups, GROUP_NORM_EPS, self.dtype, name="norm")(x)
        if self.use_linear_projection:
            tokens = dense(inner, dtype=self.dtype, axes=("embed", "heads"), name="proj_in")(tokens.reshape(b, h * w, c))
        else:
            tokens = conv2d(inner, 1, padding=0, dtype=self.dtype, name="proj_in")(tokens).reshape(b, h * w, inner)
        tokens = nn.with_logical_constraint(tokens, TOKEN_AXES)
        for i in range(self.num_layers):
            name = f"transformer_blocks_{i}"
            tokens = BasicTransformerBlock(inner, self.heads, self.head_dim, self.expression_dim,
                                           self.attention_implementation, self.dtype, self.temporal, name=name)(
                tokens, context, child_extras(extras, name), expression)
        if self.use_linear_projection:
            out = dense(c, dtype=self.dtype, axes=("heads", "embed"), name="proj_out")(tokens).reshape(b, h, w, c)
        else:
            out = conv2d(c, 1, padding=0, dtype=self.dtype, name="proj_out")(tokens.reshape(b, h, w, inner))
        return out + x
