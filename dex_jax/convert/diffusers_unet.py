"""diffusers UNet2DConditionModel weights (folder or .safetensors) -> our Flax UNet params."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
from flax import linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict

from dex_jax.diffusion.unet import init_inputs, unet_from_config

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
NEW_MODULES = ("attn_expr", "norm_expr")  # our additions, absent from diffusers checkpoints; initialised
MAX_LISTED = 5

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
    name = config_json.get("_class_name", "UNet2DConditionModel")
    if name != "UNet2DConditionModel":
        raise ValueError(f"expected a UNet2DConditionModel config, got {name}")
    for key, allowed in _REQUIRED.items():
        if config_json.get(key, allowed[0]) not in allowed:
            raise ValueError(f"unsupported UNet config: {key}={config_json[key]!r} (supported: {allowed})")
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


def _to_numpy(value):
    """A torch tensor or array-like -> numpy, without importing torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def model_shapes(module, config):
    """Flattened (path -> ShapeDtypeStruct) params of `module`, computed without allocating."""
    args, kwargs = init_inputs(config)
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
    return flatten_dict(nn.unbox(shapes)["params"])


def _initialised(module, config, paths, seed):
    """Fresh initial values for `paths` only (XLA drops the rest of the init computation)."""
    args, kwargs = init_inputs(config)

    def init(key):
        flat = flatten_dict(nn.unbox(module.init(key, *args, **kwargs))["params"])
        return {path: flat[path] for path in paths}

    return jax.jit(init)(jax.random.key(seed))


def _mismatch_error(mismatched, missing, unexpected):
    parts = []
    if mismatched:
        parts.append("shape mismatches: " + "; ".join(
            f"{key} checkpoint {ckpt} vs model {model}" for key, ckpt, model in mismatched[:MAX_LISTED]))
    if missing:
        parts.append("missing from checkpoint: " + ", ".join(missing[:MAX_LISTED]))
    if unexpected:
        parts.append("not in the model: " + ", ".join(unexpected[:MAX_LISTED]))
    counts = f"({len(mismatched)} mismatched, {len(missing)} missing, {len(unexpected)} unexpected)"
    return ValueError(f"checkpoint does not match the UNet config {counts}: " + " | ".join(parts))


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
        value = _to_numpy(value)
        path = flax_param_path(key, value.ndim)
        if path not in expected:
            unexpected.append(f"{key} {tuple(value.shape)}")
            continue
        value = flax_param_value(value)
        want = expected[path].shape
        if path == ("conv_in", "kernel") and value.shape[2] == config.in_channels and want[2] > value.shape[2]:
            value = np.pad(value, ((0, 0), (0, 0), (0, want[2] - value.shape[2]), (0, 0)))
        if value.shape != want:
            mismatched.append((key, value.shape, want))
            continue
        params[path] = jnp.asarray(value)
    absent = [path for path in expected if path not in params]
    new = [path for path in absent if any(part in NEW_MODULES for part in path)]
    missing = [".".join(path) for path in absent if path not in new]
    if mismatched or missing or unexpected:
        raise _mismatch_error(mismatched, missing, unexpected)
    if new:
        params.update(_initialised(module, config, new, seed))
    return unflatten_dict(params)


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


def _locate(path):
    """A diffusers UNet folder, a pipeline folder with unet/, or a .safetensors file -> (weights, config.json or None)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "unet" if (path / "unet" / "config.json").is_file() else path
        weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
        if not (folder / "config.json").is_file() or not weights:
            raise ValueError(f"{path} is not a diffusers UNet folder (config.json + {WEIGHT_FILES[0]})")
        return weights[0], folder / "config.json"
    if path.is_file() and path.suffix == ".safetensors":
        sibling = path.parent / "config.json"
        return path, sibling if sibling.is_file() else None
    raise ValueError(f"{path} is not a .safetensors file or a diffusers folder")


def load_unet(path, config=None, **overrides):
    """(module, params) from a diffusers folder or a .safetensors file.

    `config` (our ConfigDict, a diffusers config dict, or a config.json path) is needed for a bare
    .safetensors file with no config.json beside it. `overrides` set our config fields, e.g.
    extra_in_channels=6, expression_dim=16, dtype='bfloat16', attention_implementation='cudnn'.
    """
    weights, config_file = _locate(path)
    if config is None:
        if config_file is None:
            raise ValueError(f"{path} has no config.json beside it; pass config=")
        config = config_file
    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text())
    if not isinstance(config, ml_collections.ConfigDict):
        config = unet_config_from_diffusers(config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.update(overrides)
    params = convert_unet(read_safetensors(weights), config)
    return unet_from_config(config), params
