"""Conv and dense layer factories whose params carry logical axis names for sharding."""

import flax.linen as nn

from dex_jax.nn.cpu_conv import depth_sliced_conv3d

CONV2D_AXES = (None, None, "conv_in", "conv_out")
CONV3D_AXES = (None, None, None, "conv_in", "conv_out")
DENSE_AXES = ("embed", "mlp")


def _partitioned(init, axes):
    return nn.with_logical_partitioning(init, axes)


def _tuple(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


def conv2d(features, kernel_size, strides=1, padding="SAME", use_bias=True, dtype=None,
           kernel_init=nn.initializers.lecun_normal(), name=None):
    """A 2D convolution (NHWC, HWIO kernel); integer padding pads both sides like PyTorch."""
    return nn.Conv(
        features, _tuple(kernel_size, 2), strides=_tuple(strides, 2), padding=padding,
        use_bias=use_bias, dtype=dtype,
        kernel_init=_partitioned(kernel_init, CONV2D_AXES),
        bias_init=_partitioned(nn.initializers.zeros_init(), ("conv_out",)), name=name)


def conv3d(features, kernel_size, strides=1, padding="SAME", use_bias=True, dtype=None,
           kernel_init=nn.initializers.lecun_normal(), name=None):
    """A 3D convolution (NDHWC, DHWIO kernel); sizes and strides are ints or (d, h, w) tuples.

    Runs as `depth_sliced_conv3d` (a 2D convolution over depth-stacked slices on CPU); params are nn.Conv's.
    """
    return nn.Conv(
        features, _tuple(kernel_size, 3), strides=_tuple(strides, 3), padding=padding,
        use_bias=use_bias, dtype=dtype, conv_general_dilated=depth_sliced_conv3d,
        kernel_init=_partitioned(kernel_init, CONV3D_AXES),
        bias_init=_partitioned(nn.initializers.zeros_init(), ("conv_out",)), name=name)


def dense(features, use_bias=True, dtype=None, kernel_init=nn.initializers.lecun_normal(),
          axes=DENSE_AXES, name=None):
    """A dense layer with (in, out) kernel axes named `axes`."""
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype,
        kernel_init=_partitioned(kernel_init, axes),
        bias_init=_partitioned(nn.initializers.zeros_init(), (axes[1],)), name=name)
