"""diffusers AutoencoderKL weights (folder or .safetensors) -> our Flax VAE params."""

from pathlib import Path

import jax.numpy as jnp
import ml_collections
from flax.traverse_util import unflatten_dict

from dex_jax.convert.diffusers_checkpoint import check_config, flax_param_path, locate, read_config, with_overrides
from dex_jax.convert.torch_state import (flax_param_shapes, mismatch_error, read_state_dict, shape_of, to_flax,
                                         to_numpy, torch_key, torch_shape)
from dex_jax.diffusion.vae import vae_from_config

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
    check_config(config_json, "AutoencoderKL", "VAE", _REQUIRED)
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


def _current_key(name):
    """'encoder.mid_block.attentions.0.query.weight' -> 'encoder.mid_block.attentions.0.to_q.weight'."""
    if ".attentions." not in name:
        return name
    return ".".join(DEPRECATED_ATTENTION.get(part, part) for part in name.split("."))


def _flax_param(name, array):
    """A diffusers VAE param -> (Flax path, Flax array), renaming pre-refactor attention names."""
    key = _current_key(name)
    if ".attentions.0." in key and array.ndim == 4 and array.shape[2:] == (1, 1):
        array = array[:, :, 0, 0]  # old checkpoints stored the attention projections as 1x1 convs
    return flax_param_path(key, array.ndim), to_flax(array)


def param_shapes(module):
    """Flattened {path: shape} of the module's params, computed without allocating."""
    f = module.downsample_factor
    return flax_param_shapes(module, jnp.zeros((1, f, f, module.in_channels)))


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
        value = to_numpy(value)
        path, array = _flax_param(key, value)
        seen.add(path)
        if path not in expected:
            unexpected.append(f"{key} {shape_of(value)}")
        elif array.shape != expected[path]:
            mismatched.append(f"{key} checkpoint {shape_of(value)} vs model {torch_shape(expected[path])}")
        else:
            params[path] = jnp.asarray(array)
    missing = [f"{torch_key(path)} {torch_shape(shape)}" for path, shape in expected.items() if path not in seen]
    if mismatched or missing or unexpected:
        raise mismatch_error("VAE", mismatched, missing, unexpected)
    return unflatten_dict(params)


def load_vae(path, config=None, **overrides):
    """(module, params) from a diffusers VAE folder or a .safetensors file.

    The config comes from `config` (our ConfigDict, a diffusers config dict or a config.json path), else
    the config.json of the folder or beside the file, else it is inferred from the weights (norm groups
    32). `overrides` set our config fields, e.g. dtype='bfloat16', attention_implementation='cudnn'.
    """
    if not Path(path).exists():
        raise ValueError(f"{path} does not exist")
    weights, config_file = locate(path, "vae", "VAE")
    state_dict = read_state_dict(weights)
    config = read_config(config if config is not None else config_file)
    if config is None:
        config = vae_config_from_weights(state_dict)
    elif not isinstance(config, ml_collections.ConfigDict):
        config = vae_config_from_diffusers(config)
    config = with_overrides(config, overrides)
    return vae_from_config(config), convert_vae(state_dict, config)
