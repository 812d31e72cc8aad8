"""Stage 2 (paper Sec. 3.3, supplement B.2): the DeX animator learns to denoise driving frames given their source.

One step, on a Stage-1 batch of B identities, each one source and K driving frames (B*K denoised frames; row i
is driving frame i % K of source i // K):
  frozen, no gradient: the latent codec (`animator.latent`) encodes the sources and the driving frames; the
    Stage-1 pose encoder gives each source's pose (on the source image) and each driving pose (on its pose input,
    eyes and mouth covered); the expression encoder gives each driving expression latent (on its expression
    crop: rotated, from another camera where the dataset has one) (`animator.motion_encoders`);
  per frame: noise eps ~ N(0, I), a timestep t uniform over the schedule's training steps, the noisy latent
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (`config.diffusion`, SD-1.5's schedule), and condition
    dropout: the "nothing" variant with probability loss.drop_all, else the "no expression" variant with
    probability loss.drop_expression, else the full condition;
  the reference UNet runs once per source (B passes, not B*K) on its clean latent at t = 0, the denoising UNet on
    the B*K noisy latents; loss = mean squared error of the predicted noise (epsilon prediction); Adam
    (clipped), EMA.
Trained: params["animator"], both UNets and every new layer. Frozen (the stage's `frozen`): {"pose",
"expression"[, "vae"]} read from config.motion_from and latent.vae_from (`animator_checkpoint.read_frozen`).
A fresh run's warm start takes both UNets from config.init_unet_from, a `dex-portrait convert diffusers` folder
(`animator.model.with_backbone`); "" keeps the random init. That folder is checked against the config when the
stage is made, before anything compiles, and read again at the warm start.
Metrics: loss (the epsilon MSE), grad_norm, learning_rate, and the fractions of frames whose condition was
dropped whole (dropped_all) or lost its expression (dropped_expression). Preview: the source, the driving frame
(ground truth) and the one-step estimate of x_0 from the frame's noisy latent, decoded.
"""

import functools
import logging
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from dex_jax.animator.conditioning import FULL, NO_EXPRESSION, NOTHING, make_condition
from dex_jax.animator.latent import build_codec
from dex_jax.animator.model import build_animator, init_inputs, with_backbone
from dex_jax.animator.motion_encoders import motion_encoders
from dex_jax.convert.diffusers import module_config
from dex_jax.diffusion.schedule import SchedulerConfig, add_noise, alphas_cumprod
from dex_jax.diffusion.unet import unet_from_config
from dex_jax.train.animator_checkpoint import STAGE, converted_part, read_frozen
from dex_jax.train.loop import Stage
from dex_jax.train.optim import make_optimizer
from dex_jax.train.stages.motion_pairs import flatten_frames
from dex_jax.train.state import apply_gradients, create_state, ema_update, step_rng

log = logging.getLogger(__name__)

METRIC_NAMES = ("loss", "grad_norm", "learning_rate", "dropped_all", "dropped_expression")
PREVIEW_NAMES = ("source", "driving (ground truth)", "one-step estimate")


def check_config(config):
    """ValueError unless the animator builds, the latent codec's output fits its UNets (channels, latent size
    = model.unet.sample_size) and the dropout rates are probabilities."""
    build_animator(config.model)
    codec = build_codec(config.latent)
    unet = config.model.unet
    if unet.in_channels != codec.channels or unet.out_channels != codec.channels:
        raise ValueError(f"latent.kind {config.latent.kind!r} gives {codec.channels}-channel latents; "
                         f"model.unet.in_channels and out_channels must be {codec.channels}, "
                         f"got {unet.in_channels} and {unet.out_channels}")
    side = codec.latent_size(config.data.image_size)
    if side != unet.sample_size:
        raise ValueError(f"data.image_size {config.data.image_size} gives {side}x{side} latents, "
                         f"model.unet.sample_size is {unet.sample_size}")
    for key in ("drop_expression", "drop_all"):
        if not 0.0 <= config.loss[key] <= 1.0:
            raise ValueError(f"loss.{key} is a probability, got {config.loss[key]}")


def dropout_variants(rng, rows, drop_all, drop_expression):
    """(rows,) int32 condition variants: NOTHING with probability drop_all, else NO_EXPRESSION with probability
    drop_expression, else FULL."""
    everything, expression = jax.random.uniform(rng, (2, rows))
    return jnp.where(everything < drop_all, NOTHING,
                     jnp.where(expression < drop_expression, NO_EXPRESSION, FULL)).astype(jnp.int32)


def one_step_estimate(schedule, noisy, prediction, timesteps):
    """x_0 estimated from x_t and the predicted noise: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    alpha_bar = jnp.asarray(alphas_cumprod(schedule))[timesteps][:, None, None, None]
    return (noisy - jnp.sqrt(1 - alpha_bar) * prediction) / jnp.sqrt(alpha_bar)


class DenoisingProblem(NamedTuple):
    """What one step's frozen half (`denoising_problem`) hands the trained half; rows = sources x k frames."""

    source: jax.Array
    driving: jax.Array
    source_latent: jax.Array
    noise: jax.Array
    noisy: jax.Array
    timesteps: jax.Array
    condition: dict
    variants: jax.Array
    frames: int


def denoising_problem(codec, encoders, schedule, batch, frozen, rng, drop_all, drop_expression, per_source=False):
    """A batch (B sources, K driving frames each) as the epsilon-prediction problem of the module docstring.

    Frozen, no gradient: latents, poses and expression latents. `rng` draws the noise, timesteps and condition
    dropout; `per_source`: one dropout draw per source for all its K frames (a clip keeps one variant), else one
    per frame.
    """
    source = batch["source"]
    sources, k = source.shape[0], batch["driving"].shape[1]
    rows = sources * k
    driving = flatten_frames(batch["driving"])
    motion = {"pose": frozen["pose"], "expression": frozen["expression"]}
    codec_params = frozen.get("vae")
    source_latent, target, source_pose, driving_pose, expression = jax.lax.stop_gradient((
        codec.encode(codec_params, source), codec.encode(codec_params, driving),
        jnp.repeat(encoders.poses(motion, source), k, axis=0),
        encoders.poses(motion, flatten_frames(batch["pose_input"])),
        encoders.expressions(motion, flatten_frames(batch["expression_input"]))))

    noise_rng, time_rng, drop_rng = jax.random.split(rng, 3)
    noise = jax.random.normal(noise_rng, target.shape, jnp.float32)
    timesteps = jax.random.randint(time_rng, (rows,), 0, schedule.num_train_timesteps)
    noisy = add_noise(schedule, target, noise, timesteps)
    if per_source:
        variants = jnp.repeat(dropout_variants(drop_rng, sources, drop_all, drop_expression), k)
    else:
        variants = dropout_variants(drop_rng, rows, drop_all, drop_expression)
    condition = make_condition(source_pose, driving_pose, expression, jnp.repeat(jnp.arange(sources), k), variants)
    return DenoisingProblem(source, driving, source_latent, noise, noisy, timesteps, condition, variants, k)


def epsilon_loss(model, params, problem, frames=1):
    """(mean squared error of the predicted noise, the prediction) of animator `params` on a `DenoisingProblem`;
    `frames`: the rows are clips of that many frames (`Animator.denoise`)."""
    prediction, _ = model.apply({"params": params}, problem.source_latent, problem.noisy, problem.timesteps,
                                problem.condition, frames, mutable=["reference"])
    prediction = prediction.astype(jnp.float32)
    return jnp.mean(jnp.square(prediction - problem.noise)), prediction


def step_report(schedule, codec, frozen, problem, loss, prediction, grads, learning_rate, num_images):
    """(metrics of METRIC_NAMES, preview of PREVIEW_NAMES) of one step."""
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "learning_rate": jnp.asarray(learning_rate, jnp.float32),
               "dropped_all": jnp.mean(problem.variants == NOTHING),
               "dropped_expression": jnp.mean(problem.variants == NO_EXPRESSION)}
    shown = slice(0, num_images)
    estimate = one_step_estimate(schedule, problem.noisy[shown], jax.lax.stop_gradient(prediction[shown]),
                                 problem.timesteps[shown])
    preview = (jnp.repeat(problem.source, problem.frames, axis=0)[shown], problem.driving[shown],
               jnp.clip(codec.decode(frozen.get("vae"), estimate), -1.0, 1.0).astype(jnp.float32))
    return metrics, preview


def make_stage(config):
    """The animator `Stage` for a train config (configs/animator_*.py); reads the frozen parts it names now.

    ValueError (one line) when the config does not build or its motion_from / vae_from do not fit it.
    The stage keeps a copy of `config`.
    """
    config = config.copy_and_resolve_references()
    check_config(config)
    model = build_animator(config.model)
    codec = build_codec(config.latent)
    motion_model, frozen = read_frozen(config)
    if config.init_unet_from:
        check_backbone(config, model)
    encoders = motion_encoders(motion_model)
    schedule = SchedulerConfig.from_dict(config.diffusion)
    optimizer, lr_schedule = make_optimizer(config.optimizer, config.optimizer.lr, config.total_steps)
    side = config.model.unet.sample_size
    drop_all, drop_expression = float(config.loss.drop_all), float(config.loss.drop_expression)

    def init(rng):
        init_rng, train_rng = jax.random.split(rng)
        params = model.init(init_rng, *init_inputs(model, side, side))["params"]
        return create_state({STAGE: params}, {STAGE: optimizer}, train_rng, ema_names=(STAGE,))

    def step(state, batch, frozen):
        problem = denoising_problem(codec, encoders, schedule, batch, frozen, step_rng(state), drop_all,
                                    drop_expression)
        (loss, prediction), grads = jax.value_and_grad(
            lambda params: epsilon_loss(model, params, problem), has_aux=True)(state.params[STAGE])
        params, opt_state = apply_gradients(state, STAGE, grads, optimizer)
        new = state.replace(step=state.step + 1, params={STAGE: params}, opt_state={STAGE: opt_state},
                            ema={STAGE: ema_update(state.ema[STAGE], params, config.ema.decay)})
        metrics, preview = step_report(schedule, codec, frozen, problem, loss, prediction, grads,
                                       lr_schedule(state.step), config.log.num_images)
        return new, metrics, preview

    return Stage(init=init, step=step, frozen=frozen, metric_names=METRIC_NAMES, preview_names=PREVIEW_NAMES,
                 warm_start=functools.partial(take_backbone, config=config))


def read_backbone(origin, unet_config, key="init_unet_from"):
    """The UNet params (numpy) of the converted SD folder `origin`; ValueError naming `key` when it holds no
    UNet or its UNet is built differently from `unet_config` (the animator's backbone, dtype aside)."""
    module, params = converted_part(origin, "unet", key)
    have, want = module_config(module), module_config(unet_from_config(unet_config))
    differ = [f"{name}={have.get(name)!r} there, {value!r} here" for name, value in want.items()
              if name not in ("dtype", "attention_implementation") and have.get(name) != value]
    if differ:
        raise ValueError(f"{key} {origin}: its UNet is built differently ({'; '.join(differ[:3])}"
                         f"{'; ...' if len(differ) > 3 else ''})")
    return params


def check_backbone(config, model):
    """ValueError naming init_unet_from (and the first mismatched keys) unless its UNet loads into both UNets of
    `model` (shapes only: nothing is computed)."""
    origin = config.init_unet_from
    backbone = read_backbone(origin, config.model.unet)
    side = config.model.unet.sample_size
    params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), *init_inputs(model, side, side)))["params"]
    try:
        jax.eval_shape(with_backbone, params, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                                           backbone))
    except ValueError as err:
        raise ValueError(f"init_unet_from {origin}: {err}") from None


def take_backbone(state, config):
    """A fresh `state` whose two UNets (params and EMA) are config.init_unet_from's UNet, placed as `state`'s
    params are; `state` as it is when init_unet_from is "". ValueError naming init_unet_from and the first
    mismatched keys when that UNet does not fit (`with_backbone`)."""
    origin = config.init_unet_from
    if not origin:
        log.warning("init_unet_from is empty: both UNets start from random weights")
        return state
    backbone = read_backbone(origin, config.model.unet)
    current = state.params[STAGE]
    try:
        loaded = with_backbone(current, backbone)
    except ValueError as err:
        raise ValueError(f"init_unet_from {origin}: {err}") from None
    placed = jax.tree.map(lambda value, like: jax.device_put(jnp.asarray(value, like.dtype), like.sharding),
                          loaded, current)
    log.info("both UNets from %s", origin)
    return state.replace(params={STAGE: placed}, ema={STAGE: placed})  # own buffers: loop.own_buffers
