"""The train state every stage shares: step, RNG, named param trees with their optimizer states, EMA copies."""

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """params, opt_state and ema map a network name ('generator', 'discriminator', ...) to its pytree.

    rng is a raw uint32 key (`jax.random.PRNGKey`); a step draws its randomness from fold_in(rng, step), so a
    resumed run repeats the same draws. nonfinite_streak / nonfinite_total count skipped updates.
    """

    step: jax.Array
    rng: jax.Array
    params: dict
    opt_state: dict
    ema: dict
    nonfinite_streak: jax.Array
    nonfinite_total: jax.Array


def create_state(params, optimizers, rng, ema_names=()):
    """A step-0 state: optimizer states from `optimizers` (name -> optax transform), EMA copies of `ema_names`."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        rng=rng,
        params=params,
        opt_state={name: optimizers[name].init(params[name]) for name in optimizers},
        ema={name: jax.tree.map(jnp.copy, params[name]) for name in ema_names},
        nonfinite_streak=jnp.zeros((), jnp.int32),
        nonfinite_total=jnp.zeros((), jnp.int32),
    )


def apply_gradients(state, name, grads, optimizer):
    """(new params, new optimizer state) of network `name` after one optax update with `grads`."""
    updates, opt_state = optimizer.update(grads, state.opt_state[name], state.params[name])
    return optax.apply_updates(state.params[name], updates), opt_state


def ema_update(ema, params, decay):
    """decay * ema + (1 - decay) * params, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def step_rng(state):
    """This step's PRNG key: fold_in(state.rng, state.step)."""
    return jax.random.fold_in(state.rng, state.step)
