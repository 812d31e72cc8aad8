"""diffusers AutoencoderKL weights (folder or .safetensors) -> our Flax VAE params."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict

from dex_jax.convert.diffusers_unet import read_safetensors
from dex_jax.diffusion.vae import vae_from_config

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
MAX_LISTED = 5
DEFAULT_NORM_GROUPS = 32  # every SD-family VAE; weights alone cannot tell the group count
# Attention names of diffusers checkpoints saved before the Attention refactor.
DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_ARCHITECTURE = ("in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
                 "norm_num_groups", "scaling_factor", "use_quant_conv", "use_post_quant_conv",
                 "mid_block_add_attention")
_REQUIRED = {"act_fn": ("silu",), "shift_factor": (None,), "latents_mean": (None,), "latents_std": (None,)}


def _our_config(fields):
    config = ml_collections.ConfigDict(fields)
    config.attention_implementation = ml_collections.config_dict.placeholder(str)
    config.dtype = "float32"
    return config


def vae_config_from_diffusers(config_json):
    """A diffusers AutoencoderKL config.json dict -> our ConfigDict; anything else gets a one-line ValueError."""
    name = config_json.get("_class_name", "AutoencoderKL")
    if name != "AutoencoderKL":
        raise ValueError(f"expected an AutoencoderKL config, got {name}")
    for key, allowed in _REQUIRED.items():
        if config_json.get(key, allowed[0]) not in allowed:
            raise ValueError(f"unsupported VAE config: {key}={config_json[key]!r} (supported: {allowed})")
    for key, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        if any(block != kind for block in config_json.get(key, ())):
            raise ValueError(f"unsupported VAE config: {key}={config_json[key]!r} (supported: {kind} only)")
    defaults = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(64,),
                    layers_per_block=1, norm_num_groups=32, scaling_factor=0.18215, use_quant_conv=True,
                    use_post_quant_conv=True, mid_block_add_attention=True)
    fields = {key: config_json.get(key, defaults[key]) for key in _ARCHITECTURE}
    fields["block_out_channels"] = tuple(fields["block_out_channels"])
    return _our_config(fields)


def vae_config_from_weights(state_dict):
    """Infer the architecture of a diffusers VAE state dict; norm groups default to 32, scaling to 0.18215."""
    if "encoder.conv_in.weight" not in state_dict:
        raise ValueError("not a diffusers AutoencoderKL state dict (no encoder.conv_in.weight)")
    blocks = sorted({int(key.split(".")[2]) for key in state_dict if key.startswith("encoder.down_blocks.")})
    channels = tuple(int(state_dict[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in blocks)
    layers = len({key.split(".")[4] for key in state_dict if key.startswith("encoder.down_blocks.0.resnets.")})
    return _our_config(dict(
        in_channels=int(state_dict["encoder.conv_in.weight"].shape[1]),
        out_channels=int(state_dict["decoder.conv_out.weight"].shape[0]),
        latent_channels=int(state_dict["decoder.conv_in.weight"].shape[1]),
        block_out_channels=channels, layers_per_block=layers, norm_num_groups=DEFAULT_NORM_GROUPS,
        scaling_factor=0.18215, use_quant_conv="quant_conv.weight" in state_dict,
        use_post_quant_conv="post_quant_conv.weight" in state_dict,
        mid_block_add_attention=any(".mid_block.attentions." in key for key in state_dict)))


def _flax_key(torch_key):
    """'encoder.mid_block.attentions.0.query.weight' -> ('encoder', 'mid_block', 'attentions_0', 'to_q', 'weight')."""
    parts = []
    for part in torch_key.split("."):
        part = DEPRECATED_ATTENTION.get(part, part) if ".attentions." in torch_key else part
        for piece in part.split("."):
            if piece.isdigit() and parts:
                parts[-1] = f"{parts[-1]}_{piece}"
            else:
                parts.append(piece)
    return tuple(parts)


def _torch_key(path):
    """('decoder', 'up_blocks_0', 'resnets_1', 'norm1', 'scale') -> 'decoder.up_blocks.0.resnets.1.norm1.weight'."""
    *modules, leaf = path
    names = [re.sub(r"_(\d+)$", r".\1", name) for name in modules]
    return ".".join(names + ["bias" if leaf == "bias" else "weight"])


def _torch_shape(shape):
    """A Flax param shape in PyTorch's layout: HWIO -> OIHW, (in, out) -> (out, in)."""
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape))


def _flax_leaf(path, array):
    """Rename a PyTorch leaf and lay its array out for Flax: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
    *modules, leaf = path
    array = np.asarray(array, np.float32)
    if leaf == "bias":
        return path, array
    if "attentions_0" in modules and array.ndim == 4 and array.shape[2:] == (1, 1):
        array = array[:, :, 0, 0]  # old checkpoints stored the attention projections as 1x1 convs
    if array.ndim == 4:
        return (*modules, "kernel"), array.transpose(2, 3, 1, 0)
    if array.ndim == 2:
        return (*modules, "kernel"), array.T
    return (*modules, "scale"), array


def param_shapes(module):
    """Flattened {path: shape} of the module's params, computed without allocating."""
    f = module.downsample_factor
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, f, f, module.in_channels))))
    return {path: value.shape for path, value in flatten_dict(nn.unbox(shapes)["params"]).items()}


def convert_vae(state_dict, config):
    """diffusers AutoencoderKL state dict (name -> array) -> params for `vae_from_config(config)`.

    Any missing, unexpected or misshapen key raises a ValueError naming the first few with their shapes.
    """
    if any(key.startswith(("first_stage_model.", "encoder.down.")) for key in state_dict):
        raise ValueError("this is an original (LDM) Stable Diffusion VAE checkpoint; convert it to diffusers "
                         "format first")
    expected = param_shapes(vae_from_config(config))
    params, seen, mismatched, unexpected = {}, set(), [], []
    for key, value in state_dict.items():
        value = np.asarray(value.detach().cpu().float().numpy() if hasattr(value, "detach") else value)
        path, array = _flax_leaf(_flax_key(key), value)
        seen.add(path)
        if path not in expected:
            unexpected.append(f"{key} {tuple(value.shape)}")
        elif array.shape != expected[path]:
            mismatched.append(f"{key} checkpoint {tuple(value.shape)} vs model {_torch_shape(expected[path])}")
        else:
            params[path] = jnp.asarray(array)
    missing = [f"{_torch_key(path)} {_torch_shape(shape)}" for path, shape in expected.items() if path not in seen]
    if mismatched or missing or unexpected:
        parts = [f"{label}: " + "; ".join(items[:MAX_LISTED])
                 for label, items in (("shape mismatches", mismatched), ("missing from checkpoint", missing),
                                      ("not in the model", unexpected)) if items]
        counts = f"({len(mismatched)} mismatched, {len(missing)} missing, {len(unexpected)} unexpected)"
        raise ValueError(f"checkpoint does not match the VAE config {counts}: " + " | ".join(parts))
    return unflatten_dict(params)


def _locate(path):
    """A diffusers VAE folder, a pipeline folder with vae/, or a .safetensors file -> (weights, config.json or None)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
        if not (folder / "config.json").is_file() or not weights:
            raise ValueError(f"{path} is not a diffusers VAE folder (config.json + {WEIGHT_FILES[0]})")
        return weights[0], folder / "config.json"
    if path.is_file() and path.suffix == ".safetensors":
        sibling = path.parent / "config.json"
        return path, sibling if sibling.is_file() else None
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    raise ValueError(f"{path} is not a .safetensors file or a diffusers folder")


def load_vae(path, config=None, **overrides):
    """(module, params) from a diffusers VAE folder or a .safetensors file.

    The config comes from `config` (our ConfigDict, a diffusers config dict or a config.json path), else
    the config.json of the folder or beside the file, else it is inferred from the weights (norm groups
    32). `overrides` set our config fields, e.g. dtype='bfloat16', attention_implementation='cudnn'.
    """
    weights, config_file = _locate(path)
    state_dict = read_safetensors(weights)
    config = config if config is not None else config_file
    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text())
    if config is None:
        config = vae_config_from_weights(state_dict)
    elif not isinstance(config, ml_collections.ConfigDict):
        config = vae_config_from_diffusers(config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.update(overrides)
    return vae_from_config(config), convert_vae(state_dict, config)
