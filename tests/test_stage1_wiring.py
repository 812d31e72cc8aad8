"""How the Stage-1 pieces are wired, with nothing at its identity: the generator's warp with a non-zero pose head
against `geometry`, one update with every loss on (the generator loss against its weights and terms, lazy R1,
EMA, a change in every param leaf), a gradient on every param leaf, and inference against the training forward."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dex_jax import geometry
from dex_jax.config_loading import load_config
from dex_jax.infer.wrapper import MotionWrapper
from dex_jax.motion.feature_fusion import FlattenCNN
from dex_jax.motion.generator import MotionGenerator, build_discriminator, build_motion_generator
from dex_jax.motion.losses import r1_penalty
from dex_jax.motion.lpips import lpips_distance
from dex_jax.motion.pose_encoder import POSE_KEYS
from dex_jax.train.input import make_iterator
from dex_jax.train.stages import stage1
from dex_jax.train.stages.motion_pairs import flatten_pairs
from dex_jax.train.state import ema_update

pytestmark = pytest.mark.xdist_group("stage1_wiring")  # one worker compiles the module's step once

# Weights that differ from each other and from the paper's, so a term that takes another's weight shows.
WEIGHTS = {"l1": 3.0, "lpips": 2.0, "component_lpips": 7.0, "adversarial": 0.5, "pose_supervision": 0.3,
           "expression_supervision": 0.4, "face_perceptual": 0.6, "expression_region_l1": 1.5}


def with_pose_head(params, seed=0, scale=0.5):
    """Generator params whose pose head is random (it starts at zero, where every warp is the identity)."""
    rng = np.random.default_rng(seed)
    head = params["pose"]["head"]
    head = {name: jnp.asarray(rng.normal(0.0, scale, np.shape(value)), jnp.float32) for name, value in head.items()}
    return {**params, "pose": {**params["pose"], "head": head}}


def with_noise_strength(params, value=0.1):
    """Generator params whose StyleGAN2 noise strengths are `value` (they start at zero)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.full_like(leaf, value) if path[-1].key == "strength" else leaf, params)


@pytest.fixture(scope="module")
def model():
    config = load_config("configs/motion_model.py:test")
    trainer = build_motion_generator(config)
    keys = jax.random.split(jax.random.key(3), 4)
    source = jax.random.uniform(keys[0], (2, 32, 32, 3), minval=-1, maxval=1)
    pose_input = jax.random.uniform(keys[1], (4, 32, 32, 3), minval=-1, maxval=1)
    crop = jax.random.uniform(keys[2], (4, 32, 32, 3), minval=-1, maxval=1)
    params = nn.unbox(jax.jit(trainer.init)(keys[3], source, pose_input[:2], crop[:2]))["params"]
    return config, trainer, with_noise_strength(with_pose_head(params)), (source, pose_input, crop)


def test_generator_warps_its_volume_as_geometry_does_between_the_poses_it_encodes(model):
    _, trainer, params, (source, pose_input, crop) = model

    @jax.jit
    def run(params):
        captured = {}

        def capture(next_fun, args, kwargs, context):
            if isinstance(context.module, FlattenCNN) and context.method_name == "__call__":
                captured["volumes"] = args
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(capture):
            _, source_pose, driving_pose, _ = trainer.apply({"params": params}, source, pose_input, crop,
                                                           method=MotionGenerator.reenact)
        encoded = (trainer.apply({"params": params}, source, method=MotionGenerator.encode_pose),
                   trainer.apply({"params": params}, pose_input, method=MotionGenerator.encode_pose))
        return captured["volumes"], source_pose, driving_pose, encoded

    (volume, warped), source_pose, driving_pose, (encoded_source, encoded_driving) = run(params)
    for key in POSE_KEYS:  # source i drives rows 2i and 2i + 1
        np.testing.assert_allclose(source_pose[key], np.repeat(encoded_source[key], 2), rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(driving_pose[key], encoded_driving[key], rtol=1e-6, err_msg=key)
    assert np.abs(np.asarray(source_pose["yaw"]) - np.asarray(driving_pose["yaw"])).max() > 0.05
    matrices = [geometry.pose_from_params(*(pose[k] for k in POSE_KEYS)) for pose in (source_pose, driving_pose)]
    want = geometry.warp_volume(volume, *matrices)
    np.testing.assert_allclose(warped, want, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(want) - np.asarray(volume)).mean() > 0.1 * np.abs(np.asarray(volume)).mean()
    swapped = geometry.warp_volume(volume, *matrices[::-1])
    assert np.abs(np.asarray(swapped) - np.asarray(want)).max() > 1e-2


def test_every_generator_and_discriminator_param_gets_a_gradient(model):
    config, trainer, params, (source, pose_input, crop) = model
    discriminator = build_discriminator(config)
    d_params = nn.unbox(jax.jit(discriminator.init)(jax.random.key(0), source))["params"]
    target = jnp.flip(pose_input, axis=1)

    @jax.jit
    def grads(params, d_params):
        def g_loss(p):
            image = trainer.apply({"params": p}, source, pose_input, crop, rngs={"noise": jax.random.key(5)},
                                  method=MotionGenerator.reenact)[0]
            return jnp.mean(jnp.abs(image - target)) + jnp.mean(jax.nn.softplus(-discriminator.apply(
                {"params": d_params}, image)))

        def d_loss(p):
            return jnp.mean(jax.nn.softplus(discriminator.apply({"params": p}, target)))

        return jax.grad(g_loss)(params), jax.grad(d_loss)(d_params)

    for name, tree in zip(("generator", "discriminator"), grads(params, d_params)):
        dead = ["/".join(str(k.key) for k in path) for path, g in jax.tree_util.tree_leaves_with_path(tree)
                if not np.any(np.asarray(g))]
        assert not dead, f"{name} params without a gradient: {dead}"


def test_inference_wrapper_renders_what_the_training_forward_renders(model):
    config, trainer, params, (source, pose_input, crop) = model
    wrapper = MotionWrapper(config, params)
    got = wrapper.drive(*wrapper.encode(source[:1]), pose_input, crop)
    want = jax.jit(trainer.apply)({"params": params}, source[:1], pose_input, crop)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    moved = jax.jit(trainer.apply)({"params": params}, source[1:], pose_input, crop)
    assert np.abs(np.asarray(moved) - np.asarray(want)).max() > 1e-3  # another source is another image


def test_ema_update_is_decay_times_ema_plus_one_minus_decay_times_params():
    ema = {"a": jnp.array([1.0, -2.0]), "b": {"c": jnp.array(4.0)}}
    params = {"a": jnp.array([3.0, 2.0]), "b": {"c": jnp.array(0.0)}}
    got = ema_update(ema, params, 0.75)
    np.testing.assert_allclose(got["a"], [1.5, -1.0])
    np.testing.assert_allclose(got["b"]["c"], 3.0)


@pytest.fixture(scope="module")
def two_steps():
    """Two updates of the test config with every generator loss on (distinct weights) and lazy R1 every 2 steps:
    (config, stage, [state 0, 1, 2], [batch 0, 1], [metrics 0, 1], [preview 0, 1])."""
    config = load_config("configs/motion_test.py")
    config.data.update(batch_size=2, num_driving=2)
    config.loss.update(WEIGHTS)
    config.loss.update(r1_gamma=3.0, r1_every=2)
    config.ema.decay = 0.75
    config.log.num_images = 4
    stage = stage1.make_stage(config, lpips=stage1.random_lpips_params(1))
    states = [jax.jit(stage.init)(jax.random.PRNGKey(0))]
    iterator = make_iterator(config.data)
    batches = [jax.tree.map(jnp.asarray, next(iterator)) for _ in range(2)]
    step = jax.jit(stage.step)
    metrics, previews = [], []
    for batch in batches:
        state, metric, preview = step(states[-1], batch, stage.frozen)
        states.append(state)
        metrics.append(metric)
        previews.append(preview)
    return config, stage, states, batches, metrics, previews


def test_generator_loss_is_the_sum_of_each_weight_times_its_term(two_steps):
    config, stage, _, _, metrics, _ = two_steps
    assert set(WEIGHTS) <= set(stage.metric_names)
    for metric in metrics:
        assert all(float(metric[name]) > 0 for name in WEIGHTS), {name: float(metric[name]) for name in WEIGHTS}
        want = sum(config.loss[name] * float(metric[name]) for name in WEIGHTS)
        np.testing.assert_allclose(float(metric["generator_loss"]), want, rtol=1e-5)


def test_logged_image_terms_are_those_of_the_predicted_images(two_steps):
    config, stage, states, batches, metrics, previews = two_steps
    _, _, _, target, mask = flatten_pairs(batches[0])
    pred = previews[0][2]
    np.testing.assert_array_equal(previews[0][3], target)
    discriminator = build_discriminator(config.model)
    fake_logits = discriminator.apply({"params": states[0].params["discriminator"]}, pred)
    want = {"l1": jnp.mean(jnp.abs(pred - target)),
            "lpips": jnp.mean(lpips_distance(stage.frozen["lpips"], pred, target)),
            "component_lpips": jnp.mean(lpips_distance(stage.frozen["lpips"], pred, target, mask)),
            "adversarial": jnp.mean(jax.nn.softplus(-fake_logits))}
    for name, value in want.items():
        np.testing.assert_allclose(float(metrics[0][name]), float(value), rtol=1e-4, err_msg=name)
    assert float(want["component_lpips"]) != pytest.approx(float(want["lpips"]), rel=1e-3)


def test_lazy_r1_is_gamma_over_two_times_the_interval_times_r1_on_due_steps_only(two_steps):
    config, _, states, batches, metrics, _ = two_steps
    discriminator = build_discriminator(config.model)
    target = flatten_pairs(batches[0])[3]
    d_apply = functools.partial(discriminator.apply, {"params": states[0].params["discriminator"]})
    penalty = float(jax.jit(lambda x: r1_penalty(d_apply, x))(target))
    assert penalty > 0
    np.testing.assert_allclose(float(metrics[0]["r1_term"]), 0.5 * 3.0 * 2 * penalty, rtol=1e-4)
    assert float(metrics[1]["r1_term"]) == 0.0  # step 1 of r1_every 2: not due


def test_ema_follows_the_params_with_the_config_s_decay(two_steps):
    _, _, states, _, _, _ = two_steps
    for before, after in itertools.pairwise(states):
        for ema_old, ema_new, params in zip(*(jax.tree.leaves(tree) for tree in (
                before.ema["generator"], after.ema["generator"], after.params["generator"]))):
            want = 0.75 * np.asarray(ema_old, np.float64) + 0.25 * np.asarray(params, np.float64)
            np.testing.assert_allclose(ema_new, want, rtol=1e-6, atol=1e-7)
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in zip(
        jax.tree.leaves(states[2].params["generator"]), jax.tree.leaves(states[0].params["generator"]))]
    assert max(moved) > 1e-4  # the params moved, so the EMA's weights show


def test_two_updates_change_every_param_leaf(two_steps):
    _, _, states, _, _, _ = two_steps
    for name in ("generator", "discriminator"):
        still = ["/".join(str(k.key) for k in path) for (path, a), b in zip(
            jax.tree_util.tree_leaves_with_path(states[0].params[name]), jax.tree.leaves(states[2].params[name]))
            if np.array_equal(np.asarray(a), np.asarray(b))]
        assert not still, f"{name} params two updates left unchanged: {still}"
