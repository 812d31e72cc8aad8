"""Windowed sampling of long clips (dex_jax.animator.windowed) on the `test` animator with a temporal module: the
window layout, the stream's order and what it holds, a clip of at most one window equals the one-clip sampler,
60 frames give 60 frames, each the frame the per-frame sampler gives it when the temporal module adds nothing (no
frame dropped, duplicated or moved), and with it acting the first window's own frames are that window's as one
clip while its overlap is handed over to the next."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from configs.animator_model import get_config
from dex_jax import geometry
from dex_jax.animator.conditioning import make_condition
from dex_jax.animator.model import build_animator, init_inputs, reference_features
from dex_jax.animator.sampler import make_animator_sampler
from dex_jax.animator.temporal import is_temporal
from dex_jax.animator.windowed import WindowStream, handover_weights, make_window_sampler, sample_clip, window_starts
from dex_jax.diffusion.schedule import SD15

SIDE, STEPS, W = 8, 3, 2.5


@pytest.fixture(scope="module")
def setup():
    """The test animator with a temporal module and every param random (the temporal module acts), the same params
    with each temporal module's output projection zeroed (it adds nothing), and one source's reference tree."""
    config = get_config("test")
    config.temporal = dict(enabled=True, heads=2, attention_layers=2)
    model = build_animator(config)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), *init_inputs(model, SIDE, SIDE))["params"])
    rng = np.random.default_rng(0)
    flat = {path: jnp.asarray(0.3 * rng.standard_normal(v.shape), v.dtype) for path, v in flatten_dict(params).items()}
    silent = {path: jnp.zeros_like(v) if is_temporal(path) and "proj_out" in path else v for path, v in flat.items()}
    source = jnp.asarray(rng.standard_normal((1, SIDE, SIDE, 4)), jnp.float32)
    reference = jax.jit(lambda p, s: reference_features(model, p, s))(unflatten_dict(flat), source)
    return model, unflatten_dict(flat), unflatten_dict(silent), reference


def clip(model, frames, seed):
    """(noise latents, FULL condition) of a clip of `frames` frames of the one source, each frame its own."""
    rng = np.random.default_rng(seed)

    def poses(n):
        return geometry.pose_from_params(*rng.uniform(-0.3, 0.3, (3, n)), *rng.uniform(-0.1, 0.1, (2, n)),
                                         rng.uniform(0.9, 1.1, n))

    condition = make_condition(jnp.broadcast_to(poses(1), (frames, 3, 4)), poses(frames),
                               rng.standard_normal((frames, model.expression_latent_dim)), np.zeros(frames, int))
    return jnp.asarray(rng.standard_normal((frames, SIDE, SIDE, 4)), jnp.float32), condition


def test_windows_cover_every_frame_with_full_windows():
    starts, length = window_starts(60)
    assert starts.tolist() == [0, 20, 36] and length == 24
    assert window_starts(24)[0].tolist() == [0] and window_starts(24)[1] == 24
    assert window_starts(5)[0].tolist() == [0] and window_starts(5)[1] == 5
    assert window_starts(25)[0].tolist() == [0, 1]
    for frames, window, overlap in ((61, 24, 4), (100, 16, 8), (47, 24, 0)):
        starts, length = window_starts(frames, window, overlap)
        covered = np.zeros(frames, int)
        for start in starts:
            covered[start:start + length] += 1
        assert length == window and covered.min() >= 1 and starts[-1] + length == frames
        assert np.all(np.diff(starts) <= window - overlap)
    for bad in ((0, 24, 4), (10, 0, 0), (10, 4, 4), (10, 4, -1)):
        with pytest.raises(ValueError, match="frame|window"):
            window_starts(*bad)


def test_one_window_equals_the_one_clip_sampler(setup):
    """A clip of at most one window (5 frames, window 6) sampled windowed gives the frames the plain sampler gives
    with the 5 frames as one clip, with the temporal module acting."""
    model, params, _, reference = setup
    latents, condition = clip(model, 5, seed=1)
    windowed = make_window_sampler(model, SD15, STEPS, "progressive")
    whole = make_animator_sampler(model, SD15, STEPS, "progressive", frames=5)
    expected = np.asarray(whole(params, reference, latents, condition, W, None))
    got = np.asarray(sample_clip(windowed, params, reference, latents, condition, W, window=6, overlap=2))
    assert got.shape == expected.shape == (5, SIDE, SIDE, 4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    alone = np.asarray(make_animator_sampler(model, SD15, STEPS, "progressive")(params, reference, latents,
                                                                                 condition, W, None))
    assert np.abs(alone - expected).max() > 1e-3  # the temporal module acts across the clip


def test_sixty_frames_give_sixty_frames_in_order(setup):
    """60 frames in windows of 24 with overlap 4: 60 frames come back. With the temporal module silent every
    frame equals the per-frame sampler's frame (the blend of a frame's identical predictions is that prediction),
    so none is dropped, duplicated or moved; with it acting, the clip changes and stays finite."""
    model, params, silent, reference = setup
    latents, condition = clip(model, 60, seed=2)
    windowed = make_window_sampler(model, SD15, STEPS, "plain")
    per_frame = make_animator_sampler(model, SD15, STEPS, "plain")
    got = np.asarray(sample_clip(windowed, silent, reference, latents, condition, W))
    expected = np.asarray(per_frame(silent, reference, latents, condition, W, None))
    assert got.shape == (60, SIDE, SIDE, 4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    nearest = [int(np.argmin(np.abs(expected - frame).reshape(60, -1).max(1))) for frame in got]
    assert nearest == list(range(60))
    acting = np.asarray(sample_clip(windowed, params, reference, latents, condition, W))
    assert acting.shape == (60, SIDE, SIDE, 4) and np.isfinite(acting).all()
    assert np.abs(acting - expected).max() > 1e-3
    first = jax.tree.map(lambda leaf: leaf[:24], (latents, condition))
    alone = np.asarray(make_animator_sampler(model, SD15, STEPS, "plain", frames=24)(params, reference, *first, W,
                                                                                       None))
    np.testing.assert_allclose(acting[:20], alone[:20], rtol=0, atol=1e-5)  # final before the next window
    assert np.abs(acting[20:24] - alone[20:24]).max() > 1e-4  # the overlap is handed over to window 2


def test_stream_returns_each_frame_once_in_order_holding_one_window():
    """Items pushed one at a time come back once each, in order, as soon as no later window holds them; the
    stream holds at most one window of items, and each window after the first gets the previous window's
    trajectory at its shared frames with the handover weights."""
    calls = []

    def run(items, previous, weights):
        calls.append((list(items), None if previous is None else np.asarray(previous), weights))
        trajectory = np.asarray(items, np.float32)[None, :, None] + np.zeros((3, 1, 2), np.float32)
        return [10 * i for i in items], trajectory

    stream = WindowStream(60, run, window=24, overlap=4)
    returned, held = [], 0
    for t in range(60):
        got = stream.push(t)
        held = max(held, len(stream.items))
        if t in (23, 43):
            assert got and got[-1] == 10 * (19 if t == 23 else 35)
        else:
            assert got == [] or t == 59
        returned.extend(got)
    assert returned == [10 * t for t in range(60)] and held <= 24 and len(stream) == 60
    assert [c[0][0] for c in calls] == [0, 20, 36] and all(len(c[0]) == 24 for c in calls)
    assert calls[0][1] is None and calls[0][2] is None
    np.testing.assert_array_equal(calls[1][1][0, :4, 0], [20, 21, 22, 23])  # window 1 shares frames 20..23
    np.testing.assert_array_equal(calls[1][1][0, 4:, 0], 0)
    np.testing.assert_allclose(calls[1][2], handover_weights(24, 4))
    np.testing.assert_array_equal(calls[2][1][0, :8, 0], np.arange(36, 44))  # the last window shares 8
    with pytest.raises(ValueError, match="pushed"):
        stream.push(60)


def test_handover_weights_fall_linearly_over_the_shared_frames():
    np.testing.assert_allclose(handover_weights(6, 4), [0.8, 0.6, 0.4, 0.2, 0, 0], atol=1e-7)
    assert handover_weights(3, 0).tolist() == [0, 0, 0]
