"""timm `convnextv2_*` state dict -> ConvNeXtV2 backbone params, and into a PoseEncoder params tree."""

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dex_jax.convert.torch_state import (check_state_dict, flax_param_shapes, place_subtree, read_state_dict,
                                         to_flax, to_numpy, torch_key, torch_shape)
from dex_jax.motion.convnext_v2 import ConvNeXtV2

IGNORED_PREFIXES = ("head.",)


def _require(state_dict, key):
    if key not in state_dict:
        raise ValueError(f"ConvNeXt-V2 state dict: missing key {key!r}")
    return state_dict[key]


def dims_of(state_dict, depths):
    """Per-stage widths read from the state dict (each stage's first block norm)."""
    return tuple(int(np.shape(_require(state_dict, f"stages.{i}.blocks.0.norm.weight"))[0])
                 for i in range(len(depths)))


def _linear_from_1x1(value, torch_shape_wanted):
    """A 1x1-conv weight (out, in, 1, 1) where a linear weight (out, in) is expected stands in for it."""
    if len(torch_shape_wanted) == 2 and np.ndim(value) == 4 and np.shape(value)[2:] == (1, 1):
        return to_numpy(value)[:, :, 0, 0]
    return value


def convert_convnext_v2(state_dict, depths):
    """timm ConvNeXt-V2 state dict (name -> array) -> ConvNeXtV2(depths, dims) params; dims come from the dict.

    The classifier head (`head.*`) is ignored; any other missing, unexpected or misshapen key raises a ValueError.
    """
    depths = tuple(depths)
    backbone = ConvNeXtV2(depths, dims_of(state_dict, depths))
    flax_shapes = flax_param_shapes(backbone, jnp.zeros((1, 32, 32, 3), jnp.float32))
    expected = {torch_key(path): torch_shape(shape) for path, shape in flax_shapes.items()}
    state_dict = {key: _linear_from_1x1(value, expected.get(key, ())) for key, value in state_dict.items()}
    check_state_dict(f"ConvNeXt-V2 (depths {depths})", state_dict, expected,
                     extra_ok=lambda key: key.startswith(IGNORED_PREFIXES))
    return traverse_util.unflatten_dict({path: jnp.asarray(to_flax(state_dict[torch_key(path)]))
                                         for path in flax_shapes})


def load_convnext_v2(path, depths):
    """ConvNeXtV2 backbone params from a timm `convnextv2_*` checkpoint file (.safetensors or PyTorch)."""
    return convert_convnext_v2(read_state_dict(path), depths)


def place_backbone(pose_params, backbone_params):
    """PoseEncoder params with `backbone` replaced by converted ConvNeXt-V2 params; boxes are kept, shapes checked."""
    return place_subtree(pose_params, "backbone", backbone_params)
