"""Per-frame image metrics, pure jnp: PSNR, L1, SSIM (Gaussian window, as scikit-image computes it) and
expression transfer against a ground-truth target and the same frame with the source's expression.

Every function takes equal-shape NHWC batches (two, three for expression transfer) in the same value range,
whose width `data_range` (max - min of the representable values: 2.0 for images in [-1, 1], 1.0 for [0, 1],
255.0 for uint8 values) the caller gives, and returns one float32 value per frame, shape (N,) (expression
transfer also a (N,) flag of the frames it measures).
"""

import jax
import jax.numpy as jnp

MAX_PSNR_DB = 100.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
EXPRESSION_CHANGE_THRESHOLD = 0.1
MIN_CHANGED_PIXELS = 16


def check_image_pair(predictions, targets):
    """Raise ValueError unless both are NHWC batches of the same shape."""
    if predictions.ndim != 4:
        raise ValueError(f"image metrics expect NHWC batches, got shape {predictions.shape}")
    if predictions.shape != targets.shape:
        raise ValueError(f"prediction and target batches differ in shape: {predictions.shape} vs {targets.shape}")


def psnr(predictions, targets, data_range):
    """PSNR in dB per frame: 10 log10(data_range^2 / MSE), MSE over H, W, C.

    Identical frames (MSE = 0) would give +inf and poison any average, so PSNR is capped at
    MAX_PSNR_DB (100 dB), i.e. MSE is floored at data_range^2 * 1e-10.
    """
    check_image_pair(predictions, targets)
    diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    mse = jnp.mean(jnp.square(diff), axis=(1, 2, 3))
    floor = data_range ** 2 * 10.0 ** (-MAX_PSNR_DB / 10.0)
    return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, floor))


def l1(predictions, targets, data_range):
    """Mean absolute difference per frame over H, W, C, as a fraction of `data_range` (L1 of images in [0, 1])."""
    check_image_pair(predictions, targets)
    diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
    return jnp.mean(jnp.abs(diff), axis=(1, 2, 3)) / data_range


def flicker(predictions, next_predictions, targets, next_targets, data_range):
    """Per pair of consecutive frames, the mean over H, W, C of |(next prediction - prediction) - (next target -
    target)| as a fraction of `data_range`: how much more (or less) the video changes from frame to frame than the
    ground truth does. Zero for any video whose frame-to-frame changes are the truth's, whatever its constant
    error; a flickering video scores its flicker's amplitude."""
    check_image_pair(predictions, targets)
    check_image_pair(next_predictions, next_targets)
    change = next_predictions.astype(jnp.float32) - predictions.astype(jnp.float32)
    true_change = next_targets.astype(jnp.float32) - targets.astype(jnp.float32)
    return jnp.mean(jnp.abs(change - true_change), axis=(1, 2, 3)) / data_range


def expression_transfer(predictions, targets, still_targets, data_range, threshold=EXPRESSION_CHANGE_THRESHOLD):
    """How far each predicted frame moved from the source's expression towards the target's: (values, changed).

    `still_targets` are the true frames with the target's pose but the source's own expression. On the pixels
    where the expression changes the true frame (target and still target differ by more than threshold *
    data_range in some channel), with means over those pixels and their channels,
        value = (mean |prediction - still target| - mean |prediction - target|) / mean |target - still target|,
    which the triangle inequality keeps in [-1, 1]: 1 is the target's expression drawn exactly, -1 the source's
    expression left unchanged, 0 as far from both (a blur of the two, or neither). `changed` (N,) bool marks
    frames with at least MIN_CHANGED_PIXELS such pixels; the value of any other frame is 0 and meaningless.
    """
    check_image_pair(predictions, targets)
    check_image_pair(predictions, still_targets)
    p, t, s = (x.astype(jnp.float32) for x in (predictions, targets, still_targets))
    region = jnp.max(jnp.abs(t - s), axis=-1, keepdims=True) > threshold * data_range
    pixels = jnp.sum(region, axis=(1, 2, 3))

    def region_mean(x):
        return jnp.sum(jnp.where(region, x, 0.0), axis=(1, 2, 3)) / jnp.maximum(pixels * x.shape[-1], 1)

    gain = region_mean(jnp.abs(p - s)) - region_mean(jnp.abs(p - t))
    span = region_mean(jnp.abs(t - s))
    changed = pixels >= MIN_CHANGED_PIXELS
    return jnp.where(changed, gain / jnp.maximum(span, 1e-12), 0.0), changed


def gaussian_taps(sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE):
    """scipy.ndimage's normalised 1-D Gaussian: radius int(truncate * sigma + 0.5), 11 taps for sigma 1.5."""
    radius = int(truncate * sigma + 0.5)
    x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    taps = jnp.exp(-0.5 * jnp.square(x / sigma))
    return taps / jnp.sum(taps)


def _valid_gaussian_blur(maps, taps):
    """Separable Gaussian blur of (B, H, W) maps, keeping only windows fully inside the image (VALID)."""
    x = maps[..., None]
    dims = ("NHWC", "HWIO", "NHWC")
    for kernel in (taps.reshape(-1, 1, 1, 1), taps.reshape(1, -1, 1, 1)):
        x = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=dims,
                                         precision=jax.lax.Precision.HIGHEST)
    return x[..., 0]


def ssim(predictions, targets, data_range):
    """Mean SSIM per frame (Wang et al. 2004), equal to scikit-image's

        structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=data_range, channel_axis=-1)

    For each channel: mu_x, mu_y, sigma_x^2, sigma_y^2, sigma_xy are local Gaussian-weighted moments
    (sigma 1.5, 11 taps, population covariance), C1 = (0.01 R)^2, C2 = (0.03 R)^2 with R = data_range, and
        S = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)).
    scikit-image filters with reflected borders and then drops a (11 - 1) // 2 = 5 pixel border before
    averaging; every kept pixel's window lies inside the image, so a VALID convolution gives exactly the
    kept pixels. The frame's SSIM is the mean of S over those pixels, then over channels.
    SSIM is not shift-invariant (the luminance term compares mu_x mu_y with mu_x^2 + mu_y^2): images in
    [-1, 1] score lower than the same images in [0, 1], so compare figures computed on [0, 1] images.
    """
    check_image_pair(predictions, targets)
    taps = gaussian_taps()
    n, h, w, c = predictions.shape
    if min(h, w) < taps.shape[0]:
        raise ValueError(f"SSIM needs frames at least {taps.shape[0]}x{taps.shape[0]}, got {h}x{w}")
    x = jnp.moveaxis(predictions.astype(jnp.float32), -1, 1).reshape(n * c, h, w)
    y = jnp.moveaxis(targets.astype(jnp.float32), -1, 1).reshape(n * c, h, w)
    moments = _valid_gaussian_blur(jnp.concatenate([x, y, x * x, y * y, x * y]), taps)
    mu_x, mu_y, xx, yy, xy = jnp.split(moments, 5)
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return jnp.mean(s.reshape(n, c, -1), axis=(1, 2))
