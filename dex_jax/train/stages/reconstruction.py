"""Reconstruction training: the Stage-1 generator's appearance path alone, every frame its own source and driver.

The learnability gate of the appearance path (docs/experiments/learnability.md): with nothing to move, the
generator must learn to redraw a frame, which is what `dex-portrait evaluate --protocol reconstruction` scores:

    dex-portrait train --config configs/learnability.py:reconstruction --workdir DIR
    dex-portrait evaluate --checkpoint DIR --benchmark synth_heads --protocol reconstruction --out EVAL

One step, on the B*K driving frames of a Stage-1 batch (its sources are not read): each frame is the source, its
pose input (eyes and mouth covered) the pose driver, its expression crop the expression driver, and itself the
target; the loss is the L1 of the redrawn frame (`losses.l1_loss`, on [-1, 1]), Adam with the config's
per-submodule lr factors, EMA. The warp takes the poses under stop_gradient and no loss reads them, so the pose
encoder stays as initialised: its zero-initialised head gives every frame the same pose and the warp is the
identity (the path measured is appearance encoder, volume, fusion, appearance latent, expression latent and
decoder). The logged `psnr` is the batch's mean PSNR on [0, 1] in dB, as `evaluate` measures it. The state holds
the generator alone ({"generator": ...}, with its EMA), so `evaluate`, `export` and `init_from` read the run as
a Stage-1 one. Warm starts (init_from and the rest) are refused: the gate starts from random weights.
"""

import jax
import jax.numpy as jnp
import optax

from dex_jax.motion.generator import build_motion_generator
from dex_jax.motion.losses import l1_loss
from dex_jax.train.loop import Stage
from dex_jax.train.optim import make_optimizer
from dex_jax.train.stages.motion_pairs import flatten_frames
from dex_jax.train.stages.stage1 import check_sizes
from dex_jax.train.state import apply_gradients, create_state, ema_update, step_rng

METRIC_NAMES = ("l1", "psnr", "generator_grad_norm", "learning_rate")
PREVIEW_NAMES = ("frame", "pose input", "redrawn")


def check_config(config):
    """ValueError if a warm start is asked for or data and model sizes (image, expression crop) differ."""
    for key in ("init_from", "init_discriminator", "init_expression_from", "init_pose_from"):
        if config.get(key):
            raise ValueError(f"{key} is set; the reconstruction stage starts every network from random weights")
    check_sizes(config)


def batch_psnr(pred, target):
    """Mean over images (N, H, W, 3) in [-1, 1] of each image's PSNR on [0, 1], in dB."""
    mse = jnp.mean(jnp.square((pred.astype(jnp.float32) - target.astype(jnp.float32)) / 2), axis=(1, 2, 3))
    return jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10)))


def make_stage(config):
    """The reconstruction `Stage` for a Stage-1 config with stage = "reconstruction" (its data, model, optimizer
    with generator_lr_multipliers, ema and log fields; no loss field and no discriminator is read)."""
    config = config.copy_and_resolve_references()
    model = config.model
    generator = build_motion_generator(model)
    optimizer, schedule = make_optimizer(config.optimizer, config.optimizer.lr, config.total_steps,
                                         config.optimizer.generator_lr_multipliers)
    num_images = config.log.num_images

    def init(rng):
        init_rng, train_rng = jax.random.split(rng)
        s, e = model.image_size, model.expression.image_size
        image, crop = jnp.zeros((1, s, s, 3)), jnp.zeros((1, e, e, 3))
        params = {"generator": generator.init(init_rng, image, image, crop)["params"]}
        return create_state(params, {"generator": optimizer}, train_rng, ema_names=("generator",))

    def step(state, batch, frozen):
        del frozen
        frames, pose_input = flatten_frames(batch["driving"]), flatten_frames(batch["pose_input"])
        expression_input = flatten_frames(batch["expression_input"])

        def objective(params):
            pred = generator.apply({"params": params}, frames, pose_input, expression_input, detach_pose=True,
                                   rngs={"noise": step_rng(state)}, method=generator.reenact)[0]
            return l1_loss(pred, frames), pred

        (loss, pred), grads = jax.value_and_grad(objective, has_aux=True)(state.params["generator"])
        params, opt_state = apply_gradients(state, "generator", grads, optimizer)
        new = state.replace(step=state.step + 1, params={"generator": params}, opt_state={"generator": opt_state},
                            ema={"generator": ema_update(state.ema["generator"], params, config.ema.decay)})
        metrics = {"l1": loss, "psnr": batch_psnr(pred, frames), "generator_grad_norm": optax.tree.norm(grads),
                   "learning_rate": jnp.asarray(schedule(state.step), jnp.float32)}
        return new, metrics, (frames[:num_images], pose_input[:num_images], pred[:num_images].astype(jnp.float32))

    return Stage(init=init, step=step, frozen={}, metric_names=METRIC_NAMES, preview_names=PREVIEW_NAMES)
