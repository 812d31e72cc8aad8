"""What every PyTorch -> Flax importer shares: reading a state dict file, torch <-> Flax names and layouts, and
the one-line error for a state dict that does not fit the model.

Layouts: a PyTorch conv weight is (out, in, *spatial) (OIHW, OIDHW), a Flax kernel (*spatial, in, out) (HWIO,
DHWIO); a PyTorch linear weight is (out, in), a Flax kernel (in, out); everything else has one layout.
"""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict

SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
                      "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
                      "BOOL": np.bool_}
MAX_LISTED = 5
# Flax param leaf -> PyTorch param name (kernels, norm scales and GRN gamma are `weight`).
TORCH_LEAF = {"kernel": "weight", "scale": "weight", "gamma": "weight", "bias": "bias", "beta": "bias"}


def read_state_dict(path):
    """A .safetensors file (read without torch; float16/bfloat16 stay as stored) or a PyTorch state dict file
    (.pth/.pt/.bin/..., `torch.load(weights_only=True)`; floating tensors become float32) -> {name: numpy array}.

    A missing, truncated or unreadable file, a pickle that needs more than weights, or anything but a flat
    {name: tensor} dict raises a one-line ValueError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_torch(path)


def _read_safetensors(path):
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


def _torch_load_problem(err):
    """The reason in one line from the multi-line message of a failed `torch.load`."""
    text = str(err)
    needs = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if needs:
        return f"it pickles {needs.group(1)}, more than weights; save the model's state_dict() instead"
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if detail:
        return detail.group(1).strip()
    if isinstance(err, EOFError) or not text:
        return "the file ends early"
    if isinstance(err, OSError) and not isinstance(err, PermissionError):  # torch's zip reader on a cut archive
        return "the file ends early or is not a PyTorch archive"
    return text.split(". ")[0]


def _read_torch(path):
    import pickle

    import torch

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as err:
        raise ValueError(f"{path} is not a readable PyTorch weights file ({_torch_load_problem(err)})") from None
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise ValueError(f"{path} does not hold a flat state dict (name -> tensor)")
    return {key: to_numpy(value) for key, value in state_dict.items()}


def to_numpy(value):
    """A torch tensor (floating ones as float32, bfloat16 included) or an array-like -> numpy, without importing
    torch."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        value = (value.float() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def to_flax(array):
    """A PyTorch param in Flax layout, float32: (out, in, *spatial) -> (*spatial, in, out), (out, in) -> (in, out)."""
    array = np.asarray(to_numpy(array), np.float32)
    if array.ndim >= 3:
        return array.transpose(*range(2, array.ndim), 1, 0)
    return array.T if array.ndim == 2 else array


def torch_shape(flax_shape):
    """The PyTorch shape of a param whose Flax shape is `flax_shape`: the inverse of `to_flax` on shapes."""
    flax_shape = tuple(int(d) for d in flax_shape)
    if len(flax_shape) >= 3:
        return (flax_shape[-1], flax_shape[-2], *flax_shape[:-2])
    return flax_shape[::-1] if len(flax_shape) == 2 else flax_shape


def torch_module_name(flax_module_path):
    """('stages_1', 'blocks_0', 'mlp') -> 'stages.1.blocks.0.mlp': Flax's `name_0` is PyTorch's `name.0`."""
    return ".".join(re.sub(r"_(\d+)$", r".\1", name) for name in flax_module_path)


def torch_key(flax_path):
    """('stages_1', 'blocks_0', 'mlp', 'fc1', 'kernel') -> 'stages.1.blocks.0.mlp.fc1.weight'."""
    return f"{torch_module_name(flax_path[:-1])}.{TORCH_LEAF[flax_path[-1]]}"


def fold_batchnorm(state_dict, prefix, eps):
    """A frozen PyTorch BatchNorm `prefix` as (scale, bias) with BN(x) = x * scale + bias, in float64."""
    def get(stat):
        return np.asarray(to_numpy(state_dict[f"{prefix}.{stat}"]), np.float64)

    scale = get("weight") / np.sqrt(get("running_var") + eps)
    return scale, get("bias") - get("running_mean") * scale


def flax_param_shapes(module, *args, **kwargs):
    """Flattened {path: shape} of the params `module.init(key, *args, **kwargs)` makes, computed without allocating."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
    return {path: tuple(leaf.shape) for path, leaf in flatten_dict(nn.unbox(shapes)["params"]).items()}


def shape_of(value):
    """The shape of a numpy array or torch tensor as a plain tuple of ints."""
    return tuple(int(d) for d in np.shape(value))


def mismatch_error(what, mismatched, missing, unexpected):
    """One-line ValueError with the counts and the first few of each kind of state dict / model disagreement."""
    parts = [f"{label}: " + "; ".join(items[:MAX_LISTED])
             for label, items in (("shape mismatches", mismatched), ("missing from checkpoint", missing),
                                  ("not in the model", unexpected)) if items]
    counts = f"({len(mismatched)} mismatched, {len(missing)} missing, {len(unexpected)} unexpected)"
    return ValueError(f"{what} checkpoint does not match the model {counts}: " + " | ".join(parts))


def check_state_dict(what, state_dict, expected, extra_ok=lambda key: False):
    """Raise `mismatch_error` unless `state_dict` has every key of `expected` ({PyTorch key: PyTorch shape}) with
    that shape, and no other key but those `extra_ok(key)` accepts."""
    mismatched = [f"{key} checkpoint {shape_of(state_dict[key])} vs model {shape}"
                  for key, shape in expected.items() if key in state_dict and shape_of(state_dict[key]) != shape]
    missing = [f"{key} {shape}" for key, shape in expected.items() if key not in state_dict]
    unexpected = [f"{key} {shape_of(value)}" for key, value in state_dict.items()
                  if key not in expected and not extra_ok(key)]
    if mismatched or missing or unexpected:
        raise mismatch_error(what, mismatched, missing, unexpected)


def place_subtree(params, name, converted):
    """`params` of a model with its subtree `name` replaced by `converted` arrays; boxes (nn.Partitioned) are
    kept. A one-line ValueError unless both trees have the same paths and shapes."""
    if name not in params:
        raise ValueError(f"the model params have no {name!r} subtree")
    target, source = flatten_dict(params[name]), flatten_dict(converted)
    unmatched = sorted(target.keys() ^ source.keys())
    if unmatched:
        side = "the converted params" if unmatched[0] in target else f"the model's {name!r}"
        raise ValueError(f"{side} lack {name}/{'/'.join(unmatched[0])}: the checkpoint's and the model's configs "
                         "differ")
    placed = {}
    for path, leaf in target.items():
        value, want = jnp.asarray(source[path]), nn.meta.unbox(leaf).shape
        if value.shape != want:
            raise ValueError(f"converted param {name}/{'/'.join(path)} has shape {value.shape}, the model's is {want}")
        placed[path] = leaf.replace_boxed(value) if isinstance(leaf, nn.meta.AxisMetadata) else value
    return {**params, name: unflatten_dict(placed)}
