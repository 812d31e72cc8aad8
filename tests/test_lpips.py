"""LPIPS (Flax VGG16 + lpips heads) parity with the lpips package and torchvision, masking, and Stage-1 losses."""

import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import lpips
import numpy as np
import pytest
import torch
import torchvision

from dex_jax.convert.lpips_vgg import convert_lpips, convert_vgg16_features, load_lpips, shipped_heads_path
from dex_jax.convert.torch_state import read_state_dict
from dex_jax.motion import losses
from dex_jax.motion.lpips import LPIPS, lpips_distance, lpips_param_shapes, unit_normalize

SIZE = 64
TAP_ENDS = (4, 9, 16, 23, 30)  # torchvision `features[:end]` ends at relu1_2 ... relu5_3


def _no_download(*args, **kwargs):
    raise AssertionError("a weights download was attempted")


@pytest.fixture(scope="module")
def torch_lpips():
    """lpips' LPIPS with a seeded random VGG and its shipped v0.1 heads, built with downloads disabled."""
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # lpips calls torchvision's deprecated `pretrained=`
        patch.setattr(torchvision.models._api, "load_state_dict_from_url", _no_download)
        patch.setattr(torch.hub, "load_state_dict_from_url", _no_download)
        patch.setattr(torch.hub, "download_url_to_file", _no_download)
        torch.manual_seed(0)
        model = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)
    return model.eval()


@pytest.fixture(scope="module")
def state_dict(torch_lpips):
    return {k: v.numpy() for k, v in torch_lpips.state_dict().items()}


@pytest.fixture(scope="module")
def params(state_dict):
    return convert_lpips(state_dict, state_dict)


@pytest.fixture(scope="module")
def distance():
    return jax.jit(lpips_distance)


@pytest.fixture(scope="module")
def features():
    return jax.jit(lambda p, v: LPIPS().apply({"params": p}, v, method=LPIPS.features))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    y[1] = rng.uniform(-1, 1, y[1].shape)
    return x, y


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_lpips_matches_lpips_package(torch_lpips, params, distance, images):
    x, y = images
    with torch.no_grad():
        ref = torch_lpips(_nchw(x), _nchw(y)).numpy().reshape(-1)
    ours = np.asarray(distance(params, jnp.asarray(x), jnp.asarray(y)))
    assert ours.shape == (2,)
    assert ref.min() > 1e-2
    assert np.max(np.abs(ours - ref)) <= 1e-4
    np.testing.assert_allclose(ours, ref, rtol=1e-4)


def test_vgg_taps_match_torchvision(torch_lpips, state_dict, params, features, images):
    """Our scaling layer + VGG16 (converted from torchvision's layout) against lpips' scaling + torchvision."""
    vgg = torchvision.models.vgg16(weights=None).features.eval()
    trunk = {k.split(".", 2)[2]: torch.from_numpy(v) for k, v in state_dict.items() if k.startswith("net.")}
    vgg.load_state_dict(trunk)
    torchvision_sd = {k: v.numpy() for k, v in vgg.state_dict().items()}
    x = images[0]
    taps = features(dict(params, vgg=convert_vgg16_features(torchvision_sd)), jnp.asarray(x))
    with torch.no_grad():
        h, start = torch_lpips.scaling_layer(_nchw(x)), 0
        for end, tap in zip(TAP_ENDS, taps):
            h = vgg[start:end](h)
            start = end
            ref = h.numpy().transpose(0, 2, 3, 1)
            assert tap.shape == ref.shape
            assert np.max(np.abs(np.asarray(tap) - ref)) <= 1e-4 * max(1.0, np.abs(ref).max())


def test_converter_layouts_agree_and_ignore_other_keys(state_dict):
    trunk = {k.split(".", 2)[2]: v for k, v in state_dict.items() if k.startswith("net.")}
    from_lpips = convert_vgg16_features(state_dict)
    from_features = convert_vgg16_features({f"features.{k}": v for k, v in trunk.items()}
                                           | {"classifier.0.weight": np.zeros((4, 4), np.float32)})
    leaves = jax.tree_util.tree_leaves_with_path
    for (path, a), (_, b) in zip(leaves(from_lpips), leaves(from_features)):
        np.testing.assert_array_equal(a, b, err_msg=str(path))
    assert from_lpips["conv1_1"]["kernel"].shape == (3, 3, 3, 64)
    np.testing.assert_array_equal(from_lpips["conv2_1"]["kernel"], trunk["5.weight"].transpose(2, 3, 1, 0))


def test_converter_errors_name_keys(state_dict):
    broken = dict(state_dict)
    del broken["net.slice3.12.bias"]
    with pytest.raises(ValueError, match=r"features\.12\.bias"):
        convert_lpips(broken, broken)
    broken = dict(state_dict, **{"lin2.model.1.weight": np.zeros((1, 128, 1, 1), np.float32)})
    with pytest.raises(ValueError, match=r"lin2\.model\.1\.weight checkpoint \(1, 128, 1, 1\) "
                                         r"vs model \(1, 256, 1, 1\)"):
        convert_lpips(broken, broken)


def test_param_count(params):
    count = sum(np.size(a) for a in jax.tree_util.tree_leaves(params))
    shapes = lpips_param_shapes()
    assert count == sum(a.size for a in jax.tree_util.tree_leaves(shapes)) == 14_716_160


def test_load_lpips_reads_files_with_shipped_heads(state_dict, params, tmp_path):
    path = shipped_heads_path()
    assert path is not None and path.is_file()
    trunk = {f"features.{k.split('.', 2)[2]}": torch.from_numpy(v)
             for k, v in state_dict.items() if k.startswith("net.")}
    torch.save(trunk, tmp_path / "vgg16.pth")
    loaded = load_lpips(tmp_path / "vgg16.pth")
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert set(read_state_dict(path)) >= {f"lin{k}.model.1.weight" for k in range(5)}
    with pytest.raises(ValueError, match="not found"):
        load_lpips(tmp_path / "missing.pth")


def _numpy_masked_lpips(taps_x, taps_y, head_weights, mask):
    """The `LPIPS` docstring's masked definition, written directly in numpy."""
    total = np.zeros(mask.shape[0])
    for level, (fx, fy, w) in enumerate(zip(taps_x, taps_y, head_weights)):
        fx, fy = np.asarray(fx, np.float64), np.asarray(fy, np.float64)
        ux = fx / (np.sqrt(np.sum(fx ** 2, -1, keepdims=True)) + 1e-10)
        uy = fy / (np.sqrt(np.sum(fy ** 2, -1, keepdims=True)) + 1e-10)
        d = np.sum((ux - uy) ** 2 * w, axis=-1)
        n, h, wd = d.shape
        f = 2 ** level
        m = mask[:, :h * f, :wd * f, 0].reshape(n, h, f, wd, f).mean(axis=(2, 4))
        total += np.sum(m * d, axis=(1, 2)) / np.sum(m, axis=(1, 2))
    return total


def test_masked_lpips_matches_definition(params, state_dict, distance, features, images):
    """Against the docstring's formula in numpy; a mask that hides the changed corner lowers the distance."""
    x = images[0]
    rng = np.random.default_rng(1)
    y = x.copy()
    y[:, :24, :24] = rng.uniform(-1, 1, (2, 24, 24, 3))
    mask = rng.uniform(0.5, 1, (2, SIZE, SIZE, 1)).astype(np.float32)
    mask[0, :32, :32] = 0.0
    mask[1, :, :32] = 0.0
    taps_x = features(params, jnp.asarray(x))
    taps_y = features(params, jnp.asarray(y))
    heads = [state_dict[f"lin{k}.model.1.weight"].reshape(-1) for k in range(5)]
    expected = _numpy_masked_lpips(taps_x, taps_y, heads, mask)
    ours = np.asarray(distance(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask)))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    plain = np.asarray(distance(params, jnp.asarray(x), jnp.asarray(y)))
    assert np.all(ours < 0.1 * plain)


def test_masked_lpips_all_ones_and_all_zeros(params, distance, images):
    x, y = (jnp.asarray(a) for a in images)
    plain = distance(params, x, y)
    ones = distance(params, x, y, jnp.ones((2, SIZE, SIZE, 1)))
    zeros = distance(params, x, y, jnp.zeros((2, SIZE, SIZE, 1)))
    np.testing.assert_allclose(np.asarray(ones), np.asarray(plain), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(zeros), 0.0)


def test_lpips_rejects_bad_input(params, images):
    x, y = (jnp.asarray(a) for a in images)
    with pytest.raises(ValueError, match="NHWC RGB"):
        lpips_distance(params, x[..., :2], y[..., :2])
    with pytest.raises(ValueError, match="differ in shape"):
        lpips_distance(params, x, y[:1])
    with pytest.raises(ValueError, match="at least 16x16"):
        lpips_distance(params, x[:, :8, :8], y[:, :8, :8])
    with pytest.raises(ValueError, match="mask must have shape"):
        lpips_distance(params, x, y, jnp.ones((2, SIZE, SIZE)))


def test_unit_normalize_has_finite_gradient_at_zero():
    f = jnp.zeros((1, 2, 2, 4)).at[0, 0, 0].set(jnp.array([3.0, 4.0, 0.0, 0.0]))
    np.testing.assert_allclose(np.asarray(unit_normalize(f))[0, 0, 0], [0.6, 0.8, 0, 0], rtol=1e-6)
    grad = jax.jit(jax.grad(lambda v: jnp.sum(unit_normalize(v) * jnp.arange(4.0))))(f)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_r1_penalty_analytic():
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(8, 8, 3)).astype(np.float32))
    x = jnp.asarray(rng.normal(size=(4, 8, 8, 3)).astype(np.float32))
    linear = jax.jit(lambda v: losses.r1_penalty(lambda u: jnp.sum(u * w, axis=(1, 2, 3)), v))(x)
    np.testing.assert_allclose(float(linear), float(np.sum(np.asarray(w) ** 2)), rtol=1e-5)
    quadratic = jax.jit(lambda v: losses.r1_penalty(lambda u: jnp.sum(u ** 2, axis=(1, 2, 3)), v))(x)
    expected = np.mean(np.sum(4 * np.asarray(x) ** 2, axis=(1, 2, 3)))
    np.testing.assert_allclose(float(quadratic), expected, rtol=1e-5)


def test_gan_losses_match_softplus_formulas():
    real = np.array([-60.0, -1.5, 0.0, 2.0, 60.0], np.float32)
    fake = np.array([-3.0, -0.2, 0.7, 1.0, 40.0], np.float32)
    softplus = lambda v: np.logaddexp(0.0, v.astype(np.float64))
    np.testing.assert_allclose(float(losses.generator_adversarial_loss(jnp.asarray(fake))),
                               softplus(-fake).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(losses.discriminator_loss(jnp.asarray(real), jnp.asarray(fake))),
                               softplus(-real).mean() + softplus(fake).mean(), rtol=1e-6)


def test_motion_generator_loss_weights(params, distance, images):
    defaults = inspect.signature(losses.motion_generator_loss).parameters
    assert [defaults[k].default for k in ("l1_weight", "lpips_weight", "component_lpips_weight",
                                          "adversarial_weight")] == [10.0, 1.0, 100.0, 1.0]
    x, y = (jnp.asarray(a) for a in images)
    mask = jnp.zeros((2, SIZE, SIZE, 1)).at[:, 16:48, 16:48].set(1.0)
    logits = jnp.asarray([0.3, -1.2])
    total, terms = jax.jit(losses.motion_generator_loss)(params, x, y, mask, logits)
    expected = {"l1": np.abs(images[0] - images[1]).mean(), "lpips": distance(params, x, y).mean(),
                "component_lpips": distance(params, x, y, mask).mean(),
                "adversarial": np.logaddexp(0.0, -np.asarray(logits)).mean()}
    for name, value in expected.items():
        np.testing.assert_allclose(float(terms[name]), float(value), rtol=1e-5, err_msg=name)
    weighted = 10 * expected["l1"] + expected["lpips"] + 100 * expected["component_lpips"] + expected["adversarial"]
    np.testing.assert_allclose(float(total), float(weighted), rtol=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        losses.l1_loss(x, y[:1])


def test_plain_and_masked_lpips_have_finite_nonzero_gradients(params, images):
    x, y = (jnp.asarray(a) for a in images)
    mask = jnp.zeros((2, SIZE, SIZE, 1)).at[:, 8:40, 16:56].set(1.0)
    for m in (None, mask):
        grad = jax.jit(jax.grad(lambda pred, m=m: lpips_distance(params, pred, y, m).mean()))(x)
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_bfloat16_trunk_gives_float32_distances(params, images):
    x = jax.ShapeDtypeStruct(images[0].shape, jnp.bfloat16)
    out = jax.eval_shape(lambda p, a, b: lpips_distance(p, a, b, dtype=jnp.bfloat16), params, x, x)
    assert out.shape == (2,) and out.dtype == jnp.float32


def test_vgg_feature_distance_is_the_sum_over_taps_of_feature_distances(params, features, images):
    x, y = (jnp.asarray(a) for a in images)
    mask = jnp.zeros((2, SIZE, SIZE, 1)).at[:, 16:48, 0:32].set(1.0)  # whole cells of every tap grid
    logits = jnp.asarray([0.3, -1.2])
    _, terms = jax.jit(functools.partial(losses.motion_generator_loss, perceptual="vgg"))(params, x, y, mask, logits)
    fx, fy = features(params, x), features(params, y)
    plain, masked = np.zeros(2), np.zeros(2)
    for level, (a, b) in enumerate(zip(fx, fy)):
        squared = np.square(np.asarray(a, np.float64) - np.asarray(b, np.float64))  # (N, h, w, C)
        plain += np.sqrt(squared.mean(axis=(1, 2, 3)))  # ||VGG_l(x) - VGG_l(y)||_2 / sqrt(its size)
        m = np.asarray(mask[:, :: 2 ** level, :: 2 ** level], np.float64)  # the mask is constant on each cell
        masked += np.sqrt((squared * m).sum(axis=(1, 2, 3)) / (m.sum(axis=(1, 2, 3)) * squared.shape[-1]))
    np.testing.assert_allclose(float(terms["lpips"]), plain.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(terms["component_lpips"]), masked.mean(), rtol=1e-5)
    _, lpips_terms = jax.jit(losses.motion_generator_loss)(params, x, y, mask, logits)
    assert abs(float(lpips_terms["lpips"]) - plain.mean()) > 1e-3 * plain.mean()
    with pytest.raises(ValueError, match="unknown perceptual distance 'vgg19': use one of lpips, vgg"):
        losses.motion_generator_loss(params, x, y, mask, logits, perceptual="vgg19")
