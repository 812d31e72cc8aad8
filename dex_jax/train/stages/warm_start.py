"""Warm start: a new run's networks begin from a trained run's (or export's) params; optimizers and step begin anew."""

import jax
import numpy as np
from flax import traverse_util

from dex_jax.motion.generator import submodule_fields
from dex_jax.train.checkpoint import checkpoint_paths, generator_params, read_checkpoint, read_train_config


def check_fits(name, source, target, origin, key="init_from"):
    """ValueError, naming `key` and the first mismatched keys, unless param trees `source` and `target` match."""
    have = traverse_util.flatten_dict(source, sep="/")
    want = traverse_util.flatten_dict(target, sep="/")
    problems = [f"{k}: missing" for k in want if k not in have]
    problems += [f"{k}: {tuple(np.shape(have[k]))} there, {tuple(want[k].shape)} here"
                 for k in want if k in have and np.shape(have[k]) != want[k].shape]
    problems += [f"{k}: not in this model" for k in have if k not in want]
    if problems:
        raise ValueError(f"{key} {origin}: its {name} does not fit this config ({'; '.join(problems[:3])}"
                         f"{'; ...' if len(problems) > 3 else ''})")


def placed(name, source, target, origin, key="init_from"):
    """`source` (arrays) put where `target` is, with its dtypes and shardings; ValueError as `check_fits`."""
    check_fits(name, source, target, origin, key)
    return jax.tree.map(lambda value, like: jax.device_put(np.asarray(value, like.dtype), like.sharding),
                        source, target)


def _read(origin, key):
    try:
        return read_checkpoint(checkpoint_paths(origin)[0])
    except ValueError as err:
        raise ValueError(f"{key} {origin}: {err}") from err


def with_generator(state, generator):
    """`state` with these generator params, and its generator EMA (where it keeps one) reset to them."""
    ema = dict(state.ema)
    if "generator" in ema:
        ema["generator"] = jax.tree.map(lambda x: x.copy(), generator)
    return state.replace(params={**state.params, "generator": generator}, ema=ema)


def warm_start(state, origin, model_config, discriminator=False, replaced=()):
    """`state` with its generator params and their EMA replaced by those of the run or export at `origin`.

    origin: a training workdir or an export (`dex-portrait export`); its EMA generator is taken where it has one.
    model_config: this run's `model`; each generator submodule must be built as origin built it, except those
    in `replaced` (taken from elsewhere next, e.g. by `warm_start_module`), which keep `state`'s params and may
    differ from origin's in fields and shapes.
    discriminator: also take the discriminator's params, which only a training workdir keeps.
    Placed with the shardings `state` has. ValueError, naming init_from, when origin holds no readable checkpoint or no
    discriminator where one is asked for, or names the first mismatched keys or fields when they differ.
    """
    trained = _read(origin, "init_from")
    check_same_modules(origin, sorted(set(state.params["generator"]) - set(replaced)), model_config, "init_from")
    kept = {name: tree for name, tree in generator_params(trained)[0].items() if name not in replaced}
    target = {name: tree for name, tree in state.params["generator"].items() if name not in replaced}
    state = with_generator(state, {**state.params["generator"], **placed("generator", kept, target, origin)})
    if discriminator:
        if "discriminator" not in trained.get("params", {}):
            raise ValueError(f"init_from {origin}: holds no discriminator (an export keeps only the generator; "
                             f"name the training workdir)")
        discriminator_params = placed("discriminator", trained["params"]["discriminator"],
                                      state.params["discriminator"], origin)
        state = state.replace(params={**state.params, "discriminator": discriminator_params})
    return state


def trained_model_config(origin, key):
    """The motion-model config (`model`) the run or export at `origin` was trained with; ValueError naming `key`."""
    config = read_train_config(checkpoint_paths(origin)[1])
    if "model" not in config:
        raise ValueError(f"{key} {origin}: its config has no `model` section: not a motion-trainer run")
    return config.model


def check_same_modules(origin, modules, model_config, key):
    """ValueError, naming `key` and the differing fields, unless `origin` built each generator submodule in
    `modules` as `model_config` builds it (a module may match in shapes and still compute differently, e.g. its
    norm)."""
    have = submodule_fields(trained_model_config(origin, key))
    want = submodule_fields(model_config)
    for module in modules:
        differ = [f"{k}={have[module][k]!r} there, {v!r} here" for k, v in want[module].items()
                  if have[module][k] != v and k != "dtype"]
        if differ:
            raise ValueError(f"{key} {origin}: its {module} is built differently ({'; '.join(differ)})")


def warm_start_module(state, origin, module, key, model_config):
    """`state` with one generator submodule (e.g. "expression") and its EMA taken from the run or export at
    `origin` (its EMA generator where it has one); the rest of the generator stays as it is. `key` names the
    config field in errors. ValueError when origin holds no readable checkpoint or no such submodule, or when
    its shapes or its module fields differ from `model_config`'s.
    """
    trained = trained_module(origin, module, key)
    check_same_modules(origin, [module], model_config, key)
    generator = dict(state.params["generator"])
    generator[module] = placed(module, trained, generator[module], origin, key)
    return with_generator(state, generator)


def trained_module(origin, module, key):
    """One generator submodule's params (EMA where kept) of the run or export at `origin`, as numpy arrays;
    ValueError naming `key` when origin holds no readable checkpoint or no such submodule."""
    trained = generator_params(_read(origin, key))[0]
    if module not in trained:
        raise ValueError(f"{key} {origin}: its generator has no {module!r} (it has {', '.join(sorted(trained))})")
    return trained[module]
