"""Optimizers the stages share: Adam with global-norm clipping, a warmup-then-constant or cosine learning-rate
schedule, and per-submodule learning-rate factors."""

import jax
import optax


def learning_rate_schedule(opt_config, peak, total_steps):
    """Linear warmup to `peak`, then constant or cosine decay to peak * final_lr_fraction at total_steps."""
    warmup = int(opt_config.warmup_steps)
    if opt_config.schedule == "constant":
        if not warmup:
            return optax.constant_schedule(peak)
        return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
    if opt_config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, warmup + 1),
                                                  end_value=peak * opt_config.final_lr_fraction)
    raise ValueError(f"unknown optimizer.schedule {opt_config.schedule!r}: use 'constant' or 'cosine'")


def scale_submodules(multipliers):
    """An optax transform scaling the updates of each top-level submodule named in `multipliers` by its factor."""
    def update(updates, state, params=None):
        del params
        return {name: jax.tree.map(lambda u, m=multipliers.get(name, 1.0): u * m, tree)
                for name, tree in updates.items()}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(opt_config, peak, total_steps, lr_multipliers=None):
    """(Adam with gradient clipping by global norm (skipped when grad_clip_norm is 0), its lr schedule).

    lr_multipliers: {submodule name: factor} on top of the schedule, e.g. for layers with equalized learning rate.
    """
    schedule = learning_rate_schedule(opt_config, peak, total_steps)
    parts = [optax.clip_by_global_norm(opt_config.grad_clip_norm)] if opt_config.grad_clip_norm else []
    parts.append(optax.adam(schedule, b1=opt_config.b1, b2=opt_config.b2))
    if lr_multipliers:
        parts.append(scale_submodules(dict(lr_multipliers)))
    return optax.chain(*parts), schedule
