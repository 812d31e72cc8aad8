"""Import SD-1.x weights in diffusers format: `load_unet`, `load_vae`, and conversion to an orbax checkpoint.

`dex-portrait convert diffusers --unet PATH --vae PATH --out DIR` writes the folder DIR holding params (an
orbax PyTree checkpoint {'unet': ..., 'vae': ...}) and config.json (the architecture of each model); an existing
DIR is refused unless --overwrite, and DIR appears only once complete. `load_converted(DIR)` reads it back.
"""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from dex_jax.arguments import ArgumentParser
from dex_jax.convert.diffusers_unet import load_unet
from dex_jax.convert.diffusers_vae import load_vae
from dex_jax.diffusion.unet import unet_from_config
from dex_jax.diffusion.vae import vae_from_config
from dex_jax.output_dir import add_overwrite_argument, check_output_dir, staged_output_dir

__all__ = ["load_unet", "load_vae", "convert_to_orbax", "load_converted", "main"]

BUILDERS = {"unet": unet_from_config, "vae": vae_from_config}


def module_config(module):
    """A Flax module's constructor fields as a JSON-ready dict (tuples as lists, dtype by name)."""
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
              if f.init and f.name not in ("parent", "name")}
    fields["dtype"] = jnp.dtype(fields["dtype"] or "float32").name
    return json.loads(json.dumps(fields))


def convert_to_orbax(unet_path, vae_path, out_dir, overwrite=False):
    """Convert the diffusers UNet and/or VAE at the given paths into an orbax checkpoint, the folder `out_dir`
    (an existing one is refused unless overwrite); returns its absolute path."""
    if unet_path is None and vae_path is None:
        raise ValueError("nothing to convert: give a UNet path, a VAE path or both")
    out_dir = check_output_dir(out_dir, overwrite)
    loaders = {"unet": (load_unet, unet_path), "vae": (load_vae, vae_path)}
    models = {name: load(path) for name, (load, path) in loaders.items() if path is not None}
    with staged_output_dir(out_dir, overwrite) as staging:
        host = {name: jax.tree.map(np.asarray, params) for name, (_, params) in models.items()}
        ocp.PyTreeCheckpointer().save(staging / "params", host)
        configs = {name: module_config(module) for name, (module, _) in models.items()}
        (staging / "config.json").write_text(json.dumps(configs, indent=2) + "\n")
    return out_dir


def load_converted(directory):
    """{'unet': (module, params), ...} for the models `convert_to_orbax` wrote; params are host numpy arrays."""
    directory = Path(directory).resolve()
    if not (directory / "config.json").is_file() or not (directory / "params").is_dir():
        raise ValueError(f"{directory} is not a converted checkpoint (config.json + params/)")
    configs = json.loads((directory / "config.json").read_text())
    params = ocp.PyTreeCheckpointer().restore(directory / "params")
    return {name: (BUILDERS[name](ml_collections.ConfigDict(config)), params[name])
            for name, config in configs.items()}


def main(argv):
    """`dex-portrait convert diffusers --unet PATH --vae PATH --out DIR`."""
    parser = ArgumentParser(prog="dex-portrait convert diffusers", description=(
        "Convert an SD-1.x UNet and/or VAE in diffusers format (give --unet, --vae or both) into an orbax "
        "checkpoint: the folder OUT holding params/ and config.json, which load_converted(OUT) reads back."))
    parser.add_argument("--unet", help="diffusers UNet folder (or pipeline folder) or .safetensors file")
    parser.add_argument("--vae", help="diffusers VAE folder (or pipeline folder) or .safetensors file")
    parser.add_argument("--out", required=True, help="folder to write with params/ and config.json")
    add_overwrite_argument(parser)
    args = parser.parse_args(argv)
    out = convert_to_orbax(args.unet, args.vae, args.out, args.overwrite)
    print(f"wrote {out}")
    return 0
