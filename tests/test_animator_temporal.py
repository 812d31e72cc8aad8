"""The Stage-3 temporal module (dex_jax.animator.temporal) in the `test` animator: a fresh module leaves the Stage-2
denoiser exactly unchanged; a trained one mixes the frames of a clip and nothing across clips; configs without it
build the Stage-2 animator; bad settings are one-line errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from configs.animator_model import get_config
from dex_jax import geometry
from dex_jax.animator.conditioning import FULL, NO_EXPRESSION, NOTHING, make_condition
from dex_jax.animator.model import build_animator, denoise, init_inputs, parameter_counts, reference_features
from dex_jax.animator.reference import transformer_blocks
from dex_jax.animator.temporal import from_frame_sequences, is_temporal, to_frame_sequences

CLIPS, FRAMES = 2, 3
TEMPORAL = dict(enabled=True, heads=2, attention_layers=2)


def temporal_config(**fields):
    config = get_config("test")
    config.temporal = {**TEMPORAL, **fields}
    return config


def init_params(model, seed):
    return nn.unbox(jax.jit(model.init)(jax.random.key(seed), *init_inputs(model, 8, 8))["params"])


def randomised(params, select, seed):
    """params with every leaf that `select(path)` picks set to random values (zero-initialised layers included)."""
    rng = np.random.default_rng(seed)
    flat = flatten_dict(params)
    for path, value in flat.items():
        if select(path):
            flat[path] = jnp.asarray(0.3 * rng.standard_normal(value.shape), value.dtype)
    return unflatten_dict(flat)


def clip_inputs(model, seed):
    """Two sources, each driving one clip of FRAMES frames (clip-major rows), every condition variant present."""
    rng = np.random.default_rng(seed)
    rows = CLIPS * FRAMES
    source_index = np.repeat(np.arange(CLIPS), FRAMES)

    def poses(n):
        return geometry.pose_from_params(*rng.uniform(-0.4, 0.4, (3, n)), *rng.uniform(-0.1, 0.1, (2, n)),
                                         rng.uniform(0.9, 1.1, n))

    condition = make_condition(poses(CLIPS)[source_index], poses(rows),
                               rng.standard_normal((rows, model.expression_latent_dim)), source_index)
    condition["variant"] = jnp.asarray([FULL, NO_EXPRESSION, NOTHING] * CLIPS, jnp.int32)
    sources = jnp.asarray(rng.standard_normal((CLIPS, 8, 8, 4)), jnp.float32)
    noisy = jnp.asarray(rng.standard_normal((rows, 8, 8, 4)), jnp.float32)
    timesteps = jnp.asarray(rng.integers(0, 1000, rows), jnp.int32)
    return sources, noisy, timesteps, condition


class Models:
    """The Stage-2 `test` animator with every param random, and the same animator with a temporal module whose
    params are a fresh init's (all else the Stage-2 params)."""

    def __init__(self):
        self.stage2 = build_animator(get_config("test"))
        self.temporal = build_animator(temporal_config())
        self.stage2_params = randomised(init_params(self.stage2, 0), lambda path: True, seed=1)
        fresh = flatten_dict(init_params(self.temporal, 2))
        self.temporal_params = unflatten_dict({**flatten_dict(self.stage2_params),
                                               **{p: v for p, v in fresh.items() if is_temporal(p)}})
        self.reference = jax.jit(lambda params, source: reference_features(self.stage2, params, source))
        self.denoise = {"stage2": self.jit_denoise(self.stage2), "temporal": self.jit_denoise(self.temporal)}

    @staticmethod
    def jit_denoise(model):
        return jax.jit(lambda params, noisy, t, condition, reference:
                       denoise(model, params, noisy, t, condition, reference, FRAMES))

    def run(self, which, params, noisy, timesteps, condition, reference):
        return np.asarray(self.denoise[which](params, noisy, timesteps, condition, reference))


@pytest.fixture(scope="module")
def models():
    return Models()


def test_frame_sequences_round_trip_and_group_each_clip():
    tokens = jnp.arange(CLIPS * FRAMES * 5 * 2, dtype=jnp.float32).reshape(CLIPS * FRAMES, 5, 2)
    sequences = to_frame_sequences(tokens, FRAMES)
    assert sequences.shape == (CLIPS * 5, FRAMES, 2)
    # sequence (clip c, position l) holds rows c * FRAMES + f, f = 0..FRAMES-1, at token l
    np.testing.assert_array_equal(sequences[1 * 5 + 4], tokens[3:6, 4])
    np.testing.assert_array_equal(from_frame_sequences(sequences, FRAMES, 5), tokens)


def test_fresh_temporal_module_gives_exactly_the_stage2_denoiser(models):
    """A temporal module at every transformer block (after the expression attention), fresh from init, adds exactly
    zero: same noise prediction as the Stage-2 animator, bit for bit, with every other param random."""
    paths = {p[:-1] for p in flatten_dict(models.temporal_params) if is_temporal(p)}
    blocks = {p[: p.index("temporal")] for p in paths}
    assert blocks == {("denoising_unet",) + block.path for block in transformer_blocks(models.stage2.denoising_unet)}
    assert not any(is_temporal(p) for p in flatten_dict(models.stage2_params))

    sources, noisy, timesteps, condition = clip_inputs(models.stage2, seed=0)
    reference = models.reference(models.stage2_params, sources)
    stage2 = models.run("stage2", models.stage2_params, noisy, timesteps, condition, reference)
    fresh = models.run("temporal", models.temporal_params, noisy, timesteps, condition, reference)
    assert np.abs(stage2).max() > 0.1
    np.testing.assert_array_equal(fresh, stage2)


def test_trained_temporal_module_mixes_frames_within_a_clip_only(models):
    """With random temporal params, changing one frame's noisy latent changes the other frames of its clip and no
    frame of the other clip; the Stage-2 animator changes that frame alone."""
    params = randomised(models.temporal_params, is_temporal, seed=3)
    sources, noisy, timesteps, condition = clip_inputs(models.stage2, seed=0)
    reference = models.reference(params, sources)
    changed_noisy = noisy.at[1].add(1.0)  # frame 1 of clip 0

    def difference(which, p):
        before = models.run(which, p, noisy, timesteps, condition, reference)
        after = models.run(which, p, changed_noisy, timesteps, condition, reference)
        return np.abs(after - before).reshape(CLIPS * FRAMES, -1).max(axis=1)

    temporal = difference("temporal", params)
    assert temporal[1] > 1e-2 and temporal[0] > 1e-4 and temporal[2] > 1e-4
    np.testing.assert_array_equal(temporal[FRAMES:], 0.0)
    stage2 = difference("stage2", models.stage2_params)
    assert stage2[1] > 1e-2
    np.testing.assert_array_equal(np.delete(stage2, 1), 0.0)


def test_temporal_parameter_count():
    """Per transformer block of width c: GroupNorm and 2 + 1 LayerNorms (2c each), proj_in and proj_out (c x c + c),
    per attention layer to_q/to_k/to_v (c x c) and to_out_0 (c x c + c), the GEGLU feed-forward (c x 8c + 8c,
    4c x c + c)."""
    config = temporal_config()
    counts = parameter_counts(config)
    layers = TEMPORAL["attention_layers"]
    channels = [block.channels for block in transformer_blocks(build_animator(config).denoising_unet)]
    per_block = [2 * c * (2 + layers) + 2 * (c * c + c) + layers * (4 * c * c + c) + (8 * c * c + 8 * c)
                 + (4 * c * c + c) for c in channels]
    assert counts["temporal"] == sum(per_block)
    assert parameter_counts(get_config("test"))["temporal"] == 0


def test_disabled_or_absent_temporal_builds_the_stage2_animator():
    """Stage-2 configs (no model.temporal) and enabled=False build the same animator, params of the same shapes."""
    def shapes(config):
        model = build_animator(config)
        tree = jax.eval_shape(model.init, jax.random.key(0), *init_inputs(model, 8, 8))
        return jax.tree.map(lambda x: (x.shape, x.dtype), nn.unbox(tree)["params"])

    off = temporal_config(enabled=False)
    assert build_animator(off).denoising_unet.temporal is None
    assert shapes(off) == shapes(get_config("test"))


def test_bad_temporal_settings_are_one_line_errors(models):
    with pytest.raises(ValueError, match="heads 3 does not divide the UNet's block widths"):
        build_animator(temporal_config(heads=3))
    bad = get_config("test")
    bad.temporal = ml_collections.ConfigDict({**TEMPORAL, "window": 24})
    with pytest.raises(ValueError, match=r"model.temporal may set .* unknown \['window'\]"):
        build_animator(bad)
    sources, noisy, timesteps, condition = clip_inputs(models.stage2, seed=0)
    reference = models.reference(models.stage2_params, sources)
    with pytest.raises(ValueError, match="6 rows do not split into clips of 4 frames"):
        denoise(models.temporal, models.temporal_params, noisy, timesteps, condition, reference, 4)
