"""The DeX animator (paper Sec. 3.3, supplement A.2, Fig. S1b): a reference UNet and a denoising UNet.

- Reference network: a UNet of the backbone config runs at t = 0 on the source's scaled VAE latent; each
  transformer block's norm1-normed tokens go to the denoising block at the same path, whose self-attention
  attends over concat(own tokens, reference tokens) (`reference_attention`). `reference_features` runs it
  once per source; callers cache the result across frames and steps. Each frame picks its source's tokens
  by `source_index` (the reference is repeated over the frames of one source).
- Ray maps: the source and driving ray maps (Eq. 3 with translation) at latent resolution follow the noisy
  latent's 4 channels; the denoiser's conv_in takes 4 + 3 + 3 channels, the 6 new ones zero-initialised.
- Warped reference features: in every transformer block the reference tokens are warped from the source
  to the driving pose as a volume (`reference_warp`), pass a zero-initialised 1x1 conv and are added to the
  denoising block's hidden state after its self-attention.
- Expression tokens: the E-d expression latent (the frozen Stage-1 encoder's output; paper 512) becomes
  `expression_tokens` tokens (paper 32 x 16) with fixed sin/cos positions, attended by the denoising UNet's
  expression cross-attention in every transformer block (zero-initialised output projection).
- Cross-attention context (`context`, a config choice): 'learned', a learned constant sequence of
  `context_length` tokens shared by both UNets. A CLIP image embedding of the source is not built.
- Temporal module (Stage 3, `model.temporal`; absent or disabled: none): temporal self-attention over the frames
  of a clip in every transformer block of the denoising UNet, after the expression attention (`temporal`). The
  denoiser's rows are then clips of `frames` frames, clip-major; `frames` is an argument of `denoise`.
- Classifier-free guidance: learned null latents "no expression" and "nothing" replace the expression
  latent; `null_drops` says what the unconditional variant drops (see `conditioning`).

Params: reference_unet and denoising_unet keep diffusers' names (`with_backbone` loads a converted SD UNet
into both); the new layers are denoising_unet's conv_in input channels 4..9 and its norm_expr/attn_expr,
warp_projection/<block path> (the 1x1 convs), context_tokens, null_no_expression and null_nothing, and with a
temporal module denoising_unet's <block path>/temporal (`temporal.is_temporal`).
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.traverse_util import flatten_dict, unflatten_dict

from dex_jax.animator.conditioning import (NO_EXPRESSION, NOTHING, NULL_PARTS, check_condition, expression_tokens,
                                           make_condition, ray_map_input)
from dex_jax.animator.reference import block_tokens, sown_tokens, transformer_blocks, zero_tokens
from dex_jax.animator.reference_warp import WarpProjection, volume_shape, warp_reference_tokens
from dex_jax.animator.temporal import is_temporal, temporal_factory
from dex_jax.diffusion.transformer import TOKEN_AXES
from dex_jax.diffusion.unet import UNet2DConditionModel, unet_from_config

RAY_MAP_CHANNELS = 6
CONTEXTS = ("learned",)
EXPRESSION_MODULES = ("norm_expr", "attn_expr")
PARTS = ("reference_unet", "denoising_unet", "ray_map_input", "expression_attention", "warp_projection",
         "context_tokens", "null_latents", "temporal")


class Animator(nn.Module):
    """The two UNets and the layers that join them; see the module docstring.

    `__call__` (source latent -> reference pass -> denoiser) is what `init` traces; under `apply` it needs
    mutable=['reference']. Callers run `reference_features` once per batch of sources (per training step, or
    once for a whole sampling run) and `denoise` for every denoising step of every frame.
    """

    reference_unet: UNet2DConditionModel
    denoising_unet: UNet2DConditionModel
    expression_tokens: int = 32
    context_length: int = 4
    null_drops: tuple = ("reference", "expression")
    reference_attention: bool = True

    def setup(self):
        unet = self.denoising_unet
        self.blocks = transformer_blocks(unet)
        self.context_tokens = self.param("context_tokens", nn.initializers.normal(1.0),
                                         (self.context_length, unet.cross_attention_dim))
        latent_dim = self.expression_latent_dim
        self.null_no_expression = self.param("null_no_expression", nn.initializers.zeros_init(), (latent_dim,))
        self.null_nothing = self.param("null_nothing", nn.initializers.zeros_init(), (latent_dim,))
        self.warp_projection = WarpProjection(self.blocks, unet.dtype)

    @property
    def expression_latent_dim(self):
        return self.expression_tokens * self.denoising_unet.expression_dim

    def _context(self, rows):
        dtype = self.denoising_unet.dtype or jnp.float32
        return jnp.broadcast_to(self.context_tokens.astype(dtype), (rows,) + self.context_tokens.shape)

    def encode_reference(self, source_latent):
        """(S, h, w, 4) scaled VAE latents of S sources -> the reference tree {block path: (S, h*w, c) tokens}."""
        sources, height, width, _ = source_latent.shape
        self.reference_unet(source_latent, jnp.zeros((sources,), jnp.int32), self._context(sources))
        if self.is_initializing():
            return zero_tokens(self.blocks, sources, height, width, self.reference_unet.dtype or jnp.float32)
        if not self.is_mutable_collection("reference"):
            raise ValueError("the reference pass needs apply(..., mutable=['reference']); use reference_features")
        return sown_tokens(self.reference_unet.variables["reference"])

    @property
    def temporal(self):
        """True when the denoising UNet has a temporal module."""
        return self.denoising_unet.temporal is not None

    def denoise(self, noisy_latent, timesteps, condition, reference, frames=1):
        """Noise prediction (N, h, w, 4) for noisy latents (N, h, w, 4) at `timesteps` ((N,) or scalar).

        `condition` is a `conditioning` dict for the N frames; `reference` the reference tree of the sources
        its `source_index` points into (an index outside them is not checked). `frames` (a Python int) matters
        only with a temporal module: the N rows are N / frames clips of `frames` consecutive frames, clip-major
        (row r is frame r % frames of clip r // frames); 1: every row is a clip of its own.
        """
        rows, height, width, _ = noisy_latent.shape
        check_condition(condition, rows, self.expression_latent_dim)
        source_pose, driving_pose = condition["source_pose"], condition["driving_pose"]
        nothing = condition["variant"] == NOTHING
        never = jnp.zeros_like(nothing)
        drop = {part: nothing if part in self.null_drops else never for part in NULL_PARTS}

        rays = ray_map_input(source_pose, driving_pose, height, width)
        rays = jnp.where(drop["ray_maps"][:, None, None, None], 0.0, rays)
        sample = jnp.concatenate([noisy_latent, rays.astype(noisy_latent.dtype)], -1)

        keep = ~drop["reference"]
        sources = block_tokens(reference, self.blocks)
        tokens, warped = {}, {}
        for block in self.blocks:
            chosen = jnp.take(sources[block.path], condition["source_index"], axis=0)
            tokens[block.path] = nn.with_logical_constraint(chosen, TOKEN_AXES)
            warped[block.path] = warp_reference_tokens(chosen, *block.grid(height, width), source_pose, driving_pose)
        residuals = self.warp_projection(warped)
        extras = {}
        for block in self.blocks:
            residual = jnp.where(keep[:, None, None], residuals[block.path], 0.0)
            extras[block.path + ("residual",)] = nn.with_logical_constraint(residual, TOKEN_AXES)
            if self.reference_attention:
                extras[block.path + ("extra_kv",)] = tokens[block.path]
                extras[block.path + ("extra_kv_keep",)] = keep
            if self.temporal:
                extras[block.path + ("temporal_frames",)] = frames

        variant = condition["variant"][:, None]
        latent = condition["expression"].astype(jnp.float32)
        latent = jnp.where(variant == NO_EXPRESSION, self.null_no_expression, latent)
        latent = jnp.where(drop["expression"][:, None], self.null_nothing, latent)
        return self.denoising_unet(sample, timesteps, self._context(rows), unflatten_dict(extras),
                                   expression_tokens(latent, self.expression_tokens))

    def __call__(self, source_latent, noisy_latent, timesteps, condition, frames=1):
        return self.denoise(noisy_latent, timesteps, condition, self.encode_reference(source_latent), frames)


def check_warp_shapes(unet, height, width):
    """A ValueError unless every transformer block's tokens of `unet` at a height x width latent form a volume."""
    for block in transformer_blocks(unet):
        try:
            volume_shape(*block.grid(height, width), block.channels)
        except ValueError as err:
            raise ValueError(f"{'/'.join(block.path)} at a {height}x{width} latent: {err}") from None


def build_animator(config: ml_collections.ConfigDict) -> Animator:
    """The animator a `configs/animator_model.py` config describes; a config it cannot build is a ValueError."""
    unet = config.unet
    if unet.extra_in_channels or unet.expression_dim is not None:
        raise ValueError("config.unet is the plain backbone (extra_in_channels=0, expression_dim=None): "
                         "the animator adds the ray-map channels and the expression attention itself")
    if config.context not in CONTEXTS:
        raise ValueError(f"config.context must be one of {CONTEXTS}, got {config.context!r}")
    unknown = [part for part in config.null_drops if part not in NULL_PARTS]
    if unknown:
        raise ValueError(f"config.null_drops may name {NULL_PARTS}, got unknown {unknown}")
    latent_dim, tokens = config.expression_latent_dim, config.expression_tokens
    if latent_dim % tokens:
        raise ValueError(f"expression_latent_dim {latent_dim} does not split into {tokens} tokens")
    reference = unet_from_config(unet)
    denoising_config = ml_collections.ConfigDict(unet.to_dict())
    denoising_config.extra_in_channels = RAY_MAP_CHANNELS
    denoising_config.expression_dim = latent_dim // tokens
    check_warp_shapes(reference, unet.sample_size, unet.sample_size)
    denoising = unet_from_config(denoising_config)
    denoising = denoising.clone(temporal=temporal_factory(config.get("temporal"), denoising))
    return Animator(reference, denoising, tokens, config.context_length,
                    tuple(config.null_drops), config.reference_attention)


def init_inputs(model, height, width, sources=1, frames=1):
    """Zero inputs for `model.init`: (source latent, noisy latent, timesteps, condition), frames per source."""
    rows = sources * frames
    channels = model.reference_unet.in_channels
    poses = jnp.broadcast_to(jnp.eye(3, 4), (rows, 3, 4))
    condition = make_condition(poses, poses, jnp.zeros((rows, model.expression_latent_dim)),
                               jnp.repeat(jnp.arange(sources), frames))
    return (jnp.zeros((sources, height, width, channels)), jnp.zeros((rows, height, width, channels)),
            jnp.zeros((rows,), jnp.int32), condition)


def reference_features(model, params, source_latent):
    """The reference tree of `source_latent` (S, h, w, 4): run once per source, reuse for every frame and step."""
    tokens, _ = model.apply({"params": params}, source_latent, method=Animator.encode_reference,
                            mutable=["reference"])
    return tokens


def denoise(model, params, noisy_latent, timesteps, condition, reference, frames=1):
    """`Animator.denoise` with `params` (rows in clips of `frames` frames where the model has a temporal module)."""
    return model.apply({"params": params}, noisy_latent, timesteps, condition, reference, frames,
                       method=Animator.denoise)


def with_backbone(params, backbone):
    """Animator params (unboxed) with both UNets set from `backbone`, params of the plain UNet of `config.unet`.

    `backbone` is what `dex_jax.convert` gives for an SD UNet (e.g. the 'unet' of `dex-portrait convert diffusers`
    output). The reference UNet takes it unchanged; the denoising UNet takes it with its conv_in ray-map input
    channels and its expression attention kept from `params`. A backbone whose keys or shapes differ from the
    reference UNet's is a ValueError naming the first differences.
    """
    expected = flatten_dict(params["reference_unet"])
    given = flatten_dict(backbone)
    problems = [f"missing {'.'.join(p)}" for p in expected if p not in given]
    problems += [f"unexpected {'.'.join(p)}" for p in given if p not in expected]
    problems += [f"{'.'.join(p)} {tuple(jnp.shape(given[p]))} vs model {tuple(expected[p].shape)}"
                 for p in expected if p in given and jnp.shape(given[p]) != expected[p].shape]
    if problems:
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(f"the backbone UNet does not fit the animator's config: {'; '.join(problems[:5])}{more}")
    reference = {p: jnp.asarray(given[p], expected[p].dtype) for p in expected}
    denoising = {}
    for path, value in flatten_dict(params["denoising_unet"]).items():
        if path == ("conv_in", "kernel"):
            value = value.at[:, :, :given[path].shape[2]].set(given[path])
        elif path in given:
            value = jnp.asarray(given[path], value.dtype)
        denoising[path] = value
    return {**params, "reference_unet": unflatten_dict(reference), "denoising_unet": unflatten_dict(denoising)}


def parameter_counts(config):
    """{part: number of params} of the animator `config` describes, from `jax.eval_shape` (nothing allocated).

    Parts: `PARTS`; denoising_unet counts the backbone UNet's params only (conv_in's first in_channels
    inputs); ray_map_input its 6 added conv_in input channels; expression_attention its norm_expr/attn_expr;
    temporal its temporal modules (0 without).
    """
    model = build_animator(config)
    side = config.unet.sample_size
    shapes = jax.eval_shape(lambda key: model.init(key, *init_inputs(model, side, side)), jax.random.key(0))
    counts = dict.fromkeys(PARTS, 0)
    for path, leaf in flatten_dict(nn.unbox(shapes["params"])).items():
        size = math.prod(leaf.shape)
        if path[0] == "denoising_unet" and is_temporal(path):
            counts["temporal"] += size
        elif path[0] == "denoising_unet" and any(part in EXPRESSION_MODULES for part in path):
            counts["expression_attention"] += size
        elif path[0] == "denoising_unet" and path[1:] == ("conv_in", "kernel"):
            backbone = size // leaf.shape[2] * config.unet.in_channels
            counts["denoising_unet"] += backbone
            counts["ray_map_input"] += size - backbone
        elif path[0] in ("null_no_expression", "null_nothing"):
            counts["null_latents"] += size
        else:
            counts[path[0]] += size
    return counts
