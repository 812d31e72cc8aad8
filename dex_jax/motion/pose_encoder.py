"""Pose encoder: ConvNeXt-V2 -> pooled LayerNorm -> yaw, pitch, roll, tx, ty, scale."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dex_jax.motion.convnext_v2 import LAYER_NORM_EPS, ConvNeXtV2
from dex_jax.nn.layers import dense
from dex_jax.nn.norms import layer_norm

POSE_KEYS = ("yaw", "pitch", "roll", "tx", "ty", "scale")
MAX_ANGLE = jnp.pi / 2
INPUT_MULTIPLE = 32


def check_pose_input(x):
    """Raise ValueError unless `x` is an NHWC RGB batch whose height and width are multiples of 32."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"PoseEncoder expects NHWC images with 3 channels, got shape {tuple(x.shape)}")
    if x.shape[1] % INPUT_MULTIPLE or x.shape[2] % INPUT_MULTIPLE:
        raise ValueError(f"PoseEncoder expects height and width that are multiples of {INPUT_MULTIPLE}, "
                         f"got shape {tuple(x.shape)}")


def pose_from_raw(raw):
    """Map (N, 6) raw head outputs to bounded angles (radians), free translation and positive scale."""
    raw = raw.astype(jnp.float32)
    return {
        "yaw": MAX_ANGLE * jnp.tanh(raw[:, 0]),
        "pitch": MAX_ANGLE * jnp.tanh(raw[:, 1]),
        "roll": MAX_ANGLE * jnp.tanh(raw[:, 2]),
        "tx": raw[:, 3],
        "ty": raw[:, 4],
        "scale": jnp.exp(raw[:, 5]),
    }


class PoseEncoder(nn.Module):
    """Image (N, H, W, 3) in [-1, 1] -> dict of (N,) arrays; the zero-initialised head starts at identity."""

    depths: Sequence[int] = (3, 3, 9, 3)
    dims: Sequence[int] = (96, 192, 384, 768)
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        check_pose_input(x)
        features = ConvNeXtV2(self.depths, self.dims, dtype=self.dtype, name="backbone")(x)
        pooled = jnp.mean(features, axis=(1, 2))
        pooled = layer_norm(LAYER_NORM_EPS, self.dtype, name="head_norm")(pooled)
        raw = dense(len(POSE_KEYS), dtype=self.dtype, kernel_init=nn.initializers.zeros_init(),
                    name="head")(pooled)
        return pose_from_raw(raw)
