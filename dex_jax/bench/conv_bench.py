"""`dex-portrait bench conv`: XLA's own 3D and transposed convolutions against our CPU forms, forward + backward.

Shapes are the tiny Stage-1 model's at batch 8 (the embedded default's training step). Each row times the
gradient with respect to input and kernel of sum(conv(x, w)^2), both forms in the same run on the same device.
"""

import argparse

import jax
import jax.numpy as jnp
from jax import lax

from dex_jax.bench.timing import time_jitted
from dex_jax.nn.cpu_conv import depth_sliced_conv3d, input_dilated_conv_transpose_stride2, transpose_stride2_phases

NDHWC = ("NDHWC", "DHWIO", "NDHWC")
CONV3D_CASES = (  # (input NDHWC, out channels, strides): appearance resblocks, Flatten & CNN
    ((8, 8, 32, 32, 16), 16, (1, 1, 1)),
    ((8, 8, 32, 32, 32), 16, (1, 2, 2)),
)
TRANSPOSED_CASES = (  # (input NHWC, out channels): the decoder's up StyleConvs
    ((8, 16, 16, 128), 64),
    ((8, 32, 32, 64), 32),
)


def _native_conv3d(x, w, strides):
    return lax.conv_general_dilated(x, w, strides, ((1, 1),) * 3, dimension_numbers=NDHWC)


def _ours_conv3d(x, w, strides):
    return depth_sliced_conv3d(x, w, strides, ((1, 1),) * 3, dimension_numbers=NDHWC)


def _grad_seconds(conv, x, w, repeats):
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.square(conv(x, w))), argnums=(0, 1)))
    return time_jitted(grad, x, w, repeats=repeats)[1]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dex-portrait bench conv", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); fwd+bwd ms, XLA's own vs ours")
    for shape, cout, strides in CONV3D_CASES:
        x = jax.random.normal(keys[0], shape)
        w = jax.random.normal(keys[1], (3, 3, 3, shape[-1], cout))
        native = _grad_seconds(lambda a, b: _native_conv3d(a, b, strides), x, w, args.repeats)
        ours = _grad_seconds(lambda a, b: _ours_conv3d(a, b, strides), x, w, args.repeats)
        print(f"conv3d 3x3x3 {shape} -> {cout} ch, strides {strides}: XLA {1e3 * native:.1f} ms, "
              f"depth-sliced {1e3 * ours:.1f} ms, x{native / ours:.1f}", flush=True)
    for shape, cout in TRANSPOSED_CASES:
        x = jax.random.normal(keys[0], shape)
        w = jax.random.normal(keys[1], (3, 3, shape[-1], cout))
        native = _grad_seconds(input_dilated_conv_transpose_stride2, x, w, args.repeats)
        ours = _grad_seconds(transpose_stride2_phases, x, w, args.repeats)
        print(f"transposed 3x3 stride 2 {shape} -> {cout} ch: XLA {1e3 * native:.1f} ms, "
              f"phase split {1e3 * ours:.1f} ms, x{native / ours:.1f}", flush=True)
    return 0
