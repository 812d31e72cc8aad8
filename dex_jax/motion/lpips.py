"""Perceptual distances on a VGG16 trunk with an optional face-mask weighting: LPIPS (lpips v0.1, unit-normalised
taps + 1x1 linear heads) and supplement B.1's Eq. 2 (the sum over taps of feature distances)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from dex_jax.nn.layers import conv2d

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10
MASK_EPS = 1e-6
MIN_SIZE = 2 ** (len(VGG16_BLOCKS) - 1)
FEATURE_EPS = 1e-12  # inside the square root of `feature_reduce`: a finite gradient at equal images
DISTANCES = ("lpips", "vgg")


class VGG16Features(nn.Module):
    """torchvision `vgg16().features` up to relu5_3 (conv3x3 + ReLU, 2x2 max-pools); returns the 5 LPIPS taps.

    Taps, in order: relu1_2 (H), relu2_2 (H/2), relu3_3 (H/4), relu4_3 (H/8), relu5_3 (H/16), sizes floored
    like PyTorch's MaxPool2d(2, 2). Conv `conv{b}_{i}` is the i-th conv of block b (torchvision index
    0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 in that order).
    """

    dtype: object = None

    @nn.compact
    def __call__(self, x):
        taps = []
        for b, widths in enumerate(VGG16_BLOCKS):
            if b:
                x = nn.max_pool(x, (2, 2), (2, 2))
            for i, width in enumerate(widths):
                x = nn.relu(conv2d(width, 3, padding=1, dtype=self.dtype, name=f"conv{b + 1}_{i + 1}")(x))
            taps.append(x)
        return tuple(taps)


def unit_normalize(features, eps=NORM_EPS):
    """lpips' normalize_tensor over the channel axis, f / (||f|| + eps), with finite gradients at f = 0."""
    sq = jnp.sum(jnp.square(features), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return features / (norm + eps)


def pool_mask(mask, num_pools):
    """Average-pool a (N, H, W, 1) mask 2x2 (stride 2, floored) `num_pools` times: the VGG tap grid."""
    for _ in range(num_pools):
        mask = nn.avg_pool(mask, (2, 2), (2, 2))
    return mask


def tap_means(tap_maps, mask=None):
    """The spatial mean of each (N, h, w, 1) tap map, mask-weighted when a mask is given: a list of (N,)."""
    means = []
    for level, d in enumerate(tap_maps):
        if mask is None:
            means.append(jnp.mean(d, axis=(1, 2, 3)))
        else:
            m = pool_mask(mask.astype(jnp.float32), level)
            means.append(jnp.sum(m * d, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(m, axis=(1, 2, 3)), MASK_EPS))
    return means


def spatial_reduce(tap_maps, mask=None):
    """Sum over taps of the spatial mean of each (N, h, w, 1) map, mask-weighted when a mask is given -> (N,)."""
    return sum(tap_means(tap_maps, mask))


def feature_reduce(difference_maps, mask=None):
    """Supplement B.1's Eq. 2 (Eq. 3 with a mask) from `LPIPS.difference_maps`: per image, the sum over taps of
    sqrt(mean over pixels (mask-weighted) and channels of the squared feature difference) -> (N,).

    That is sum_l ||M_l (VGG_l(x) - VGG_l(y))||_2 with each tap's norm divided by the square root of its number of
    (masked) values (ours: the paper gives no normalisation; this keeps each tap's share independent of the image
    size, and an all-ones mask gives the unmasked distance)."""
    return sum(jnp.sqrt(mean + FEATURE_EPS) for mean in tap_means(difference_maps, mask))


def check_lpips_inputs(x, y, mask=None):
    """Raise ValueError unless x, y are equal-shape NHWC RGB images >= 16x16 and mask, if any, is (N, H, W, 1)."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"LPIPS expects NHWC RGB images, got shape {x.shape}")
    if y.shape != x.shape:
        raise ValueError(f"LPIPS inputs differ in shape: {x.shape} vs {y.shape}")
    if min(x.shape[1:3]) < MIN_SIZE:
        raise ValueError(f"LPIPS needs images at least {MIN_SIZE}x{MIN_SIZE}, got {x.shape[1]}x{x.shape[2]}")
    if mask is not None and mask.shape != x.shape[:3] + (1,):
        raise ValueError(f"LPIPS mask must have shape {x.shape[:3] + (1,)}, got {mask.shape}")


class LPIPS(nn.Module):
    """LPIPS v0.1 with a VGG16 trunk; images NHWC in [-1, 1]; returns one distance per sample, shape (N,).

    With tap l in 0..4, u_l the tap unit-normalised over channels (`unit_normalize`) and w_l the 1x1 head:
        d_l(p) = sum_c w_{l,c} (u_l(x)[p, c] - u_l(y)[p, c])^2
        LPIPS(x, y) = sum_l mean_p d_l(p)                                   (exactly lpips' forward)
    With a mask M of shape (N, H, W, 1), values in [0, 1] (the face-masked Component LPIPS):
        M_l = `pool_mask(M, l)`, M average-pooled 2x2 l times, i.e. on the VGG tap grid, so M_l[p] is the
              mean of M over the input pixels of tap-l cell p;
        LPIPS_M(x, y) = sum_l ( sum_p M_l[p] d_l(p) / max(sum_p M_l[p], MASK_EPS) ).
    An all-ones mask gives LPIPS(x, y); an all-zero mask gives 0. Distances are computed in float32 whatever
    `dtype` the VGG trunk runs in.
    """

    dtype: object = None

    def setup(self):
        self.vgg = VGG16Features(dtype=self.dtype)
        self.heads = [conv2d(1, 1, use_bias=False, dtype=jnp.float32) for _ in VGG16_BLOCKS]

    def features(self, x):
        """The 5 VGG taps of images in [-1, 1] after lpips' input scaling layer."""
        shift = jnp.asarray(SCALING_SHIFT, x.dtype)
        scale = jnp.asarray(SCALING_SCALE, x.dtype)
        return self.vgg((x - shift) / scale)

    def tap_maps(self, x, y):
        """Per-tap maps d_l of shape (N, h_l, w_l, 1) (see the class docstring), one VGG pass per image batch."""
        check_lpips_inputs(x, y)
        n = x.shape[0]
        taps = self.features(jnp.concatenate([x, y], axis=0))
        maps = []
        for head, tap in zip(self.heads, taps):
            u = unit_normalize(tap.astype(jnp.float32))
            maps.append(head(jnp.square(u[:n] - u[n:])))
        return tuple(maps)

    def difference_maps(self, x, y):
        """Per-tap (N, h_l, w_l, 1) maps of the channel mean of (VGG_l(x) - VGG_l(y))^2, raw taps (no unit
        normalisation, no heads), one VGG pass per image batch: what `feature_reduce` reduces."""
        check_lpips_inputs(x, y)
        n = x.shape[0]
        taps = self.features(jnp.concatenate([x, y], axis=0))
        return tuple(jnp.mean(jnp.square(tap[:n].astype(jnp.float32) - tap[n:].astype(jnp.float32)), axis=-1,
                              keepdims=True) for tap in taps)

    def __call__(self, x, y, mask=None):
        check_lpips_inputs(x, y, mask)
        return spatial_reduce(self.tap_maps(x, y), mask)


def lpips_distance(params, x, y, mask=None, dtype=None):
    """LPIPS (mask=None) or face-masked Component LPIPS distance per sample, shape (N,); see `LPIPS`."""
    return LPIPS(dtype=dtype).apply({"params": params}, x, y, mask)


def lpips_param_shapes(height=64, width=64):
    """The LPIPS params pytree as ShapeDtypeStructs (unboxed), computed with `jax.eval_shape`."""
    image = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: LPIPS().init(jax.random.key(0), x, x), image)
    return nn.unbox(variables)["params"]
