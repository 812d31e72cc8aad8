"""Warm start: a new run's networks begin from a trained run's (or export's) params; optimizers and step begin anew."""

import jax
import numpy as np
from flax import traverse_util

from dex_jax.train.checkpoint import checkpoint_paths, generator_params, read_checkpoint


def _check_shapes(name, source, target, origin):
    have = traverse_util.flatten_dict(source, sep="/")
    want = traverse_util.flatten_dict(target, sep="/")
    problems = [f"{k}: missing" for k in want if k not in have]
    problems += [f"{k}: {tuple(np.shape(have[k]))} there, {tuple(want[k].shape)} here"
                 for k in want if k in have and np.shape(have[k]) != want[k].shape]
    problems += [f"{k}: not in this model" for k in have if k not in want]
    if problems:
        raise ValueError(f"init_from {origin}: its {name} does not fit this config ({'; '.join(problems[:3])}"
                         f"{'; ...' if len(problems) > 3 else ''})")


def _placed(name, source, target, origin):
    _check_shapes(name, source, target, origin)
    return jax.tree.map(lambda value, like: jax.device_put(np.asarray(value, like.dtype), like.sharding),
                        source, target)


def warm_start(state, origin, discriminator=False):
    """`state` with its generator params and their EMA replaced by those of the run or export at `origin`.

    origin: a training workdir or an export (`dex-portrait export`); its EMA generator is taken where it has one.
    discriminator: also take the discriminator's params, which only a training workdir keeps.
    Placed with the shardings `state` has. ValueError, naming init_from, when origin holds no readable checkpoint or no
    discriminator where one is asked for, or names the first mismatched keys when the shapes differ.
    """
    try:
        trained = read_checkpoint(checkpoint_paths(origin)[0])
    except ValueError as err:
        raise ValueError(f"init_from {origin}: {err}") from err
    params = dict(state.params)
    params["generator"] = _placed("generator", generator_params(trained)[0], state.params["generator"], origin)
    if discriminator:
        if "discriminator" not in trained.get("params", {}):
            raise ValueError(f"init_from {origin}: holds no discriminator (an export keeps only the generator; "
                             f"name the training workdir)")
        params["discriminator"] = _placed("discriminator", trained["params"]["discriminator"],
                                          state.params["discriminator"], origin)
    ema = dict(state.ema)
    if "generator" in ema:
        ema["generator"] = jax.tree.map(lambda x: x.copy(), params["generator"])
    return state.replace(params=params, ema=ema)
