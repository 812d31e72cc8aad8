"""The thin jitted Stage-1 model wrapper: a checkpoint's generator as three compiled calls.

Checkpoint layout (dex_jax.train): a training workdir holds WORKDIR/config.json (the train config with its
`model` and `data` sections) and WORKDIR/checkpoints/<step>/state (orbax, the TrainState as a nested dict:
params/generator, ema/generator, step, ...). The newest intact step is read with
`train.checkpoint.read_checkpoint`; the generator's EMA params are used where the state has them, else its raw
params. The checkpoint path may name the workdir or its checkpoints/ folder.

`MotionWrapper` holds the params and does no I/O, cropping or batching (that is `infer.pipeline`):
  encode(source (1, S, S, 3))  -> (appearance volume, appearance latent, source pose (1, 3, 4))
  motion(pose inputs (n, S, S, 3), expression inputs (n, E, E, 3)) -> (poses (n, 3, 4), expression latents (n, D))
  drive(volume, latent, source pose, pose inputs, expression inputs, reference) -> (n, S, S, 3)
with S = `image_size`, E = `expression_size`, every image in [-1, 1] and poses P = [sR t]; `drive` broadcasts the
one source over the n driving frames and moves it with absolute motion (reference None) or relative to
reference = (source pose, source expression, first driving pose, first driving expression), one row each
(`infer.relative_motion`). With a `mesh`, the params are replicated on its devices and `drive` shards its frames
(n must divide over them) over the mesh's 'data' axis, as the diffusion engine does. (`infer.animator_wrapper.AnimatorWrapper` is the diffusion engine's counterpart: the
pipeline calls either as drive(*encode(source), pose inputs, expression inputs, reference).)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from dex_jax.data.pipeline import default_config as data_defaults
from dex_jax.infer.relative_motion import apply_motion
from dex_jax.motion.generator import build_motion_generator, pose_to_matrix
from dex_jax.train.checkpoint import checkpoint_paths, generator_params, read_checkpoint, read_train_config


def _encode(model, params, source):
    def run(module, image):
        volume, latent = module.encode_appearance(image)
        return volume, latent, pose_to_matrix(module.encode_pose(image))

    return model.apply({"params": params}, source, method=run)


def _motion(model, params, pose_inputs, expression_inputs):
    def run(module):
        return pose_to_matrix(module.encode_pose(pose_inputs)), module.encode_expression(expression_inputs)

    return model.apply({"params": params}, method=run)


def _drive(model, frames, params, volume, latent, source_pose, pose_inputs, expression_inputs, reference=None):
    """The rendered frames; `frames` (a sharding or None) places every per-frame array, inputs to images."""
    n = pose_inputs.shape[0]

    def per_frame(x):
        return x if frames is None else jax.lax.with_sharding_constraint(x, frames)

    def tile(x):
        return per_frame(jnp.broadcast_to(x, (n,) + x.shape[1:]))

    pose_inputs, expression_inputs = per_frame(pose_inputs), per_frame(expression_inputs)
    poses, expressions = apply_motion(*_motion(model, params, pose_inputs, expression_inputs), reference)
    return per_frame(model.apply({"params": params}, tile(volume), tile(latent), tile(source_pose), poses,
                                 expressions, method="render"))


class MotionWrapper:
    """A Stage-1 generator and its params as jitted `encode`, `motion` and `drive` (module docstring)."""

    temporal = False  # frames are independent: the pipeline drives them in batches

    def __init__(self, model_config, params, description="motion generator", mesh=None):
        self.model_config = model_config
        self.image_size = int(model_config.image_size)
        self.expression_size = int(model_config.expression.image_size)
        self.params = params if mesh is None else jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        self.description = description
        model = build_motion_generator(model_config)
        frames = None if mesh is None else NamedSharding(mesh, PartitionSpec("data"))
        self.encode, self.motion, self.drive = (
            functools.partial(jax.jit(functools.partial(f, *bound)), self.params)
            for f, bound in ((_encode, (model,)), (_motion, (model,)), (_drive, (model, frames))))


def inference_data_config(config):
    """The data settings the inference pipeline builds its inputs with: the defaults, with a train config's
    pose-input mask and expression-crop fields and its dataset_dir (which picks the crop framing) where its `data`
    section has them."""
    data = data_defaults()
    keys = ("mask_pose_input", "mask_dilation", "mask_fill", "expression_box_scale", "expression_align",
            "dataset_dir")
    data.update({key: config.data[key] for key in keys if "data" in config and key in config.data})
    return data


def read_generator(checkpoint_dir):
    """(model config, generator params, data config, description) of the newest intact step (EMA params if any)."""
    folder, config_path = checkpoint_paths(checkpoint_dir)
    config = read_train_config(config_path)
    if "model" not in config:
        raise ValueError(f"{config_path} has no `model` section: not a motion-trainer run")
    state = read_checkpoint(folder)
    params, use_ema = generator_params(state)
    data = inference_data_config(config)
    step = int(np.asarray(state["step"])) if "step" in state else None
    description = f"{folder.parent.name} step {step} ({'EMA' if use_ema else 'raw'} generator)"
    if step == 0:
        description += ", untrained"
    return config.model, params, data, description
