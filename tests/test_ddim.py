"""DDPM schedule and DDIM steps against diffusers' DDIMScheduler; the jitted sampler and its guidance."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from jax.sharding import Mesh

from dex_jax.diffusion.ddim import ddim_step, ddim_timesteps
from dex_jax.diffusion.sampler import (guided_prediction, make_sampler, progressive_hybrid_weights,
                                       step_noise)
from dex_jax.diffusion.schedule import SD15, SchedulerConfig, add_noise, alphas_cumprod, betas, velocity

BETA_SCHEDULES = [
    dict(beta_schedule="linear"),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2"),
]
SHAPE = (2, 4, 6, 6)  # diffusers' NCHW; the DDIM update is elementwise, so layout does not matter


def _pair(**kw):
    kw.setdefault("clip_sample", False)
    return DDIMScheduler(**kw), SchedulerConfig.from_dict(kw)


def _fake_eps(x, c):
    """A stand-in denoiser that keeps the trajectory O(1): mostly the sample itself, plus a fixed field."""
    return 0.9 * x + 0.1 * c


@pytest.mark.parametrize("spacing,offset,num_steps", list(itertools.product(
    ["leading", "trailing", "linspace"], [0, 1], [1, 10, 35, 50, 999])))
def test_timesteps_equal_diffusers(spacing, offset, num_steps):
    ref, cfg = _pair(timestep_spacing=spacing, steps_offset=offset)
    ref.set_timesteps(num_steps)
    np.testing.assert_array_equal(ddim_timesteps(cfg, num_steps), ref.timesteps.numpy())


@pytest.mark.parametrize("kw", BETA_SCHEDULES)
def test_schedule_and_forward_process_match_diffusers(kw):
    ref, cfg = _pair(**kw)
    np.testing.assert_allclose(betas(cfg), ref.betas.numpy(), rtol=1e-6, atol=0)
    np.testing.assert_allclose(alphas_cumprod(cfg), ref.alphas_cumprod.numpy(), rtol=1e-6, atol=0)
    rng = np.random.default_rng(0)
    x0, noise = rng.standard_normal((2, 2, 3, 4, 4)).astype(np.float32)
    t = np.array([3, 871])
    args = torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(t)
    np.testing.assert_allclose(add_noise(cfg, jnp.asarray(x0), jnp.asarray(noise), t),
                               ref.add_noise(*args).numpy(), atol=1e-6)
    np.testing.assert_allclose(velocity(cfg, jnp.asarray(x0), jnp.asarray(noise), t),
                               ref.get_velocity(*args).numpy(), atol=1e-6)


@pytest.mark.parametrize("spacing,eta,prediction,alpha_one,offset", list(itertools.product(
    ["leading", "trailing", "linspace"], [0.0, 0.7], ["epsilon", "v_prediction"], [True, False], [0, 1])))
def test_trajectory_matches_diffusers_float64(spacing, eta, prediction, alpha_one, offset):
    """10 steps in float64 from the same schedule table: the update formulas agree to 1e-9."""
    ref, cfg = _pair(timestep_spacing=spacing, prediction_type=prediction, set_alpha_to_one=alpha_one,
                     steps_offset=offset, **BETA_SCHEDULES[1])
    table = torch.from_numpy(alphas_cumprod(cfg).astype(np.float64))
    ref.alphas_cumprod = table
    ref.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if alpha_one else table[0]
    ref.set_timesteps(10)
    rng = np.random.default_rng(1)
    x, c = rng.standard_normal((2,) + SHAPE)
    noises = rng.standard_normal((10,) + SHAPE)
    x_ref = torch.from_numpy(x)
    with jax.enable_x64(True):
        x_ours = jnp.asarray(x)
        for i, t in enumerate(ddim_timesteps(cfg, 10)):
            noise = torch.from_numpy(noises[i]) if eta > 0 else None
            x_ref = ref.step(_fake_eps(x_ref, torch.from_numpy(c)), int(t), x_ref, eta=eta,
                             variance_noise=noise).prev_sample
            x_ours = ddim_step(cfg, _fake_eps(x_ours, jnp.asarray(c)), t, x_ours, 10, eta=eta,
                               noise=None if eta == 0 else jnp.asarray(noises[i]))
        assert x_ours.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(x_ours), x_ref.numpy(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_sd15_trajectory_float32_end_to_end(eta):
    """35 steps of the SD-1.5 schedule, float32 throughout, diffusers untouched: float32 rounding only."""
    ref, cfg = _pair(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                     set_alpha_to_one=False)
    assert cfg == SD15
    ref.set_timesteps(35)
    rng = np.random.default_rng(2)
    x, c = rng.standard_normal((2,) + SHAPE).astype(np.float32)
    noises = rng.standard_normal((35,) + SHAPE).astype(np.float32)
    x_ref, x_ours = torch.from_numpy(x), jnp.asarray(x)
    for i, t in enumerate(ddim_timesteps(cfg, 35)):
        x_ref = ref.step(_fake_eps(x_ref, torch.from_numpy(c)), int(t), x_ref, eta=eta,
                         variance_noise=torch.from_numpy(noises[i]) if eta > 0 else None).prev_sample
        x_ours = ddim_step(cfg, _fake_eps(x_ours, jnp.asarray(c)), t, x_ours, 35, eta=eta,
                           noise=None if eta == 0 else jnp.asarray(noises[i]))
    scale = float(np.abs(x_ref.numpy()).max())
    np.testing.assert_allclose(np.asarray(x_ours), x_ref.numpy(), rtol=0, atol=2e-6 * max(scale, 1.0))


def test_eta_noise_term_is_applied_and_required():
    x = jnp.ones(SHAPE)
    eps = 0.5 * x
    plain = ddim_step(SD15, eps, 501, x, 10, eta=0.7, noise=jnp.zeros(SHAPE))
    noisy = ddim_step(SD15, eps, 501, x, 10, eta=0.7, noise=jnp.ones(SHAPE))
    assert float(jnp.abs(noisy - plain).min()) > 1e-3
    with pytest.raises(ValueError, match="needs `noise`"):
        ddim_step(SD15, eps, 501, x, 10, eta=0.7)


def test_per_example_timesteps_equal_separate_steps():
    rng = np.random.default_rng(7)
    x, eps, noise = (jnp.asarray(a, jnp.float32) for a in rng.standard_normal((3,) + SHAPE))
    both = ddim_step(SD15, eps, jnp.array([901, 101]), x, 10, eta=0.3, noise=noise)
    for i, t in enumerate((901, 101)):
        alone = ddim_step(SD15, eps[i:i + 1], t, x[i:i + 1], 10, eta=0.3, noise=noise[i:i + 1])
        np.testing.assert_allclose(np.asarray(both[i:i + 1]), np.asarray(alone), rtol=0, atol=1e-6)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="timestep_spacing"):
        SchedulerConfig(timestep_spacing="uniform")
    with pytest.raises(ValueError, match="prediction_type"):
        SchedulerConfig.from_dict({"prediction_type": "sample"})
    with pytest.raises(ValueError, match="rescale_betas_zero_snr"):
        SchedulerConfig.from_dict({"rescale_betas_zero_snr": True})
    with pytest.raises(ValueError, match="num_steps"):
        ddim_timesteps(SD15, 1001)


# ---- sampler -----------------------------------------------------------------------------------

def _model_fn(params, x, timesteps, cond):
    """A fake NHWC denoiser that depends on the timestep and on both condition leaves."""
    t = jnp.sin(timesteps.astype(x.dtype) / 100.0)[:, None, None, None]
    shift = 0.1 * t * cond["feature"][:, None, None, :] + 0.01 * cond["bias"][:, None, None, None]
    return params["scale"] * x + shift


def _conditions(rng, batch, k):
    return tuple({"feature": jnp.asarray(rng.standard_normal((batch, 4)), jnp.float32),
                  "bias": jnp.asarray(rng.standard_normal((batch,)), jnp.float32)} for _ in range(k))


def _python_loop(config, num_steps, eta, params, latents, conditions, null, w, rng, weights_fn):
    """The same sampling loop with one model call per condition, in Python, step by step."""
    x = latents
    for i, t in enumerate(ddim_timesteps(config, num_steps)):
        ts = jnp.full((x.shape[0],), t, jnp.int32)
        weights = weights_fn(i, num_steps)
        mixed = sum(weights[k] * _model_fn(params, x, ts, c) for k, c in enumerate(conditions))
        out = w * mixed + (1 - w) * _model_fn(params, x, ts, null)
        x = ddim_step(config, out, t, x, num_steps, eta, step_noise(rng, i, x) if eta else None)
    return x


def test_jitted_sampler_equals_python_loop_with_progressive_cfg():
    rng = np.random.default_rng(3)
    latents = jnp.asarray(rng.standard_normal((2, 4, 4, 4)), jnp.float32)
    conditions = _conditions(rng, 2, 2)
    (null,) = _conditions(rng, 2, 1)
    params = {"scale": jnp.float32(0.9)}
    key = jax.random.key(0)
    sample = make_sampler(_model_fn, SD15, 8, eta=0.5, weights_fn=progressive_hybrid_weights)
    ours = sample(params, latents, conditions, null, 2.5, key)
    expected = _python_loop(SD15, 8, 0.5, params, latents, conditions, null, 2.5, key,
                            progressive_hybrid_weights)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=0, atol=1e-5)
    assert float(jnp.abs(ours - latents).max()) > 0.1


def test_guidance_scale_one_equals_conditional_only():
    rng = np.random.default_rng(4)
    latents = jnp.asarray(rng.standard_normal((2, 4, 4, 4)), jnp.float32)
    (cond,), (null,) = _conditions(rng, 2, 1), _conditions(rng, 2, 1)
    params = {"scale": jnp.float32(0.9)}
    sample = make_sampler(_model_fn, SD15, 8)
    guided = sample(params, latents, (cond,), null, 1.0, None)
    unguided = sample(params, latents, (cond,), None, 1.0, None)
    stronger = sample(params, latents, (cond,), null, 2.5, None)
    np.testing.assert_allclose(np.asarray(guided), np.asarray(unguided), rtol=0, atol=1e-6)
    assert float(jnp.abs(stronger - unguided).max()) > 1e-3


def test_sampler_shards_latents_on_data_axis():
    rng = np.random.default_rng(5)
    latents = jnp.asarray(rng.standard_normal((2, 4, 4, 4)), jnp.float32)
    (cond,), (null,) = _conditions(rng, 2, 1), _conditions(rng, 2, 1)
    params = {"scale": jnp.float32(0.9)}
    mesh = Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
    sampler = make_sampler(_model_fn, SD15, 4, mesh=mesh)
    hlo = sampler.lower(params, latents, (cond,), null, 2.5, None).as_text()
    constrained = [line for line in hlo.splitlines() if "sharding_constraint" in line and '[{"data"}' in line]
    assert any("tensor<2x4x4x4xf32>" in line for line in constrained)  # the latents
    assert any("tensor<4x4x4x4xf32>" in line for line in constrained)  # the cond + null model batch
    sharded = sampler(params, latents, (cond,), null, 2.5, None)
    plain = make_sampler(_model_fn, SD15, 4)(params, latents, (cond,), null, 2.5, None)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(plain), rtol=0, atol=1e-6)


def test_sampler_rejects_mismatched_weights_and_missing_rng():
    rng = np.random.default_rng(6)
    latents = jnp.zeros((2, 4, 4, 4))
    params = {"scale": jnp.float32(0.9)}
    with pytest.raises(ValueError, match="condition variants"):
        guided_prediction(_model_fn, params, latents, 10, _conditions(rng, 2, 3), None,
                          progressive_hybrid_weights(0, 35), 2.5)
    with pytest.raises(ValueError, match="needs an rng"):
        make_sampler(_model_fn, SD15, 4, eta=0.5)(params, latents, _conditions(rng, 2, 1), None, 1.0, None)


def test_progressive_hybrid_weights():
    """Over 35 steps (t = 35..1): t > 30 no expression, 25 < t <= 30 linear blend, t <= 25 full."""
    expected = {}
    for i in range(35):
        t = 35 - i
        full = 0.0 if t > 30 else (30 - t) / 5 if t > 25 else 1.0
        expected[i] = (1 - full, full)
    eager = np.array([progressive_hybrid_weights(i, 35) for i in range(35)])
    traced = np.asarray(jax.jit(jax.vmap(lambda i: progressive_hybrid_weights(i, 35)))(jnp.arange(35)))
    np.testing.assert_allclose(eager, np.array([expected[i] for i in range(35)]), atol=1e-6)
    np.testing.assert_allclose(traced, eager, atol=1e-6)
    assert eager[:6].tolist() == [[1.0, 0.0]] * 6  # t = 35..30
    np.testing.assert_allclose(eager[7], [0.6, 0.4], atol=1e-6)  # t = 28
    assert eager[10:].tolist() == [[0.0, 1.0]] * 25  # t = 25..1
    np.testing.assert_allclose(progressive_hybrid_weights(0, 70), [1.0, 0.0])
    np.testing.assert_allclose(progressive_hybrid_weights(69, 70), [0.0, 1.0])
