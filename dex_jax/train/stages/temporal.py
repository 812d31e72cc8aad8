"""Stage 3 (paper Sec. 4.1 "Temporal Training", supplement B.2): the temporal module learns alone, on clips.

One step, on a batch of B clips, each one source and K consecutive driving frames of one camera (data.kind
'clips': the grain pipeline's clips, row i of the B*K rows is frame i % K of clip i // K, which is the temporal
module's clip-major layout): the Stage-2 step's problem (`animator.denoising_problem`: frozen codec and Stage-1
encoders, noise, timesteps, condition dropout drawn once per clip so that a clip keeps one variant) and its epsilon
MSE (`animator.epsilon_loss`), with the denoiser's rows taken as B clips of K frames.

Trained: the temporal modules' params alone (`animator.temporal.is_temporal`): the gradient is taken with respect
to them only, Adam's moments hold them only, the EMA moves them only. Every other param of params["animator"]
(both UNets, every Stage-2 layer) is frozen and passes through the step untouched, bit for bit. The state keeps
the whole animator under params["animator"] and ema["animator"], as Stage 2 does.
A fresh run's warm start takes every non-temporal param (params and EMA) from config.init_from, a Stage-2 animator
export or training workdir (its EMA params where it has them), checked against this config when the stage is made;
the temporal modules keep their fresh init, whose output is zero: the run starts as that Stage-2 animator.
Frozen (the stage's `frozen`): the Stage-1 encoders and VAE, read as Stage 2 reads them (motion_from, vae_from:
the Stage-2 run's own). The pose and expression encoders must be those the Stage-2 animator was trained with (an
export's frozen ones, a workdir's motion_from's): the UNets learned that expression latent. Metrics and preview:
Stage 2's.
"""

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from dex_jax.animator.latent import build_codec
from dex_jax.animator.model import build_animator, init_inputs
from dex_jax.animator.motion_encoders import FROZEN_ENCODERS, motion_encoders
from dex_jax.animator.temporal import is_temporal
from dex_jax.diffusion.schedule import SchedulerConfig
from dex_jax.train.animator_checkpoint import STAGE, STAGES, animator_params, read_frozen, read_motion_encoders
from dex_jax.train.checkpoint import checkpoint_paths, read_checkpoint, read_train_config
from dex_jax.train.loop import Stage
from dex_jax.train.optim import make_optimizer
from dex_jax.train.stages import animator
from dex_jax.train.stages.warm_start import check_fits
from dex_jax.train.state import create_state, ema_update, step_rng

log = logging.getLogger(__name__)

DATA_KIND = "clips"


def split_temporal(params):
    """(temporal params, every other param): the two parts of an animator param tree, nested as it is."""
    flat = flatten_dict(params)
    return (unflatten_dict({path: leaf for path, leaf in flat.items() if is_temporal(path)}),
            unflatten_dict({path: leaf for path, leaf in flat.items() if not is_temporal(path)}))


def merge(*parts):
    """One param tree of disjoint parts (as `split_temporal` gives them)."""
    return unflatten_dict({path: leaf for part in parts for path, leaf in flatten_dict(part).items()})


def check_config(config):
    """ValueError unless Stage 2's checks pass, the model has a temporal module, the data are clips and
    init_from names the Stage-2 animator."""
    animator.check_config(config)
    if not build_animator(config.model).temporal:
        raise ValueError("stage 'temporal' trains the temporal module: set model.temporal.enabled=True")
    if config.data.get("kind", "pairs") != DATA_KIND:
        raise ValueError(f"stage 'temporal' trains on clips: set data.kind={DATA_KIND!r}")
    if not config.init_from:
        raise ValueError("init_from is empty: stage 'temporal' starts from a Stage-2 animator export or workdir")


def read_stage2(origin, model, side, frozen, motion_from):
    """The non-temporal animator params (numpy) of the Stage-2 export or workdir `origin`; ValueError naming
    init_from when it holds no readable checkpoint, its animator does not fit `model`, or it was trained with
    other pose or expression encoders than `frozen`'s (those of `motion_from`)."""
    try:
        folder, config_path = checkpoint_paths(origin)
        stage2_config = read_train_config(config_path)
        if stage2_config.get("stage") not in STAGES:
            raise ValueError(f"not an animator run (its config's stage is {stage2_config.get('stage')!r})")
        state = read_checkpoint(folder)
        params = animator_params(state)[0]
        trained_with = (state["frozen"] if "frozen" in state
                        else read_motion_encoders(stage2_config.motion_from, "its motion_from")[1])
    except ValueError as err:
        raise ValueError(f"init_from {origin}: {err}") from None
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), *init_inputs(model, side, side)))["params"]
    _, wanted = split_temporal(shapes)
    _, given = split_temporal(params)
    check_fits("animator", given, wanted, origin)
    for name in FROZEN_ENCODERS:
        theirs, ours = flatten_dict(trained_with[name]), flatten_dict(frozen[name])
        if theirs.keys() != ours.keys() or any(not np.array_equal(theirs[k], ours[k]) for k in ours):
            raise ValueError(f"init_from {origin}: its animator was trained with another {name} encoder than "
                             f"motion_from {motion_from}'s; set --config.motion_from to the Stage-1 model it was "
                             "trained on")
    return given


def make_stage(config):
    """The Stage-3 `Stage` for a train config (configs/animator_temporal_*.py); reads its frozen parts and checks
    init_from now. ValueError (one line) when they do not fit."""
    config = config.copy_and_resolve_references()
    check_config(config)
    model = build_animator(config.model)
    codec = build_codec(config.latent)
    motion_model, frozen = read_frozen(config)
    side = config.model.unet.sample_size
    read_stage2(config.init_from, model, side, frozen, config.motion_from)
    encoders = motion_encoders(motion_model)
    schedule = SchedulerConfig.from_dict(config.diffusion)
    optimizer, lr_schedule = make_optimizer(config.optimizer, config.optimizer.lr, config.total_steps)
    drop_all, drop_expression = float(config.loss.drop_all), float(config.loss.drop_expression)

    def init(rng):
        init_rng, train_rng = jax.random.split(rng)
        params = model.init(init_rng, *init_inputs(model, side, side))["params"]
        trained, _ = split_temporal(params)
        return create_state({STAGE: params}, {}, train_rng, ema_names=(STAGE,)).replace(
            opt_state={STAGE: optimizer.init(trained)})

    def step(state, batch, frozen):
        problem = animator.denoising_problem(codec, encoders, schedule, batch, frozen, step_rng(state), drop_all,
                                             drop_expression, per_source=True)
        trained, fixed = split_temporal(state.params[STAGE])

        def objective(temporal):
            params = merge(fixed, temporal)
            return animator.epsilon_loss(model, params, problem, problem.frames)

        (loss, prediction), grads = jax.value_and_grad(objective, has_aux=True)(trained)
        updates, opt_state = optimizer.update(grads, state.opt_state[STAGE], trained)
        trained = optax.apply_updates(trained, updates)
        ema_trained, ema_fixed = split_temporal(state.ema[STAGE])
        ema_trained = ema_update(ema_trained, trained, config.ema.decay)
        new = state.replace(step=state.step + 1, params={STAGE: merge(fixed, trained)}, opt_state={STAGE: opt_state},
                            ema={STAGE: merge(ema_fixed, ema_trained)})
        metrics, preview = animator.step_report(schedule, codec, frozen, problem, loss, prediction, grads,
                                                lr_schedule(state.step), config.log.num_images)
        return new, metrics, preview

    return Stage(init=init, step=step, frozen=frozen, metric_names=animator.METRIC_NAMES,
                 preview_names=animator.PREVIEW_NAMES, warm_start=functools.partial(take_stage2, config=config,
                                                                                    model=model, side=side,
                                                                                    frozen=frozen))


def take_stage2(state, config, model, side, frozen):
    """A fresh `state` whose non-temporal params and EMA are config.init_from's animator, placed as `state`'s are;
    the temporal params and their EMA stay as init made them."""
    given = flatten_dict(read_stage2(config.init_from, model, side, frozen, config.motion_from))
    params = flatten_dict(state.params[STAGE])
    placed = {path: jax.device_put(jnp.asarray(value, params[path].dtype), params[path].sharding)
              for path, value in given.items()}
    ema = {**flatten_dict(state.ema[STAGE]), **placed}  # the loop gives params and EMA their own buffers
    log.info("every non-temporal animator param from %s", config.init_from)
    return state.replace(params={STAGE: unflatten_dict({**params, **placed})}, ema={STAGE: unflatten_dict(ema)})
