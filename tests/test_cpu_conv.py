"""The CPU forms of conv3d and stride-2 transposed conv against torch and XLA's own convolutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

from dex_jax.nn.cpu_conv import conv_transpose_stride2, depth_sliced_conv3d
from dex_jax.nn.layers import conv3d

CASES = [  # (input NDHWC, kernel DHW, out channels, strides, padding)
    ((2, 5, 9, 7, 4), (3, 3, 3), 6, (1, 1, 1), 1),
    ((2, 6, 8, 8, 5), (3, 3, 3), 3, (1, 2, 2), 1),
    ((1, 7, 6, 6, 3), (3, 1, 2), 4, (2, 1, 1), (1, 0, 1)),
    ((3, 4, 5, 5, 2), (1, 1, 1), 5, (1, 1, 1), 0),
]


def _torch_conv3d(x, kernel, strides, padding):
    out = torch.nn.functional.conv3d(torch.from_numpy(x).permute(0, 4, 1, 2, 3),
                                     torch.from_numpy(kernel).permute(4, 3, 0, 1, 2), stride=strides,
                                     padding=padding)
    return out.permute(0, 2, 3, 4, 1).numpy()


@pytest.mark.parametrize("shape,kernel_size,cout,strides,padding", CASES)
def test_matches_torch_conv3d(shape, kernel_size, cout, strides, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    kernel = rng.normal(size=kernel_size + (shape[-1], cout)).astype(np.float32)
    pads = (padding,) * 3 if isinstance(padding, int) else padding
    ours = jax.jit(depth_sliced_conv3d, static_argnums=(2, 3, 6))(
        x, kernel, strides, tuple((p, p) for p in pads), None, None, ("NDHWC", "DHWIO", "NDHWC"))
    np.testing.assert_allclose(ours, _torch_conv3d(x, kernel, strides, pads), atol=1e-4, rtol=1e-4)


def test_layer_gradients_match_xla_conv3d():
    layer = conv3d(6, 3, strides=(1, 2, 2), padding=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 8, 8, 5))
    params = layer.init(jax.random.PRNGKey(1), x)

    def reference(params, x):
        kernel = params["params"]["kernel"].value
        y = lax.conv_general_dilated(x, kernel, (1, 2, 2), ((1, 1),) * 3,
                                     dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
        return jnp.sum(jnp.sin(y + params["params"]["bias"].value))

    def ours(params, x):
        return jnp.sum(jnp.sin(layer.apply(params, x)))

    want = jax.grad(reference, argnums=(0, 1))(params, x)
    got = jax.jit(jax.grad(ours, argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("side,k,cin,cout", [(5, 3, 4, 6), (4, 4, 3, 2), (6, 1, 2, 3), (3, 5, 2, 2)])
def test_conv_transpose_stride2_matches_torch(side, k, cin, cout):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, side, side + 1, cin)).astype(np.float32)
    kernel = rng.normal(size=(k, k, cin, cout)).astype(np.float32)
    want = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(kernel).permute(2, 3, 0, 1), stride=2)
    want = want.permute(0, 2, 3, 1).numpy()
    ours = jax.jit(conv_transpose_stride2)(x, kernel)
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, atol=1e-4, rtol=1e-4)
    dilated = jax.lax.conv_general_dilated(x, kernel[::-1, ::-1], (1, 1), ((k - 1, k - 1),) * 2, lhs_dilation=(2, 2),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
    grad_ours = jax.grad(lambda w: jnp.sum(jnp.sin(conv_transpose_stride2(x, w))))(kernel)
    grad_dilated = jax.grad(lambda w: jnp.sum(jnp.sin(jax.lax.conv_general_dilated(
        x, w[::-1, ::-1], (1, 1), ((k - 1, k - 1),) * 2, lhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC")))))(kernel)
    np.testing.assert_allclose(dilated, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(grad_ours, grad_dilated, atol=1e-3, rtol=1e-4)
