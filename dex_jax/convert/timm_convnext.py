"""timm `convnextv2_*` state dict -> ConvNeXtV2 backbone params, and into a PoseEncoder params tree."""

import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dex_jax.motion.convnext_v2 import ConvNeXtV2

IGNORED_PREFIXES = ("head.",)
LEAF_TO_TIMM = {"kernel": "weight", "scale": "weight", "gamma": "weight", "beta": "bias", "bias": "bias"}


def timm_key(flax_path):
    """('stages_1', 'blocks_0', 'mlp', 'fc1', 'kernel') -> 'stages.1.blocks.0.mlp.fc1.weight'."""
    *modules, leaf = flax_path
    return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [LEAF_TO_TIMM[leaf]])


def _torch_layout(flax_shape):
    """The PyTorch shape of a param whose Flax shape is `flax_shape` (HWIO -> OIHW, (in, out) -> (out, in))."""
    if len(flax_shape) == 4:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if len(flax_shape) == 2:
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


def _to_flax(value, flax_shape):
    """Convert one PyTorch array to Flax layout; a 1x1-conv weight may stand in for a linear weight."""
    if len(flax_shape) == 2 and value.ndim == 4 and value.shape[2:] == (1, 1):
        value = value[:, :, 0, 0]
    if value.shape != _torch_layout(flax_shape):
        return None
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:
        return value.T
    return value


def _require(state_dict, key):
    if key not in state_dict:
        raise ValueError(f"ConvNeXt-V2 state dict: missing key {key!r}")
    return state_dict[key]


def dims_of(state_dict, depths):
    """Per-stage widths read from the state dict (each stage's first block norm)."""
    return tuple(int(np.shape(_require(state_dict, f"stages.{i}.blocks.0.norm.weight"))[0])
                 for i in range(len(depths)))


def convert_convnext_v2(state_dict, depths):
    """timm ConvNeXt-V2 state dict (name -> array) -> ConvNeXtV2(depths, dims) params; dims come from the dict."""
    depths = tuple(depths)
    backbone = ConvNeXtV2(depths, dims_of(state_dict, depths))
    shapes = jax.eval_shape(backbone.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
    expected = traverse_util.flatten_dict(nn.meta.unbox(shapes["params"]))
    position = {key: n for n, key in enumerate(state_dict)}
    params = {}
    for path, spec in sorted(expected.items(), key=lambda item: position.get(timm_key(item[0]), -1)):
        key = timm_key(path)
        value = np.asarray(_require(state_dict, key), dtype=np.float32)
        converted = _to_flax(value, spec.shape)
        if converted is None:
            raise ValueError(f"ConvNeXt-V2 state dict: {key!r} has shape {value.shape}, "
                             f"expected {_torch_layout(spec.shape)}")
        params[path] = jnp.asarray(converted)
    used = {timm_key(path) for path in expected}
    unexpected = [k for k in state_dict if k not in used and not k.startswith(IGNORED_PREFIXES)]
    if unexpected:
        raise ValueError(f"ConvNeXt-V2 state dict: unexpected key {unexpected[0]!r} for depths {depths} "
                         f"({len(unexpected)} unexpected in all)")
    return traverse_util.unflatten_dict(params)


def read_state_dict(path):
    """Read a safetensors file, or a PyTorch file with weights_only=True, as name -> float32 numpy array."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        return load_file(str(path))
    import torch
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise ValueError(f"{path} does not hold a flat state dict (name -> tensor)")
    return {k: v.float().numpy() for k, v in state_dict.items()}


def load_convnext_v2(path, depths):
    """ConvNeXtV2 backbone params from a timm `convnextv2_*` checkpoint file."""
    return convert_convnext_v2(read_state_dict(path), depths)


def place_backbone(pose_params, backbone_params):
    """Return PoseEncoder params with `backbone` replaced by `backbone_params`; boxes are kept, shapes checked."""
    if "backbone" not in pose_params:
        raise ValueError("PoseEncoder params have no 'backbone' entry")
    target = traverse_util.flatten_dict(pose_params["backbone"])
    source = traverse_util.flatten_dict(backbone_params)
    if set(target) != set(source):
        missing = sorted(set(target) ^ set(source))[0]
        raise ValueError(f"backbone params do not match the PoseEncoder backbone at {'/'.join(missing)}")
    placed = {}
    for path, leaf in target.items():
        boxed = isinstance(leaf, nn.meta.AxisMetadata)
        shape = (leaf.unbox() if boxed else leaf).shape
        if source[path].shape != shape:
            raise ValueError(f"backbone param {'/'.join(path)} has shape {source[path].shape}, expected {shape}")
        placed[path] = leaf.replace_boxed(source[path]) if boxed else source[path]
    return {**pose_params, "backbone": traverse_util.unflatten_dict(placed)}
