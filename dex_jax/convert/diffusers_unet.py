"""diffusers UNet2DConditionModel weights (folder or .safetensors) -> our Flax UNet params."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict

from dex_jax.convert.diffusers_checkpoint import check_config, flax_param_path, locate, read_config, with_overrides
from dex_jax.convert.torch_state import (flax_param_shapes, mismatch_error, read_state_dict, shape_of, to_flax,
                                         torch_shape)
from dex_jax.diffusion.unet import init_inputs, unet_from_config

NEW_MODULES = ("attn_expr", "norm_expr")  # our additions, absent from diffusers checkpoints; initialised

# diffusers config keys that are also ours, and the keys whose other values this UNet does not implement.
DIFFUSERS_CONFIG_KEYS = (
    "sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block", "attention_head_dim",
    "cross_attention_dim", "norm_num_groups", "norm_eps", "use_linear_projection", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "up_block_types")
_REQUIRED = {
    "act_fn": ("silu",), "center_input_sample": (False,), "mid_block_type": ("UNetMidBlock2DCrossAttn", None),
    "class_embed_type": (None,), "addition_embed_type": (None,), "num_class_embeds": (None,),
    "time_embedding_type": ("positional",), "resnet_time_scale_shift": ("default",),
    "transformer_layers_per_block": (1,), "only_cross_attention": (False,), "dual_cross_attention": (False,),
    "num_attention_heads": (None,), "mid_block_scale_factor": (1,), "downsample_padding": (1,),
    "encoder_hid_dim": (None,), "time_cond_proj_dim": (None,), "conv_in_kernel": (3,), "conv_out_kernel": (3,),
    "attention_type": ("default",), "resnet_skip_time_act": (False,), "resnet_out_scale_factor": (1.0,),
    "time_embedding_dim": (None,), "time_embedding_act_fn": (None,), "timestep_post_act": (None,),
    "class_embeddings_concat": (False,), "cross_attention_norm": (None,), "addition_time_embed_dim": (None,),
    "projection_class_embeddings_input_dim": (None,), "reverse_transformer_layers_per_block": (None,),
}


def unet_config_from_diffusers(config_json):
    """A diffusers UNet config.json dict -> our ConfigDict; a feature SD-1.x UNets lack gets a ValueError.

    `upcast_attention` is accepted and needs nothing: our attention takes its softmax in float32.
    """
    check_config(config_json, "UNet2DConditionModel", "UNet", _REQUIRED)
    for key in ("layers_per_block", "cross_attention_dim"):
        if not isinstance(config_json.get(key, 0), int):
            raise ValueError(f"unsupported UNet config: per-block {key}={config_json[key]!r}")
    defaults = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                    layers_per_block=2, attention_head_dim=8, cross_attention_dim=1280, norm_num_groups=32,
                    norm_eps=1e-5, use_linear_projection=False, flip_sin_to_cos=True, freq_shift=0,
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    fields = {key: config_json.get(key, defaults[key]) for key in DIFFUSERS_CONFIG_KEYS}
    fields = {key: tuple(value) if isinstance(value, list) else value for key, value in fields.items()}
    config = ml_collections.ConfigDict(fields)
    config.extra_in_channels = 0
    config.expression_dim = ml_collections.config_dict.placeholder(int)
    config.attention_implementation = ml_collections.config_dict.placeholder(str)
    config.dtype = "float32"
    return config


def diffusers_config(config):
    """Our ConfigDict -> keyword arguments for diffusers' UNet2DConditionModel with the same architecture."""
    return {key: config[key] for key in DIFFUSERS_CONFIG_KEYS}


def model_shapes(module, config):
    """Flattened {path: shape} of the params of `module`, computed without allocating."""
    args, kwargs = init_inputs(config)
    return flax_param_shapes(module, *args, **kwargs)


def _initialised(module, config, paths, seed):
    """Fresh initial values for `paths` only (XLA drops the rest of the init computation)."""
    args, kwargs = init_inputs(config)

    def init(key):
        flat = flatten_dict(nn.unbox(module.init(key, *args, **kwargs))["params"])
        return {path: flat[path] for path in paths}

    return jax.jit(init)(jax.random.key(seed))


def convert_unet(state_dict, config, seed=0):
    """diffusers UNet state dict (name -> array) -> params for `unet_from_config(config)`.

    With `extra_in_channels`, a conv_in kernel with only `in_channels` inputs gets zero kernels for
    the extra ones. Params of our added modules (expression attention) that the checkpoint lacks are
    initialised from `seed`; any other missing, unexpected or misshapen key raises a ValueError.
    """
    if any(key.startswith("model.diffusion_model.") for key in state_dict):
        raise ValueError("this is an original (LDM) Stable Diffusion checkpoint; convert it to diffusers format first")
    module = unet_from_config(config)
    expected = model_shapes(module, config)
    params, mismatched, unexpected = {}, [], []
    for key, value in state_dict.items():
        path = flax_param_path(key, len(shape_of(value)))
        if path not in expected:
            unexpected.append(f"{key} {shape_of(value)}")
            continue
        value = to_flax(value)
        want = expected[path]
        if path == ("conv_in", "kernel") and value.shape[2] == config.in_channels and want[2] > value.shape[2]:
            value = np.pad(value, ((0, 0), (0, 0), (0, want[2] - value.shape[2]), (0, 0)))
        if value.shape != want:
            mismatched.append(f"{key} checkpoint {shape_of(state_dict[key])} vs model {torch_shape(want)}")
            continue
        params[path] = jnp.asarray(value)
    absent = [path for path in expected if path not in params]
    new = [path for path in absent if any(part in NEW_MODULES for part in path)]
    missing = [f"{'.'.join(path)} {torch_shape(expected[path])}" for path in absent if path not in new]
    if mismatched or missing or unexpected:
        raise mismatch_error("UNet", mismatched, missing, unexpected)
    if new:
        params.update(_initialised(module, config, new, seed))
    return unflatten_dict(params)


def load_unet(path, config=None, **overrides):
    """(module, params) from a diffusers folder or a .safetensors file.

    `config` (our ConfigDict, a diffusers config dict, or a config.json path) is needed for a bare
    .safetensors file with no config.json beside it. `overrides` set our config fields, e.g.
    extra_in_channels=6, expression_dim=16, dtype='bfloat16', attention_implementation='cudnn'.
    """
    weights, config_file = locate(path, "unet", "UNet")
    if config is None:
        if config_file is None:
            raise ValueError(f"{path} has no config.json beside it; pass config=")
        config = config_file
    config = read_config(config)
    if not isinstance(config, ml_collections.ConfigDict):
        config = unet_config_from_diffusers(config)
    config = with_overrides(config, overrides)
    params = convert_unet(read_state_dict(weights), config)
    return unet_from_config(config), params
