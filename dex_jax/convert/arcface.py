"""Import an insightface ArcFace IResNet state dict (`backbone.pth`) into `IResNet` params, folding BatchNorms."""

import re

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dex_jax.convert.torch_state import (check_state_dict, flax_param_shapes, fold_batchnorm, read_state_dict,
                                         to_flax, to_numpy, torch_module_name, torch_shape)
from dex_jax.face.arcface import INPUT_SIZE, STAGE_WIDTHS, IResNet

BATCHNORM_EPS = 1e-5
BLOCK_KEY = re.compile(r"^layer(\d)\.(\d+)\.")


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
    """Flat {flax path: shape} of `IResNet(stage_blocks)` params, computed without allocating."""
    return flax_param_shapes(IResNet(tuple(stage_blocks)), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))


def _torch_layout(flax_shapes):
    """{PyTorch key: expected shape} plus, for each Flax param, how it is built from those keys."""
    expected, recipes = {}, {}
    for path, shape in flax_shapes.items():
        prefix = torch_module_name(path[:-1])
        leaf = path[-1]
        if leaf == "kernel":
            expected[f"{prefix}.weight"] = torch_shape(shape)
            recipes[path] = ("conv" if len(shape) == 4 else "fc", prefix)
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


def _fc_kernel(weight, channels):
    """fc weight (512, C*7*7) over PyTorch's (C, H, W) flatten -> (H*W*C, 512) over our NHWC flatten."""
    side = int(round((weight.shape[1] / channels) ** 0.5))
    return to_flax(weight.reshape(weight.shape[0], channels, side, side)).reshape(-1, weight.shape[0])


def _param(state_dict, kind, prefix, eps):
    """One Flax param built from the PyTorch tensors under `prefix` (see `_torch_layout` for the kinds)."""
    if kind == "conv":
        return to_flax(state_dict[f"{prefix}.weight"])
    if kind == "fc":
        return _fc_kernel(to_numpy(state_dict[f"{prefix}.weight"]), STAGE_WIDTHS[-1])
    if kind == "prelu":
        return to_numpy(state_dict[f"{prefix}.weight"])
    if kind == "fc_bias":
        return to_numpy(state_dict[f"{prefix}.bias"])
    return fold_batchnorm(state_dict, prefix, eps)[0 if kind == "bn_scale" else 1]


def convert_arcface(state_dict, stage_blocks=None, eps=BATCHNORM_EPS):
    """insightface IResNet state dict (name -> array) -> `IResNet` params (float32, BatchNorms folded).

    `stage_blocks` defaults to the counts found in the state dict; BN eps is 1e-5 in arcface_torch.
    """
    state_dict = strip_prefix(state_dict)
    stage_blocks = tuple(stage_blocks or stage_blocks_from_state_dict(state_dict))
    if 0 in stage_blocks:
        raise ValueError(f"ArcFace state dict has no blocks in some stage (layer1..layer4 counts {stage_blocks})")
    expected, recipes = _torch_layout(iresnet_param_shapes(stage_blocks))
    check_state_dict("ArcFace IResNet", state_dict, expected)
    flat = {path: _param(state_dict, kind, prefix, eps).astype(np.float32) for path, (kind, prefix) in recipes.items()}
    return traverse_util.unflatten_dict(flat)


def load_arcface(path, stage_blocks=None):
    """Read a user-supplied ArcFace `backbone.pth` (weights only; or a .safetensors file) and convert it."""
    return convert_arcface(read_state_dict(path), stage_blocks)
