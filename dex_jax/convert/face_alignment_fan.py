"""Import face-alignment FAN weights (PyTorch) into dex_jax's FAN trunk, folding frozen BatchNorms into Affine."""

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dex_jax.motion.fan import FAN

BATCHNORM_EPS = 1e-5


def _numpy(value):
    """A torch tensor or array-like -> a float64 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _torch_prefix(module_path):
    """Flax module path -> PyTorch module name (`downsample_2` is `downsample.2` there)."""
    return ".".join(name.replace("downsample_", "downsample.") for name in module_path)


def _fan_param_shapes(channels, hourglass_depth, num_landmarks):
    """Flat {path: shape} of FAN params, computed without allocating anything."""
    fan = FAN(channels, hourglass_depth, num_landmarks)
    variables = jax.eval_shape(fan.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32))
    flat = traverse_util.flatten_dict(nn.meta.unbox(variables)["params"])
    return {path: leaf.shape for path, leaf in flat.items()}


def _torch_shapes(flax_shapes):
    """The PyTorch keys the FAN params are read from, with the shapes they must have."""
    expected = {}
    for path, shape in flax_shapes.items():
        prefix = _torch_prefix(path[:-1])
        if path[-1] == "kernel":
            expected[f"{prefix}.weight"] = (shape[3], shape[2], shape[0], shape[1])
        elif path[-1] == "scale":
            for stat in ("weight", "running_mean", "running_var"):
                expected[f"{prefix}.{stat}"] = shape
        else:
            expected[f"{prefix}.bias"] = shape
    return expected


def _check_state_dict(state_dict, expected):
    """Raise a ValueError naming the first missing key, else the first key of the wrong shape."""
    missing = [key for key in expected if key not in state_dict]
    if missing:
        raise ValueError(f"FAN state dict lacks {len(missing)} of {len(expected)} expected keys; "
                         f"first missing: {missing[0]!r} (shape {expected[missing[0]]})")
    for key, shape in expected.items():
        got = tuple(np.shape(state_dict[key]))
        if got != shape:
            raise ValueError(f"FAN state dict key {key!r} has shape {got}, expected {shape}")


def convert_fan(state_dict, channels=256, hourglass_depth=4, num_landmarks=68):
    """face-alignment FAN state dict -> `params` of `FAN(channels, hourglass_depth, num_landmarks)`.

    BatchNorms fold into Affine: scale = w / sqrt(var + eps), bias = b - mean * scale. Keys of later
    stacks (m1, bl0, al0, ...) are not read, so a 2DFAN-4 checkpoint gives its first stack.
    """
    flax_shapes = _fan_param_shapes(channels, hourglass_depth, num_landmarks)
    _check_state_dict(state_dict, _torch_shapes(flax_shapes))
    params = {}
    for path in flax_shapes:
        prefix, name = _torch_prefix(path[:-1]), path[-1]
        if name == "kernel":
            value = _numpy(state_dict[f"{prefix}.weight"]).transpose(2, 3, 1, 0)
        elif (*path[:-1], "scale") in flax_shapes:
            scale = _numpy(state_dict[f"{prefix}.weight"]) / np.sqrt(
                _numpy(state_dict[f"{prefix}.running_var"]) + BATCHNORM_EPS)
            value = scale if name == "scale" else (
                _numpy(state_dict[f"{prefix}.bias"]) - _numpy(state_dict[f"{prefix}.running_mean"]) * scale)
        else:
            value = _numpy(state_dict[f"{prefix}.bias"])
        params[path] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(params)


def load_fan(path, channels=256, hourglass_depth=4, num_landmarks=68):
    """Read a FAN checkpoint (`.safetensors`, else a PyTorch state-dict file, weights only) and convert it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        state_dict = load_file(path)
    else:
        import torch

        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return convert_fan(state_dict, channels, hourglass_depth, num_landmarks)


def with_fan_trunk(encoder_params, fan_params):
    """ExpressionEncoder `params` with its `fan` subtree replaced by converted FAN params; the head is kept."""
    target = traverse_util.flatten_dict(encoder_params["fan"])
    source = traverse_util.flatten_dict(fan_params)
    unmatched = sorted(target.keys() ^ source.keys())
    if unmatched:
        side = "converted FAN params" if unmatched[0] in target else "the encoder's FAN trunk"
        raise ValueError(f"{side} lack {'/'.join(unmatched[0])}: the FAN and encoder configs differ")
    trunk = {}
    for path, leaf in target.items():
        value = jnp.asarray(source[path], jnp.float32)
        expected = nn.meta.unbox(leaf).shape
        if value.shape != expected:
            raise ValueError(f"FAN param {'/'.join(path)} has shape {value.shape}, the encoder expects {expected}")
        trunk[path] = leaf.replace_boxed(value) if isinstance(leaf, nn.meta.AxisMetadata) else value
    return {**encoder_params, "fan": traverse_util.unflatten_dict(trunk)}
