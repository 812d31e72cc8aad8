"""ArcFace IResNet-50/100 (insightface `arcface_torch` backbones) in Flax, frozen BatchNorms folded into Affine.

Layout (names mirror the PyTorch module so `dex_jax.convert.arcface` is a rename):
    conv1 3x3 (64, stride 1, no bias) -> bn1 -> prelu
    layer1..layer4 of IBasicBlocks, widths 64, 128, 256, 512; the first block of every stage has
        stride 2 and a projection shortcut (downsample.0 = conv1x1 stride 2, downsample.1 = BN);
        IBasicBlock: bn1 -> conv1 3x3 -> bn2 -> prelu -> conv2 3x3 (stride) -> bn3, plus the shortcut
    bn2 -> flatten (7x7x512 at a 112x112 input) -> [dropout: identity at inference] -> fc (512) -> features (BN1d)
Blocks per stage: IResNet-50 (3, 4, 14, 3), IResNet-100 (3, 13, 30, 3).
Input: aligned 112x112 RGB faces, NHWC in [-1, 1] (insightface's (x / 255 - 0.5) / 0.5); output (N, 512).
"""

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.nn.layers import conv2d, dense
from dex_jax.nn.norms import Affine

IRESNET_STAGE_BLOCKS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)
INPUT_SIZE = 112
EMBEDDING_SIZE = 512
PRELU_INIT = 0.25


class PReLU(nn.Module):
    """PyTorch's per-channel PReLU: x if x >= 0 else alpha * x."""

    dtype: object = None

    @nn.compact
    def __call__(self, x):
        init = nn.with_logical_partitioning(nn.initializers.constant(PRELU_INIT), ("norm",))
        alpha = self.param("alpha", init, (x.shape[-1],)).astype(self.dtype or x.dtype)
        return jnp.where(x >= 0, x, alpha * x)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (strided) -> BN, plus an identity or projection shortcut."""

    features: int
    strides: int = 1
    project: bool = False
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        y = Affine(dtype=self.dtype, name="bn1")(x)
        y = conv2d(self.features, 3, padding=1, use_bias=False, dtype=self.dtype, name="conv1")(y)
        y = Affine(dtype=self.dtype, name="bn2")(y)
        y = PReLU(dtype=self.dtype, name="prelu")(y)
        y = conv2d(self.features, 3, self.strides, padding=1, use_bias=False, dtype=self.dtype, name="conv2")(y)
        y = Affine(dtype=self.dtype, name="bn3")(y)
        if self.project:
            x = conv2d(self.features, 1, self.strides, padding=0, use_bias=False, dtype=self.dtype,
                       name="downsample_0")(x)
            x = Affine(dtype=self.dtype, name="downsample_1")(x)
        return y + x


class IResNet(nn.Module):
    """ArcFace IResNet; `stage_blocks` picks the depth (see IRESNET_STAGE_BLOCKS). (N, 112, 112, 3) -> (N, 512)."""

    stage_blocks: tuple = IRESNET_STAGE_BLOCKS[100]
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        if x.ndim != 4 or x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"IResNet expects aligned (N, {INPUT_SIZE}, {INPUT_SIZE}, 3) faces, got {x.shape}")
        x = conv2d(STAGE_WIDTHS[0], 3, padding=1, use_bias=False, dtype=self.dtype, name="conv1")(x)
        x = Affine(dtype=self.dtype, name="bn1")(x)
        x = PReLU(dtype=self.dtype, name="prelu")(x)
        for stage, (width, blocks) in enumerate(zip(STAGE_WIDTHS, self.stage_blocks)):
            for b in range(blocks):
                x = IBasicBlock(width, 2 if b == 0 else 1, project=b == 0, dtype=self.dtype,
                                name=f"layer{stage + 1}_{b}")(x)
        x = Affine(dtype=self.dtype, name="bn2")(x)
        x = x.reshape(x.shape[0], -1)
        x = dense(EMBEDDING_SIZE, dtype=self.dtype, name="fc")(x)
        return Affine(dtype=jnp.float32, name="features")(x.astype(jnp.float32))


def stage_blocks_of(params):
    """The blocks per stage of an IResNet params tree, read from its `layer{s}_{b}` names."""
    counts = [0] * len(STAGE_WIDTHS)
    for name in params:
        if name.startswith("layer"):
            counts[int(name[5:].split("_")[0]) - 1] += 1
    return tuple(counts)


def iresnet_name(stage_blocks):
    """`iresnet50` / `iresnet100` for the standard depths, else `iresnet` plus the block counts."""
    for depth, blocks in IRESNET_STAGE_BLOCKS.items():
        if tuple(stage_blocks) == blocks:
            return f"iresnet{depth}"
    return "iresnet" + "-".join(str(b) for b in stage_blocks)
