"""Sampling a clip of any length with the temporal module: overlapping windows blended in latent space.

The temporal module attends over the frames of one clip; a long clip is covered by windows of `window` frames
(24, the clip length Stage 3 trains on) that start every `window - overlap` frames, the last one moved back to end
at the clip's last frame, so that every window is full and every frame is in at least one. A clip of at most
`window` frames is one window of all its frames. At each DDIM step every window's guided noise prediction is made
(its frames as one clip, its condition variants stacked as in `animator.sampler`), the predictions of a frame are
averaged over the windows that hold it (sum / count), and one DDIM update moves the whole clip. The reference tree
is an argument: the reference pass runs once per source, before sampling. Windows run one after another inside
the step (a `fori_loop`), so the compiled program does not grow with the clip's length.

Defaults: window 24 (Stage 3's clip length: the temporal module has seen only up to 24 frame positions) and overlap
4 (AnimateDiff-style long-video sampling, our choice: 4 shared frames tie neighbouring windows at a sixth of the
cost of a model call per frame).
"""

import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.animator.model import denoise
from dex_jax.animator.sampler import CFG_MODES, guidance_variants
from dex_jax.diffusion.ddim import ddim_step, ddim_timesteps
from dex_jax.diffusion.sampler import guided_prediction, progressive_hybrid_weights, single_condition, step_noise

WINDOW = 24
OVERLAP = 4


def window_starts(frames, window=WINDOW, overlap=OVERLAP):
    """(start of each window, window length) covering `frames` frames (module docstring); ValueError for a bad
    window or overlap."""
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {frames}")
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"window must be at least 1 and overlap in [0, window), got window {window}, "
                         f"overlap {overlap}")
    if frames <= window:
        return np.zeros(1, np.int32), frames
    starts = list(range(0, frames - window, window - overlap)) + [frames - window]
    return np.asarray(starts, np.int32), window


def make_windowed_sampler(model, schedule, num_steps, cfg="progressive", eta=0.0, window=WINDOW, overlap=OVERLAP):
    """A jitted `sample(params, reference, latents, condition, guidance, rng) -> latents` over a clip of T frames
    (latents (T, h, w, C), a FULL condition for the T frames, in order), as `animator.sampler.make_animator_sampler`
    but with the frames in overlapping windows of one clip each (module docstring)."""
    if cfg not in CFG_MODES:
        raise ValueError(f"cfg must be one of {CFG_MODES}, got {cfg!r}")
    timesteps = jnp.asarray(ddim_timesteps(schedule, num_steps), jnp.int32)
    weights_fn = progressive_hybrid_weights if cfg == "progressive" else single_condition

    def sample(params, reference, latents, condition, guidance, rng):
        if eta != 0 and rng is None:
            raise ValueError("eta > 0 needs an rng for the eta noise")
        frames = latents.shape[0]
        starts, length = window_starts(frames, window, overlap)
        counts = np.zeros(frames, np.float32)
        for start in starts:
            counts[start:start + length] += 1
        conditions, null = guidance_variants(condition, cfg)

        def model_fn(params, stacked, step_timesteps, stacked_condition):
            return denoise(model, params, stacked, step_timesteps, stacked_condition, reference, length)

        def take(tree, start):
            return jax.tree.map(lambda leaf: jax.lax.dynamic_slice_in_dim(leaf, start, length), tree)

        def body(i, x):
            t, weights = timesteps[i], weights_fn(i, num_steps)

            def add_window(w, total):
                start = jnp.asarray(starts)[w]
                out = guided_prediction(model_fn, params, take(x, start), t, take(conditions, start),
                                        None if null is None else take(null, start), weights, guidance)
                current = jax.lax.dynamic_slice_in_dim(total, start, length)
                return jax.lax.dynamic_update_slice_in_dim(total, current + out.astype(total.dtype), start, 0)

            total = jax.lax.fori_loop(0, len(starts), add_window, jnp.zeros(x.shape, jnp.float32))
            prediction = (total / counts.reshape((-1,) + (1,) * (x.ndim - 1))).astype(x.dtype)
            noise = None if eta == 0 else step_noise(rng, i, x)
            return ddim_step(schedule, prediction, t, x, num_steps, eta, noise)

        return jax.lax.fori_loop(0, num_steps, body, latents)

    return jax.jit(sample)
