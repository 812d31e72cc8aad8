"""Convolutions XLA's CPU backend runs slowly, rewritten exactly as the plain 2D convolutions it runs fast.

On CPU, XLA runs 3D convolutions, and the kernel gradient of input-dilated (transposed) convolutions, through
slow generic loops: 2.7-5.9x slower than these forms (fwd+bwd) on the tiny Stage-1 model's shapes (`dex-portrait
bench conv`). Both are rewritten here; GPUs and TPUs keep XLA's own convolutions.
- 3D: a (kd, kh, kw) kernel over NDHWC input equals a (kh, kw) kernel over the kd depth-shifted copies of the
  input concatenated on channels, with depth folded into the batch.
- Transposed (stride 2): its 4 output phases are one plain conv with 4x the output channels, interleaved.
"""

import jax
import jax.numpy as jnp
from jax import lax

_NDHWC = ("NDHWC", "DHWIO", "NDHWC")
_NHWC = ("NHWC", "HWIO", "NHWC")


def _is_ndhwc(dimension_numbers):
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == lax.conv_dimension_numbers((1,) * 5, (1,) * 5, _NDHWC)
    return tuple(dimension_numbers) == _NDHWC


def _trivial(dilation):
    return dilation is None or all(d == 1 for d in dilation)


def _on_cpu():
    return jax.default_backend() == "cpu"


def depth_sliced_conv3d(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                        dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated` for NDHWC / DHWIO; computed as a 2D convolution on CPU (same signature).

    Falls back to XLA's own convolution off CPU, for string padding, dilation or grouped convolutions.
    """
    plain = (not _on_cpu() or isinstance(padding, str) or not _is_ndhwc(dimension_numbers)
             or not _trivial(lhs_dilation) or not _trivial(rhs_dilation) or feature_group_count != 1 or kwargs)
    if plain:
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision, **kwargs)
    kd, kh, kw, cin, cout = rhs.shape
    stride_d = window_strides[0]
    (pad_low, pad_high), *planar_padding = padding
    lhs = jnp.pad(lhs, ((0, 0), (pad_low, pad_high), (0, 0), (0, 0), (0, 0)))
    out_depth = (lhs.shape[1] - kd) // stride_d + 1
    last = stride_d * (out_depth - 1) + 1
    stacked = jnp.concatenate([lhs[:, k:k + last:stride_d] for k in range(kd)], axis=-1)
    n, _, h, w, _ = stacked.shape
    kernel = jnp.transpose(rhs, (1, 2, 0, 3, 4)).reshape(kh, kw, kd * cin, cout)
    out = lax.conv_general_dilated(stacked.reshape(n * out_depth, h, w, kd * cin), kernel, window_strides[1:],
                                   planar_padding, dimension_numbers=_NHWC, precision=precision)
    return out.reshape((n, out_depth) + out.shape[1:])


def transpose_stride2_phases(x, kernel):
    """The 4 output phases of a stride-2 transposed conv as one plain conv, interleaved (depth-to-space).

    out[2m + a] = sum_s x[m - s] w[a + 2s] along each axis: phase a is a plain correlation of x, padded by
    ceil(k/2) - 1 on both sides, with the taps w[a], w[a + 2], ... reversed.
    """
    k, _, cin, cout = kernel.shape
    taps = -(-k // 2)
    n, h, w, _ = x.shape
    padded = jnp.pad(kernel, ((0, 2 * taps - k), (0, 2 * taps - k), (0, 0), (0, 0)))
    phases = padded.reshape(taps, 2, taps, 2, cin, cout)[::-1, :, ::-1]  # (r_y, a, r_x, b, cin, cout)
    phases = jnp.transpose(phases, (0, 2, 4, 1, 3, 5)).reshape(taps, taps, cin, 4 * cout)
    pad = taps - 1  # explicit: XLA's CPU kernel gradient is slow for convs whose padding enlarges the output
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    y = lax.conv_general_dilated(x, phases, (1, 1), "VALID", dimension_numbers=_NHWC)
    side_h, side_w = y.shape[1], y.shape[2]
    y = y.reshape(n, side_h, side_w, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * side_h, 2 * side_w, cout)
    return y[:, :2 * (h - 1) + k, :2 * (w - 1) + k]


def conv_transpose_stride2(x, kernel):
    """PyTorch's conv_transpose2d(stride=2, padding=0) with an HWIO kernel (square): output side 2 (side - 1) + k.

    On CPU the 4 output phases run as one plain conv; elsewhere XLA's input-dilated convolution.
    """
    if _on_cpu():
        return transpose_stride2_phases(x, kernel)
    return input_dilated_conv_transpose_stride2(x, kernel)


def input_dilated_conv_transpose_stride2(x, kernel):
    """The same transposed conv as XLA's input-dilated convolution of the flipped kernel (its form off CPU)."""
    k = kernel.shape[0]
    return lax.conv_general_dilated(x, kernel[::-1, ::-1], (1, 1), ((k - 1, k - 1),) * 2, lhs_dilation=(2, 2),
                                    dimension_numbers=_NHWC)
