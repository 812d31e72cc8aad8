"""Import face-alignment FAN weights (PyTorch) into dex_jax's FAN trunk, folding frozen BatchNorms into Affine."""

import jax.numpy as jnp
from flax import traverse_util

from dex_jax.convert.torch_state import (check_state_dict, flax_param_shapes, fold_batchnorm, place_subtree,
                                         read_state_dict, to_flax, torch_shape)
from dex_jax.motion.fan import FAN

BATCHNORM_EPS = 1e-5


def _torch_prefix(module_path):
    """Flax module path -> PyTorch module name (`downsample_2` is `downsample.2` there)."""
    return ".".join(name.replace("downsample_", "downsample.") for name in module_path)


def _torch_shapes(flax_shapes):
    """The PyTorch keys the FAN params are read from, with the shapes they must have."""
    expected = {}
    for path, shape in flax_shapes.items():
        prefix = _torch_prefix(path[:-1])
        if path[-1] == "kernel":
            expected[f"{prefix}.weight"] = torch_shape(shape)
        elif path[-1] == "scale":
            for stat in ("weight", "bias", "running_mean", "running_var"):
                expected[f"{prefix}.{stat}"] = shape
        elif (*path[:-1], "scale") not in flax_shapes:
            expected[f"{prefix}.bias"] = shape
    return expected


def convert_fan(state_dict, channels=256, hourglass_depth=4, num_landmarks=68):
    """face-alignment FAN state dict -> `params` of `FAN(channels, hourglass_depth, num_landmarks)`.

    BatchNorms fold into Affine: scale = w / sqrt(var + eps), bias = b - mean * scale. Keys of later
    stacks (m1, bl0, al0, ...) are not read, so a 2DFAN-4 checkpoint gives its first stack.
    """
    fan = FAN(channels, hourglass_depth, num_landmarks)
    flax_shapes = flax_param_shapes(fan, jnp.zeros((1, 64, 64, 3), jnp.float32))
    check_state_dict("FAN", state_dict, _torch_shapes(flax_shapes), extra_ok=lambda key: True)
    params = {}
    for path in flax_shapes:
        prefix, name = _torch_prefix(path[:-1]), path[-1]
        if name == "kernel":
            value = to_flax(state_dict[f"{prefix}.weight"])
        elif (*path[:-1], "scale") in flax_shapes:
            value = fold_batchnorm(state_dict, prefix, BATCHNORM_EPS)[0 if name == "scale" else 1]
        else:
            value = state_dict[f"{prefix}.bias"]
        params[path] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(params)


def load_fan(path, channels=256, hourglass_depth=4, num_landmarks=68):
    """Read a FAN checkpoint (`.safetensors`, else a PyTorch state-dict file, weights only) and convert it."""
    return convert_fan(read_state_dict(path), channels, hourglass_depth, num_landmarks)


def with_fan_trunk(encoder_params, fan_params):
    """ExpressionEncoder `params` with its `fan` subtree replaced by converted FAN params; the head is kept."""
    return place_subtree(encoder_params, "fan", fan_params)
