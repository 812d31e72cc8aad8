"""Pose-encoder training: the Stage-1 pose encoder alone, supervised by a dataset's true poses.

The learnability gate of the pose encoder (docs/experiments/learnability.md): on SynthHeads' pose labels it must
learn, alone and in minutes, to read held-out heads' yaw, pitch and roll:

    dex-portrait train --config configs/learnability.py:pose --workdir DIR
    dex-portrait probe --checkpoint data/motion_synth --pose-from DIR --out PROBE

One step, on a Stage-1 batch of B sources and B*K driving frames: the pose encoder reads the B sources (whole
frames) and the B*K pose inputs (driving frames with eyes and mouth covered), the two inputs it has in Stage 1,
and the loss is `losses.pose_supervision_loss` (mean absolute error over yaw, pitch, roll in radians, tx, ty,
scale) against their true poses; Adam, EMA. The logged `constant_guess` is the same error of the batch's
per-value median, the best constant: the encoder has learned something only below it; `yaw_deg`, `pitch_deg` and
`roll_deg` are the batch's mean absolute angle errors in degrees. The state's params are {"generator": {"pose":
...}}, the place the encoder has in a Stage-1 generator, so `warm_start_module(..., "pose", ...)` reads either
kind of run. A fresh run may begin from a trained encoder, init_pose_from's (a run of either stage, or an export);
init_from, init_discriminator and init_expression_from, which name other networks, are refused.
"""

import logging
import math

import jax
import jax.numpy as jnp
import optax

from dex_jax.motion.losses import pose_supervision_loss
from dex_jax.motion.pose_encoder import POSE_KEYS, PoseEncoder
from dex_jax.train.loop import Stage
from dex_jax.train.optim import make_optimizer
from dex_jax.train.stages.motion_pairs import flatten_frames, flatten_pose_targets
from dex_jax.train.stages.warm_start import warm_start_module
from dex_jax.train.state import apply_gradients, create_state, ema_update

log = logging.getLogger(__name__)

ANGLES = ("yaw", "pitch", "roll")
METRIC_NAMES = ("pose_supervision", "constant_guess") + tuple(f"{a}_deg" for a in ANGLES) + (
    "generator_grad_norm", "learning_rate")
PREVIEW_NAMES = ("pose input",)


def check_config(config):
    """ValueError if a warm start of another network is asked for or the data's frames are not the model's size."""
    for key in ("init_from", "init_discriminator", "init_expression_from"):
        if config.get(key):
            raise ValueError(f"{key} names other networks than the pose encoder; the pose stage starts afresh")
    if config.data.image_size != config.model.image_size:
        raise ValueError(f"data.image_size {config.data.image_size} differs from model.image_size "
                         f"{config.model.image_size}")


def pose_inputs_and_targets(batch):
    """(images (B + B*K, S, S, 3): the sources, then the pose inputs; true poses (B + B*K, 6) in POSE_KEYS
    order); ValueError if the batch has no poses."""
    _, driving_poses = flatten_pose_targets(batch)
    images = jnp.concatenate([batch["source"], flatten_frames(batch["pose_input"])])
    return images, jnp.concatenate([batch["source_pose"], driving_poses])


def make_stage(config):
    """The pose `Stage` for a Stage-1 config with stage = "pose" (its data, model.pose and model.image_size,
    optimizer without lr multipliers, ema and log fields, init_pose_from; no loss field and no other network is
    read)."""
    config = config.copy_and_resolve_references()
    encoder = PoseEncoder(**config.model.pose.to_dict(), dtype=jnp.dtype(config.model.dtype))
    optimizer, schedule = make_optimizer(config.optimizer, config.optimizer.lr, config.total_steps)
    num_images = config.log.num_images

    def init(rng):
        init_rng, train_rng = jax.random.split(rng)
        size = config.model.image_size
        params = {"generator": {"pose": encoder.init(init_rng, jnp.zeros((1, size, size, 3)))["params"]}}
        return create_state(params, {"generator": optimizer}, train_rng, ema_names=("generator",))

    def step(state, batch, frozen):
        del frozen
        images, targets = pose_inputs_and_targets(batch)

        def objective(params):
            pose = encoder.apply({"params": params["pose"]}, images)
            return pose_supervision_loss(pose, targets), pose

        (loss, pose), grads = jax.value_and_grad(objective, has_aux=True)(state.params["generator"])
        params, opt_state = apply_gradients(state, "generator", grads, optimizer)
        new = state.replace(step=state.step + 1, params={"generator": params}, opt_state={"generator": opt_state},
                            ema={"generator": ema_update(state.ema["generator"], params, config.ema.decay)})
        median = jnp.broadcast_to(jnp.median(targets, axis=0), targets.shape)
        metrics = {"pose_supervision": loss,
                   "constant_guess": pose_supervision_loss(dict(zip(POSE_KEYS, median.T)), targets),
                   **{f"{a}_deg": jnp.mean(jnp.abs(pose[a] - targets[:, i])) * (180 / math.pi)
                      for i, a in enumerate(ANGLES)},
                   "generator_grad_norm": optax.tree.norm(grads),
                   "learning_rate": jnp.asarray(schedule(state.step), jnp.float32)}
        return new, metrics, (images[:num_images],)

    def take_trained_encoder(state):
        if not config.get("init_pose_from"):
            return state
        state = warm_start_module(state, config.init_pose_from, "pose", "init_pose_from", config.model)
        log.info("pose encoder params from %s", config.init_pose_from)
        return state

    return Stage(init=init, step=step, frozen={}, metric_names=METRIC_NAMES, preview_names=PREVIEW_NAMES,
                 warm_start=take_trained_encoder)
