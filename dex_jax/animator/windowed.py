"""Sampling a clip of any length with the temporal module: overlapping windows, streamed, blended in latent space.

The temporal module attends over the frames of one clip; a long clip is covered by windows of `window` frames
(24, the clip length Stage 3 trains on) that start every `window - overlap` frames, the last one moved back to end
at the clip's last frame, so that every window is full and every frame is in at least one (`window_starts`). A clip
of at most `window` frames is one window of all its frames.

Windows are sampled one after another, so that only one window is held: `WindowStream` takes the clip's frames in
order and gives back each frame's result once no later window holds it. A window is sampled by one call of the
compiled `make_window_sampler` (the same program for every window of a clip): the DDIM loop over its frames as one
clip, with guidance as `animator.sampler`. Its first m frames are the previous window's last m (the overlap); at
each step, before the model call, and once more after the last step, the latents of those frames are blended with
the previous window's latents of the same frames at the same step (its trajectory, kept from its call):

    x_j <- a_j * x_prev_j + (1 - a_j) * x_j,    a_j = 1 - (j + 1) / (m + 1),  j = 0 .. m-1 (0 elsewhere)

so the overlap hands over from the previous window to the new one linearly, and the new window's other frames
attend, at every step, to overlap frames that agree with what the previous window made of them. The previous
window's trajectory (steps + 1 latents per frame of one window) is all that is kept between windows: memory does
not grow with the clip's length. The reference tree is an argument: the reference pass runs once per source.

Defaults: window 24 (Stage 3's clip length: the temporal module has seen only up to 24 frame positions) and overlap
4 (our choice, as AnimateDiff's long-video sampling overlaps its context windows: 4 shared frames hand over between
windows at a sixth of the cost of a model call per frame).
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.animator.model import denoise
from dex_jax.animator.sampler import CFG_MODES, guidance_variants
from dex_jax.diffusion.ddim import ddim_step, ddim_timesteps
from dex_jax.diffusion.sampler import guided_prediction, progressive_hybrid_weights, single_condition, step_noise

WINDOW = 24
OVERLAP = 4


def check_window(window, overlap):
    """ValueError unless window >= 1 and 0 <= overlap < window."""
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"window must be at least 1 and overlap in [0, window), got window {window}, "
                         f"overlap {overlap}")


def window_starts(frames, window=WINDOW, overlap=OVERLAP):
    """(start of each window, window length) covering `frames` frames (module docstring); ValueError for a bad
    window or overlap."""
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {frames}")
    check_window(window, overlap)
    if frames <= window:
        return np.zeros(1, np.int32), frames
    starts = list(range(0, frames - window, window - overlap)) + [frames - window]
    return np.asarray(starts, np.int32), window


def handover_weights(length, shared):
    """(length,) float32 weights of the previous window's latents over a window whose first `shared` frames it
    holds: 1 - (j + 1) / (shared + 1) for j < shared, 0 after."""
    weights = np.zeros(length, np.float32)
    weights[:shared] = 1 - np.arange(1, shared + 1) / (shared + 1)
    return weights


def make_window_sampler(model, schedule, num_steps, cfg="progressive", eta=0.0):
    """`sample(params, reference, latents, condition, guidance, rng, previous=None, weights=None) ->
    (latents, trajectory)`, one compiled program, sampling one window of F frames as one clip (module docstring).

    latents (F, h, w, C): the window's starting noise; condition: a FULL condition for the F frames; `previous`
    (num_steps + 1, F, h, w, C): the previous window's trajectory placed at this window's frames; `weights` (F,):
    `handover_weights`. previous None (the first window): the result is `animator.sampler`'s with frames=F.
    Returns the clean latents and this window's trajectory (the latents at each step, after the blend, and the
    result). `rng` feeds the eta noise (None when eta is 0).
    """
    if cfg not in CFG_MODES:
        raise ValueError(f"cfg must be one of {CFG_MODES}, got {cfg!r}")
    timesteps = jnp.asarray(ddim_timesteps(schedule, num_steps), jnp.int32)
    weights_fn = progressive_hybrid_weights if cfg == "progressive" else single_condition

    def window(params, reference, latents, condition, guidance, rng, previous, weights):
        frames = latents.shape[0]
        conditions, null = guidance_variants(condition, cfg)
        a = weights.reshape((-1,) + (1,) * (latents.ndim - 1)).astype(latents.dtype)

        def blend(x, i):
            return jnp.where(a > 0, a * previous[i].astype(x.dtype) + (1 - a) * x, x)

        def model_fn(params, stacked, step_timesteps, stacked_condition):
            return denoise(model, params, stacked, step_timesteps, stacked_condition, reference, frames)

        def body(i, carry):
            x, trajectory = carry
            x = blend(x, i)
            t = timesteps[i]
            out = guided_prediction(model_fn, params, x, t, conditions, null, weights_fn(i, num_steps), guidance)
            noise = None if eta == 0 else step_noise(rng, i, x)
            return ddim_step(schedule, out, t, x, num_steps, eta, noise), trajectory.at[i].set(x)

        trajectory = jnp.zeros((num_steps + 1,) + latents.shape, latents.dtype)
        x, trajectory = jax.lax.fori_loop(0, num_steps, body, (latents, trajectory))
        x = blend(x, num_steps)
        return x, trajectory.at[num_steps].set(x)

    compiled = jax.jit(window)

    def sample(params, reference, latents, condition, guidance, rng, previous=None, weights=None):
        if eta != 0 and rng is None:
            raise ValueError("eta > 0 needs an rng for the eta noise")
        if previous is None:
            previous = jnp.zeros((num_steps + 1,) + latents.shape, latents.dtype)
            weights = np.zeros(latents.shape[0], np.float32)
        return compiled(params, reference, latents, condition, guidance, rng, previous, weights)

    return sample


class WindowStream:
    """A clip of `frames` frames sampled window by window as its frames arrive (module docstring).

    `run(items, previous, weights) -> (results, trajectory)` samples one window: `items` is the list of the
    window's per-frame inputs (whatever the caller pushes); previous None and weights None for the first window,
    else the previous window's trajectory (steps + 1, F, ...) placed at this window's frames and
    `handover_weights`; `results`
    are indexable per frame of the window (rows of an array). `push(item)` returns the results (in frame order)
    that became final, `len(stream)` is the clip's frame count; after the last frame's push every result has
    been returned. ValueError when more than `frames` frames are pushed.
    """

    def __init__(self, frames, run, window=WINDOW, overlap=OVERLAP):
        self.starts, self.length = window_starts(frames, window, overlap)
        self.frames, self.run = frames, run
        self.items = collections.deque()
        self.first = 0  # the clip index of self.items[0]
        self.pushed = 0
        self.next_window = 0
        self.trajectory, self.trajectory_start = None, 0

    def __len__(self):
        return self.frames

    def push(self, item):
        if self.pushed >= self.frames:
            raise ValueError(f"the clip has {self.frames} frames; a frame more was pushed")
        self.items.append(item)
        self.pushed += 1
        finished = []
        while self.next_window < len(self.starts) and self.pushed >= self.starts[self.next_window] + self.length:
            finished.extend(self._sample(self.next_window))
            self.next_window += 1
        return finished

    def _sample(self, k):
        start = int(self.starts[k])
        end = start + self.length
        previous = weights = None
        if self.trajectory is not None:
            offset = start - self.trajectory_start
            shared = self.trajectory_start + self.length - start
            previous = jnp.concatenate([self.trajectory[:, offset:],
                                        jnp.zeros_like(self.trajectory[:, :self.length - shared])], axis=1)
            weights = handover_weights(self.length, shared)
        results, self.trajectory = self.run(list(self.items)[:self.length], previous, weights)
        self.trajectory_start = start
        final_end = int(self.starts[k + 1]) if k + 1 < len(self.starts) else end
        while self.first < final_end:  # frames no later window holds: not kept
            self.items.popleft()
            self.first += 1
        return [results[i] for i in range(final_end - start)]


def sample_clip(sampler, params, reference, latents, condition, guidance, rng=None, window=WINDOW, overlap=OVERLAP):
    """(T, h, w, C) clean latents of a whole clip (latents (T, h, w, C), a FULL condition for the T frames) through
    `WindowStream` with the window sampler `sampler` (`make_window_sampler`); window k's eta noise is rng folded
    with k."""
    frames = latents.shape[0]
    count = [0]

    def run(items, previous, weights):
        rows = np.asarray(items)
        take = jax.tree.map(lambda leaf: leaf[rows], (latents, condition))
        window_rng = None if rng is None else jax.random.fold_in(rng, count[0])
        count[0] += 1
        return sampler(params, reference, *take, guidance, window_rng, previous, weights)

    stream = WindowStream(frames, run, window, overlap)
    out = [result for t in range(frames) for result in stream.push(t)]
    return jnp.stack(out)
