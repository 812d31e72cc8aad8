"""PSNR, L1 and SSIM against scikit-image, expression transfer's bounds and landmarks, flicker against its formula,
and the CLU metric classes: counts, intervals, merging, masks."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metrics
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dex_jax.evaluate import clu_metrics
from dex_jax.evaluate.image_metrics import (EXPRESSION_CHANGE_THRESHOLD, MAX_PSNR_DB, MIN_CHANGED_PIXELS,
                                            expression_transfer, flicker, l1, psnr, ssim)
from dex_jax.evaluate.scoring import Scorer
from dex_jax.motion.lpips import lpips_distance, lpips_param_shapes


def _pair(seed, shape, low, high, noise):
    """A random image batch and a noisy copy of it, float64, clipped to [low, high]."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(low, high, shape)
    b = np.clip(a + rng.normal(0.0, noise * (high - low), shape), low, high)
    return a, b


def _skimage_ssim(a, b, data_range):
    return np.array([structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                           data_range=data_range, channel_axis=-1) for x, y in zip(a, b)])


@pytest.mark.parametrize("low, high, noise, shape", [
    (0.0, 1.0, 0.1, (3, 24, 31, 3)),
    (-1.0, 1.0, 0.3, (2, 40, 19, 3)),
    (0.0, 255.0, 0.05, (2, 11, 11, 1)),
])
def test_ssim_matches_skimage(low, high, noise, shape):
    a, b = _pair(0, shape, low, high, noise)
    b[-1] = np.random.default_rng(1).uniform(low, high, shape[1:])  # an unrelated frame: SSIM near 0
    ours = np.asarray(ssim(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), high - low))
    np.testing.assert_allclose(ours, _skimage_ssim(a, b, high - low), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(ssim(jnp.asarray(a, jnp.float32), jnp.asarray(a, jnp.float32), high - low)),
                               1.0, atol=1e-6)


def test_psnr_and_l1_match_references():
    a, b = _pair(2, (3, 16, 20, 3), -1.0, 1.0, 0.1)
    ours = np.asarray(psnr(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 2.0))
    ref = [peak_signal_noise_ratio(x, y, data_range=2.0) for x, y in zip(a, b)]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    np.testing.assert_allclose(np.asarray(l1(jnp.asarray(a), jnp.asarray(b), 2.0)),
                               np.abs(a - b).mean(axis=(1, 2, 3)) / 2.0, rtol=1e-5)
    identical = np.asarray(psnr(jnp.asarray(a), jnp.asarray(a), 2.0))
    np.testing.assert_allclose(identical, MAX_PSNR_DB, atol=1e-3)


def test_metrics_map_images_to_unit_range_first():
    a, b = _pair(3, (2, 16, 16, 3), -1.0, 1.0, 0.1)
    unit_a, unit_b = (a + 1) / 2, (b + 1) / 2
    signed_ssim = np.asarray(ssim(jnp.asarray(a), jnp.asarray(b), 2.0))
    np.testing.assert_allclose(signed_ssim, _skimage_ssim(a, b, 2.0), atol=1e-5)
    assert np.all(signed_ssim < _skimage_ssim(unit_a, unit_b, 1.0) - 0.1)  # SSIM is not shift-invariant
    np.testing.assert_allclose(clu_metrics.SSIM.from_model_output(jnp.asarray(a), jnp.asarray(b)).compute()["mean"],
                               _skimage_ssim(unit_a, unit_b, 1.0).mean(), atol=1e-5)
    for metric in (clu_metrics.PSNR, clu_metrics.SSIM, clu_metrics.L1):
        signed = metric.from_model_output(jnp.asarray(a), jnp.asarray(b)).compute()["mean"]
        byte = metric.with_value_range(0, 255).from_model_output(jnp.asarray(unit_a * 255), jnp.asarray(unit_b * 255))
        np.testing.assert_allclose(signed, byte.compute()["mean"], rtol=1e-4)


def _expression_frames(seed, n=4, size=24):
    """(still, target): random [0, 1] frames whose target repaints a random rectangle of each frame ('the mouth')."""
    rng = np.random.default_rng(seed)
    still = rng.uniform(0.0, 1.0, (n, size, size, 3))
    target = still.copy()
    for frame in target:
        y, x = rng.integers(0, size - 8, 2)
        frame[y:y + 8, x:x + 8] = rng.uniform(0.0, 1.0, 3)
    return still, target


def _transfer(predictions, targets, still):
    values, changed = expression_transfer(*(jnp.asarray(x, jnp.float32) for x in (predictions, targets, still)), 1.0)
    return np.asarray(values), np.asarray(changed)


def test_expression_transfer_is_one_for_the_target_minus_one_for_the_source_expression_and_bounded():
    still, target = _expression_frames(9)
    np.testing.assert_allclose(_transfer(target, target, still)[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(_transfer(still, target, still)[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(_transfer((still + target) / 2, target, still)[0], 0.0, atol=1e-5)
    rng = np.random.default_rng(10)
    for noise in (0.05, 0.5):
        noisy = np.clip(target + rng.normal(0.0, noise, target.shape), 0.0, 1.0)
        values, changed = _transfer(noisy, target, still)
        assert changed.all() and np.all(np.abs(values) <= 1.0 + 1e-6)
        if noise == 0.05:
            assert np.all(values > 0.5)
    outside = np.where(np.abs(target - still).max(-1, keepdims=True) > EXPRESSION_CHANGE_THRESHOLD, target,
                       rng.uniform(0.0, 1.0, target.shape))
    np.testing.assert_allclose(_transfer(outside, target, still)[0], 1.0, atol=1e-6)  # only the changed pixels count


def test_expression_transfer_leaves_out_frames_the_expression_does_not_change():
    still, target = _expression_frames(11)
    target[1] = still[1]
    target[2] = still[2]
    target[2, :2, :MIN_CHANGED_PIXELS // 2 - 1] += 0.5  # 2 x 7 = 14 changed pixels: too few
    values, changed = _transfer(target, target, still)
    assert changed.tolist() == [True, False, False, True] and values[1] == values[2] == 0.0
    metric = clu_metrics.ExpressionTransfer.with_value_range(0, 1).from_model_output(
        jnp.asarray(still), jnp.asarray(target), jnp.asarray(still), mask=np.array([True, True, False, True]))
    figures = metric.compute()
    assert int(figures["count"]) == 2 and int(figures["unchanged"]) == 1
    np.testing.assert_allclose(figures["mean"], -1.0, atol=1e-6)
    merged = metric.merge(type(metric).empty())
    assert int(merged.compute()["unchanged"]) == 1


def test_bad_images_raise():
    x = jnp.zeros((2, 16, 16, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(x, jnp.zeros((2, 16, 17, 3)), 2.0)
    with pytest.raises(ValueError, match="NHWC"):
        l1(x[0], x[0], 2.0)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(jnp.zeros((1, 10, 30, 3)), jnp.zeros((1, 10, 30, 3)), 2.0)
    with pytest.raises(ValueError, match="differ in shape"):
        expression_transfer(x, x, jnp.zeros((2, 16, 17, 3)), 2.0)
    with pytest.raises(ValueError, match="one entry per frame"):
        clu_metrics.L1.from_model_output(x, x, mask=jnp.ones(3, bool))


def test_frame_statistic_mean_count_and_interval():
    values = np.random.default_rng(4).normal(28.0, 2.0, 50).astype(np.float32)
    stats = clu_metrics.FrameStatistic.from_values(values).compute()
    half = 1.959963984540054 * values.std(ddof=1) / np.sqrt(len(values))
    assert int(stats["count"]) == 50
    np.testing.assert_allclose(stats["mean"], values.mean(), rtol=1e-6)
    np.testing.assert_allclose([stats["ci95_low"], stats["ci95_high"]], [values.mean() - half, values.mean() + half],
                               rtol=1e-5)
    single = clu_metrics.FrameStatistic.from_values(values[:1]).compute()
    assert np.isnan(single["ci95_low"]) and float(single["mean"]) == values[0]
    assert np.isnan(clu_metrics.FrameStatistic.empty().compute()["mean"])


def test_merge_and_host_reduce_equal_one_pass():
    values = np.random.default_rng(5).normal(0.86, 0.05, 37).astype(np.float32)
    whole = clu_metrics.FrameStatistic.from_values(values)
    parts = [clu_metrics.FrameStatistic.from_values(v) for v in np.split(values, [5, 6, 30])]
    merged = clu_metrics.FrameStatistic.empty()
    for part in parts:
        merged = merged.merge(part)
    padded = [np.pad(v, (0, 32 - len(v))) for v in np.split(values, [5, 6, 30])]
    hosts = [clu_metrics.FrameStatistic.from_values(v, np.arange(32) < n) for v, n in zip(padded, (5, 1, 24, 7))]
    reduced = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *hosts).reduce()
    for other in (merged, reduced):
        for key, value in whole.compute().items():
            np.testing.assert_allclose(other.compute()[key], value, rtol=2e-6, err_msg=key)


def test_collection_jits_and_masks_padding_frames():
    a, b = _pair(6, (4, 16, 16, 3), -1.0, 1.0, 0.1)
    collection = metrics.Collection.create(psnr=clu_metrics.PSNR, ssim=clu_metrics.SSIM, l1=clu_metrics.L1)
    mask = np.array([True, True, True, False])
    masked = jax.jit(collection.single_from_model_output)(
        predictions=jnp.asarray(a, jnp.float32), targets=jnp.asarray(b, jnp.float32), mask=mask).compute()
    kept = collection.single_from_model_output(predictions=jnp.asarray(a[:3], jnp.float32),
                                               targets=jnp.asarray(b[:3], jnp.float32)).compute()
    for name in ("psnr", "ssim", "l1"):
        assert int(masked[name]["count"]) == 3
        np.testing.assert_allclose(masked[name]["mean"], kept[name]["mean"], rtol=1e-5)
    np.testing.assert_allclose(masked["ssim"]["mean"], _skimage_ssim((a[:3] + 1) / 2, (b[:3] + 1) / 2, 1.0).mean(),
                               atol=1e-5)


def test_lpips_metric_averages_lpips_distance():
    rng = np.random.default_rng(7)
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(np.abs(rng.normal(0.0, 0.05, s.shape)), jnp.float32),
                                    lpips_param_shapes(16, 16))
    a, b = _pair(8, (3, 16, 16, 3), -1.0, 1.0, 0.2)
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    stats = clu_metrics.LPIPS.from_model_output(a, b, params).compute()
    np.testing.assert_allclose(stats["mean"], np.mean(lpips_distance(params, a, b)), rtol=1e-5)
    assert float(stats["mean"]) > 0
    assert float(clu_metrics.LPIPS.from_model_output(a, a, params).compute()["mean"]) == 0.0


def test_flicker_is_zero_for_the_truths_changes_and_the_flickers_amplitude_otherwise():
    """A video off the truth by a constant everywhere scores 0; one that alternates +-d around the truth scores 2d
    on every pair (in [0, 1] units); the scorer's chunked pairs equal the formula over a whole 11-frame video."""
    rng = np.random.default_rng(4)
    truth = rng.uniform(-0.8, 0.8, (11, 12, 12, 3)).astype(np.float32)
    offset = truth + 0.1
    assert np.abs(np.asarray(clu_metrics.Flicker.from_model_output(
        predictions=offset[:-1], next_predictions=offset[1:], targets=truth[:-1], next_targets=truth[1:]).compute()
        ["mean"])) < 1e-6
    d = 0.05  # in [-1, 1] units: 0.025 in [0, 1]
    flickering = truth + d * (-1.0) ** np.arange(11)[:, None, None, None]
    values = flicker(jnp.asarray(flickering[:-1]), jnp.asarray(flickering[1:]), jnp.asarray(truth[:-1]),
                     jnp.asarray(truth[1:]), 2.0)
    np.testing.assert_allclose(np.asarray(values), 2 * d / 2.0, rtol=1e-4)
    to_uint8 = lambda x: np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)  # noqa: E731
    scorer = Scorer(embedder=types.SimpleNamespace(name="unused"), landmarker=None)
    scores = scorer.image_scores(to_uint8(flickering), to_uint8(truth))["flicker"].compute()
    p, t = to_uint8(flickering) / 255.0, to_uint8(truth) / 255.0
    expected = np.abs((p[1:] - p[:-1]) - (t[1:] - t[:-1])).mean()
    assert int(scores["count"]) == 10
    np.testing.assert_allclose(float(scores["mean"]), expected, rtol=1e-4)
