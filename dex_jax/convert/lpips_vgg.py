"""Import torchvision VGG16 `features` weights and the lpips v0.1 linear heads into `LPIPS` params."""

import importlib.util
import re
from pathlib import Path

from dex_jax.convert.torch_state import check_state_dict, read_state_dict, to_flax, torch_shape
from dex_jax.motion.lpips import VGG16_BLOCKS, lpips_param_shapes

# torchvision `vgg16().state_dict()` ("features.0.weight"), `vgg16().features.state_dict()` ("0.weight")
# and the lpips package's trunk ("net.slice1.0.weight", or "slice1.0.weight" from `LPIPS().net`: the
# slices keep torchvision's indices).
VGG_KEY = re.compile(r"^(?:features\.|(?:net\.)?slice[1-5]\.)?(\d+)\.(weight|bias)$")
# lpips heads: "lin0.model.1.weight" (with dropout, lpips' default) or "lin0.model.0.weight" (without).
HEAD_KEY = re.compile(r"^lin(\d+)\.model\.\d+\.weight$")
SHIPPED_HEADS = Path("weights", "v0.1", "vgg.pth")


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


def convert_vgg16_features(state_dict):
    """torchvision / lpips VGG16 state dict (name -> array) -> params of `VGG16Features` (the `vgg` subtree).

    Keys the VGG16 trunk does not name (a classifier, lpips' heads) are ignored.
    """
    found = {}
    for key, value in state_dict.items():
        match = VGG_KEY.match(key)
        if match:
            found[f"features.{match.group(1)}.{match.group(2)}"] = value
    shapes = lpips_param_shapes()["vgg"]
    expected = {}
    for index, name in vgg16_conv_indices().items():
        expected[f"features.{index}.weight"] = torch_shape(shapes[name]["kernel"].shape)
        expected[f"features.{index}.bias"] = tuple(shapes[name]["bias"].shape)
    check_state_dict("VGG16", found, expected)
    return {name: {"kernel": to_flax(found[f"features.{index}.weight"]),
                   "bias": to_flax(found[f"features.{index}.bias"])}
            for index, name in vgg16_conv_indices().items()}


def convert_lpips_heads(state_dict):
    """lpips linear-head state dict ("lin{k}.model.1.weight", (1, C, 1, 1)) -> the `heads_{k}` params."""
    found = {}
    for key, value in state_dict.items():
        match = HEAD_KEY.match(key)
        if match:
            found[f"lin{match.group(1)}.model.1.weight"] = value
    shapes = lpips_param_shapes()
    expected = {f"lin{k}.model.1.weight": torch_shape(shapes[f"heads_{k}"]["kernel"].shape)
                for k in range(len(VGG16_BLOCKS))}
    check_state_dict("lpips heads", found, expected)
    return {f"heads_{k}": {"kernel": to_flax(found[f"lin{k}.model.1.weight"])} for k in range(len(VGG16_BLOCKS))}


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


def load_lpips(vgg_path, heads_path=None):
    """LPIPS params from a VGG16 weights file and the lpips heads (default: those shipped with lpips)."""
    if heads_path is None:
        heads_path = shipped_heads_path()
        if heads_path is None:
            raise ValueError("lpips is not installed, so its VGG heads cannot be found: pass heads_path")
    return convert_lpips(read_state_dict(vgg_path), read_state_dict(heads_path))
