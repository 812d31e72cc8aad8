"""The animator's per-frame condition: poses, expression latent, which source, and which guidance variant.

A condition is a dict of arrays whose leading axis is the batch of frames (rows), so that condition variants
stack along the batch for one model call (dex_jax.diffusion.sampler):

    source_index  (N,) int32     the source (row of the reference features) each frame animates
    source_pose   (N, 3, 4)      P_s = [sR | t] of that source (dex_jax.geometry)
    driving_pose  (N, 3, 4)      P_d of the driving frame
    expression    (N, E)         the frozen Stage-1 expression encoder's latent of the driving frame
    variant       (N,) int32     FULL (c), NO_EXPRESSION (c without expression) or NOTHING (unconditional)

NO_EXPRESSION replaces the expression latent with the learned "no expression" null latent. NOTHING replaces
what the animator's `null_drops` name (`NULL_PARTS`): 'expression' -> the learned "nothing" null latent,
'reference' -> no reference tokens in self-attention and no warped-feature residual, 'ray_maps' -> zero ray
maps (the ray maps of the identity pose). The pose still reaches the denoiser through whatever is kept.
"""

from typing import NamedTuple

import jax.numpy as jnp

from dex_jax import geometry
from dex_jax.diffusion.embeddings import timestep_embedding

FULL, NO_EXPRESSION, NOTHING = 0, 1, 2
NULL_PARTS = ("reference", "ray_maps", "expression")
CONDITION_KEYS = ("source_index", "source_pose", "driving_pose", "expression", "variant")


class ConditionVariants(NamedTuple):
    """One condition in its three guidance variants, each a full condition dict."""

    full: dict
    no_expression: dict
    nothing: dict


def make_condition(source_pose, driving_pose, expression, source_index=None, variant=FULL):
    """A FULL condition dict for N frames; `source_index` None means every frame animates source 0."""
    rows = jnp.shape(expression)[0]
    source_index = jnp.zeros((rows,), jnp.int32) if source_index is None else jnp.asarray(source_index, jnp.int32)
    return {"source_index": source_index, "source_pose": jnp.asarray(source_pose, jnp.float32),
            "driving_pose": jnp.asarray(driving_pose, jnp.float32), "expression": jnp.asarray(expression),
            "variant": jnp.full((rows,), variant, jnp.int32)}


def condition_variants(condition):
    """(c, c without expression, unconditional): copies of `condition` with their `variant` set."""
    def variant(value):
        return {**condition, "variant": jnp.full_like(condition["variant"], value)}

    return ConditionVariants(variant(FULL), variant(NO_EXPRESSION), variant(NOTHING))


def check_condition(condition, rows, latent_dim):
    """A ValueError naming the first field of `condition` that is missing or misshapen for `rows` frames."""
    if not isinstance(condition, dict) or set(condition) != set(CONDITION_KEYS):
        keys = sorted(condition) if isinstance(condition, dict) else type(condition).__name__
        raise ValueError(f"an animator condition needs exactly the keys {CONDITION_KEYS}, got {keys}")
    shapes = {"source_index": (rows,), "source_pose": (rows, 3, 4), "driving_pose": (rows, 3, 4),
              "expression": (rows, latent_dim), "variant": (rows,)}
    for key, shape in shapes.items():
        if jnp.shape(condition[key]) != shape:
            raise ValueError(f"condition {key} must have shape {shape} for {rows} frames, "
                             f"got {jnp.shape(condition[key])}")


def ray_map_input(source_pose, driving_pose, height, width):
    """(N, h, w, 6): the source then the driving ray map (Eq. 3, translation included) at h x w."""
    return jnp.concatenate([geometry.ray_map(source_pose, height, width),
                            geometry.ray_map(driving_pose, height, width)], -1)


def expression_position(num_tokens, dim):
    """(num_tokens, dim) fixed sin/cos position of each expression token: [sin, cos] halves at 10000^(-i/(dim/2))."""
    return timestep_embedding(jnp.arange(num_tokens), dim, flip_sin_to_cos=False, freq_shift=0.0)


def expression_tokens(latent, num_tokens):
    """(N, E) latents -> (N, num_tokens, E / num_tokens) tokens (token k is latent[k*d:(k+1)*d]) plus positions."""
    rows, dim = latent.shape
    if dim % num_tokens:
        raise ValueError(f"an expression latent of {dim} cannot split into {num_tokens} tokens")
    return latent.reshape(rows, num_tokens, dim // num_tokens) + expression_position(num_tokens, dim // num_tokens)
