"""The one training loop every stage shares: a stage supplies its state init and its step (`Stage`).

`train` reads top to bottom in phases: mesh, input, init (eval_shape -> shardings -> jitted init), checkpoint
(resume or start), update step (jit with explicit shardings, donation, ahead-of-time compile), loop (metrics,
images, progress, checkpoints, SIGTERM, non-finite guard).
"""

import dataclasses
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils

from dex_jax import parallel
from dex_jax.train import nonfinite
from dex_jax.train.checkpoint import Checkpointer
from dex_jax.train.metrics import EventWriter, MetricAccumulator, Progress, image_grid, save_png

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
    """What a stage plugs into the loop.

    init(rng) -> TrainState with boxed params (nn.Partitioned, logical axis names); traced, never run eagerly.
    step(state, batch, frozen) -> (state, metrics, preview): one update. metrics: dict of scalars; the update
        counts only when all are finite (`nonfinite.guard`). preview: tuple of (n, H, W, 3) batches in [-1, 1],
        the image grid's columns, named by preview_names.
    frozen: arrays the step reads but never trains (LPIPS weights, ...), placed on every device.
    metric_names: the metrics averaged and logged.
    warm_start(state) -> state: called once on a fresh start, after init and before the first step (never on
        resume), e.g. to take params from a trained run; None: the state starts as init made it.
    """

    init: Callable
    step: Callable
    frozen: Any
    metric_names: tuple
    preview_names: tuple = ()
    warm_start: Callable | None = None


class StopRequest:
    """Turns SIGTERM into a flag the loop checks after each step (agreed by every process)."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self):
        if jax.process_count() == 1:
            return self.requested
        return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def _abstract_with_shardings(abstract, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


def _due(step, every, total):
    return bool(every) and (step % every == 0 or step == total)


def train(config, workdir, stage, data_iterator):
    """Train `stage` on batches from `data_iterator` up to config.total_steps; checkpoints under workdir.

    Resumes from the newest intact checkpoint in workdir/checkpoints. SIGTERM saves a checkpoint and returns.
    Returns (state, last step).
    """
    workdir = Path(workdir)
    is_main = jax.process_index() == 0

    # ------------------------------------------------------------------------------------------------ mesh
    mesh = parallel.make_mesh(config.mesh)
    rules = parallel.logical_rules(config.sharding_rules)
    parallel.check_batch_divides(config.data.batch_size, mesh)
    replicated = parallel.replicated(mesh)
    batch_sharding = parallel.batch_sharding(mesh)
    log.info("mesh %s over %d devices, %d processes", dict(mesh.shape), mesh.size, jax.process_count())

    # ---------------------------------------------------------------------------------------- input pipeline
    def next_batch():
        return parallel.global_batch(next(data_iterator), mesh)

    # --------------------------------------------------------- model init: eval_shape -> shardings -> jit
    rng = jax.random.PRNGKey(config.seed)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(stage.init, rng)
    state_sharding = parallel.state_shardings(abstract, mesh, rules)
    init = jax.jit(lambda r: nn.unbox(stage.init(r)), out_shardings=state_sharding)
    frozen = jax.device_put(stage.frozen, replicated)

    # ------------------------------------------------------------------------ checkpoint: resume or start
    checkpoints = Checkpointer(workdir / "checkpoints", keep=config.checkpoint.keep,
                               every_steps=config.checkpoint.every_steps, async_save=config.checkpoint.async_save)
    restored = checkpoints.restore(_abstract_with_shardings(nn.unbox(abstract), state_sharding), data_iterator)
    if restored:
        state, step = restored
        log.info("resumed from %s at step %d", checkpoints.directory, step)
    else:
        started = time.perf_counter()
        # Init draws with the non-partitionable threefry: XLA compiles it ~3x faster, and the values, like any
        # JAX result, do not depend on the mesh.
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules), jax.threefry_partitionable(False):
            state, step = init(rng), 0
        log.info("initialised the state in %.1f s", time.perf_counter() - started)
        if stage.warm_start:
            state = stage.warm_start(state)

    # ------------------------------------------- update step: explicit shardings, donation, AOT compile
    def update(state, batch, frozen):
        new, metrics, preview = stage.step(state, batch, frozen)
        state, metrics = nonfinite.guard(state, new, metrics)
        return state, metrics, preview

    if step >= config.total_steps:
        checkpoints.close()
        return state, step
    batch = next_batch()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        started = time.perf_counter()
        compiled = jax.jit(update, in_shardings=(state_sharding, batch_sharding, replicated),
                           out_shardings=(state_sharding, replicated, replicated),
                           donate_argnums=(0,)).lower(state, batch, frozen).compile()
    log.info("compiled the update step in %.1f s", time.perf_counter() - started)

    # ------------------------------------------------------------------------------------------------ loop
    writer = EventWriter(workdir, enabled=is_main)
    accumulator = MetricAccumulator(stage.metric_names)
    progress = Progress(config.total_steps, config.data.batch_size)
    stop = StopRequest()
    first_step, clock = step, None
    try:
        while step < config.total_steps:
            state, metrics, preview = compiled(state, batch, frozen)
            step += 1
            metrics = jax.device_get(metrics)
            if clock is None:
                clock = (step, time.perf_counter())
                progress.rates(step)
            if int(metrics["nonfinite_streak"]) == 0:
                accumulator.add(metrics)
            nonfinite.check_streak(int(metrics["nonfinite_streak"]), config.nonfinite_limit, step)

            if _due(step, config.log.every_steps, config.total_steps):
                values = accumulator.flush()
                values["nonfinite_total"] = float(metrics["nonfinite_total"])
                writer.scalars(step, values)
                writer.flush()
                if is_main:
                    print(progress.line(step, values, progress.rates(step)), flush=True)
            if _due(step, config.log.image_every_steps, config.total_steps) and is_main:
                grid = image_grid(jax.device_get(preview))
                save_png(workdir / "images" / f"step_{step:07d}.png", grid)
                writer.image(step, "preview/" + "|".join(stage.preview_names), grid)

            saved = checkpoints.save(step, state, data_iterator, force=step == config.total_steps)
            if stop.agreed():
                if not saved:
                    checkpoints.save(step, state, data_iterator, force=True)
                if is_main:
                    print(f"SIGTERM: saved a checkpoint at step {step} in {checkpoints.directory}", flush=True)
                break
            if step < config.total_steps:
                batch = next_batch()
    finally:
        stop.restore()
        checkpoints.close()
        writer.close()

    if is_main and clock and step > clock[0]:
        seconds = time.perf_counter() - clock[1]
        steps_per_s = (step - clock[0]) / seconds
        print(f"trained steps {first_step + 1}-{step}: {steps_per_s:.3g} steps/s, "
              f"{steps_per_s * config.data.batch_size:.3g} examples/s (after the first step)", flush=True)
    return state, step
