"""Stage-1 training options: the supervised pose and expression terms, plain and normalised (the pose term's
value in a real run: test_train_loop.py), the eye-and-mouth L1, the detached warp pose, lr multipliers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from stage1_term import check_term_joins_generator_loss

from dex_jax.bench.timing import xla_flops
from dex_jax.config_loading import load_config
from dex_jax.motion.generator import build_motion_generator
from dex_jax.motion.losses import (
    EXPRESSION_VARIANCE_FLOOR,
    expression_supervision_loss,
    masked_l1_loss,
    pose_supervision_loss,
)
from dex_jax.motion.pose_encoder import POSE_KEYS
from dex_jax.train.input import make_iterator
from dex_jax.train.optim import make_optimizer
from dex_jax.train.stages import expression, pose, reconstruction, stage1


def test_loss_is_mean_absolute_pose_error():
    estimate = {k: jnp.full((2,), float(i)) for i, k in enumerate(POSE_KEYS)}
    target = jnp.arange(6.0)[None].repeat(2, 0) + jnp.array([[0.5, -0.5, 0, 0, 0, 1.5]] * 2)
    assert float(pose_supervision_loss(estimate, target)) == pytest.approx(2.5 / 6)
    with pytest.raises(ValueError, match=r"pose targets must be \(N, 6\)"):
        pose_supervision_loss(estimate, target[:, :5])


@pytest.mark.parametrize("term, labels, what", [("pose_supervision", ("source_pose", "driving_pose"), "poses"),
                                                 ("expression_supervision", ("driving_expression",), "expressions")])
def test_batches_without_labels_are_refused(term, labels, what):
    config = load_config("configs/motion_test.py")
    config.data.batch_size = 2
    config.loss[term] = 1.0
    stage = stage1.make_stage(config, lpips=stage1.random_lpips_params())
    assert term in stage.metric_names
    state = jax.eval_shape(stage.init, jax.random.PRNGKey(0))
    batch = {k: v for k, v in next(make_iterator(config.data)).items() if k not in labels}
    with pytest.raises(ValueError, match=f"needs ground-truth {what} in the batches, and these have no "
                                         f"{', '.join(labels)}"):
        jax.eval_shape(stage.step, state, batch, stage.frozen)


def test_expression_loss_ties_the_first_latent_values_to_the_truth():
    latent = jnp.arange(12.0).reshape(2, 6)
    target = jnp.array([[0.5, 1.0, 2.0], [6.0, 7.0, 9.0]])
    assert float(expression_supervision_loss(latent, target)) == pytest.approx((0.25 + 0 + 0 + 0 + 0 + 1) / 6)
    with pytest.raises(ValueError, match=r"n <= the latent's 6 dims, got shape \(2, 7\)"):
        expression_supervision_loss(latent, jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match="with N = 2"):
        expression_supervision_loss(latent, jnp.zeros((3, 2)))


def test_normalised_expression_loss_divides_each_value_s_error_by_its_batch_variance():
    rng = np.random.default_rng(0)
    target = rng.uniform(0, 1, (64, 3)) * np.array([1.0, 0.5, 0.0])
    latent = np.concatenate([target + rng.normal(0, 0.05, target.shape), np.zeros((64, 2))], 1)
    per_value = ((latent[:, :3] - target) ** 2).mean(0)
    got = expression_supervision_loss(jnp.asarray(latent), jnp.asarray(target), normalised=True)
    want = np.mean(per_value / (target.var(0) + EXPRESSION_VARIANCE_FLOOR))
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(expression_supervision_loss(jnp.asarray(latent), jnp.asarray(target))) == pytest.approx(
        per_value.mean(), rel=1e-5)
    mean = np.broadcast_to(target.mean(0), target.shape)
    constant = float(expression_supervision_loss(jnp.asarray(mean), jnp.asarray(target), normalised=True))
    variance = target.var(0)
    assert constant == pytest.approx(np.mean(variance / (variance + EXPRESSION_VARIANCE_FLOOR)), rel=1e-5)
    assert float(got) < 0.5 * constant


def test_expression_stage_reports_the_normalised_constant_guess():
    config = load_config("configs/motion_test.py")
    config.stage, config.data.batch_size = "expression", 16
    config.loss.expression_normalised = True
    stage = expression.make_stage(config)
    state = jax.jit(stage.init)(jax.random.PRNGKey(0))
    batch = jax.tree.map(jnp.asarray, next(make_iterator(config.data)))
    _, metrics, _ = jax.jit(stage.step)(state, batch, stage.frozen)
    variance = np.var(np.asarray(batch["driving_expression"]).reshape(-1, 11), axis=0)
    want = np.mean(variance / (variance + EXPRESSION_VARIANCE_FLOOR))
    assert float(metrics["constant_guess"]) == pytest.approx(want, rel=1e-5)
    assert float(metrics["expression_supervision"]) > 0


def test_masked_l1_is_each_image_s_mean_over_its_mask():
    rng = np.random.default_rng(0)
    pred, target = rng.uniform(-1, 1, (2, 3, 8, 8, 3)).astype(np.float32)
    mask = np.zeros((3, 8, 8, 1), np.float32)
    mask[0, 2:5, 1:7] = 1.0
    mask[1, 6:, :] = 1.0
    inside = [np.abs(pred[i] - target[i])[mask[i, ..., 0] == 1].mean() for i in (0, 1)]
    assert float(masked_l1_loss(pred, target, mask)) == pytest.approx((inside[0] + inside[1] + 0.0) / 3, rel=1e-6)
    outside = np.where(mask == 1.0, pred, pred + 0.5)
    assert float(masked_l1_loss(outside, target, mask)) == pytest.approx(float(masked_l1_loss(pred, target, mask)))
    with pytest.raises(ValueError, match=r"a \(N, H, W, 1\) mask, got .* and \(3, 8, 8, 3\)"):
        masked_l1_loss(pred, target, np.repeat(mask, 3, -1))


def test_expression_region_term_joins_the_generator_loss():
    check_term_joins_generator_loss("expression_region_l1", 4.0)


def test_expression_term_trains_only_the_expression_encoder_through_reenact_s_latent():
    model = build_motion_generator(load_config("configs/motion_model.py:test"))
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    source, pose_input, crop = (jax.random.uniform(k, (2, 32, 32, 3), minval=-1, maxval=1) for k in keys[:3])
    params = jax.jit(model.init)(keys[3], source, pose_input, crop)["params"]
    target = jnp.full((2, 5), 0.5)

    def term(p):
        latent = model.apply({"params": p}, source, pose_input, crop, rngs={"noise": keys[3]},
                             method=model.reenact)[3]
        return expression_supervision_loss(latent, target), latent

    grads, latent = jax.jit(jax.grad(term, has_aux=True))(params)
    np.testing.assert_allclose(latent, model.apply({"params": params}, crop, method=model.encode_expression),
                               rtol=1e-5, atol=1e-6)  # jitted with a gradient against unjitted: GroupNorm rounds
    norms = {name: float(optax.tree.norm(tree)) for name, tree in grads.items()}
    assert norms.pop("expression") > 0 and max(norms.values()) == 0.0


def test_lr_multipliers_scale_only_the_named_submodules():
    config = load_config("configs/motion_test.py")
    params = {"decoder": {"w": jnp.ones(3)}, "pose": {"w": jnp.ones(3)}}
    grads = {"decoder": {"w": jnp.full(3, 0.5)}, "pose": {"w": jnp.full(3, 0.5)}}
    plain, _ = make_optimizer(config.optimizer, 1e-3, 10)
    scaled, _ = make_optimizer(config.optimizer, 1e-3, 10, {"decoder": 20.0})
    want, _ = plain.update(grads, plain.init(params), params)
    got, _ = scaled.update(grads, scaled.init(params), params)
    np.testing.assert_allclose(got["decoder"]["w"], 20.0 * want["decoder"]["w"], rtol=1e-6)
    np.testing.assert_allclose(got["pose"]["w"], want["pose"]["w"], rtol=1e-6)
    assert float(jnp.abs(want["pose"]["w"]).min()) > 0


@pytest.mark.parametrize("detach", [False, True])
def test_detached_warp_pose_keeps_image_gradients_off_the_pose_encoder(detach):
    model = build_motion_generator(load_config("configs/motion_model.py:test"))
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    source, pose_input, crop = (jax.random.uniform(k, (2, 32, 32, 3), minval=-1, maxval=1) for k in keys[:3])
    params = jax.jit(model.init)(keys[3], source, pose_input, crop)["params"]

    @jax.jit
    def grads(params):
        def image_sum(p):
            image = model.apply({"params": p}, source, pose_input, crop, detach_pose=detach,
                                rngs={"noise": keys[3]}, method=model.reenact)[0]
            return jnp.sum(image ** 2)
        return jax.grad(image_sum)(params)

    got = grads(params)
    pose_norm = float(optax.tree.norm(got["pose"]))
    assert (pose_norm == 0.0) if detach else (pose_norm > 0.0)
    assert float(optax.tree.norm(got["decoder"])) > 0.0
    assert float(optax.tree.norm(got["expression"])) > 0.0


def test_detached_warp_pose_needs_pose_labels():
    config = load_config("configs/motion_test.py")
    config.loss.detach_warp_pose = True
    with pytest.raises(ValueError, match="detach_warp_pose leaves the pose encoder nothing to learn from"):
        stage1.make_stage(config, lpips=stage1.random_lpips_params())


@pytest.mark.parametrize("key, value", [("init_from", "RUN"), ("init_discriminator", True)])
def test_expression_stage_refuses_whole_generator_warm_starts(key, value):
    config = load_config("configs/motion_test.py")
    config.stage = "expression"
    expression.check_config(config)
    config[key] = value
    with pytest.raises(ValueError, match=f"{key} is for stage1; the expression stage takes a trained encoder with "
                                         "init_expression_from"):
        expression.check_config(config)


@pytest.mark.parametrize("stage, key, message", [
    ("expression", "init_pose_from", "init_pose_from is for stage1"),
    ("reconstruction", "init_pose_from", "init_pose_from is set; the reconstruction stage starts every network"),
    ("pose", "init_expression_from", "init_expression_from names other networks than the pose encoder"),
    ("pose", "init_from", "init_from names other networks than the pose encoder"),
])
def test_single_network_stages_refuse_warm_starts_of_other_networks(stage, key, message):
    config = load_config("configs/motion_test.py")
    config.stage = stage
    module = {"expression": expression, "reconstruction": reconstruction, "pose": pose}[stage]
    module.check_config(config)
    config[key] = "RUN"
    with pytest.raises(ValueError, match=message):
        module.check_config(config)


def test_zero_lpips_weights_drop_the_vgg_pass():
    config = load_config("configs/motion_test.py")
    config.data.batch_size = 2
    with_vgg = stage1.make_stage(config, lpips=stage1.random_lpips_params())
    config.loss.update(lpips=0.0, component_lpips=0.0)  # the stage built before keeps its own copy of the config
    without = stage1.make_stage(config, lpips=stage1.random_lpips_params())
    assert set(with_vgg.metric_names) - set(without.metric_names) == set(stage1.LPIPS_NAMES)
    assert without.frozen == {}
    state = jax.jit(without.init)(jax.random.PRNGKey(0))
    batch = jax.tree.map(jnp.asarray, next(make_iterator(config.data)))
    _, metrics, _ = jax.jit(without.step)(state, batch, without.frozen)
    assert not set(stage1.LPIPS_NAMES) & set(metrics)
    expected = config.loss.l1 * metrics["l1"] + config.loss.adversarial * metrics["adversarial"]
    np.testing.assert_allclose(metrics["generator_loss"], expected, rtol=1e-5)
    flops = [xla_flops(jax.jit(s.step).lower(state, batch, s.frozen)) for s in (with_vgg, without)]
    assert flops[1] < 0.7 * flops[0]
