"""Animator (Stage-2) checkpoints: the frozen parts a run reads, the self-contained export, and the one reader.

Frozen parts, `{"pose": ..., "expression": ..., "vae": ...}`: the Stage-1 pose and expression encoders of the
run or export `config.motion_from` (its EMA generator where it has one; of an animator export, the frozen ones it
keeps), and, for `latent.kind` 'vae', the VAE of the converted SD folder `config.latent.vae_from` ('vae' is
absent for space_to_depth). Each is checked against the config before use; a misfit is a one-line ValueError
naming the config field and the first mismatched keys.

An export (`write_animator_export`, which `dex-portrait export` calls for an animator run) is the folder
  DIR/config.json                   the train config plus `motion_model`, the Stage-1 model config its encoders
                                    were built with
  DIR/checkpoints/<step>/state      orbax: {"step", "ema": {"animator"}, "frozen": {"pose", "expression"[, "vae"]}}
so it needs no path back to motion_from or vae_from. `read_animator` reads an export or a training workdir (whose
frozen parts it then reads from config.motion_from and latent.vae_from).
"""

from pathlib import Path
from typing import NamedTuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from dex_jax.animator.motion_encoders import FROZEN_ENCODERS, motion_encoders
from dex_jax.convert.diffusers import load_converted, module_config
from dex_jax.data.pipeline import default_config as data_defaults
from dex_jax.diffusion.vae import vae_from_config
from dex_jax.output_dir import staged_output_dir
from dex_jax.train.checkpoint import (Checkpointer, checkpoint_paths, generator_params, read_checkpoint,
                                      read_train_config)
from dex_jax.train.stages.warm_start import check_fits, trained_model_config

STAGE = "animator"
TEMPORAL_STAGE = "temporal"
STAGES = (STAGE, TEMPORAL_STAGE)  # the stages whose runs hold an animator (Stage 2, Stage 3)
PART_NAMES = {"unet": "UNet", "vae": "VAE"}


class AnimatorCheckpoint(NamedTuple):
    """A trained (or untrained) animator as `read_animator` gives it.

    config: the train config, always with `motion_model` (the Stage-1 model config of the frozen encoders);
    params: the animator's params (EMA where the run kept them); frozen: {"pose", "expression"[, "vae"]};
    description: 'NAME step N (EMA animator)' for logs and reports.
    """

    config: ml_collections.ConfigDict
    params: dict
    frozen: dict
    description: str


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def motion_model_config(origin, key="motion_from"):
    """The Stage-1 model config (`model`) of the run or export at `origin`, or, of an animator export, the one its
    frozen encoders were built with (`motion_model`); ValueError naming `key`."""
    config = read_train_config(checkpoint_paths(origin)[1])
    if config.get("stage") in STAGES and "motion_model" in config:
        return config.motion_model
    return trained_model_config(origin, key)


def read_motion_encoders(origin, key="motion_from"):
    """(Stage-1 model config, {"pose", "expression"} params as numpy) of the Stage-1 run or export at `origin`,
    or the frozen encoders of an animator export there (those its animator was trained with); ValueError naming
    `key` when it is missing, holds no readable checkpoint or lacks either encoder."""
    if not origin:
        raise ValueError(f"{key} is empty: name a Stage-1 export or training workdir (its pose and expression "
                         "encoders condition the animator)")
    try:
        motion_model = motion_model_config(origin, key)
        state = read_checkpoint(checkpoint_paths(origin)[0])
        generator = state["frozen"] if "frozen" in state else generator_params(state)[0]
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(key) else f"{key} {origin}: {message}") from None
    missing = [name for name in FROZEN_ENCODERS if name not in generator]
    if missing:
        raise ValueError(f"{key} {origin}: its generator has no {', '.join(missing)} encoder")
    return motion_model, {name: _host(generator[name]) for name in FROZEN_ENCODERS}


def check_motion_encoders(config, motion_model, encoders, origin, key="motion_from"):
    """ValueError naming `key` unless the pose and expression params fit `motion_model` and its expression latent
    has the animator's `model.expression_latent_dim`."""
    shapes = motion_encoders(motion_model).param_shapes()
    for name in FROZEN_ENCODERS:
        check_fits(f"{name} encoder", encoders[name], shapes[name], origin, key)
    latent_dim = int(motion_model.expression.latent_dim)
    if latent_dim != config.model.expression_latent_dim:
        raise ValueError(f"{key} {origin}: its expression encoder gives {latent_dim}-d latents, the animator's "
                         f"model.expression_latent_dim is {config.model.expression_latent_dim}")


EXPRESSION_CROP_FIELDS = ("expression_align", "expression_box_scale")


def check_expression_crops(config, origin, key="motion_from"):
    """ValueError naming `key` unless this config builds the expression crops (data.expression_align and
    data.expression_box_scale, defaults where a config predates them) that the Stage-1 run or export at `origin`
    trained its expression encoder on."""
    defaults = data_defaults()
    trained = read_train_config(checkpoint_paths(origin)[1])
    for field in EXPRESSION_CROP_FIELDS:
        theirs = trained.data.get(field, defaults[field]) if "data" in trained else defaults[field]
        ours = config.data.get(field, defaults[field])
        if theirs != ours:
            raise ValueError(f"{key} {origin}: its expression encoder was trained on crops with data.{field}="
                             f"{theirs!r}, this config has {ours!r}; set --config.data.{field}={theirs}")


def converted_part(origin, part, key):
    """(module, params) of `part` ('unet' or 'vae') in the `dex-portrait convert diffusers` folder `origin`;
    ValueError naming the config `key` that gave it when the folder does not load or holds no such part."""
    try:
        converted = load_converted(origin)
    except ValueError as err:
        raise ValueError(f"{key} {origin}: {err}") from None
    if part not in converted:
        raise ValueError(f"{key} {origin}: holds no {PART_NAMES[part]} (it has {', '.join(sorted(converted))})")
    return converted[part]


def read_vae(latent_config, key="latent.vae_from"):
    """The VAE params (numpy) of the converted SD folder `latent_config.vae_from`; ValueError naming `key` when it
    is empty, holds no VAE, or its VAE is built differently from `latent_config.vae` or has other params."""
    origin = latent_config.vae_from
    if not origin:
        raise ValueError(f"{key} is empty: latent.kind 'vae' needs a `dex-portrait convert diffusers` folder "
                         "holding the VAE")
    module, params = converted_part(origin, "vae", key)
    want = vae_from_config(latent_config.vae)
    have_fields, want_fields = module_config(module), module_config(want)
    differ = [f"{k}={have_fields[k]!r} there, {v!r} here" for k, v in want_fields.items()
              if k != "dtype" and have_fields.get(k) != v]
    if differ:
        raise ValueError(f"{key} {origin}: its VAE is built differently ({'; '.join(differ[:3])})")
    side = 8 * want.downsample_factor
    shapes = jax.eval_shape(lambda k: want.init(k, np.zeros((1, side, side, want.in_channels), np.float32)),
                            jax.random.key(0))
    check_fits("VAE", params, nn.unbox(shapes)["params"], origin, key)
    return _host(params)


def read_frozen(config):
    """(Stage-1 model config, frozen {"pose", "expression"[, "vae"]}) a train config names; ValueError on a misfit
    (params, latent size, or expression crops other than the encoders were trained on)."""
    motion_model, frozen = read_motion_encoders(config.motion_from)
    check_motion_encoders(config, motion_model, frozen, config.motion_from)
    check_expression_crops(config, config.motion_from)
    if config.latent.kind == "vae":
        frozen["vae"] = read_vae(config.latent)
    return motion_model, frozen


def export_config(config, motion_model):
    """The train config with `motion_model` set: what an export's config.json holds."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.motion_model = ml_collections.ConfigDict(motion_model.to_dict())
    return config


def write_animator_export(out, config, step, params, frozen, overwrite=False, extras=None):
    """Write the export folder `out` (module docstring) of animator `params` at `step` with its `frozen` parts.

    `config`: the train config; its `motion_model` where it has one, else the one of config.motion_from's run.
    `extras(folder)`, when given, writes further files (a training curve) into the folder before it appears.
    An existing `out` is refused unless overwrite; `out` appears only once complete.
    """
    motion_model = config.motion_model if "motion_model" in config else motion_model_config(config.motion_from)
    config = export_config(config, motion_model)
    check_motion_encoders(config, motion_model, frozen, "(the frozen encoders)")
    with staged_output_dir(out, overwrite) as staging:
        (staging / "config.json").write_text(config.to_json(indent=2))
        if extras:
            extras(staging)
        checkpointer = Checkpointer(staging / "checkpoints", keep=1, async_save=False)
        checkpointer.save(int(step), {"step": np.int32(step), "ema": {STAGE: _host(params)}, "frozen": _host(frozen)},
                          force=True)
        checkpointer.close()
    return Path(out).absolute()


def animator_params(state):
    """(the animator's params, True when they are the EMA ones) of a train state dict: EMA where present."""
    ema = state.get("ema") or {}
    if STAGE in ema:
        return ema[STAGE], True
    return state["params"][STAGE], False


def read_animator(path):
    """The `AnimatorCheckpoint` of an animator export or training workdir (or its checkpoints/ folder) at `path`.

    ValueError when it is not an animator run, holds no readable checkpoint, or (a workdir) its motion_from or
    vae_from does not fit its config.
    """
    folder, config_path = checkpoint_paths(path)
    config = read_train_config(config_path)
    if config.get("stage") not in STAGES:
        raise ValueError(f"{path} is not an animator run (its config's stage is {config.get('stage')!r})")
    state = read_checkpoint(folder)
    params, use_ema = animator_params(state)
    if "frozen" in state:
        frozen = state["frozen"]
        if "motion_model" not in config:
            raise ValueError(f"{config_path} has no `motion_model` section, which an animator export keeps")
    else:
        motion_model, frozen = read_frozen(config)
        config = export_config(config, motion_model)
    step = int(np.asarray(state["step"]))
    description = f"{folder.parent.name} step {step} ({'EMA' if use_ema else 'raw'} animator)"
    if step == 0:
        description += ", untrained"
    return AnimatorCheckpoint(config, params, frozen, description)
