"""The learnability gates' short versions (docs/experiments/learnability.md): each Stage-1 network alone, trained by
its gate's stage and recipe (configs/learnability.py) on the `test` model, fits a few SynthHeads frames in a few
hundred steps, its error falling far below the best constant guess. The generator's short version, on the `test`
model's 16-channel decoder, does not yet fall that far in 200 steps (the `tiny` model meets its gate: learnability.md,
"Appearance path"): its test checks that it learns and is marked xfailed while it stays above the line."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from dex_jax.config_loading import load_config
from dex_jax.data.synth_heads import render_frames, sample_expression, sample_pose
from dex_jax.train.stages import expression, pose, reconstruction

SIZE = 32  # the `test` model's image and expression-crop size


def gate_config(gate, steps):
    """The gate's config with the `test` model at 32 px, `steps` steps and a warmup of 10."""
    config = load_config(f"configs/learnability.py:{gate}")
    config.model = load_config("configs/motion_model.py:test")
    config.data.update(image_size=SIZE, expression_size=SIZE)
    config.total_steps, config.optimizer.warmup_steps = steps, 10
    return config


def synth_batch(n, seed=0):
    """A Stage-1 batch of n sources, each with 1 driving frame of its identity (n identities), with their true
    poses and expressions; the driving frame, unmasked, is also the pose input and the expression crop (these
    tests fit networks; they do not check the pipeline's augmentations)."""
    keys = jax.random.split(jax.random.key(seed), 2)
    poses, expressions = sample_pose(keys[0], (2 * n,)), sample_expression(keys[1], (2 * n,))
    frames = render_frames(np.tile(np.arange(n), 2), poses, expressions, SIZE, SIZE)
    images = np.asarray(frames["image"], np.float32) / 127.5 - 1
    driving = images[n:, None]
    return {"source": images[:n], "driving": driving, "pose_input": driving, "expression_input": driving,
            "source_pose": np.asarray(poses[:n]), "driving_pose": np.asarray(poses[n:, None]),
            "driving_expression": np.asarray(expressions[n:, None])}


def train(stage, batch, steps):
    """The metrics of the first and the last of `steps` steps of `stage` on the one `batch`."""
    state = jax.jit(lambda rng: nn.unbox(stage.init(rng)))(jax.random.PRNGKey(0))
    step = jax.jit(stage.step)
    history = []
    for _ in range(steps):
        state, metrics, _ = step(state, batch, stage.frozen)
        history.append(jax.device_get(metrics))
    return history[0], history[-1]


def test_the_pose_encoder_alone_fits_a_few_heads_poses():
    first, last = train(pose.make_stage(gate_config("pose", 200)), synth_batch(8), 200)
    assert first["pose_supervision"] == pytest.approx(first["constant_guess"], rel=0.5)  # it starts near a constant
    assert last["pose_supervision"] < 0.2 * last["constant_guess"]
    assert max(last["yaw_deg"], last["pitch_deg"], last["roll_deg"]) < 3.0


def test_the_expression_encoder_alone_fits_a_few_heads_expressions():
    config = gate_config("expression", 200)
    config.model.expression.pool_grid = 2  # the gate's grid head, on the `test` model's 2x2 head map
    first, last = train(expression.make_stage(config), synth_batch(8), 200)
    assert first["expression_supervision"] > 0.5 * first["constant_guess"]
    assert last["expression_supervision"] < 0.2 * last["constant_guess"]


def test_the_generator_redraws_a_few_frames_of_themselves():
    """The `test` model laid out as `tiny` is (volume at S/2, decoder entering at S/4): the `test` model itself
    keeps 4x4 positions of 16 values between encoder and decoder, 256 numbers for a 32x32 frame."""
    config = gate_config("reconstruction", 200)
    config.model.appearance.block_channels = (4, 8)
    config.model.decoder.update(up_channels=(16, 8), skip_channels=(8, 8, 4, 3))
    batch = synth_batch(4)
    frames = batch["driving"][:, 0]
    mean_image_l1 = np.mean(np.abs(frames - frames.mean(0)))  # the best constant image, about
    first, last = train(reconstruction.make_stage(config), batch, 200)
    assert first["l1"] > 0.8 * mean_image_l1
    assert last["l1"] < 0.6 * mean_image_l1 and last["psnr"] > first["psnr"] + 5.0  # it learns
    if last["l1"] > 0.3 * mean_image_l1:  # the `test` model's narrow decoder (learnability.md, "Appearance path")
        pytest.xfail(f"the generator redraws 4 frames at L1 {last['l1']:.3f} after 200 steps, "
                     f"not far below the mean image's {mean_image_l1:.3f}")
