"""The DDIM sampling loop in one jit, with classifier-free guidance over K condition variants in one model call.

`model_fn(params, latents, timesteps, condition) -> model_output` is any denoiser: `timesteps` is a (batch,)
int32 array and `condition` a pytree whose leaves have the batch as their leading axis. Each step stacks
the K condition variants and the null condition along the batch, calls the model once, mixes the variants
with `weights_fn(step_index, num_steps)` and applies guidance:

    e = w * sum_k m_k e(c_k) + (1 - w) e(null)

Because the mixing weights sum to one this equals mixing the guided estimates, as in DeX-Portrait Eq. 5.
"""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from dex_jax.diffusion.ddim import ddim_step, ddim_timesteps


def single_condition(step_index, num_steps):
    """Weights for one condition variant: always all of it."""
    del step_index, num_steps
    return jnp.ones((1,), jnp.float32)


def progressive_hybrid_weights(step_index, num_steps, reference_steps=35, blend_start=30, blend_end=25):
    """DeX-Portrait's progressive hybrid CFG: weights of (c without expression, c) at a loop step.

    With t = num_steps - step_index counting down (35..1 for 35 steps): t > 30 uses only c without
    expression, 25 < t <= 30 blends ((t - 25) / 5, (30 - t) / 5), t <= 25 uses only c. Other step
    counts place t on the same 35-step scale. `step_index` may be traced.
    """
    t = (num_steps - jnp.asarray(step_index, jnp.float32)) * (reference_steps / num_steps)
    full = jnp.clip((blend_start - t) / (blend_start - blend_end), 0.0, 1.0)
    return jnp.stack([1.0 - full, full])


def step_noise(rng, step_index, like):
    """The standard normal noise the eta term uses at `step_index`: one fold of `rng` per step."""
    return jax.random.normal(jax.random.fold_in(rng, step_index), like.shape, like.dtype)


def _stack_conditions(conditions):
    return jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *conditions)


def guided_prediction(model_fn, params, latents, timestep, conditions, null_condition, weights,
                      guidance_scale, constrain=lambda x: x):
    """One batched model call over the K variants (and the null condition when given), mixed and guided."""
    if weights.shape != (len(conditions),):
        raise ValueError(f"weights_fn gives weights of shape {weights.shape} for {len(conditions)} condition variants")
    variants = tuple(conditions) + (() if null_condition is None else (null_condition,))
    batch = latents.shape[0]
    stacked = constrain(jnp.concatenate([latents] * len(variants), axis=0))
    timesteps = jnp.full((stacked.shape[0],), timestep, jnp.int32)
    out = model_fn(params, stacked, timesteps, _stack_conditions(variants))
    out = out.reshape((len(variants), batch) + out.shape[1:])
    compute = jnp.promote_types(out.dtype, jnp.float32)
    mixed = jnp.tensordot(weights.astype(compute), out[: len(conditions)].astype(compute), axes=1)
    if null_condition is None:
        return mixed.astype(out.dtype)
    w = jnp.asarray(guidance_scale, compute)
    return (w * mixed + (1 - w) * out[-1].astype(compute)).astype(out.dtype)


def make_sampler(model_fn, config, num_steps, *, eta=0.0, weights_fn=single_condition, mesh=None,
                 data_axis="data"):
    """A jitted `sample(params, latents, conditions, null_condition, guidance_scale, rng) -> latents`.

    `conditions` is a tuple of K condition pytrees matching what `weights_fn` weighs; `null_condition`
    None turns guidance off. `rng` feeds the eta noise (`step_noise`) and may be None when eta == 0.
    With a `mesh`, the latents (and the stacked model batch) are constrained to shard their batch on
    `data_axis`.
    """
    timesteps = jnp.asarray(ddim_timesteps(config, num_steps), jnp.int32)
    if mesh is None:
        def constrain(x):
            return x
    else:
        sharding = NamedSharding(mesh, PartitionSpec(data_axis))

        def constrain(x):
            return jax.lax.with_sharding_constraint(x, sharding)

    def sample(params, latents, conditions, null_condition, guidance_scale, rng):
        if eta != 0 and rng is None:
            raise ValueError("make_sampler(eta > 0) needs an rng for the eta noise")

        def body(i, x):
            x = constrain(x)
            t = timesteps[i]
            weights = weights_fn(i, num_steps)
            out = guided_prediction(model_fn, params, x, t, conditions, null_condition, weights,
                                    guidance_scale, constrain)
            noise = None if eta == 0 else step_noise(rng, i, x)
            return ddim_step(config, out, t, x, num_steps, eta, noise)

        return constrain(jax.lax.fori_loop(0, num_steps, body, constrain(latents)))

    return jax.jit(sample)
