"""The animator's one-jit DDIM sampler (dex_jax.animator.sampler) on the `test` config: it equals a Python loop that
calls the model step by step and recomputes the reference every step; each guidance mode stacks the variants it
names into one model call; progressive CFG follows Eq. 5."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from configs.animator_model import get_config
from dex_jax import geometry
from dex_jax.animator import sampler as sampler_module
from dex_jax.animator.conditioning import NO_EXPRESSION, NOTHING, condition_variants, make_condition
from dex_jax.animator.model import build_animator, init_inputs, reference_features
from dex_jax.animator.sampler import make_animator_sampler
from dex_jax.bench.timing import xla_flops
from dex_jax.diffusion.ddim import ddim_step, ddim_timesteps
from dex_jax.diffusion.sampler import step_noise
from dex_jax.diffusion.schedule import SD15
from dex_jax.parallel import make_mesh

SIDE, SOURCES, FRAMES, STEPS, W = 8, 2, 2, 35, 2.5


@pytest.fixture(scope="module")
def setup():
    """The test animator with every zero-initialised branch set to random values (so that the expression, the
    warped reference and the ray maps all act), a reference tree of two sources, and a condition for 4 frames."""
    model = build_animator(get_config("test"))
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), *init_inputs(model, SIDE, SIDE))["params"])
    rng = np.random.default_rng(0)
    flat = flatten_dict(params)
    for path, value in flat.items():
        noise = jnp.asarray(0.3 * rng.standard_normal(value.shape), value.dtype)
        if path == ("denoising_unet", "conv_in", "kernel"):
            flat[path] = value.at[:, :, 4:].set(noise[:, :, 4:])
        elif not np.any(np.asarray(value)):
            flat[path] = noise
    params = unflatten_dict(flat)
    sources = jnp.asarray(rng.standard_normal((SOURCES, SIDE, SIDE, 4)), jnp.float32)
    rows = SOURCES * FRAMES
    index = np.repeat(np.arange(SOURCES), FRAMES)

    def poses(n):
        return geometry.pose_from_params(*rng.uniform(-0.3, 0.3, (3, n)), *rng.uniform(-0.1, 0.1, (2, n)),
                                         rng.uniform(0.9, 1.1, n))

    condition = make_condition(poses(SOURCES)[index], poses(rows),
                               rng.standard_normal((rows, model.expression_latent_dim)), index)
    latents = jnp.asarray(rng.standard_normal((rows, SIDE, SIDE, 4)), jnp.float32)
    reference = jax.jit(lambda p, s: reference_features(model, p, s))(params, sources)
    return model, params, sources, reference, condition, latents


def eq5_weights(step_index, num_steps):
    """Eq. 5 for 35 steps, written out: t = 35..1; t > 30 c w/o expression; 25 < t <= 30 blend; t <= 25 c."""
    assert num_steps == 35
    t = num_steps - step_index
    if t > 30:
        return 1.0, 0.0
    if t > 25:
        return (t - 25) / 5, (30 - t) / 5
    return 0.0, 1.0


def python_loop(model, params, sources, condition, latents, cfg, eta, rng):
    """DDIM in Python, one model call per variant per step, the reference recomputed by every call."""
    full_model = jax.jit(lambda p, s, x, t, c: model.apply({"params": p}, s, x, t, c, mutable=["reference"])[0])
    variants = condition_variants(condition)
    x = latents
    for i, t in enumerate(ddim_timesteps(SD15, STEPS)):
        timesteps = jnp.full((x.shape[0],), t, jnp.int32)

        def e(variant):
            return full_model(params, sources, x, timesteps, variant)

        if cfg == "progressive":
            without, with_expression = eq5_weights(i, STEPS)
            out = W * (without * e(variants.no_expression) + with_expression * e(variants.full)) \
                + (1 - W) * e(variants.nothing)
        elif cfg == "plain":
            out = W * e(variants.full) + (1 - W) * e(variants.nothing)
        else:
            out = e(variants.full)
        x = ddim_step(SD15, out, t, x, STEPS, eta, step_noise(rng, i, x) if eta else None)
    return x


@pytest.mark.parametrize("cfg,eta", [("progressive", 0.0), ("progressive", 0.7), ("plain", 0.0), ("none", 0.0)])
def test_one_jit_sampler_equals_python_loop_with_recomputed_reference(setup, cfg, eta):
    model, params, sources, reference, condition, latents = setup
    rng = jax.random.key(3)
    sample = make_animator_sampler(model, SD15, STEPS, cfg=cfg, eta=eta)
    ours = np.asarray(sample(params, reference, latents, condition, W, rng if eta else None))
    expected = np.asarray(python_loop(model, params, sources, condition, latents, cfg, eta, rng))
    # an untrained denoiser's DDIM trajectory ends far from unit scale (max |x| about 30 here): the two programs'
    # float32 summation orders agree to 1e-5 of that scale
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5 * scale)
    assert np.abs(ours - np.asarray(latents)).max() > 0.1


def test_each_mode_makes_one_model_call_of_its_variants_per_step(setup, monkeypatch):
    """The model is traced once per sampler (the fori_loop body) with N, 2N or 3N rows: the variants stacked."""
    model, params, _, reference, condition, latents = setup
    original = sampler_module.denoise
    calls = []

    def recording(model, params, noisy, timesteps, condition, reference, frames=1):
        calls.append(noisy.shape)
        return original(model, params, noisy, timesteps, condition, reference, frames)

    monkeypatch.setattr(sampler_module, "denoise", recording)
    rows = latents.shape[0]
    for cfg, stacked in (("none", 1), ("plain", 2), ("progressive", 3)):
        calls.clear()
        sample = make_animator_sampler(model, SD15, 3, cfg=cfg)
        out = sample(params, reference, latents, condition, W, None)
        assert out.shape == latents.shape
        assert calls == [(stacked * rows, SIDE, SIDE, 4)], cfg


def test_progressive_cfg_uses_c_without_expression_first_and_c_last(setup):
    """The variants progressive CFG stacks are (c without expression, c, nothing), in that order, and the model
    reads the variant: with the expression latent set to the learned "no expression" latent, c equals c without
    expression, so progressive CFG equals plain CFG; with another expression it does not."""
    model, params, _, reference, condition, latents = setup
    conditions, null = sampler_module.guidance_variants(condition, "progressive")
    assert [int(c["variant"][0]) for c in conditions] == [NO_EXPRESSION, 0] and int(null["variant"][0]) == NOTHING
    np.testing.assert_array_equal(conditions[1]["expression"], condition["expression"])

    progressive = make_animator_sampler(model, SD15, STEPS, cfg="progressive")
    plain = make_animator_sampler(model, SD15, STEPS, cfg="plain")
    neutral = {**condition, "expression": jnp.broadcast_to(params["null_no_expression"],
                                                           condition["expression"].shape)}
    a = np.asarray(progressive(params, reference, latents, neutral, W, None))
    b = np.asarray(plain(params, reference, latents, neutral, W, None))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(np.abs(b).max())))
    c = np.asarray(progressive(params, reference, latents, condition, W, None))
    d = np.asarray(plain(params, reference, latents, condition, W, None))
    assert np.abs(c - d).max() > 1e-3


def test_sampler_refuses_an_unknown_cfg_mode(setup):
    model = setup[0]
    with pytest.raises(ValueError, match="cfg must be one of"):
        make_animator_sampler(model, SD15, 4, cfg="hybrid")


def test_frames_and_their_stacked_variants_shard_on_the_data_axis(setup):
    model, params, _, reference, condition, latents = setup
    mesh = make_mesh({"data": -1})
    sample = make_animator_sampler(model, SD15, 2, cfg="progressive", mesh=mesh)
    hlo = sample.lower(params, reference, latents, condition, W, None).as_text()
    constrained = [line for line in hlo.splitlines() if "sharding_constraint" in line and '[{"data"}' in line]
    rows = latents.shape[0]
    assert any(f"tensor<{rows}x{SIDE}x{SIDE}x4xf32>" in line for line in constrained)  # the frames' latents
    assert any(f"tensor<{3 * rows}x{SIDE}x{SIDE}x4xf32>" in line for line in constrained)  # 3 variants per frame


def test_xla_cost_analysis_counts_the_step_loop_once(setup):
    """`bench animator` adds steps - 1 one-step counts to the one-step drive because XLA's cost analysis of a lowered
    sampler counts the loop body once, whatever the number of steps; this checks that premise."""
    model, params, _, reference, condition, latents = setup

    def flops(steps):
        lowered = make_animator_sampler(model, SD15, steps).lower(params, reference, latents, condition, W, None)
        return xla_flops(lowered)

    assert flops(1) > 0 and flops(4) == flops(1)
