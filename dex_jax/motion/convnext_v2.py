"""ConvNeXt-V2 backbone (GRN blocks), NHWC; submodule names mirror timm's `convnextv2_*` keys."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.nn.layers import conv2d, dense
from dex_jax.nn.norms import layer_norm

LAYER_NORM_EPS = 1e-6
GRN_EPS = 1e-6
MLP_RATIO = 4
DEPTHWISE_AXES = (None, None, None, "conv_out")


class GlobalResponseNorm(nn.Module):
    """GRN: x + beta + gamma * x * (||x||_spatial / mean_channels ||x||_spatial)."""

    dtype: object = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",))
        gamma = self.param("gamma", init, (c,)).astype(self.dtype or x.dtype)
        beta = self.param("beta", init, (c,)).astype(self.dtype or x.dtype)
        x32 = x.astype(jnp.float32)
        spatial_norm = jnp.sqrt(jnp.sum(x32 * x32, axis=(1, 2), keepdims=True))
        response = spatial_norm / (jnp.mean(spatial_norm, axis=-1, keepdims=True) + GRN_EPS)
        return x + beta + gamma * (x * response.astype(x.dtype))


class GrnMlp(nn.Module):
    """Pointwise expansion, exact GELU, GRN, pointwise projection back."""

    hidden: int
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        out = x.shape[-1]
        x = dense(self.hidden, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        x = GlobalResponseNorm(dtype=self.dtype, name="grn")(x)
        return dense(out, dtype=self.dtype, name="fc2")(x)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, LayerNorm, GRN MLP, residual."""

    dtype: object = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        y = nn.Conv(
            c, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=c, dtype=self.dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), DEPTHWISE_AXES),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
            name="conv_dw")(x)
        y = layer_norm(LAYER_NORM_EPS, self.dtype, name="norm")(y)
        y = GrnMlp(MLP_RATIO * c, dtype=self.dtype, name="mlp")(y)
        return x + y


class ConvNeXtStage(nn.Module):
    """Optional downsample (LayerNorm + conv2x2 stride 2), then `depth` blocks."""

    depth: int
    dim: int
    downsample: bool
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        if self.downsample:
            x = layer_norm(LAYER_NORM_EPS, self.dtype, name="downsample_0")(x)
            x = conv2d(self.dim, 2, strides=2, padding="VALID", dtype=self.dtype, name="downsample_1")(x)
        for j in range(self.depth):
            x = ConvNeXtBlock(dtype=self.dtype, name=f"blocks_{j}")(x)
        return x


class ConvNeXtV2(nn.Module):
    """Stem (conv4x4 stride 4 + LayerNorm) and four stages; returns (N, H/32, W/32, dims[-1]).

    The output is timm's `forward_features` (before the head norm) in NHWC.
    """

    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        if len(self.depths) != len(self.dims):
            raise ValueError(f"ConvNeXtV2: depths {tuple(self.depths)} and dims {tuple(self.dims)} "
                             "differ in length")
        x = conv2d(self.dims[0], 4, strides=4, padding="VALID", dtype=self.dtype, name="stem_0")(x)
        x = layer_norm(LAYER_NORM_EPS, self.dtype, name="stem_1")(x)
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            x = ConvNeXtStage(depth, dim, downsample=i > 0, dtype=self.dtype, name=f"stages_{i}")(x)
        return x
