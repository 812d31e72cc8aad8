"""`dex-portrait bench conv`: XLA's own 3D and transposed convolutions against our CPU forms, forward + backward.

Shapes are the tiny Stage-1 model's (from its config) at batch 8 (the embedded default's training step). Each row times the
gradient with respect to input and kernel of sum(conv(x, w)^2), both forms in the same run on the same device.
"""

import argparse

import jax
import jax.numpy as jnp
from jax import lax

from dex_jax.arguments import ArgumentParser
from dex_jax.bench.timing import time_jitted
from dex_jax.config_loading import load_config
from dex_jax.nn.cpu_conv import depth_sliced_conv3d, input_dilated_conv_transpose_stride2, transpose_stride2_phases

NDHWC = ("NDHWC", "DHWIO", "NDHWC")
BATCH = 8


def tiny_cases():
    """(conv3d cases (input NDHWC, out channels, strides), transposed cases (input NHWC, out channels)) of `tiny`.

    conv3d: the appearance resblocks and Flatten & CNN's strided conv; transposed: the decoder's up StyleConvs.
    """
    model = load_config("motion_model:tiny")
    app = model.appearance
    size = model.image_size // 2 ** (len(app.block_channels) - 1)
    volume = (BATCH, app.volume_depth, size, size)
    conv3d = (((*volume, app.volume_channels), app.volume_channels, (1, 1, 1)),
              ((*volume, 2 * app.volume_channels), model.fusion.out_channels, (1, 2, 2)))
    transposed, size, channels = [], size // 2, model.decoder.channels
    for width in model.decoder.up_channels:
        transposed.append(((BATCH, size, size, channels), width))
        size, channels = 2 * size, width
    return conv3d, tuple(transposed)


def _native_conv3d(x, w, strides):
    return lax.conv_general_dilated(x, w, strides, ((1, 1),) * 3, dimension_numbers=NDHWC)


def _ours_conv3d(x, w, strides):
    return depth_sliced_conv3d(x, w, strides, ((1, 1),) * 3, dimension_numbers=NDHWC)


def _grad_seconds(conv, x, w, repeats):
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.square(conv(x, w))), argnums=(0, 1)))
    return time_jitted(grad, x, w, repeats=repeats)[1]


def main(argv=None):
    parser = ArgumentParser(prog="dex-portrait bench conv", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per form (default: %(default)s)")
    args = parser.parse_args(argv)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    conv3d_cases, transposed_cases = tiny_cases()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}); fwd+bwd ms, XLA's own vs ours")
    for shape, cout, strides in conv3d_cases:
        x = jax.random.normal(keys[0], shape)
        w = jax.random.normal(keys[1], (3, 3, 3, shape[-1], cout))
        native = _grad_seconds(lambda a, b: _native_conv3d(a, b, strides), x, w, args.repeats)
        ours = _grad_seconds(lambda a, b: _ours_conv3d(a, b, strides), x, w, args.repeats)
        print(f"conv3d 3x3x3 {shape} -> {cout} ch, strides {strides}: XLA {1e3 * native:.1f} ms, "
              f"depth-sliced {1e3 * ours:.1f} ms, x{native / ours:.1f}", flush=True)
    for shape, cout in transposed_cases:
        x = jax.random.normal(keys[0], shape)
        w = jax.random.normal(keys[1], (3, 3, shape[-1], cout))
        native = _grad_seconds(input_dilated_conv_transpose_stride2, x, w, args.repeats)
        ours = _grad_seconds(transpose_stride2_phases, x, w, args.repeats)
        print(f"transposed 3x3 stride 2 {shape} -> {cout} ch: XLA {1e3 * native:.1f} ms, "
              f"phase split {1e3 * ours:.1f} ms, x{native / ours:.1f}", flush=True)
    return 0
