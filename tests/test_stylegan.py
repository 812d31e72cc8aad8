"""StyleGAN2 blocks, the Fig. S1a decoder and the discriminator: math against references, shapes, gradients."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dex_jax.config_loading import load_config
from dex_jax.motion.decoder import ExpressionConditionedDecoder
from dex_jax.motion.discriminator import Discriminator
from dex_jax.nn.stylegan import ModulatedConv2d, fir_taps, minibatch_stddev, upfirdn2d, upsample2d

def _key(seed):
    """An 'rbg' PRNG key: XLA compiles it several times faster than threefry, which dominates init here."""
    return jax.random.key(seed, impl="rbg")


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _config(name):
    return load_config(f"configs/motion_model.py:{name}")


def _decoder(name, dtype=None):
    return ExpressionConditionedDecoder(**_config(name).decoder.to_dict(), dtype=dtype)


def _decoder_inputs(name, batch=1, key=0):
    """Flatten & CNN features (N, r, r, C) with r = image_size / 2^len(up_channels), and the style code
    (appearance latent ++ expression latent)."""
    c = _config(name)
    size = c.image_size // 2 ** len(c.decoder.up_channels)
    style_dim = c.appearance_latent.latent_dim + c.expression.latent_dim
    return _normal(key, (batch, size, size, c.decoder.channels)), _normal(key + 1, (batch, style_dim))


def _discriminator(name):
    return Discriminator(**_config(name).discriminator.to_dict())


def _modconv_params(layer, x, style):
    return nn.unbox(layer.init(_key(3), x, style))["params"]


# ----------------------------------------------------------------------------- (a) modulated conv

def test_demodulation_gives_unit_std_for_any_style_magnitude():
    x = _normal(0, (2, 16, 16, 64))
    base = _normal(1, (2, 32))
    stds = {}
    for demodulate in (True, False):
        layer = ModulatedConv2d(48, 3, demodulate=demodulate)
        params = _modconv_params(layer, x, base)
        for magnitude in (0.1, 30.0):
            y = np.asarray(layer.apply({"params": params}, x, magnitude * base))[:, 1:-1, 1:-1]
            stds[demodulate, magnitude] = y.reshape(-1, 48).std(axis=0)
    for magnitude in (0.1, 30.0):
        assert np.all(np.abs(stds[True, magnitude] - 1.0) < 0.25), stds[True, magnitude]
    assert np.median(stds[False, 30.0] / stds[False, 0.1]) > 5.0  # without demodulation the style scales it


def test_modulated_conv_matches_explicit_per_sample_weights():
    x = _normal(0, (2, 5, 5, 3))
    style = _normal(1, (2, 6))
    layer = ModulatedConv2d(4, 3)
    params = _modconv_params(layer, x, style)
    got = np.asarray(layer.apply({"params": params}, x, style))

    kernel = np.asarray(params["kernel"], np.float64) / math.sqrt(3 * 9)
    mod = params["modulation"]
    scales = np.asarray(style, np.float64) @ np.asarray(mod["kernel"]) / math.sqrt(6) + np.asarray(mod["bias"])
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((2, 5, 5, 4))
    for n in range(2):
        w = kernel * scales[n][None, None, :, None]
        w = w / np.sqrt((w ** 2).sum(axis=(0, 1, 2)) + 1e-8)
        for dy in range(3):
            for dx in range(3):
                want[n] += xp[n, dy:dy + 5, dx:dx + 5] @ w[dy, dx]
    np.testing.assert_allclose(got, want, atol=1e-5)


def _torch_blur(x, pad, gain=1.0):
    c = x.shape[1]
    taps = np.asarray(fir_taps(gain=gain), np.float32)
    kernel = torch.tensor(np.outer(taps, taps)).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), kernel, groups=c)


def _torch_modulated_conv(x, weight, mod_weight, mod_bias, style, up, down):
    """rosinality's formulation: per-sample modulated, demodulated weights run as one grouped conv."""
    b, cin, h, w = x.shape
    cout, k = weight.shape[0], weight.shape[-1]
    s = F.linear(style, mod_weight / math.sqrt(style.shape[1]), mod_bias)
    wt = weight[None] / math.sqrt(cin * k * k) * s[:, None, :, None, None]
    wt = wt * torch.rsqrt(wt.pow(2).sum([2, 3, 4]) + 1e-8)[:, :, None, None, None]
    x = x.reshape(1, b * cin, h, w)
    if up:
        wt = wt.transpose(1, 2).reshape(b * cin, cout, k, k)
        out = F.conv_transpose2d(x, wt, stride=2, groups=b)
        return _torch_blur(out, (1, 1), gain=4.0).reshape(b, cout, 2 * h, 2 * w)
    if down:
        out = F.conv2d(_torch_blur(x, (2, 2)), wt.reshape(b * cout, cin, k, k), stride=2, groups=b)
        return out.reshape(b, cout, h // 2, w // 2)
    return F.conv2d(x, wt.reshape(b * cout, cin, k, k), padding=k // 2, groups=b).reshape(b, cout, h, w)


@pytest.mark.parametrize("up,down", [(False, False), (True, False), (False, True)])
def test_modulated_conv_matches_torch_grouped_conv(up, down):
    x = _normal(0, (2, 8, 8, 5))
    style = _normal(1, (2, 7))
    layer = ModulatedConv2d(6, 3, up=up, down=down)
    params = _modconv_params(layer, x, style)
    got = np.asarray(layer.apply({"params": params}, x, style))
    want = _torch_modulated_conv(
        torch.tensor(np.asarray(x)).permute(0, 3, 1, 2),
        torch.tensor(np.asarray(params["kernel"])).permute(3, 2, 0, 1),
        torch.tensor(np.asarray(params["modulation"]["kernel"])).T,
        torch.tensor(np.asarray(params["modulation"]["bias"])),
        torch.tensor(np.asarray(style)), up, down).permute(0, 2, 3, 1).numpy()
    assert got.shape == want.shape == (2, 8 * 2 ** up // 2 ** down, 8 * 2 ** up // 2 ** down, 6)
    np.testing.assert_allclose(got, want, atol=1e-5)


# ----------------------------------------------------------------------------- (b) FIR resampling

def test_blur_kernel_normalisation():
    assert np.outer(fir_taps(), fir_taps()).sum() == pytest.approx(1.0)
    assert np.outer(fir_taps(gain=4.0), fir_taps(gain=4.0)).sum() == pytest.approx(4.0)
    np.testing.assert_allclose(np.outer(fir_taps(), fir_taps()), np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0)


def test_upsampling_keeps_a_constant_image_constant_inside():
    x = jnp.full((1, 8, 8, 2), 0.7)
    up = np.asarray(upsample2d(x))
    assert up.shape == (1, 16, 16, 2)
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 0.7, atol=1e-6)
    assert abs(float(up[0, 0, 0, 0]) - 0.7) > 0.1  # zero padding shows at the border: the check can fail


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1)), (1, 2, (1, 1)), (1, 1, (2, 1))])
def test_upfirdn2d_matches_zero_insertion_in_torch(up, down, pad):
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 2)).astype(np.float32)
    rows, cols = (1.0, 2.0, 3.0, 4.0), (1.0, 1.0, 2.0, 1.0)  # asymmetric: flip matters
    kernel = np.outer(rows, cols).astype(np.float32)
    got = np.asarray(upfirdn2d(jnp.asarray(x), (rows, cols), up=up, down=down, pad=pad))
    t = torch.tensor(x).permute(0, 3, 1, 2)
    stuffed = torch.zeros(1, 2, 6 * up, 6 * up)
    stuffed[:, :, ::up, ::up] = t
    padded = F.pad(stuffed, [pad[0], pad[1], pad[0], pad[1]])
    weight = torch.tensor(kernel).flip([0, 1])[None, None].repeat(2, 1, 1, 1)
    want = F.conv2d(padded, weight, groups=2)[:, :, ::down, ::down].permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


# ----------------------------------------------------------------------------- (c) decoder shapes and errors

@pytest.mark.parametrize("name,size", [("test", 32), ("tiny", 64), ("paper", 256)])
def test_decoder_shapes(name, size):
    decoder = _decoder(name)
    features, style = (jax.ShapeDtypeStruct(a.shape, a.dtype) for a in _decoder_inputs(name))
    variables = jax.eval_shape(decoder.init, jax.random.key(0), features, style)
    image = jax.eval_shape(decoder.apply, variables, features, style)
    assert image.shape == (1, size, size, 3)
    if name == "paper":  # Fig. S1a, level by level
        assert features.shape == (1, 32, 32, 512) and style.shape == (1, 2560)
        _, state = jax.eval_shape(lambda v, f, s: decoder.apply(
            v, f, s, capture_intermediates=True, mutable=["intermediates"]), variables, features, style)
        out = {k: v["__call__"][0].shape for k, v in state["intermediates"].items() if "__call__" in v}
        assert [out[f"down_{i}_conv1"] for i in range(3)] == [(1, s, s, 512) for s in (32, 16, 8)]
        assert [out[f"up_{i}_conv1"] for i in range(3)] == [(1, 64, 64, 512), (1, 128, 128, 256), (1, 256, 256, 128)]
        assert [out[f"to_rgb_{i}"] for i in range(6)] == [
            (1, s, s, c) for s, c in zip((8, 16, 32, 64, 128, 256), (96, 48, 24, 12, 6, 3))]


@pytest.mark.parametrize("change,message", [
    (dict(features_channels=8), "features have 8 channels, expected 16"),
    (dict(style_batch=2), "style must be (N, style_dim) with N = 1"),
    (dict(skip_channels=(8, 4, 4, 3)), "skip_channels has 4 entries, expected"),
    (dict(skip_channels=(8, 8, 4, 4, 4)), "last skip_channels entry must be 3"),
    (dict(features_size=5), "feature size 5 is not divisible by 2^num_down = 2"),
])
def test_decoder_rejects_bad_input(change, message):
    c = _config("test").decoder.to_dict()
    c["skip_channels"] = change.get("skip_channels", c["skip_channels"])
    size = change.get("features_size", 4)
    features = jax.ShapeDtypeStruct((1, size, size, change.get("features_channels", 16)), jnp.float32)
    style = jax.ShapeDtypeStruct((change.get("style_batch", 1), 32), jnp.float32)
    with pytest.raises(ValueError, match=re.escape(message)):
        jax.eval_shape(ExpressionConditionedDecoder(**c).init, jax.random.key(0), features, style)


# ----------------------------------------------------------------------------- (d) style and noise

@pytest.fixture(scope="module")
def test_decoder():
    decoder = _decoder("test")
    features, style = _decoder_inputs("test", batch=2)
    params = nn.unbox(jax.jit(decoder.init)(_key(0), features, style))["params"]
    run = jax.jit(lambda p, f, s: decoder.apply({"params": p}, f, s))
    run_noisy = jax.jit(lambda p, f, s, key: decoder.apply({"params": p}, f, s, rngs={"noise": key}))
    return params, features, style, run, run_noisy


def test_style_conditions_the_image(test_decoder):
    params, features, style, run, _ = test_decoder
    a, b = run(params, features, style), run(params, features, style[::-1])
    assert np.isfinite(np.asarray(a)).all()
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_noise_matters_only_with_nonzero_strength(test_decoder):
    params, features, style, run, run_noisy = test_decoder
    np.testing.assert_allclose(run_noisy(params, features, style, _key(1)), run(params, features, style),
                               atol=1e-6)  # every strength is 0 at init

    noisy = jax.tree_util.tree_map_with_path(
        lambda path, v: v + 0.5 if "strength" in jax.tree_util.keystr(path) else v, params)
    deterministic = run(noisy, features, style)
    np.testing.assert_array_equal(deterministic, run(noisy, features, style))
    a, b = run_noisy(noisy, features, style, _key(1)), run_noisy(noisy, features, style, _key(2))
    assert float(jnp.abs(a - deterministic).max()) > 1e-3
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_decoder_runs_in_bfloat16(test_decoder):
    params, features, style, run, _ = test_decoder
    reference = run(params, features, style)
    low = jax.jit(_decoder("test", dtype=jnp.bfloat16).apply)({"params": params}, features, style)
    assert low.dtype == jnp.bfloat16
    assert float(jnp.abs(low.astype(jnp.float32) - reference).max()) < 0.05 * float(jnp.abs(reference).max())


# ----------------------------------------------------------------------------- (e) discriminator

@pytest.mark.parametrize("name,size", [("test", 32), ("tiny", 64), ("paper", 256)])
def test_discriminator_shapes(name, size):
    discriminator = _discriminator(name)
    image = jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32)
    variables = jax.eval_shape(discriminator.init, jax.random.key(0), image)
    logits = jax.eval_shape(discriminator.apply, variables, image)
    assert logits.shape == (3,) and logits.dtype == jnp.float32


@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (2, 32, 32, 4), (32, 32, 3)])
def test_discriminator_rejects_bad_images(shape):
    with pytest.raises(ValueError, match=r"expected images \(N, 32, 32, 3\)"):
        jax.eval_shape(_discriminator("test").init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("batch,group,members", [
    (4, 2, [[0, 2], [1, 3]]),          # StyleGAN2's grouping: sample n joins group n mod (N / G)
    (3, 4, [[0, 1, 2]]),               # group larger than the batch: one group of N
    (5, 4, [[0, 2, 4], [1, 3]]),       # N not divisible by G: ceil(N / G) groups of at most G
])
def test_minibatch_stddev_channel_is_the_group_std(batch, group, members):
    x = np.random.default_rng(0).normal(size=(batch, 3, 3, 4)).astype(np.float32)
    out = np.asarray(minibatch_stddev(jnp.asarray(x), group))
    assert out.shape == (batch, 3, 3, 5)
    np.testing.assert_array_equal(out[..., :4], x)
    for indices in members:
        std = np.sqrt(x[indices].astype(np.float64).var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[indices, ..., 4], std, rtol=1e-5)


# ----------------------------------------------------------------------------- (f) gradients

def _assert_every_leaf_has_a_gradient(grads):
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        g = np.asarray(g)
        assert np.isfinite(g).all(), jax.tree_util.keystr(path)
        assert np.abs(g).max() > 0, f"zero gradient at {jax.tree_util.keystr(path)}"


def test_decoder_gradients_reach_every_param(test_decoder):
    params, features, style, _, run_noisy = test_decoder
    grads = jax.jit(jax.grad(lambda p: jnp.mean(run_noisy(p, features, style, _key(5)))))(params)
    _assert_every_leaf_has_a_gradient(grads)


def test_discriminator_gradients_reach_every_param():
    discriminator = _discriminator("test")
    images = jnp.tanh(_normal(0, (3, 32, 32, 3)))
    params = nn.unbox(jax.jit(discriminator.init)(_key(1), images))["params"]
    grads = jax.jit(jax.grad(lambda p: jnp.mean(discriminator.apply({"params": p}, images))))(params)
    _assert_every_leaf_has_a_gradient(grads)
