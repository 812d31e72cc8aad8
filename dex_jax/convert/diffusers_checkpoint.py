"""What the diffusers UNet and VAE importers share: weight files, configs, PyTorch -> Flax param names."""

import json
from pathlib import Path

import ml_collections

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


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
