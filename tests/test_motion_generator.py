"""The composed Stage-1 motion trainer: shapes from the paper, standalone encoders, errors, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dex_jax.bench.motion_bench import forward_flops
from dex_jax.config_loading import load_config
from dex_jax.motion.feature_fusion import AppearanceLatent
from dex_jax.motion.generator import MotionGenerator, build_motion_generator
from dex_jax.motion.summary import example_inputs, parameter_counts

pytestmark = pytest.mark.xdist_group("motion_trainer")  # one worker builds the module's model once


@pytest.fixture(scope="module")
def test_model():
    config = load_config("configs/motion_model.py:test")
    trainer = build_motion_generator(config)
    inputs = [jax.random.uniform(k, x.shape, minval=-1, maxval=1)
              for k, x in zip(jax.random.split(jax.random.key(1), 3), example_inputs(config, batch=2))]
    variables = nn.unbox(jax.jit(trainer.init)(jax.random.key(0), *inputs))
    return config, trainer, variables, inputs


def jitted_apply(trainer, variables, *args, method=None):
    return jax.jit(trainer.apply, static_argnames="method")(variables, *args, method=method)


@pytest.mark.parametrize("variant,volume,features,latents,image", [
    ("paper", (1, 16, 64, 64, 32), (1, 32, 32, 512), (2048, 512), (1, 256, 256, 3)),  # the supplement's shapes
    ("tiny", (1, 8, 32, 32, 16), (1, 16, 16, 128), (256, 128), (1, 64, 64, 3)),  # volume at S/2, decoder in at S/4
])
def test_shapes_follow_the_config(variant, volume, features, latents, image):
    config = load_config(f"configs/motion_model.py:{variant}")
    trainer = build_motion_generator(config)
    source, pose_input, crop = example_inputs(config)

    def shapes(source, pose_input, crop):
        def run(module):
            volume, app_latent = module.encode_appearance(source)
            features = module.fusion(volume, volume)
            exp_latent = module.encode_expression(crop)
            image = module(source, pose_input, crop)
            return volume, features, app_latent, exp_latent, image
        return nn.apply(run, trainer)(trainer.init(jax.random.key(0), source, pose_input, crop))

    got = jax.eval_shape(shapes, source, pose_input, crop)
    assert (got[0].shape, got[1].shape, got[4].shape) == (volume, features, image)
    assert (got[2].shape, got[3].shape) == ((1, latents[0]), (1, latents[1]))


def test_parameter_counts_cover_every_network():
    counts = parameter_counts(load_config("configs/motion_model.py:paper"))
    parts = ["appearance", "pose", "expression", "fusion", "appearance_latent", "decoder"]
    assert all(counts[name] > 0 for name in parts + ["discriminator"])
    assert counts["generator (total)"] == sum(counts[name] for name in parts)
    assert 25e6 < counts["pose"] < 30e6  # ConvNeXt-V2 tiny backbone is 27.9M


def test_forward_flops_of_the_parts_add_up_to_the_generators():
    """Each part is counted alone: the parts, with the pose encoder's second pass, make up the whole `reenact`
    but for its warp (a trilinear gather, well under 2% of it)."""
    flops = forward_flops(load_config("configs/motion_model.py:tiny"))
    total = flops.pop("generator (total)")
    assert set(flops) == {"appearance", "appearance_latent", "pose", "expression", "fusion", "decoder"}
    assert all(value > 0 for value in flops.values())
    assert 0.98 * total < sum(flops.values()) + flops["pose"] <= total


def test_forward_and_standalone_encoders(test_model):
    config, trainer, variables, (source, pose_input, crop) = test_model
    image = jitted_apply(trainer, variables, source, pose_input, crop)
    assert image.shape == source.shape and np.isfinite(np.asarray(image)).all()
    pose = jitted_apply(trainer, variables, pose_input, method=MotionGenerator.encode_pose)
    assert set(pose) == {"yaw", "pitch", "roll", "tx", "ty", "scale"}
    assert all(v.shape == (2,) for v in pose.values())
    latent = jitted_apply(trainer, variables, crop, method=MotionGenerator.encode_expression)
    assert latent.shape == (2, config.expression.latent_dim)


def test_expression_changes_the_output(test_model):
    _, trainer, variables, (source, pose_input, crop) = test_model
    a = jitted_apply(trainer, variables, source, pose_input, crop)
    b = jitted_apply(trainer, variables, source, pose_input, -crop)
    assert float(jnp.abs(a - b).max()) > 1e-6


def test_every_generator_param_gets_a_gradient(test_model):
    _, trainer, variables, (source, pose_input, crop) = test_model

    def loss(params):
        return jnp.mean(trainer.apply({"params": params}, source, pose_input, crop) ** 2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.isfinite(np.asarray(g)).all(), path
    assert float(sum(jnp.abs(g).sum() for g in jax.tree_util.tree_leaves(grads))) > 0


def test_one_source_driving_k_rows_equals_the_repeated_source(test_model):
    _, trainer, variables, (source, pose_input, crop) = test_model
    k = 3
    drivers = jnp.concatenate([pose_input, pose_input[::-1], -pose_input])
    crops = jnp.concatenate([crop, -crop, crop[::-1]])
    order = jnp.arange(3 * len(source)).reshape(k, -1).T.reshape(-1)  # source-major rows
    drivers, crops = drivers[order], crops[order]

    def run(params, src):
        image, source_pose, _, _ = trainer.apply({"params": params}, src, drivers, crops, method=MotionGenerator.reenact)
        return jnp.mean(image ** 2) + jnp.mean(source_pose["yaw"] ** 2), (image, source_pose)

    once = jax.jit(jax.value_and_grad(run, has_aux=True))(variables["params"], source)
    repeated = jax.jit(jax.value_and_grad(run, has_aux=True))(variables["params"], jnp.repeat(source, k, axis=0))
    # The K rows' gradients are summed in another order: float32 noise, up to 1.3e-4 of a leaf's largest value on
    # some CPUs; rows matched to the wrong source would differ by the order of that value itself.
    for got, want in zip(jax.tree.leaves(once), jax.tree.leaves(repeated)):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-3 * float(np.max(np.abs(want))) + 1e-6)
    with pytest.raises(ValueError, match="2 sources cannot drive 5 pose inputs"):
        trainer.apply(variables, source, drivers[:5], crops[:5], method=MotionGenerator.reenact)


def test_bad_inputs_and_configs_name_the_problem(test_model):
    config, trainer, variables, (source, pose_input, crop) = test_model
    with pytest.raises(ValueError, match="RGB"):
        trainer.apply(variables, source[..., :1], pose_input, crop)
    bad = load_config("configs/motion_model.py:test")
    bad.fusion.nonexistent = 3
    with pytest.raises(ValueError, match="fusion.*nonexistent"):
        build_motion_generator(bad)


def test_paper_appearance_latent_is_the_flattened_output_of_the_five_layer_cnn():
    config = load_config("configs/motion_model.py:paper").appearance_latent
    assert config.flatten and config.latent_dim == 2 * 2 * config.channels[-1] == 2048  # supplement A.1
    latent = AppearanceLatent(**config.to_dict())
    volume = jax.random.normal(jax.random.key(0), (1, 4, 64, 64, 8))  # paper: 16 x 64 x 64 x 32
    params = jax.eval_shape(latent.init, jax.random.key(1), volume)["params"]
    assert sorted(params) == [f"conv_{i}" for i in range(5)]  # no pooling, no dense layer

    def last_conv(module, x):
        captured = {}

        def capture(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.module.name == "conv_4" and context.method_name == "__call__":
                captured["out"] = out
            return out

        with nn.intercept_methods(capture):
            code = module(x)
        return code, nn.leaky_relu(captured["out"], 0.2)

    small = AppearanceLatent(channels=(4, 4, 4, 4, 3), latent_dim=12, flatten=True)
    x = jax.random.normal(jax.random.key(2), (2, 2, 64, 64, 2))
    code, out = nn.apply(last_conv, small)(small.init(jax.random.key(3), x), x)
    assert out.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(code, np.asarray(out).reshape(2, 12))
    with pytest.raises(ValueError, match=r"flatten=True makes the latent the last conv's 2x2x3 = 12 values, but "
                                         r"latent_dim is 16"):
        AppearanceLatent(channels=(4, 4, 4, 4, 3), latent_dim=16, flatten=True).init(jax.random.key(3), x)
    tiny = load_config("configs/motion_model.py:tiny").appearance_latent
    assert "flatten" not in tiny  # the bundled tiny model pools and projects (the module's default)
