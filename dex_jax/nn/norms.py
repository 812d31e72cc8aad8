"""Every normalisation layer of the project, with PyTorch numerics and logically named params.

group_norm and layer_norm use exact two-pass variance (`use_fast_variance=False`), as PyTorch computes it;
Affine is a frozen BatchNorm folded to a per-channel scale and shift at import.
"""

import flax.linen as nn

NORM_AXES = ("norm",)


def group_norm(groups, eps, dtype=None, name=None):
    """torch.nn.GroupNorm(groups, C, eps) over NHWC or (B, L, C) input; params `scale`, `bias`."""
    return nn.GroupNorm(
        num_groups=groups, epsilon=eps, dtype=dtype, use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), NORM_AXES),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), NORM_AXES), name=name)


def layer_norm(eps, dtype=None, name=None):
    """torch.nn.LayerNorm(C, eps) over the last axis; params `scale`, `bias`."""
    return nn.LayerNorm(
        epsilon=eps, dtype=dtype, use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), NORM_AXES),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), NORM_AXES), name=name)


class Affine(nn.Module):
    """Per-channel scale and shift: the form a frozen BatchNorm takes once folded at import."""

    dtype: object = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), NORM_AXES), (c,))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), NORM_AXES), (c,))
        return x * scale.astype(self.dtype or x.dtype) + bias.astype(self.dtype or x.dtype)
