"""DDIM sampling steps as pure functions, step for step the same as diffusers' DDIMScheduler."""

import jax.numpy as jnp
import numpy as np

from dex_jax.diffusion.schedule import alphas_cumprod


def ddim_timesteps(config, num_steps):
    """The descending integer timesteps diffusers' `set_timesteps(num_steps)` produces for `config`."""
    n = config.num_train_timesteps
    if not 1 <= num_steps <= n:
        raise ValueError(f"num_steps must be in [1, {n}], got {num_steps}")
    if config.timestep_spacing == "linspace":
        return np.linspace(0, n - 1, num_steps).round()[::-1].astype(np.int64)
    if config.timestep_spacing == "leading":
        return (np.arange(num_steps) * (n // num_steps))[::-1].astype(np.int64) + config.steps_offset
    return np.round(np.arange(n, 0, -n / num_steps)).astype(np.int64) - 1


def _broadcast(values, like):
    return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def ddim_step(config, model_output, timestep, sample, num_steps, eta=0.0, noise=None):
    """One DDIM update x_t -> x_{t - T // num_steps} (DDIM paper Eq. 12 and 16).

    `timestep` is a scalar or per-example (batch,) integer array and may be traced. Like diffusers, the
    previous timestep is always `timestep - num_train_timesteps // num_steps`, whatever the spacing.
    With eta > 0 the step adds eta * sigma_t * noise, so `noise` (standard normal, shaped like `sample`)
    is required unless eta is the Python number 0.
    """
    if noise is None and not (isinstance(eta, (int, float)) and eta == 0):
        raise ValueError("ddim_step needs `noise` when eta may be nonzero")
    compute = jnp.promote_types(sample.dtype, jnp.float32)
    table = jnp.asarray(alphas_cumprod(config), compute)
    final = jnp.asarray(1.0, compute) if config.set_alpha_to_one else table[0]
    t = jnp.asarray(timestep)
    prev = t - config.num_train_timesteps // num_steps
    alpha_t = _broadcast(table[t], sample)
    alpha_prev = _broadcast(jnp.where(prev >= 0, table[jnp.maximum(prev, 0)], final), sample)
    beta_t = 1 - alpha_t

    x = sample.astype(compute)
    out = model_output.astype(compute)
    if config.prediction_type == "epsilon":
        pred_x0 = (x - jnp.sqrt(beta_t) * out) / jnp.sqrt(alpha_t)
        pred_eps = out
    else:
        pred_x0 = jnp.sqrt(alpha_t) * x - jnp.sqrt(beta_t) * out
        pred_eps = jnp.sqrt(alpha_t) * out + jnp.sqrt(beta_t) * x
    if config.clip_sample:
        pred_x0 = jnp.clip(pred_x0, -config.clip_sample_range, config.clip_sample_range)

    variance = (1 - alpha_prev) / beta_t * (1 - alpha_t / alpha_prev)
    std = jnp.asarray(eta, compute) * jnp.sqrt(variance)
    prev_sample = jnp.sqrt(alpha_prev) * pred_x0 + jnp.sqrt(1 - alpha_prev - std * std) * pred_eps
    if noise is not None:
        prev_sample = prev_sample + std * noise.astype(compute)
    return prev_sample.astype(sample.dtype)
