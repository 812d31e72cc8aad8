"""The one training loop every stage shares: a stage supplies its state init and its step (`Stage`).

`train` reads top to bottom in phases: signals, mesh, input, init (eval_shape -> shardings -> jitted init),
checkpoint (resume, or start and the stage's warm start), update step (jit with explicit shardings, donation,
ahead-of-time compile), loop (metrics, images, progress, checkpoints, stop signals, non-finite guard).

The loop keeps the device busy. It dispatches step N, draws and places batch N+1 while the device runs it,
and only then reads what step N-1 left for the host: its non-finite streak and the stop flag. Metric sums
stay on the device (the step adds to them) and are read at log steps alone. So:
  - the host waits on the device only at log, image and checkpoint steps, at the run's first step (the
    steps/s clock starts when it ends) and at its last; those steps read their own streak and flag at once;
  - a non-finite streak that reaches nonfinite_limit at step N is read one step late, while step N+1 runs;
    the run still ends with NonFiniteError 'stopped at step N', having written no checkpoint of N or later;
  - SIGTERM or SIGINT (Ctrl-C) sets a flag that each process's next step takes to the devices, so every
    process reads the same agreed flag at the same step. The run then stops after the step whose batch the
    host holds (one or two steps after the signal, at most three), saves a checkpoint of it, prints
    '<SIGNAL>: saved a checkpoint at step N in DIR' and returns.
Checkpoint steps draw their next batch only after the save, so a checkpoint's iterator position is the one
after its own step's batch, and a resumed run sees the batches a straight run would.

Signals are caught from the start of `train`: one during init or compilation takes effect once the first step
has run, which is then saved. A second Ctrl-C is Python's again: KeyboardInterrupt at once, no checkpoint.
A process started with SIGINT ignored (a background job of a script) keeps ignoring it.
"""

import contextlib
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dex_jax import parallel
from dex_jax.train import nonfinite
from dex_jax.train.checkpoint import Checkpointer
from dex_jax.train.metrics import EventWriter, Progress, add_to_sums, averages, image_grid, save_png, zero_sums

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Stage:
    """What a stage plugs into the loop.

    init(rng) -> TrainState with boxed params (nn.Partitioned, logical axis names); traced, never run eagerly.
    step(state, batch, frozen) -> (state, metrics, preview): one update. metrics: dict of scalars; the update
        counts only when all are finite (`nonfinite.guard`). preview: tuple of (n, H, W, 3) batches in [-1, 1],
        the image grid's columns, named by preview_names.
    frozen: arrays the step reads but never trains (LPIPS weights, ...), placed on every device.
    metric_names: the metrics averaged (over the finite steps of each logging interval) and logged.
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
    """SIGTERM and SIGINT turned into a flag while in use as a context manager (the previous handlers come back
    on exit). `name` is the first such signal's name ('SIGTERM', 'SIGINT'), None before one. After a SIGINT,
    SIGINT has its previous handler again, so a second Ctrl-C acts at once. SIGINT stays ignored where it was."""

    def __init__(self):
        self.name = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signum == signal.SIGINT and signal.getsignal(signum) is signal.SIG_IGN:
                continue
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum, frame):
        self.name = self.name or signal.Signals(signum).name
        if signum == signal.SIGINT:
            signal.signal(signum, self._previous[signum])


def own_buffers(tree):
    """`tree` with each leaf that shares a device buffer with an earlier leaf replaced by a copy. The update step
    donates the whole state, and XLA refuses one buffer donated twice; a fresh state can hold such a pair (a
    warm start that puts one array in two places, or init's equal constant leaves, such as a zero-initialised
    layer and its EMA)."""
    seen = set()

    def own(leaf):
        buffers = tuple(shard.data.unsafe_buffer_pointer() for shard in leaf.addressable_shards)
        if buffers in seen:
            return jnp.copy(leaf)
        seen.add(buffers)
        return leaf

    return jax.tree.map(own, tree)


def _abstract_with_shardings(abstract, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


def _due(step, every, total):
    return bool(every) and (step % every == 0 or step == total)


def train(config, workdir, stage, data_iterator):
    """Train `stage` on batches from `data_iterator` up to config.total_steps; checkpoints under workdir.

    Resumes from the newest intact checkpoint in workdir/checkpoints. SIGTERM or SIGINT saves a checkpoint and
    returns (module docstring). NonFiniteError after nonfinite_limit non-finite steps in a row.
    Returns (state, last step).
    """
    workdir = Path(workdir)
    is_main = jax.process_index() == 0
    total = config.total_steps

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

    # Each process's stop flag laid out as a batch (its rows hold its flag), so that the step agrees on them.
    rows = config.data.batch_size // jax.process_count()
    stop_flags = {flag: parallel.global_batch(np.full(rows, flag), mesh) for flag in (False, True)}

    # --------------------------------------------------------- model init: eval_shape -> shardings -> jit
    rng = jax.random.PRNGKey(config.seed)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(stage.init, rng)
    state_sharding = parallel.state_shardings(abstract, mesh, rules)
    init = jax.jit(lambda r: nn.unbox(stage.init(r)), out_shardings=state_sharding)
    frozen = jax.device_put(stage.frozen, replicated)

    checkpoints = Checkpointer(workdir / "checkpoints", keep=config.checkpoint.keep,
                               every_steps=config.checkpoint.every_steps, async_save=config.checkpoint.async_save)
    with StopRequest() as stop, contextlib.closing(checkpoints):
        # -------------------------------------------------------------------- checkpoint: resume or start
        restored = checkpoints.restore(_abstract_with_shardings(nn.unbox(abstract), state_sharding), data_iterator)
        if restored:
            state, step = restored
            log.info("resumed from %s at step %d", checkpoints.directory, step)
        else:
            started = time.perf_counter()
            # Init draws with the non-partitionable threefry: XLA compiles it ~3x faster, and the values, like
            # any JAX result, do not depend on the mesh.
            with jax.set_mesh(mesh), nn.logical_axis_rules(rules), jax.threefry_partitionable(False):
                state, step = init(rng), 0
            log.info("initialised the state in %.1f s", time.perf_counter() - started)
            if stage.warm_start:
                state = stage.warm_start(state)
            state = own_buffers(state)
        if step >= total:
            return state, step

        # --------------------------------------- update step: explicit shardings, donation, AOT compile
        def update(state, batch, frozen, sums, flags):
            new, metrics, preview = stage.step(state, batch, frozen)
            state = nonfinite.guard(state, new, metrics)
            sums = add_to_sums(sums, metrics, state.nonfinite_streak == 0)
            status = {"nonfinite_streak": state.nonfinite_streak, "nonfinite_total": state.nonfinite_total,
                      "stop": jnp.any(flags)}
            return state, sums, status, preview

        def fresh_sums():
            return jax.device_put(zero_sums(stage.metric_names), replicated)

        batch, sums = next_batch(), fresh_sums()
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            started = time.perf_counter()
            compiled = jax.jit(update, in_shardings=(state_sharding, batch_sharding, replicated, replicated,
                                                     batch_sharding),
                               out_shardings=(state_sharding, replicated, replicated, replicated),
                               donate_argnums=(0, 3)).lower(state, batch, frozen, sums, stop_flags[False]).compile()
        log.info("compiled the update step in %.1f s", time.perf_counter() - started)

        # -------------------------------------------------------------------------------------------- loop
        progress = Progress(total, config.data.batch_size)
        first_step, clock = step, None
        stop_at = None  # the step after which a signal stops the run, once a step's status has shown the flag
        unread = None  # (step, status) of the last step whose status the host has not read yet
        with contextlib.closing(EventWriter(workdir, enabled=is_main)) as writer:
            while True:
                state, sums, status, preview = compiled(state, batch, frozen, sums, stop_flags[stop.name is not None])
                step += 1
                # The next batch is drawn now, while the device runs this step, unless this step is saved (its
                # checkpoint records the iterator after its own batch), is the last, or is the first (timed).
                prefetch = clock is not None and step not in (total, stop_at) and not checkpoints.due(step)
                if prefetch:
                    batch = next_batch()
                log_due = _due(step, config.log.every_steps, total)
                image_due = _due(step, config.log.image_every_steps, total)
                to_read, unread = ([unread] if unread else []), (step, status)
                if not prefetch or log_due or image_due:  # the host waits for this step anyway
                    to_read, unread = to_read + [unread], None
                for read_step, read_status in to_read:
                    current = jax.device_get(read_status)
                    nonfinite.check_streak(int(current["nonfinite_streak"]), config.nonfinite_limit, read_step)
                    if current["stop"] and stop_at is None:
                        stop_at = step + 1 if prefetch else step
                if clock is None:
                    clock = (step, time.perf_counter())
                    progress.rates(step)

                if log_due:
                    values = averages(jax.device_get(sums))
                    values["nonfinite_total"] = float(current["nonfinite_total"])
                    sums = fresh_sums()
                    writer.scalars(step, values)
                    writer.flush()
                    if is_main:
                        print(progress.line(step, values, progress.rates(step)), flush=True)
                if image_due and is_main:
                    grid = image_grid(jax.device_get(preview))
                    save_png(workdir / "images" / f"step_{step:07d}.png", grid)
                    writer.image(step, "preview/" + "|".join(stage.preview_names), grid)

                checkpoints.save(step, state, data_iterator, force=step in (total, stop_at))
                if step == stop_at:
                    if is_main:
                        print(f"{stop.name or 'a signal to another process'}: saved a checkpoint at step {step} "
                              f"in {checkpoints.directory}", flush=True)
                    break
                if step == total:
                    break
                if not prefetch:
                    batch = next_batch()

    if is_main and step > clock[0]:
        seconds = time.perf_counter() - clock[1]
        steps_per_s = (step - clock[0]) / seconds
        print(f"trained steps {first_step + 1}-{step}: {steps_per_s:.3g} steps/s, "
              f"{steps_per_s * config.data.batch_size:.3g} examples/s (after the first step)", flush=True)
    return state, step
