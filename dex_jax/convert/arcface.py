"""Import an insightface ArcFace IResNet state dict (`backbone.pth`) into `IResNet` params, folding BatchNorms."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dex_jax.face.arcface import INPUT_SIZE, STAGE_WIDTHS, IResNet

BATCHNORM_EPS = 1e-5
BLOCK_KEY = re.compile(r"^layer(\d)\.(\d+)\.")
MAX_REPORTED = 4


def _numpy(value):
    """A torch tensor or array-like -> a float64 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def strip_prefix(state_dict):
    """Drop the `module.` prefix that DistributedDataParallel checkpoints carry, and BN step counters."""
    return {key.removeprefix("module."): value for key, value in state_dict.items()
            if not key.endswith("num_batches_tracked")}


def stage_blocks_from_state_dict(state_dict):
    """Blocks per stage, counted from the `layer{s}.{b}.` keys: (3, 4, 14, 3) for IResNet-50."""
    blocks = [set() for _ in STAGE_WIDTHS]
    for key in strip_prefix(state_dict):
        match = BLOCK_KEY.match(key)
        if match and 1 <= int(match.group(1)) <= len(STAGE_WIDTHS):
            blocks[int(match.group(1)) - 1].add(int(match.group(2)))
    return tuple(len(b) for b in blocks)


def iresnet_param_shapes(stage_blocks):
    """Flat {flax path: shape} of `IResNet(stage_blocks)` params, computed with `jax.eval_shape`."""
    image = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: IResNet(tuple(stage_blocks)).init(jax.random.key(0), x), image)
    flat = traverse_util.flatten_dict(nn.unbox(variables)["params"])
    return {path: leaf.shape for path, leaf in flat.items()}


def _torch_prefix(module_path):
    """Flax module path -> PyTorch module name: layer2_0/downsample_1 -> layer2.0.downsample.1."""
    return ".".join(part.replace("_", ".") for part in module_path)


def _torch_layout(flax_shapes):
    """{PyTorch key: expected shape} plus, for each Flax param, how it is built from those keys."""
    expected, recipes = {}, {}
    for path, shape in flax_shapes.items():
        prefix = _torch_prefix(path[:-1])
        leaf = path[-1]
        if leaf == "kernel" and len(shape) == 4:
            expected[f"{prefix}.weight"] = (shape[3], shape[2], shape[0], shape[1])
            recipes[path] = ("conv", prefix)
        elif leaf == "kernel":
            expected[f"{prefix}.weight"] = (shape[1], shape[0])
            recipes[path] = ("fc", prefix)
        elif leaf == "alpha":
            expected[f"{prefix}.weight"] = shape
            recipes[path] = ("prelu", prefix)
        elif path[-2] == "fc":
            expected[f"{prefix}.bias"] = shape
            recipes[path] = ("fc_bias", prefix)
        else:
            for stat in ("weight", "bias", "running_mean", "running_var"):
                expected[f"{prefix}.{stat}"] = shape
            recipes[path] = ("bn_" + leaf, prefix)
    return expected, recipes


def _check(state_dict, expected):
    """Raise a ValueError naming the first missing, unexpected or wrongly shaped keys."""
    problems = [f"missing {key} (expected shape {shape})" for key, shape in expected.items() if key not in state_dict]
    problems += [f"unexpected {key}" for key in state_dict if key not in expected]
    problems += [f"{key} has shape {tuple(np.shape(state_dict[key]))}, expected {shape}"
                 for key, shape in expected.items()
                 if key in state_dict and tuple(np.shape(state_dict[key])) != shape]
    if problems:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise ValueError("ArcFace state dict does not fit IResNet: " + "; ".join(problems[:MAX_REPORTED]) + more)


def _fc_kernel(weight, channels):
    """fc weight (512, C*7*7) over PyTorch's (C, H, W) flatten -> (H*W*C, 512) over our NHWC flatten."""
    side = int(round((weight.shape[1] / channels) ** 0.5))
    return weight.reshape(weight.shape[0], channels, side, side).transpose(2, 3, 1, 0).reshape(-1, weight.shape[0])


def _param(state_dict, kind, prefix, eps):
    """One Flax param built from the PyTorch tensors under `prefix` (see `_torch_layout` for the kinds)."""
    def get(stat):
        return _numpy(state_dict[f"{prefix}.{stat}"])

    if kind == "conv":
        return get("weight").transpose(2, 3, 1, 0)
    if kind == "fc":
        return _fc_kernel(get("weight"), STAGE_WIDTHS[-1])
    if kind == "prelu":
        return get("weight")
    if kind == "fc_bias":
        return get("bias")
    scale = get("weight") / np.sqrt(get("running_var") + eps)
    return scale if kind == "bn_scale" else get("bias") - get("running_mean") * scale


def convert_arcface(state_dict, stage_blocks=None, eps=BATCHNORM_EPS):
    """insightface IResNet state dict (name -> array) -> `IResNet` params (float32, BatchNorms folded).

    `stage_blocks` defaults to the counts found in the state dict; BN eps is 1e-5 in arcface_torch.
    """
    state_dict = strip_prefix(state_dict)
    stage_blocks = tuple(stage_blocks or stage_blocks_from_state_dict(state_dict))
    if 0 in stage_blocks:
        raise ValueError(f"ArcFace state dict has no blocks in some stage (layer1..layer4 counts {stage_blocks})")
    expected, recipes = _torch_layout(iresnet_param_shapes(stage_blocks))
    _check(state_dict, expected)
    flat = {path: _param(state_dict, kind, prefix, eps).astype(np.float32) for path, (kind, prefix) in recipes.items()}
    return traverse_util.unflatten_dict(flat)


def load_arcface(path, stage_blocks=None):
    """Read a user-supplied ArcFace `backbone.pth` (torch.load, weights_only=True) and convert it."""
    import torch

    return convert_arcface(torch.load(path, map_location="cpu", weights_only=True), stage_blocks)
