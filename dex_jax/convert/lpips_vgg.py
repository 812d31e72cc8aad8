"""Import torchvision VGG16 `features` weights and the lpips v0.1 linear heads into `LPIPS` params."""

import importlib.util
import re
from pathlib import Path

import numpy as np

from dex_jax.motion.lpips import VGG16_BLOCKS, lpips_param_shapes

# torchvision `vgg16().state_dict()` ("features.0.weight"), `vgg16().features.state_dict()` ("0.weight")
# and the lpips package's trunk ("net.slice1.0.weight", or "slice1.0.weight" from `LPIPS().net`: the
# slices keep torchvision's indices).
VGG_KEY = re.compile(r"^(?:features\.|(?:net\.)?slice[1-5]\.)?(\d+)\.(weight|bias)$")
# lpips heads: "lin0.model.1.weight" (with dropout, lpips' default) or "lin0.model.0.weight" (without).
HEAD_KEY = re.compile(r"^lin(\d+)\.model\.\d+\.weight$")
SHIPPED_HEADS = Path("weights", "v0.1", "vgg.pth")
MAX_REPORTED = 4


def vgg16_conv_indices():
    """{torchvision `features` index: our conv name} for the 13 convs up to relu5_3."""
    names, index = {}, 0
    for b, widths in enumerate(VGG16_BLOCKS):
        if b:
            index += 1
        for i in range(len(widths)):
            names[index] = f"conv{b + 1}_{i + 1}"
            index += 2
    return names


def _raise_problems(what, problems):
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED])
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise ValueError(f"{what}: {shown}{more}")


def _torch_shape(hwio_shape):
    return tuple(hwio_shape[i] for i in (3, 2, 0, 1))


def convert_vgg16_features(state_dict):
    """torchvision / lpips VGG16 state dict (name -> array) -> params of `VGG16Features` (the `vgg` subtree)."""
    found = {}
    for key, value in state_dict.items():
        match = VGG_KEY.match(key)
        if match:
            found[(int(match.group(1)), match.group(2))] = (key, np.asarray(value, np.float32))
    expected = lpips_param_shapes()["vgg"]
    problems = []
    for index, name in vgg16_conv_indices().items():
        kernel_shape = expected[name]["kernel"].shape
        for part, want in (("weight", _torch_shape(kernel_shape)), ("bias", expected[name]["bias"].shape)):
            if (index, part) not in found:
                problems.append(f"missing features.{index}.{part} (expected shape {want})")
            elif found[(index, part)][1].shape != want:
                key, value = found[(index, part)]
                problems.append(f"{key} has shape {value.shape}, expected {want}")
    _raise_problems("VGG16 state dict does not fit VGG16Features", problems)
    return {name: {"kernel": found[(index, "weight")][1].transpose(2, 3, 1, 0), "bias": found[(index, "bias")][1]}
            for index, name in vgg16_conv_indices().items()}


def convert_lpips_heads(state_dict):
    """lpips linear-head state dict ("lin{k}.model.1.weight", (1, C, 1, 1)) -> the `heads_{k}` params."""
    found = {}
    for key, value in state_dict.items():
        match = HEAD_KEY.match(key)
        if match:
            found[int(match.group(1))] = (key, np.asarray(value, np.float32))
    expected = lpips_param_shapes()
    params, problems = {}, []
    for k in range(len(VGG16_BLOCKS)):
        want = _torch_shape(expected[f"heads_{k}"]["kernel"].shape)
        if k not in found:
            problems.append(f"missing lin{k}.model.1.weight (expected shape {want})")
        elif found[k][1].shape != want:
            problems.append(f"{found[k][0]} has shape {found[k][1].shape}, expected {want}")
        else:
            params[f"heads_{k}"] = {"kernel": found[k][1].transpose(2, 3, 1, 0)}
    _raise_problems("lpips heads state dict does not fit LPIPS", problems)
    return params


def convert_lpips(vgg_state_dict, heads_state_dict):
    """VGG16 trunk + lpips heads state dicts -> the full `LPIPS` params pytree."""
    return {"vgg": convert_vgg16_features(vgg_state_dict), **convert_lpips_heads(heads_state_dict)}


def shipped_heads_path():
    """Path of the v0.1 VGG heads inside the installed lpips package, or None when lpips is not installed."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), SHIPPED_HEADS)
    return path if path.is_file() else None


def read_state_dict(path):
    """A PyTorch state dict file (.pth/.pt/.bin, read with weights_only=True) or .safetensors -> name -> array."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        return load_file(str(path))
    import torch
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_lpips(vgg_path, heads_path=None):
    """LPIPS params from a VGG16 weights file and the lpips heads (default: those shipped with lpips)."""
    if heads_path is None:
        heads_path = shipped_heads_path()
        if heads_path is None:
            raise ValueError("lpips is not installed, so its VGG heads cannot be found: pass heads_path")
    return convert_lpips(read_state_dict(vgg_path), read_state_dict(heads_path))
