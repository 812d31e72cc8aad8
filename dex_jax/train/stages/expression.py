"""Expression-encoder pretraining: the Stage-1 expression encoder alone, supervised by a dataset's true expressions.

The paper starts its expression encoder from a FAN pretrained on face landmarks; without those weights, this
stage pretrains ours on SynthHeads' expression labels, and Stage 1 takes it with `init_expression_from`:

    dex-portrait train --config configs/motion_synth.py:1 --config.stage=expression --workdir DIR

One step, on the B*K driving frames of a Stage-1 batch: the squared error of each expression latent's first n
values against the frame's n true expression values (`losses.expression_supervision_loss`, normalised with
loss.expression_normalised), Adam, EMA. The logged `constant_guess` is the same error of the batch's per-value
mean, the best constant: the encoder has learned something only below it. The state's params are
{"generator": {"expression": ...}}, the place the encoder has in a Stage-1 generator, so
`warm_start_module(..., "expression", ...)` reads either kind of run. A fresh run may begin from a trained
encoder, init_expression_from's (a run of either stage, or an export); init_from, init_discriminator and
init_pose_from, which name a whole generator, a discriminator and the pose encoder, are refused.
"""

import logging

import jax
import jax.numpy as jnp
import optax

from dex_jax.motion.expression_encoder import ExpressionEncoder
from dex_jax.motion.losses import expression_supervision_loss
from dex_jax.train.loop import Stage
from dex_jax.train.optim import make_optimizer
from dex_jax.train.stages.motion_pairs import flatten_expression_targets, flatten_frames
from dex_jax.train.stages.warm_start import warm_start_module
from dex_jax.train.state import apply_gradients, create_state, ema_update

log = logging.getLogger(__name__)

METRIC_NAMES = ("expression_supervision", "constant_guess", "generator_grad_norm", "learning_rate")
PREVIEW_NAMES = ("expression input",)


def check_config(config):
    """ValueError unless the data's expression crops have the encoder's input size and no whole-generator or
    discriminator warm start is asked for."""
    for key in ("init_from", "init_discriminator", "init_pose_from"):
        if config.get(key):
            raise ValueError(f"{key} is for stage1; the expression stage takes a trained encoder with "
                             "init_expression_from")
    if config.data.expression_size != config.model.expression.image_size:
        raise ValueError(f"data.expression_size {config.data.expression_size} differs from "
                         f"model.expression.image_size {config.model.expression.image_size}")


def make_stage(config):
    """The pretraining `Stage` for a Stage-1 config with stage = "expression" (its data, model.expression,
    optimizer without lr multipliers, ema and log fields, loss.expression_normalised and init_expression_from; no
    other loss field and no discriminator field is read)."""
    config = config.copy_and_resolve_references()
    encoder = ExpressionEncoder(**config.model.expression.to_dict(), dtype=jnp.dtype(config.model.dtype))
    optimizer, schedule = make_optimizer(config.optimizer, config.optimizer.lr, config.total_steps)
    num_images = config.log.num_images
    normalised = bool(config.loss.expression_normalised)

    def init(rng):
        init_rng, train_rng = jax.random.split(rng)
        size = config.model.expression.image_size
        params = {"generator": {"expression": encoder.init(init_rng, jnp.zeros((1, size, size, 3)))["params"]}}
        return create_state(params, {"generator": optimizer}, train_rng, ema_names=("generator",))

    def step(state, batch, frozen):
        del frozen
        crops = flatten_frames(batch["expression_input"])
        targets = flatten_expression_targets(batch)

        def objective(params):
            return expression_supervision_loss(encoder.apply({"params": params["expression"]}, crops), targets,
                                               normalised)

        loss, grads = jax.value_and_grad(objective)(state.params["generator"])
        params, opt_state = apply_gradients(state, "generator", grads, optimizer)
        new = state.replace(step=state.step + 1, params={"generator": params}, opt_state={"generator": opt_state},
                            ema={"generator": ema_update(state.ema["generator"], params, config.ema.decay)})
        metrics = {"expression_supervision": loss,
                   "constant_guess": expression_supervision_loss(
                       jnp.broadcast_to(jnp.mean(targets, axis=0), targets.shape), targets, normalised),
                   "generator_grad_norm": optax.tree.norm(grads),
                   "learning_rate": jnp.asarray(schedule(state.step), jnp.float32)}
        return new, metrics, (crops[:num_images],)

    def take_trained_encoder(state):
        if not config.init_expression_from:
            return state
        state = warm_start_module(state, config.init_expression_from, "expression", "init_expression_from",
                                  config.model)
        log.info("expression encoder params from %s", config.init_expression_from)
        return state

    return Stage(init=init, step=step, frozen={}, metric_names=METRIC_NAMES, preview_names=PREVIEW_NAMES,
                 warm_start=take_trained_encoder)
