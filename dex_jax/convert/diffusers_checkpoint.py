"""What the diffusers UNet and VAE importers share: weight files, PyTorch -> Flax names and layouts, errors."""

import json
from pathlib import Path

import jax
import ml_collections
import ml_dtypes
import numpy as np
from flax import linen as nn
from flax.traverse_util import flatten_dict

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
MAX_LISTED = 5


def read_safetensors(path):
    """A .safetensors file -> {name: numpy array}; float16/bfloat16 stay as stored. One-line ValueError if invalid."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            if not 0 < header_size < 100_000_000:
                raise ValueError("bad header size")
            header = json.loads(f.read(header_size))
            start = 8 + header_size
            tensors = {}
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                f.seek(start + begin)
                dtype = np.dtype(SAFETENSORS_DTYPES[info["dtype"]])
                tensors[name] = np.frombuffer(f.read(end - begin), dtype).reshape(info["shape"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None
    return tensors


def locate(path, subfolder, model):
    """A diffusers `model` folder, a pipeline folder with `subfolder`/, or a .safetensors file -> (weights, config).

    `config` is the config.json of the folder or beside the file, or None for a bare file without one.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / subfolder if (path / subfolder / "config.json").is_file() else path
        weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
        if not (folder / "config.json").is_file() or not weights:
            raise ValueError(f"{path} is not a diffusers {model} folder (config.json + {WEIGHT_FILES[0]})")
        return weights[0], folder / "config.json"
    if path.is_file() and path.suffix == ".safetensors":
        sibling = path.parent / "config.json"
        return path, sibling if sibling.is_file() else None
    raise ValueError(f"{path} is not a .safetensors file or a diffusers folder")


def read_config(config):
    """A config.json path -> its dict; anything else (a dict, a ConfigDict, None) as is."""
    if isinstance(config, (str, Path)):
        return json.loads(Path(config).read_text())
    return config


def check_config(config_json, class_name, model, required):
    """ValueError unless `config_json` is a `class_name` config whose `required` keys (default first) are allowed."""
    name = config_json.get("_class_name", class_name)
    if name != class_name:
        raise ValueError(f"expected a {model} config ({class_name}), got {name}")
    for key, allowed in required.items():
        if config_json.get(key, allowed[0]) not in allowed:
            raise ValueError(f"unsupported {model} config: {key}={config_json[key]!r} (supported: {allowed})")


def with_overrides(config, overrides):
    """A copy of the ConfigDict `config` with the fields in `overrides` set."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.update(overrides)
    return config


def to_numpy(value):
    """A torch tensor or array-like -> numpy, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def flax_param_path(torch_key, ndim):
    """'down_blocks.0.attentions.0.proj_in.weight' -> ('down_blocks_0', 'attentions_0', 'proj_in', 'kernel')."""
    *modules, leaf = torch_key.split(".")
    path = []
    for part in modules:
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    if leaf == "weight":
        leaf = "kernel" if ndim in (2, 4) else "scale"
    return tuple(path) + (leaf,)


def flax_param_value(array):
    """OIHW conv weights -> HWIO, linear (out, in) -> (in, out), everything else as is; float32."""
    array = np.asarray(array, np.float32)
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:
        return array.T
    return array


def abstract_params(module, *args, **kwargs):
    """Flattened {path: ShapeDtypeStruct} of the params `module.init(key, *args, **kwargs)` makes, unallocated."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
    return flatten_dict(nn.unbox(shapes)["params"])


def mismatch_error(model, mismatched, missing, unexpected):
    """One-line ValueError listing the first few of each kind of checkpoint/model disagreement."""
    parts = [f"{label}: " + "; ".join(items[:MAX_LISTED])
             for label, items in (("shape mismatches", mismatched), ("missing from checkpoint", missing),
                                  ("not in the model", unexpected)) if items]
    counts = f"({len(mismatched)} mismatched, {len(missing)} missing, {len(unexpected)} unexpected)"
    return ValueError(f"checkpoint does not match the {model} config {counts}: " + " | ".join(parts))
