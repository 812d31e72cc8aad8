"""Sampling the animator: DDIM with classifier-free guidance over its condition variants, all steps in one jit.

The reference pass (`model.reference_features`) runs once per source, outside the loop; its tree is an argument
of the sampler and is read by every step. Each step makes ONE model call on the frames' condition variants
stacked along the batch (`dex_jax.diffusion.sampler.guided_prediction`) and one DDIM update. The guidance modes:

    progressive  Eq. 5 (progressive hybrid CFG): (c without expression, c) mixed by `progressive_hybrid_weights`
                 (step t counting down 35..1: t > 30 only c without expression, 25 < t <= 30 a linear blend,
                 t <= 25 only c), then w e(mix) + (1 - w) e(nothing); 3 rows per frame per step
    plain        w e(c) + (1 - w) e(nothing); 2 rows per frame per step
    none         e(c), no guidance (w is unused); 1 row per frame per step

'nothing' is the unconditional variant (`conditioning.NOTHING`: what the animator's `null_drops` name).
"""

import jax

from dex_jax.animator.conditioning import condition_variants
from dex_jax.animator.model import denoise
from dex_jax.diffusion.sampler import make_sampler, progressive_hybrid_weights, single_condition

CFG_MODES = ("progressive", "plain", "none")
VARIANTS_PER_FRAME = {"progressive": 3, "plain": 2, "none": 1}


def guidance_variants(condition, cfg):
    """(conditions, null condition or None) that the `cfg` mode stacks for one model call, from a FULL condition."""
    variants = condition_variants(condition)
    if cfg == "progressive":
        return (variants.no_expression, variants.full), variants.nothing
    if cfg == "plain":
        return (variants.full,), variants.nothing
    if cfg == "none":
        return (variants.full,), None
    raise ValueError(f"cfg must be one of {CFG_MODES}, got {cfg!r}")


def make_animator_sampler(model, schedule, num_steps, cfg="progressive", eta=0.0, mesh=None, frames=1):
    """A jitted `sample(params, reference, latents, condition, guidance, rng) -> latents` of `model` (an Animator).

    `schedule`: a diffusion.schedule.SchedulerConfig; `num_steps` DDIM steps from the noise `latents` (N, h, w, C)
    to the clean latents. `reference` is the reference tree of the sources that `condition` (a FULL
    conditioning dict for the N frames) indexes; `guidance` the scale w (a traced scalar: changing it does not
    recompile); `rng` the key of the eta noise (None when eta is 0). With a `mesh`, the latents and each
    step's stacked model batch are sharded on its 'data' axis. `frames`: with a temporal module, the N frames are
    clips of that many consecutive frames (N: all of them one clip; 1: each frame alone); longer clips:
    `animator.windowed`.
    """
    if cfg not in CFG_MODES:
        raise ValueError(f"cfg must be one of {CFG_MODES}, got {cfg!r}")

    def model_fn(params_and_reference, latents, timesteps, condition):
        params, reference = params_and_reference
        return denoise(model, params, latents, timesteps, condition, reference, frames)

    weights_fn = progressive_hybrid_weights if cfg == "progressive" else single_condition
    loop = make_sampler(model_fn, schedule, num_steps, eta=eta, weights_fn=weights_fn, mesh=mesh)

    def sample(params, reference, latents, condition, guidance, rng):
        conditions, null = guidance_variants(condition, cfg)
        return loop((params, reference), latents, conditions, null, guidance, rng)

    return jax.jit(sample)
