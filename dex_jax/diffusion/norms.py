"""GroupNorm and LayerNorm factories with PyTorch numerics and logically named params."""

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
