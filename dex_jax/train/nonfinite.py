"""Guard against non-finite losses and gradients: skip the update, count it, stop after N in a row."""

import jax
import jax.numpy as jnp


class NonFiniteError(RuntimeError):
    """Training produced non-finite values too many steps in a row."""


def all_finite(metrics):
    """True when every metric (losses, gradient norms) is finite: a NaN/inf gradient makes its norm NaN/inf."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(m)) for m in jax.tree.leaves(metrics)]))


def guard(old, new, metrics):
    """`new` when every metric is finite, else `old` with the update dropped; the step advances either way, and
    the state's nonfinite_streak (0 after a finite step) and nonfinite_total count the dropped updates."""
    finite = all_finite(metrics)

    def keep(n, o):
        return jnp.where(finite, n, o)

    return new.replace(
        params=jax.tree.map(keep, new.params, old.params),
        opt_state=jax.tree.map(keep, new.opt_state, old.opt_state),
        ema=jax.tree.map(keep, new.ema, old.ema),
        nonfinite_streak=jnp.where(finite, 0, old.nonfinite_streak + 1).astype(jnp.int32),
        nonfinite_total=(old.nonfinite_total + (~finite)).astype(jnp.int32),
    )


def check_streak(streak, limit, step):
    """Raise NonFiniteError once `streak` consecutive steps were skipped and `limit` (> 0) is reached."""
    if limit and streak >= limit:
        raise NonFiniteError(f"stopped at step {step}: {streak} steps in a row gave non-finite losses or "
                             f"gradients (limit nonfinite_limit={limit}); updates were skipped, the last "
                             "checkpoint holds the last finite state; lower the learning rate or check the data")
