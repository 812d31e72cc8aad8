"""StyleGAN2 building blocks as Flax Linen modules: equalized lr, modulated conv, noise, FIR resampling, mbstd."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dex_jax.nn.cpu_conv import conv_transpose_stride2
from dex_jax.nn.layers import CONV2D_AXES, DENSE_AXES

BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)
SQRT2 = math.sqrt(2.0)
_NHWC = ("NHWC", "HWIO", "NHWC")


# ----------------------------------------------------------------------------- FIR resampling

def fir_taps(taps=BLUR_TAPS, gain=1.0):
    """1-D taps t whose separable 2D kernel outer(t, t) sums to `gain`."""
    taps = np.asarray(taps, np.float64)
    return tuple(float(v) for v in taps * (math.sqrt(gain) / taps.sum()))


def _fir_1d(x, taps, axis, down):
    """Correlate axis `axis` with reversed `taps` (a true convolution) over the valid range, keep every
    `down`-th output: a sum of strided slices, cheap forward and backward on every backend."""
    length = (x.shape[axis] - len(taps)) // down + 1
    out = 0.0
    for j, tap in enumerate(taps[::-1]):
        start = [0] * x.ndim
        limit = list(x.shape)
        strides = [1] * x.ndim
        start[axis], limit[axis], strides[axis] = j, j + (length - 1) * down + 1, down
        out = out + tap * jax.lax.slice(x, start, limit, strides)
    return out


def upfirdn2d(x, taps, up=1, down=1, pad=(0, 0)):
    """Upsample by zero insertion, pad (before, after), convolve with the separable kernel
    outer(taps[0], taps[1]) (rows, columns), keep every `down`-th pixel; NHWC.
    Output side = (side * up + pad[0] + pad[1] - len(taps)) // down + 1."""
    rows, cols = taps
    spatial = (pad[0], pad[1] + up - 1, up - 1)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), spatial, spatial, (0, 0, 0)))
    return _fir_1d(_fir_1d(x, rows, 1, down), cols, 2, down).astype(x.dtype)


def blur(x, pad, gain=1.0):
    """The [1,3,3,1] low-pass filter with explicit (before, after) padding."""
    taps = fir_taps(gain=gain)
    return upfirdn2d(x, (taps, taps), pad=pad)


def upsample2d(x):
    """2x upsampling: zero insertion + [1,3,3,1] filter scaled by 4, so a constant image stays constant."""
    taps = fir_taps(gain=4.0)
    return upfirdn2d(x, (taps, taps), up=2, pad=(2, 1))


def _conv(x, kernel, strides=1, padding=0):
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(strides, strides), padding=((padding, padding),) * 2,
        dimension_numbers=_NHWC)


# ----------------------------------------------------------------------------- activations and noise

def scaled_leaky_relu(x):
    """Leaky ReLU (slope 0.2) times sqrt(2), StyleGAN2's variance-preserving activation."""
    return jax.nn.leaky_relu(x, 0.2) * SQRT2


class FusedLeakyReLU(nn.Module):
    """A learned per-channel bias (zero init) followed by `scaled_leaky_relu`."""

    dtype: object = None

    @nn.compact
    def __call__(self, x):
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                          (x.shape[-1],))
        return scaled_leaky_relu(x + bias.astype(self.dtype or x.dtype))


class NoiseInjection(nn.Module):
    """x + strength * per-pixel N(0,1) noise shared over channels; strength is learned and starts at 0.

    Noise comes from the rng stream 'noise' when the caller provides one; without it the layer adds
    nothing, so evaluation is deterministic.
    """

    dtype: object = None

    @nn.compact
    def __call__(self, x):
        strength = self.param("strength", nn.with_logical_partitioning(nn.initializers.zeros_init(), ()), ())
        if not self.has_rng("noise"):
            return x
        noise = jax.random.normal(self.make_rng("noise"), x.shape[:-1] + (1,), x.dtype)
        return x + strength.astype(x.dtype) * noise


# ----------------------------------------------------------------------------- equalized-lr layers

def _unit_normal(axes):
    return nn.with_logical_partitioning(nn.initializers.normal(1.0), axes)


class EqualLinear(nn.Module):
    """Dense layer with N(0,1) weights scaled by 1/sqrt(fan_in) at run time; optional scaled leaky ReLU."""

    features: int
    bias_init: float = 0.0
    activate: bool = False
    axes: tuple = DENSE_AXES
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kernel = self.param("kernel", _unit_normal(self.axes), (fan_in, self.features))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.constant(self.bias_init),
                                                               (self.axes[1],)), (self.features,))
        dtype = self.dtype or x.dtype
        y = x.astype(dtype) @ (kernel / math.sqrt(fan_in)).astype(dtype) + bias.astype(dtype)
        return scaled_leaky_relu(y) if self.activate else y


class EqualConv2d(nn.Module):
    """Conv with N(0,1) HWIO weights scaled by 1/sqrt(fan_in) at run time; symmetric integer padding."""

    features: int
    kernel_size: int
    strides: int = 1
    padding: int = 0
    use_bias: bool = True
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        k, fan_in = self.kernel_size, x.shape[-1] * self.kernel_size ** 2
        kernel = self.param("kernel", _unit_normal(CONV2D_AXES), (k, k, x.shape[-1], self.features))
        dtype = self.dtype or x.dtype
        y = _conv(x.astype(dtype), (kernel / math.sqrt(fan_in)).astype(dtype), self.strides, self.padding)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                              (self.features,))
            y = y + bias.astype(dtype)
        return y


# ----------------------------------------------------------------------------- generator blocks

class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv: w'[n] = w * s[n] per input channel, demodulated per output channel.

    s = EqualLinear(style) with bias init 1. Computed in the equivalent form conv(x * s, w) * d with
    d[n, o] = 1/sqrt(sum_{i,k} (w[k,i,o] s[n,i])^2 + 1e-8): one ordinary batched conv with a shared kernel
    (what StyleGAN2-ADA runs while training) instead of a grouped conv over per-sample kernels, so XLA
    and cuDNN get a dense conv forward and backward. `up` is a stride-2 transposed conv followed by the
    [1,3,3,1] blur; `down` blurs, then convolves with stride 2 (rosinality's padding arithmetic).
    """

    features: int
    kernel_size: int
    demodulate: bool = True
    up: bool = False
    down: bool = False
    dtype: object = None

    @nn.compact
    def __call__(self, x, style):
        if self.up and self.down:
            raise ValueError("ModulatedConv2d: choose up or down, not both")
        k, in_channels = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", _unit_normal(CONV2D_AXES), (k, k, in_channels, self.features))
        kernel = kernel / math.sqrt(in_channels * k * k)
        scales = EqualLinear(in_channels, bias_init=1.0, axes=("embed", "conv_in"), name="modulation")(
            style.astype(jnp.float32))
        dtype = self.dtype or x.dtype
        x = x.astype(dtype) * scales[:, None, None, :].astype(dtype)
        w = kernel.astype(dtype)
        if self.up:
            p = len(BLUR_TAPS) - 2 - (k - 1)
            y = blur(conv_transpose_stride2(x, w), ((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)
        elif self.down:
            p = len(BLUR_TAPS) - 2 + (k - 1)
            y = _conv(blur(x, ((p + 1) // 2, p // 2)), w, strides=2)
        else:
            y = _conv(x, w, padding=k // 2)
        if self.demodulate:
            energy = jnp.einsum("ni,io->no", jnp.square(scales), jnp.sum(jnp.square(kernel), axis=(0, 1)))
            y = y * jax.lax.rsqrt(energy + 1e-8)[:, None, None, :].astype(dtype)
        return y


class StyledConv(nn.Module):
    """Modulated 3x3 conv (optionally up/down by 2) -> noise injection -> bias + scaled leaky ReLU."""

    features: int
    kernel_size: int = 3
    up: bool = False
    down: bool = False
    dtype: object = None

    @nn.compact
    def __call__(self, x, style):
        x = ModulatedConv2d(self.features, self.kernel_size, up=self.up, down=self.down, dtype=self.dtype,
                            name="conv")(x, style)
        x = NoiseInjection(dtype=self.dtype, name="noise")(x)
        return FusedLeakyReLU(dtype=self.dtype, name="activate")(x)


class ToRGB(nn.Module):
    """toRGB* of Fig. S1a: modulated 1x1 conv (no demodulation) + bias to `features` channels, plus the
    2x-upsampled running skip; a bias-free 1x1 equalized conv maps the skip's channels where they change
    (applied before upsampling, which is the same linear map at a quarter of the cost)."""

    features: int
    dtype: object = None

    @nn.compact
    def __call__(self, x, style, skip=None):
        y = ModulatedConv2d(self.features, 1, demodulate=False, dtype=self.dtype, name="conv")(x, style)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                          (self.features,))
        y = y + bias.astype(y.dtype)
        if skip is None:
            return y
        if skip.shape[-1] != self.features:
            skip = EqualConv2d(self.features, 1, use_bias=False, dtype=self.dtype, name="skip")(skip)
        return y + upsample2d(skip.astype(y.dtype))


# ----------------------------------------------------------------------------- discriminator blocks

class ConvLayer(nn.Module):
    """Equalized conv (optionally blur + stride-2 down) followed by bias + scaled leaky ReLU, or linear
    and bias-free when `activate` is False (the residual skip)."""

    features: int
    kernel_size: int
    down: bool = False
    activate: bool = True
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        if self.down:
            p = len(BLUR_TAPS) - 2 + (k - 1)
            x = blur(x, ((p + 1) // 2, p // 2))
        x = EqualConv2d(self.features, k, strides=2 if self.down else 1, padding=0 if self.down else k // 2,
                        use_bias=False, dtype=self.dtype, name="conv")(x)
        if self.activate:
            x = FusedLeakyReLU(dtype=self.dtype, name="activate")(x)
        return x


class ResBlock(nn.Module):
    """StyleGAN2 discriminator residual block: 3x3 conv, 3x3 conv down, 1x1 skip down; sum / sqrt(2)."""

    features: int
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        y = ConvLayer(x.shape[-1], 3, dtype=self.dtype, name="conv1")(x)
        y = ConvLayer(self.features, 3, down=True, dtype=self.dtype, name="conv2")(y)
        skip = ConvLayer(self.features, 1, down=True, activate=False, dtype=self.dtype, name="skip")(x)
        return (y + skip) / SQRT2


def minibatch_stddev(x, group_size):
    """Append one channel: the std over a group of samples, averaged over pixels and channels.

    With G = min(group_size, N) and M = ceil(N / G), sample n joins group n mod M (StyleGAN2's grouping
    when G divides N); when it does not, groups hold G or fewer samples instead of failing.
    """
    n = x.shape[0]
    num_groups = -(-n // min(group_size, n))
    group = np.arange(n) % num_groups
    count = np.bincount(group, minlength=num_groups).astype(np.float32)[:, None, None, None]
    y = x.astype(jnp.float32)
    mean = jax.ops.segment_sum(y, group, num_groups) / count
    var = jax.ops.segment_sum(jnp.square(y - mean[group]), group, num_groups) / count
    std = jnp.mean(jnp.sqrt(var + 1e-8), axis=(1, 2, 3))[group]
    feature = jnp.broadcast_to(std[:, None, None, None], x.shape[:-1] + (1,)).astype(x.dtype)
    return jnp.concatenate([x, feature], axis=-1)
