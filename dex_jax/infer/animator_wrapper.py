"""The thin jitted wrapper of the diffusion engine: an animator checkpoint as three compiled calls.

`dex_jax.train.animator_checkpoint.read_animator` reads an export or training workdir: the train config (with
`motion_model`, the Stage-1 model config of the frozen encoders), the animator's params and the frozen parts
{"pose", "expression"[, "vae"]}. `AnimatorWrapper` checks them against that config and holds them; like
`infer.wrapper.MotionWrapper` it does no I/O, cropping or batching (that is `infer.pipeline`):
  encode(source (1, S, S, 3))  -> (reference tree, source pose (1, 3, 4)): the latent codec and the reference
                                  pass, run once per source
  motion(pose inputs (n, S, S, 3), expression inputs (n, E, E, 3)) -> (poses (n, 3, 4), expression latents):
                                  the frozen encoders
  drive(reference, source pose, pose inputs, expression inputs, motion reference) -> (n, S, S, 3):
                                  `motion`, made relative to the motion reference unless it is None
                                  (`infer.relative_motion`), then DDIM with guidance (`animator.sampler`)
                                  denoises and the codec decodes
with S = the config's data.image_size and E its data.expression_size (the sizes the animator was trained on),
every image in [-1, 1]; `drive` broadcasts the one source over the n frames. `engine_functions` gives the
functions unjitted, with the params as arguments (`bench animator` lowers them on abstract params).

A Stage-3 checkpoint (its model has a temporal module; `temporal` True) samples the n frames of a `drive` call as
one clip, and adds a fourth call for clips of any length, window by window (`animator.windowed`):
  window(reference, source pose, pose inputs, expression inputs, motion reference, previous, weights)
                               -> (images (F, S, S, 3), trajectory): one window of F frames, `previous` and
                                  `weights` the hand-over from the previous window (None for the first).

Sampling follows the config's `sampling` (steps, guidance, cfg, eta) unless overridden. Every frame of every
`drive` call starts from the same noise, drawn from `seed` (our choice: Stage 2 has no temporal module, and
frames that share their noise differ only by their condition); with eta 0 a Stage-2 frame's result therefore does
not depend on how the frames are batched, and a Stage-3 clip of at most one window gives the same frames from
`drive` and from `window`.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from dex_jax.animator.conditioning import make_condition
from dex_jax.animator.latent import build_codec
from dex_jax.animator.model import build_animator, check_warp_shapes, init_inputs, reference_features
from dex_jax.animator.motion_encoders import FROZEN_ENCODERS, motion_encoders
from dex_jax.animator.sampler import CFG_MODES, make_animator_sampler
from dex_jax.animator.windowed import make_window_sampler
from dex_jax.diffusion.schedule import SchedulerConfig
from dex_jax.infer.relative_motion import apply_motion
from dex_jax.infer.wrapper import inference_data_config
from dex_jax.train.animator_checkpoint import check_motion_encoders
from dex_jax.train.stages.warm_start import check_fits

SAMPLING_KEYS = ("steps", "guidance", "cfg", "eta")


def sampling_options(config, **overrides):
    """The checkpoint config's `sampling` with the overrides that are not None; ValueError for a bad value."""
    options = {key: config.sampling[key] for key in SAMPLING_KEYS}
    options.update({key: value for key, value in overrides.items() if value is not None})
    if options["cfg"] not in CFG_MODES:
        raise ValueError(f"cfg must be one of {CFG_MODES}, got {options['cfg']!r}")
    if int(options["steps"]) < 1 or int(options["steps"]) > config.diffusion["num_train_timesteps"]:
        raise ValueError(f"steps must be in [1, {config.diffusion['num_train_timesteps']}], got {options['steps']}")
    if float(options["eta"]) < 0:
        raise ValueError(f"eta must be at least 0, got {options['eta']}")
    return options


def engine_parts(config):
    """(animator model, latent codec, latent side, frozen encoders) of a checkpoint config (with `motion_model`);
    ValueError when the config cannot build them or its codec does not fit its UNets."""
    model, codec = build_animator(config.model), build_codec(config.latent)
    side = codec.latent_size(int(config.data.image_size))
    check_warp_shapes(model.denoising_unet, side, side)
    if codec.channels != model.reference_unet.in_channels:
        raise ValueError(f"its latent codec gives {codec.channels} channels, its UNets take "
                         f"{model.reference_unet.in_channels}")
    return model, codec, side, motion_encoders(config.motion_model)


def checkpoint_shapes(config):
    """(animator params, frozen parts) of a checkpoint config as ShapeDtypeStruct trees (nothing is allocated)."""
    model, codec, side, encoders = engine_parts(config)
    params = jax.eval_shape(lambda key: model.init(key, *init_inputs(model, side, side)), jax.random.key(0))
    frozen = encoders.param_shapes()
    if codec.vae is not None:
        pixels = side * codec.factor
        vae = jax.eval_shape(lambda key: codec.vae.init(key, jnp.zeros((1, pixels, pixels, 3))), jax.random.key(0))
        frozen["vae"] = nn.unbox(vae)["params"]
    return nn.unbox(params)["params"], frozen


def check_checkpoint(checkpoint, origin):
    """ValueError naming `origin` when an `AnimatorCheckpoint`'s config does not build, its latent codec does not
    fit its UNets, or its animator params, frozen encoders or VAE do not fit its config."""
    config = checkpoint.config
    try:
        params, frozen = checkpoint_shapes(config)
    except ValueError as err:
        raise ValueError(f"checkpoint {origin}: {err}") from None
    check_fits("animator", checkpoint.params, params, origin, "checkpoint")
    check_motion_encoders(config, config.motion_model, checkpoint.frozen, origin, "checkpoint")
    if "vae" in frozen:
        if "vae" not in checkpoint.frozen:
            raise ValueError(f"checkpoint {origin}: latent.kind 'vae' but the checkpoint holds no VAE")
        check_fits("VAE", checkpoint.frozen["vae"], frozen["vae"], origin, "checkpoint")


def engine_functions(config, steps, cfg, eta, mesh=None):
    """The diffusion engine's pure functions (not jitted) for a checkpoint config, sampling `steps` DDIM steps
    with `cfg` guidance and `eta`:
      encode(params, frozen, source (1, S, S, 3)) -> (reference tree, source pose (1, 3, 4))
      motion(frozen, pose inputs, expression inputs) -> (poses (n, 3, 4), expression latents (n, D))
      drive(params, frozen, guidance, key, reference, source pose, pose inputs, expression inputs,
            motion reference=None) -> images
      window(params, frozen, guidance, key, reference, source pose, pose inputs, expression inputs,
             motion reference, previous, weights, index) -> (images, trajectory), or None without a temporal module
    `drive` and `window` start every frame from the one noise draw of fold_in(key, 0) and feed fold_in(key, 1)
    (`window`: folded again with the window's `index`) to the eta noise. Without a temporal module and with a
    `mesh`, `drive`'s frames shard over its 'data' axis; with one, `drive`'s frames are one clip.
    """
    model, codec, side, encoders = engine_parts(config)
    schedule = SchedulerConfig.from_dict(config.diffusion)
    if model.temporal:
        samplers = {}

        def sample(params, reference, latents, condition, guidance, rng):  # the n frames as one clip
            n = latents.shape[0]
            samplers.setdefault(n, make_animator_sampler(model, schedule, steps, cfg, eta, frames=n))
            return samplers[n](params, reference, latents, condition, guidance, rng)
    else:
        sample = make_animator_sampler(model, schedule, steps, cfg, eta, mesh)
    noise_shape = (1, side, side, codec.channels)

    def encoder_params(frozen):
        return {name: frozen[name] for name in FROZEN_ENCODERS}

    def encode(params, frozen, source):
        latent = codec.encode(frozen.get("vae"), source)
        return reference_features(model, params, latent), encoders.poses(encoder_params(frozen), source)

    def motion(frozen, pose_inputs, expression_inputs):
        return (encoders.poses(encoder_params(frozen), pose_inputs),
                encoders.expressions(encoder_params(frozen), expression_inputs))

    def problem(frozen, key, source_pose, pose_inputs, expression_inputs, motion_reference):
        """(starting noise, FULL condition) of n driving frames."""
        n = pose_inputs.shape[0]
        poses, expressions = apply_motion(*motion(frozen, pose_inputs, expression_inputs), motion_reference)
        condition = make_condition(jnp.broadcast_to(source_pose, (n, 3, 4)), poses, expressions)
        noise = jax.random.normal(jax.random.fold_in(key, 0), noise_shape, jnp.float32)
        return jnp.broadcast_to(noise, (n,) + noise_shape[1:]), condition

    def drive(params, frozen, guidance, key, reference, source_pose, pose_inputs, expression_inputs,
              motion_reference=None):
        latents, condition = problem(frozen, key, source_pose, pose_inputs, expression_inputs, motion_reference)
        latents = sample(params, reference, latents, condition, guidance, jax.random.fold_in(key, 1))
        return codec.decode(frozen.get("vae"), latents)

    if not model.temporal:
        return encode, motion, drive, None
    sample_window = make_window_sampler(model, schedule, steps, cfg, eta)

    def window(params, frozen, guidance, key, reference, source_pose, pose_inputs, expression_inputs,
               motion_reference, previous, weights, index):
        latents, condition = problem(frozen, key, source_pose, pose_inputs, expression_inputs, motion_reference)
        latents, trajectory = sample_window(params, reference, latents, condition, guidance,
                                            jax.random.fold_in(jax.random.fold_in(key, 1), index), previous, weights)
        return codec.decode(frozen.get("vae"), latents), trajectory

    return encode, motion, drive, window


class AnimatorWrapper:
    """An animator checkpoint as jitted `encode`, `motion` and `drive` (module docstring)."""

    def __init__(self, checkpoint, origin, steps=None, guidance=None, cfg=None, eta=None, seed=0, mesh=None):
        config = checkpoint.config
        check_checkpoint(checkpoint, origin)
        self.sampling = sampling_options(config, steps=steps, guidance=guidance, cfg=cfg, eta=eta)
        self.image_size = int(config.data.image_size)
        self.expression_size = int(config.data.expression_size)
        self.data_config = inference_data_config(config)
        steps, cfg, eta = int(self.sampling["steps"]), self.sampling["cfg"], float(self.sampling["eta"])
        guidance_text = "no guidance" if cfg == "none" else f"{cfg} CFG at w = {float(self.sampling['guidance']):g}"
        self.description = (f"{checkpoint.description}; DDIM {steps} steps, {guidance_text}"
                            f"{f', eta {eta:g}' if eta else ''}, seed {seed}")
        encode, motion, drive, window = engine_functions(config, steps, cfg, eta, mesh)
        self.temporal = window is not None
        replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
        params, frozen = jax.device_put((checkpoint.params, checkpoint.frozen), replicated)
        bound = (params, frozen, jnp.float32(self.sampling["guidance"]), jax.random.key(seed))
        self.encode = functools.partial(jax.jit(encode), params, frozen)
        self.motion = functools.partial(jax.jit(motion), frozen)
        self.drive = functools.partial(jax.jit(drive), *bound)
        if self.temporal:
            _, codec, side, _ = engine_parts(config)
            self._latent = (side, side, codec.channels)
            self._window = functools.partial(jax.jit(window), *bound)

    def window(self, reference, source_pose, pose_inputs, expression_inputs, motion_reference, previous, weights,
               index):
        """Window `index` of a Stage-3 clip (module docstring); `previous` None: the clip's first window."""
        if previous is None:
            previous = jnp.zeros((int(self.sampling["steps"]) + 1, len(pose_inputs)) + self._latent, jnp.float32)
            weights = jnp.zeros(len(pose_inputs), jnp.float32)
        return self._window(reference, source_pose, pose_inputs, expression_inputs, motion_reference, previous,
                            weights, index)
